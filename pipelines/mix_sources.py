"""Mixer sources: find, fingerprint, read and index the curated inputs of a mixture (used by pipelines/mix.py).

A source (Parquet from a crawl, WebDataset tars, JSONL) is indexed once, before anything is written: per
sample its payload members (extension, where the bytes are, size), its output ``.json`` (built once, here),
its token count and its exact size in a shard. Writers then only copy bytes (pipelines/mix_write.py).

Tars are memory-mapped and indexed from their headers alone: a plain USTAR tar with NumPy (the blocks
carrying the ustar magic, which must chain exactly by their sizes), any other (GNU long names, pax,
directories) by a header walk; checksums and sizes are verified either way. Member bytes are never
decoded: only the ``.json`` metadata and ``.txt`` text members are read. Token counts for the builtin
tokenizers are vectorised too (character classes, not a regex per text).
"""

from __future__ import annotations

import glob
import gzip
import json
import mmap
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from json.encoder import encode_basestring
from pathlib import Path

import numpy as np

from pipelines.config import ConfigError
from pipelines.mixture_config import SourceConfig, TokenConfig

ROOT = Path(__file__).resolve().parents[1]
IMAGE_EXTS = {"jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "ppm", "pgm", "avif"}
TEXT_EXTS = {"txt", "text"}
MAX_EXT_BYTES = 89  # output member names are "<10-digit key>.<ext>" in the 100-byte USTAR name field
MAX_MEMBER_BYTES = 0o77777777777  # the largest size an 11-digit octal USTAR size field holds (8 GiB - 1)
JSON_HEAD = b'{"epoch":'  # every output .json starts with its epoch (keys are sorted): head + digits + rest


class MixError(ConfigError):
    """A mixture that cannot be built from its inputs (missing, empty or corrupt source, too little data)."""


def digits(n: np.ndarray) -> np.ndarray:
    """len(str(n)) of non-negative integers."""
    d = np.ones(len(n), np.int64)
    t = 10
    while len(n) and int(n.max()) >= t:
        d += n >= t
        t *= 10
    return d


def tar_member_bytes(n):
    """Bytes a member of n data bytes takes in a tar (header + data padded to 512); works on numpy arrays."""
    return 512 + (n + 511) // 512 * 512


# ---------------------------------------------------------------------------------------------- tokens
_SPACE, _WORD, _PUNCT, _UNKNOWN = 0, 1, 2, 255
_CLASS_TABLE: np.ndarray | None = None  # code point -> class, filled lazily for the code points seen
_COUNT_CHUNK = 1 << 20  # characters per vectorised pass (bounds the temporary arrays)


def _char_class(cp: int) -> int:
    c = chr(cp)  # exactly the `re` module's \w (isalnum or '_') and \s (isspace) for str patterns
    return _WORD if c.isalnum() or c == "_" else _SPACE if c.isspace() else _PUNCT


def _classes(cps: np.ndarray) -> np.ndarray:
    global _CLASS_TABLE
    if _CLASS_TABLE is None:
        _CLASS_TABLE = np.full(0x110000, _UNKNOWN, np.uint8)
        _CLASS_TABLE[:128] = [_char_class(c) for c in range(128)]
    cls = _CLASS_TABLE[cps]
    unknown = cls == _UNKNOWN
    if unknown.any():
        for cp in np.unique(cps[unknown]).tolist():
            _CLASS_TABLE[cp] = _char_class(cp)
        cls = _CLASS_TABLE[cps]
    return cls


_ASCII_CLASSES = bytes(_char_class(c) for c in range(128)) + bytes(128)


def _text_classes(text: str) -> np.ndarray:
    """The class of every character of text (uint8: space, word, punctuation)."""
    if text.isascii():
        return np.frombuffer(text.encode("ascii").translate(_ASCII_CLASSES), np.uint8)
    return _classes(np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32))


def _chunks(texts: list[str]):
    """(first, last, lengths) of runs of texts holding about _COUNT_CHUNK characters each."""
    lens = np.fromiter(map(len, texts), np.int64, len(texts))
    ends = np.cumsum(lens)
    a = 0
    while a < len(texts):
        b = max(a + 1, int(np.searchsorted(ends, (ends[a - 1] if a else 0) + _COUNT_CHUNK, "right")))
        yield a, b, lens[a:b]
        a = b


def count_whitespace_tokens(texts: list[str]) -> np.ndarray:
    """len(re.findall(r"\\w+|[^\\w\\s]+", t)) for every text (the `tokenizers` Whitespace pre-tokenizer's
    pattern), vectorised: the matches are the maximal runs of word characters and of other non-space
    characters, so a token starts wherever the character class changes to word or punctuation."""
    out = np.zeros(len(texts), np.int64)
    for a, b, lens in _chunks(texts):
        cls = _text_classes("".join(texts[a:b]))
        if not len(cls):
            continue
        ends = np.cumsum(lens)
        starts = ends - lens
        new = np.empty(len(cls), bool)
        new[0] = True
        np.not_equal(cls[1:], cls[:-1], out=new[1:])
        new[starts[lens > 0]] = True  # a text never continues the previous one's run
        np.logical_and(new, cls, out=new)  # and is not a space
        first = np.flatnonzero(new)
        out[a:b] = np.searchsorted(first, ends) - np.searchsorted(first, starts)
    return out


def utf8_lengths(texts: list[str]) -> np.ndarray:
    """len(t.encode()) for every text, vectorised."""
    out = np.zeros(len(texts), np.int64)
    for a, b, lens in _chunks(texts):
        joined = "".join(texts[a:b])
        if joined.isascii():
            out[a:b] = lens
            continue
        cps = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), np.uint32)
        nb = 1 + (cps >= 0x80).astype(np.int64) + (cps >= 0x800) + (cps >= 0x10000)
        cum = np.zeros(len(nb) + 1, np.int64)
        np.cumsum(nb, out=cum[1:])
        ends = np.cumsum(lens)
        out[a:b] = cum[ends] - cum[ends - lens]
    return out


class TokenCounter:
    """Counts tokens offline: 'builtin:whitespace' (default), 'builtin:bytes', or a local HF tokenizer.json."""

    def __init__(self, cfg: TokenConfig, root: Path = Path(".")):
        self.cfg = cfg
        self.spec = cfg.tokenizer
        self._tok = None
        if not self.spec.startswith("builtin:"):
            path = Path(self.spec).expanduser()
            path = path if path.is_absolute() else root / path
            if path.is_dir():
                path = path / "tokenizer.json"
            if not path.is_file():
                raise ConfigError(f"tokens.tokenizer: no tokenizer.json at {path} (give a local path; nothing is "
                                  f"downloaded), or use builtin:whitespace / builtin:bytes")
            from tokenizers import Tokenizer

            try:
                self._tok = Tokenizer.from_file(str(path))
            except Exception as e:  # noqa: BLE001 - tokenizers raises plain Exceptions
                raise ConfigError(f"tokens.tokenizer: {path} is not a valid tokenizer.json: {e}") from None
            self.spec = str(path)
        elif self.spec not in ("builtin:whitespace", "builtin:bytes"):
            raise ConfigError(f"tokens.tokenizer: unknown builtin {self.spec!r} (builtin:whitespace, builtin:bytes)")

    def count(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0, np.int64)
        if self._tok is not None:
            return np.fromiter((len(e.ids) for e in self._tok.encode_batch(texts, add_special_tokens=False)),
                               np.int64, len(texts))
        if self.spec == "builtin:bytes":
            return utf8_lengths(texts)
        return count_whitespace_tokens(texts)


# ---------------------------------------------------------------------------------------------- JSON
# Canonical JSON (sorted keys, compact, UTF-8): the same sample always gives the same bytes.
_ENCODE = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode
try:  # optional: when installed, orjson parses, and for float-free values writes, the same JSON faster
    import orjson as _orjson
except ImportError:  # pragma: no cover - the standard library gives the same bytes
    _orjson = None


def _has_float(v) -> bool:
    """A float anywhere in a dict / list (orjson writes some floats differently from repr())."""
    for x in (v.values() if type(v) is dict else v):
        t = type(x)
        if t is float or ((t is dict or t is list) and _has_float(x)):
            return True
    return False


def loads(raw: bytes | str):
    """(value, exact): json.loads(raw), through orjson when it is there. exact: orjson parsed it, so the
    value holds no NaN / infinity / int past 64 bits (json decides what orjson refuses)."""
    if _orjson is not None:
        try:
            return _orjson.loads(raw), True
        except _orjson.JSONDecodeError:
            pass
    return json.loads(raw), False


def encode(value, exact: bool = False) -> str:
    """_ENCODE(value). exact (from loads): orjson may write a dict or list, unless it holds a float (orjson
    formats some floats differently from repr())."""
    t = type(value)
    if t is str:
        return encode_basestring(value)
    if value is None:
        return "null"
    if t is int:
        return int.__repr__(value)
    if exact and _orjson is not None and (t is dict or t is list) and not _has_float(value):
        try:
            return _orjson.dumps(value, option=_orjson.OPT_SORT_KEYS).decode()
        except _orjson.JSONEncodeError:  # e.g. nested deeper than orjson writes
            pass
    return _ENCODE(value)


class JsonTemplate:
    """A source file's output .json with the per-sample fields left open.

    rest(id, url, language, index, meta) is everything after the epoch digits, byte for byte what
    _ENCODE({"source", "modality", "id", "url", "language", "epoch", "provenance", "meta"}) gives, built
    from constant pieces and the JSON of the five fields (no dict is built or sorted per sample).
    """

    _SLOTS = ("id", "language", "meta", "index", "url")

    def __init__(self, source: str, modality: str, common: dict, file: str, file_meta: dict | None):
        mark = {k: f"\x00{k}\x00" for k in self._SLOTS}
        prov = dict(common, file=file, index=mark["index"])
        if file_meta:
            prov["input"] = file_meta
        doc = _ENCODE({"source": source, "modality": modality, "id": mark["id"], "url": mark["url"],
                       "language": mark["language"], "epoch": 0, "provenance": prov, "meta": mark["meta"]})
        if not doc.startswith(JSON_HEAD.decode() + "0,"):
            raise AssertionError("epoch must be the first key of the output .json")
        doc = doc[len(JSON_HEAD) + 1:]
        pieces, order = [], []
        while True:
            at = [(doc.find(_ENCODE(m)), k) for k, m in mark.items() if k not in order]
            at = [(i, k) for i, k in at if i >= 0]
            if not at:
                break
            i, k = min(at)
            pieces.append(doc[:i])
            order.append(k)
            doc = doc[i + len(_ENCODE(mark[k])):]
        pieces.append(doc)
        if tuple(order) != self._SLOTS:  # the sorted key order rest() relies on
            raise AssertionError(f"unexpected .json field order {order}")
        self.pieces = pieces

    def rest(self, sid, url, language, index, meta, exact: bool = False) -> bytes:
        """exact: meta came from loads() with exact=True (see encode())."""
        p = self.pieces
        return (p[0] + encode(sid) + p[1] + encode(language) + p[2] + encode(meta, exact) + p[3] + encode(index)
                + p[4] + encode(url) + p[5]).encode()


# ---------------------------------------------------------------------------------------------- files
def _expand(pattern: str) -> list[str]:
    import braceexpand

    out = []
    for p in braceexpand.braceexpand(pattern):
        if any(c in p for c in "*?["):
            out += sorted(glob.glob(p, recursive=True))
        elif os.path.isdir(p):
            sub = os.path.join(p, "curated")
            d = sub if os.path.isdir(sub) else p
            out += sorted(f for ext in ("*.parquet", "*.tar", "*.jsonl", "*.jsonl.gz")
                          for f in glob.glob(os.path.join(d, ext)))
        elif os.path.exists(p):
            out.append(p)
    return list(dict.fromkeys(f for f in out if os.path.isfile(f)))


def _fmt_of(path: str) -> str:
    if path.endswith(".parquet"):
        return "parquet"
    if path.endswith(".tar"):
        return "webdataset"
    if path.endswith((".jsonl", ".jsonl.gz", ".json.gz", ".ndjson")):
        return "jsonl"
    raise ValueError(f"unknown format of {path} (.parquet, .tar, .jsonl[.gz]; or set 'format')")


def _map(path: str):
    """The file memory-mapped read-only (b"" when empty)."""
    with open(path, "rb") as fh:
        return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if os.fstat(fh.fileno()).st_size else b""


def _fingerprint(path: str, mm=None) -> str:
    import xxhash

    if mm is not None:
        return xxhash.xxh3_64(mm).hexdigest()
    h = xxhash.xxh3_64()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 23):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------- tar headers
_Z512 = bytes(512)
_CHK_SHIFT = 3 * np.arange(5, -1, -1, dtype=np.int64)


def _octal(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values of (n, k) octal header fields: optional spaces, octal digits, then NULs / spaces (as the
    Python walk reads them); and which fields are well formed."""
    f = f.astype(np.int64)
    dig = (f >= 48) & (f <= 55)
    ndig = dig.sum(1)
    first = dig.argmax(1)
    last = f.shape[1] - 1 - dig[:, ::-1].argmax(1)
    col = np.arange(f.shape[1])
    right = np.cumsum(dig[:, ::-1], 1)[:, ::-1] - dig  # digits to the right of each digit
    val = np.where(dig, (f - 48) << (3 * right), 0).sum(1)
    ok = (ndig > 0) & (ndig == last - first + 1)
    ok &= ((col >= first[:, None]) | (f == 32)).all(1) & ((col <= last[:, None]) | (f == 32) | (f == 0)).all(1)
    return val, ok


def _octal_fast(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """_octal() for fields written the usual way (every byte but the last an octal digit, then a NUL or a
    space: "%011o\\0" sizes); the rest of the rows go through _octal()."""
    k = f.shape[1] - 1
    d = f[:, :k].astype(np.int64) - 48
    ok = ((d >= 0) & (d <= 7)).all(1) & ((f[:, k] == 0) | (f[:, k] == 32))
    val = (d << (3 * np.arange(k - 1, -1, -1, dtype=np.int64))).sum(1)
    if not ok.all():
        bad = np.flatnonzero(~ok)
        val[bad], ok[bad] = _octal(f[bad])
    return val, ok


def _blocks(mm) -> np.ndarray:
    return np.frombuffer(mm, np.uint8, len(mm) // 512 * 512).reshape(-1, 512)


def _check_headers(mm, hpos) -> None:
    """Verify the USTAR checksums of the headers at byte offsets hpos (vectorised); raise at the first bad one."""
    from tarfile import ReadError

    if not len(hpos):
        return
    blocks = _blocks(mm)
    pos = np.asarray(hpos, np.int64)
    for a in range(0, len(pos), 2048):
        h = blocks[pos[a:a + 2048] // 512]
        want = h.sum(1, dtype=np.uint32).astype(np.int64) - h[:, 148:156].sum(1, dtype=np.int64) + 8 * 32
        f = h[:, 148:156]  # usually "%06o\0 ": compare with the sum written that way
        ok = (f[:, :6] == (want[:, None] >> _CHK_SHIFT & 7) + 48).all(1) & (f[:, 6] == 0) & (f[:, 7] == 32)
        if not ok.all():
            bad = np.flatnonzero(~ok)
            got, ok_b = _octal(f[bad])
            ok[bad] = ok_b & (got == want[bad])
        if not ok.all():
            raise ReadError(f"bad header checksum at byte {int(pos[a + int(np.argmin(ok))])} (not a tar, or damaged)")


def _scan_ustar(mm):
    """The headers of a plain USTAR tar found without walking it: every block with the ustar magic is a
    candidate, and the candidates must chain exactly (each header's size leads to the next one, from byte 0
    to an end-of-archive block or the end of the file). Returns (header blocks, sizes), or None for any
    other tar (long names, pax, links, directories, base-256 sizes, a cut) - the Python walk reads those."""
    blocks = _blocks(mm)
    nb = len(blocks)
    if not nb:
        return None
    cand = np.flatnonzero(blocks[:, 257] == 117)  # 'u', then "star" on those
    cand = cand[(blocks[:, 258:262][cand] == np.frombuffer(b"star", np.uint8)).all(1)]
    if not len(cand) or cand[0] != 0:
        return None
    typ = blocks[cand, 156]
    if not np.isin(typ, (48, 0, 55)).all() or blocks[cand, 345].any():  # regular files, no name prefix
        return None
    size, ok = _octal_fast(blocks[:, 124:136][cand])
    if not ok.all():
        return None
    nxt = cand + 1 + (size + 511) // 512
    if (nxt[:-1] != cand[1:]).any() or (int(cand[-1]) + 1) * 512 + int(size[-1]) > len(mm):
        return None
    end = int(nxt[-1])
    if end < nb:
        if blocks[end].any():
            return None  # not an end-of-archive block: let the walk say what it is
    elif len(mm) > end * 512 and mm[end * 512:].count(0) != len(mm) - end * 512:
        return None
    _check_headers(mm, cand * 512)
    return cand, size


class _TarScan:
    """A tar's members as WebDataset groups them: per member its extension (ext_of into exts), data offset
    and size; samples start at `starts`; bad: a member without an extension."""

    def __init__(self, mm):
        self._n = None
        fast = _scan_ustar(mm)
        if fast is None:
            names, offs, sizes = tar_members(mm)
            self.offs, self.sizes = np.asarray(offs, np.int64), np.asarray(sizes, np.int64)
            self._from_names(names)
            return
        cand, self.sizes = fast
        self.offs = (cand + 1) * 512
        n = _blocks(mm)[:, :100][cand]  # the name fields
        is0 = n == 0
        self._len = np.where(is0.any(1), is0.argmax(1), 100)
        n = n[:, :max(1, int(self._len.max()))]
        col = np.arange(n.shape[1])
        inside = col < self._len[:, None]
        self._n = n
        if ((n == 47) & inside).any():  # paths with folders: split the decoded names
            names = [self._name(i) for i in range(len(n))]
            self._n = None
            self._from_names(names)
            return
        dot = (n == 46) & inside
        has = dot.any(1)
        self.bad = None if has.all() else int(np.argmin(has))
        if self.bad is not None:
            return
        d = self._d = dot.argmax(1)  # the key is the name up to its first dot
        same = (d[1:] == d[:-1]) & ((n[1:] == n[:-1]) | (col >= d[1:, None])).all(1)
        self.starts = np.concatenate([[0], np.flatnonzero(~same) + 1]).astype(np.int64)
        elen = self._len - d - 1
        width = max(1, int(elen.max()))
        e = n[np.arange(len(n))[:, None], np.minimum(d[:, None] + 1 + np.arange(width), n.shape[1] - 1)]
        e[np.arange(width) >= elen[:, None]] = 0
        if width <= 8:  # one uint64 per extension
            packed = np.zeros((len(n), 8), np.uint8)
            packed[:, :width] = e
            uniq, inv = np.unique(packed.view(np.uint64).ravel(), return_inverse=True)
            uniq = uniq.view(np.uint8).reshape(-1, 8)
        else:
            uniq, inv = np.unique(e, axis=0, return_inverse=True)
        self.exts = [u.tobytes().rstrip(b"\0").decode("utf-8", "replace") for u in uniq]
        self.ext_of = inv.ravel().astype(np.int32)

    def _from_names(self, names: list[str]) -> None:
        self._names = names
        keys, exts = _split_names(names)
        self._keys = keys
        self.bad = next((i for i, e in enumerate(exts) if e is None), None)
        if self.bad is not None:
            return
        ids: dict = {}
        self.ext_of = np.fromiter((ids.setdefault(e, len(ids)) for e in exts), np.int32, len(exts))
        self.exts = list(ids)
        self.starts = np.asarray([0] + [i for i, (x, y) in enumerate(zip(keys, keys[1:]), 1) if x != y], np.int64)

    def __len__(self) -> int:
        return len(self.offs)

    def _name(self, i: int) -> str:
        return self._n[i, :self._len[i]].tobytes().decode("utf-8", "replace")

    def name(self, i: int) -> str:
        return self._names[i] if self._n is None else self._name(i)

    def key(self, i: int) -> str:
        """The key of member i."""
        if self._n is None:
            return self._keys[i]
        return self._n[i, :self._d[i]].tobytes().decode("utf-8", "replace")

    def keys(self, members: np.ndarray) -> list[str]:
        """key() of many members."""
        if self._n is None:
            return [self._keys[i] for i in members.tolist()]
        w = self._n.shape[1]
        raw = self._n[members].tobytes()  # fixed-width rows, cut at each key's length
        return [raw[j * w:j * w + k].decode("utf-8", "replace") for j, k in enumerate(self._d[members].tolist())]


def tar_members(mm) -> tuple[list[str], list[int], list[int]]:
    """Names, data offsets and sizes of the regular files in an uncompressed tar (USTAR, GNU long names,
    pax paths), from the headers alone; checksums and sizes are verified, so garbage or a cut-off file
    raises tarfile.ReadError."""
    from tarfile import ReadError

    size, pos, long_name, pax_name = len(mm), 0, None, None
    names, offs, sizes, hpos = [], [], [], []
    try:
        while pos + 512 <= size:
            if mm[pos] == 0 and mm[pos:pos + 512] == _Z512:
                break  # end-of-archive blocks
            hpos.append(pos)
            raw = mm[pos + 124:pos + 136]
            try:
                n = int.from_bytes(raw[1:], "big") if raw[0] & 0x80 else int(raw.rstrip(b"\0 ").lstrip(b" ") or b"0", 8)
            except ValueError:
                raise ReadError(f"bad size field at byte {pos}") from None
            data = pos + 512
            if data + n > size:
                raise ReadError(f"member at byte {pos} is cut off ({n} bytes declared, file ends at {size})")
            kind = mm[pos + 156]
            if kind in (48, 0, 55):  # '0', NUL, '7': regular files
                name = pax_name or long_name
                if name is None:
                    nb = mm[pos:pos + 100]
                    z = nb.find(0)
                    name = (nb if z < 0 else nb[:z]).decode("utf-8", "replace")
                    if mm[pos + 345] and mm[pos + 257:pos + 262] == b"ustar":
                        pre = mm[pos + 345:pos + 500]
                        z = pre.find(0)
                        name = (pre if z < 0 else pre[:z]).decode("utf-8", "replace") + "/" + name
                names.append(name)
                offs.append(data)
                sizes.append(n)
                long_name = pax_name = None
            elif kind == 76:  # 'L': GNU long name, the data is the next member's name
                long_name = mm[data:data + n].rstrip(b"\0").decode("utf-8", "replace")
            elif kind == 120:  # 'x': pax header, take its path record
                for rec in mm[data:data + n].split(b"\n"):
                    k, _, v = rec.partition(b" ")[2].partition(b"=")
                    if k == b"path":
                        pax_name = v.decode("utf-8", "replace")
            else:  # directories, links, global pax headers: not sample members
                long_name = pax_name = None
            pos = data + (n + 511) // 512 * 512
        else:
            if pos < size and mm[pos:].count(0) != size - pos:
                _check_headers(mm, hpos)
                raise ReadError(f"cut off inside a header at byte {pos}")
    except ReadError:
        _check_headers(mm, hpos)  # a bad checksum explains a bad size or a cut better
        raise
    _check_headers(mm, hpos)
    return names, offs, sizes


# ---------------------------------------------------------------------------------------------- the index
@dataclass
class Source:
    """One source's index: per sample its payload members, output .json, size in a shard and tokens.

    Members are flat arrays: sample i's payload members are m_start[i]:m_start[i+1], each an extension
    (exts[m_ext]), an offset and a size in buffer m_buf (a tar file of the source, or for Parquet / JSONL
    the source's UTF-8 text blob). Sample i's .json at epoch e is JSON_HEAD + str(e) + json_rest[j_start[i]:
    j_start[i+1]]. Tars are memory-mapped lazily and never pickled; everything else travels with the index
    (to forked writers and Ray actors).
    """

    cfg: SourceConfig
    files: list[str]
    rel_files: list[str]
    fmt: str
    fingerprints: list[dict] = field(default_factory=list)
    file_of: np.ndarray = None  # file index per sample
    body_bytes: np.ndarray = None  # tar bytes of the payload members per sample
    json_len: np.ndarray = None  # length of the output .json at epoch 0
    tokens: np.ndarray = None
    exts: list = None  # member extensions (m_ext indexes this)
    m_start: np.ndarray = None  # n + 1: member range per sample
    m_ext: np.ndarray = None
    m_buf: np.ndarray = None  # which buffer: a tar file index, or 0 for the text blob
    m_off: np.ndarray = None
    m_size: np.ndarray = None
    m_cont: np.ndarray = None  # the member directly follows the previous one in its tar (see _contiguous)
    json_rest: bytes | bytearray = b""
    j_start: np.ndarray = None  # n + 1
    text: bytes | bytearray | None = None  # Parquet / JSONL: every sample's text, UTF-8, concatenated
    file_meta: list = None  # per file provenance (Parquet schema metadata of a crawl)
    _maps: list = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def n(self) -> int:
        return len(self.file_of)

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_maps"] = None
        return d

    def renamed(self, cfg: SourceConfig) -> Source:
        """The same inputs under another source config (same path, format, filters): the index is shared
        unless the name or modality inside each .json differ."""
        src = Source(**{k: v for k, v in self.__dict__.items() if k != "cfg"}, cfg=cfg)
        return src

    def buffers(self) -> list:
        """What m_buf indexes: the tar files memory-mapped (opened on first use), or [text blob]."""
        if self.fmt != "webdataset":
            return [self.text]
        if self._maps is None:
            self._maps = [_map(f) for f in self.files]
        return self._maps

    def sample_bytes(self, idx: np.ndarray, epoch: np.ndarray) -> np.ndarray:
        """Exact tar bytes of samples idx at the given epochs (the json grows by the epoch's extra digits)."""
        return self.body_bytes[idx] + tar_member_bytes(self.json_len[idx] + digits(epoch) - 1)

    # -- loading ------------------------------------------------------------------------------------
    def _err(self, msg: str) -> MixError:
        return MixError(f"source {self.name!r}: {msg}")

    def _load_parquet(self):
        import pyarrow.parquet as pq

        tf = self.cfg.text_field
        for f in self.files:
            try:
                pf = pq.ParquetFile(f)
            except Exception as e:  # noqa: BLE001
                raise self._err(f"cannot read Parquet {f}: {e}") from None
            names = pf.schema_arrow.names
            if tf not in names:
                raise self._err(f"{f} has no column {tf!r} (columns: {', '.join(names[:12])})")
            cols = [c for c in names if c in (tf, "id", "url", "language", "language_score", "date", "source",
                                              "offset", "charset", "cc_languages", "extractor")]
            md = pf.schema_arrow.metadata or {}
            meta = {k.decode(): md[k].decode() for k in (b"config_hash", b"seed", b"crawlmix_version") if k in md}
            yield pf.read(columns=cols), meta

    def _load_jsonl(self, f: str):
        """[(line number, object, exact)] of a JSONL file (exact: see loads())."""
        rows = []
        opener = gzip.open if f.endswith(".gz") else open
        tf = self.cfg.text_field
        try:
            with opener(f, "rb") as fh:
                ln, rest = 0, b""
                while True:
                    chunk = fh.read(1 << 20)
                    lines = (rest + chunk).split(b"\n")
                    rest = lines.pop() if chunk else b""
                    for line in lines:
                        ln += 1
                        if not line.strip():
                            continue
                        try:
                            obj, exact = loads(line)
                        except json.JSONDecodeError as e:
                            raise self._err(f"{f}:{ln}: not valid JSON ({e.msg})") from None
                        except UnicodeDecodeError as e:
                            raise self._err(f"cannot read {f}: {e}") from None
                        if type(obj) is not dict or not isinstance(obj.get(tf), str):
                            raise self._err(f"{f}:{ln}: no string field {tf!r}")
                        rows.append((ln, obj, exact))
                    if not chunk:
                        break
        except (OSError, EOFError) as e:
            raise self._err(f"cannot read {f}: {e}") from None
        return rows

    # -- indexing -----------------------------------------------------------------------------------
    def build_index(self, tokens: TokenCounter, common: dict) -> None:
        if self.fmt == "webdataset":
            self._index_tars(tokens, common)
        else:
            self._index_texts(tokens, common)

    def _template(self, common: dict, fi: int) -> JsonTemplate:
        meta = self.file_meta[fi] if self.file_meta else None
        return JsonTemplate(self.name, self.cfg.modality, common, self.rel_files[fi], meta)

    def _finish(self, file_of, rests: _Blob, texts, img_counts, tokens: TokenCounter) -> None:
        self.file_of = np.asarray(file_of, np.int32)
        self.json_rest, lens = rests.data, np.asarray(rests.lens, np.int64)
        self.j_start = np.zeros(len(lens) + 1, np.int64)
        np.cumsum(lens, out=self.j_start[1:])
        self.json_len = lens + len(JSON_HEAD) + 1
        per = self.cfg.modality == "video" and "per_video_frame" or "per_image"
        self.tokens = tokens.count(texts) + np.asarray(img_counts, np.int64) * getattr(tokens.cfg, per)
        sizes = self.m_size
        if len(sizes) and int(sizes.max()) > MAX_MEMBER_BYTES:
            raise self._err(f"a member of {int(sizes.max()):,} bytes is larger than a USTAR tar member can be")
        cum = np.zeros(len(sizes) + 1, np.int64)  # tar bytes of members [0, m)
        np.cumsum(tar_member_bytes(sizes), out=cum[1:])
        self.body_bytes = cum[self.m_start[1:]] - cum[self.m_start[:-1]]

    def _index_texts(self, tokens: TokenCounter, common: dict) -> None:
        """Parquet / JSONL: one text member per sample, its bytes in one UTF-8 blob."""
        langs = set(self.cfg.languages) if self.cfg.languages else None
        file_of, rests, texts = [], _Blob(), []
        self.file_meta = []
        if self.fmt == "parquet":
            import pyarrow as pa

            tf = self.cfg.text_field
            meta_cols = ("date", "language_score", "charset", "cc_languages", "extractor")
            is_text = (pa.types.is_string, pa.types.is_large_string, getattr(pa.types, "is_string_view", None))
            for fi, (table, fmeta) in enumerate(self._load_parquet()):
                self.file_meta.append(fmeta)
                tpl = self._template(common, fi)
                n = table.num_rows
                col = table.column(tf)
                if not any(t(col.type) for t in is_text if t) or col.null_count:
                    raise self._err(f"{self.files[fi]}: column {tf!r} must hold text in every row "
                                    f"({col.type}, {col.null_count} null)")
                cols = {c: table.column(c).to_pylist() for c in table.column_names}
                none = [None] * n
                text, ids, urls, lang = cols[tf], cols.get("id", none), cols.get("url", none), cols.get("language", none)
                mcols = [(k, cols[k]) for k in meta_cols if k in cols]
                warc, woff = cols.get("source"), cols.get("offset", none)
                fname = Path(self.files[fi]).name
                for row in range(n):
                    if langs is not None and lang[row] not in langs:
                        continue
                    meta = {k: v[row] for k, v in mcols if v[row] is not None}
                    if warc is not None and warc[row] is not None:
                        meta["warc"] = warc[row]
                        meta["warc_offset"] = woff[row]
                    file_of.append(fi)
                    texts.append(text[row])
                    rests.add(tpl.rest(ids[row] or f"{fname}:{row}", urls[row], lang[row], row, meta))
        else:
            tf = self.cfg.text_field
            skip = (tf, "id", "url", "language")
            for fi, f in enumerate(self.files):
                self.file_meta.append(None)
                tpl = self._template(common, fi)
                fname = Path(f).name
                for ln, obj, exact in self._load_jsonl(f):
                    lang = obj.get("language")
                    if langs is not None and lang not in langs:
                        continue
                    meta = {k: v for k, v in obj.items() if k not in skip}
                    file_of.append(fi)
                    texts.append(obj[tf])
                    rests.add(tpl.rest(obj.get("id") or f"{fname}:{ln}", obj.get("url"), lang, ln, meta, exact))
        if not any(self.file_meta):
            self.file_meta = [None] * len(self.files)
        blob = _Blob()
        try:
            for t in texts:
                blob.add(t.encode())
        except UnicodeEncodeError as e:
            raise self._err(f"a text is not valid Unicode ({e})") from None
        n = len(texts)
        sizes = np.asarray(blob.lens, np.int64)
        self.text = blob.data
        self.exts = ["txt"]
        self.m_start = np.arange(n + 1, dtype=np.int64)
        self.m_ext = np.zeros(n, np.int32)
        self.m_buf = np.zeros(n, np.int32)
        self.m_size = sizes
        self.m_off = np.cumsum(sizes) - sizes
        self.m_cont = np.zeros(n, bool)
        self._finish(file_of, rests, texts, np.zeros(n, np.int64), tokens)

    def _index_tars(self, tokens: TokenCounter, common: dict) -> None:
        """WebDataset tars: members grouped by key (webdataset's rule: the path up to the first dot of the
        file name), payload members in tar order, the sample's .json read for its metadata."""
        from tarfile import ReadError

        langs = set(self.cfg.languages) if self.cfg.languages else None
        self.file_meta = [None] * len(self.files)
        maps = self.buffers()
        ext_id: dict = {}
        file_of, rests, texts, img_counts = [], _Blob(), [], []
        counts, m_ext, m_buf, m_off, m_size, m_cont = [], [], [], [], [], []
        for fi, f in enumerate(self.files):
            mm = maps[fi]
            try:
                scan = _TarScan(mm)
            except ReadError as e:
                raise self._err(f"corrupt tar {f}: {e}") from None
            if not len(scan):
                continue
            if scan.bad is not None:
                raise self._err(f"corrupt tar {f}: member {scan.name(scan.bad)} has no extension "
                                f"(not a WebDataset tar)")
            for e in scan.exts:
                ext_id.setdefault(e, len(ext_id))
            flags = np.zeros((3, len(ext_id)), bool)  # json, text, image per extension
            for e, i in ext_id.items():
                last = e.rsplit(".", 1)[-1]
                flags[:, i] = (e == "json", last in TEXT_EXTS, last.lower() in IMAGE_EXTS)
            M = len(scan)
            ids = np.asarray([ext_id[e] for e in scan.exts], np.int32)[scan.ext_of]
            offs, sizes, starts = scan.offs, scan.sizes, scan.starts
            G = len(starts)
            grp = np.repeat(np.arange(G), np.diff(np.append(starts, M)))
            is_json, is_text, is_img = flags[:, ids]
            metas: list = [{}] * G
            exact = [True] * G
            offs_l, sizes_l, grp_l = offs.tolist(), sizes.tolist(), grp.tolist()
            for m in np.flatnonzero(is_json).tolist():
                o, g = offs_l[m], grp_l[m]
                try:
                    metas[g], exact[g] = loads(mm[o:o + sizes_l[m]])
                except ValueError as e:
                    raise self._err(f"corrupt tar {f}: {scan.key(m)}.json is not valid JSON ({e})") from None
            txt: dict = {}
            for m in np.flatnonzero(is_text).tolist():
                o = offs_l[m]
                txt.setdefault(grp_l[m], []).append(mm[o:o + sizes_l[m]].decode("utf-8", "replace"))
            npay = np.add.reduceat((~is_json).astype(np.int64), starts)
            nimg = np.add.reduceat(is_img.astype(np.int64), starts)
            keep = npay > 0  # nothing but metadata: webdataset would yield an empty sample
            if langs is not None:
                keep &= [(m.get("language") if isinstance(m, dict) else None) in langs for m in metas]
            tpl = self._template(common, fi)
            kept = np.flatnonzero(keep)
            for g, key in zip(kept.tolist(), scan.keys(starts[kept])):
                meta = metas[g]
                if not isinstance(meta, dict):
                    meta = {"value": meta}
                rests.add(tpl.rest(meta.get("id") or meta.get("key") or key, meta.get("url"),
                                      meta.get("language"), key, meta, exact[g]))
                t = txt.get(g)
                texts.append("\n".join(t) if t else "")
            file_of += [fi] * int(keep.sum())
            img_counts.append(nimg[keep])
            counts.append(npay[keep])
            mk = ~is_json & keep[grp]
            e_, o_, s_, g_ = ids[mk], offs[mk], sizes[mk], grp[mk]
            long = [e for e, i in ext_id.items() if len(e.encode()) > MAX_EXT_BYTES and (e_ == i).any()]
            if long:
                raise self._err(f"{f}: member extension {long[0]!r} is longer than {MAX_EXT_BYTES} bytes "
                                f"(no room in a tar header)")
            m_ext.append(e_)
            m_buf.append(np.full(len(e_), fi, np.int32))
            m_off.append(o_)
            m_size.append(s_)
            m_cont.append(_contiguous(mm, g_, o_, s_))
        cat = (lambda xs, t: np.concatenate(xs).astype(t) if xs else np.zeros(0, t))
        self.exts = list(ext_id)
        n = cat(counts, np.int64)
        self.m_start = np.zeros(len(n) + 1, np.int64)
        np.cumsum(n, out=self.m_start[1:])
        self.m_ext, self.m_buf = cat(m_ext, np.int32), cat(m_buf, np.int32)
        self.m_off, self.m_size, self.m_cont = cat(m_off, np.int64), cat(m_size, np.int64), cat(m_cont, bool)
        self._finish(file_of, rests, texts, cat(img_counts, np.int64), tokens)


class _Blob:
    """Byte strings appended into one buffer (no list of pieces plus a joined copy), with their lengths."""

    def __init__(self):
        self.data = bytearray()
        self.lens: list[int] = []

    def add(self, b: bytes) -> None:
        self.data += b
        self.lens.append(len(b))


def _split_names(names: list[str]) -> tuple[list[str], list]:
    """(key, extension) of each member name: the key is the path up to the first dot of the file name,
    '/' replaced by '_'; the extension None where there is no dot."""
    if "/" not in "".join(names):
        parts = [n.partition(".") for n in names]
        return [p[0] for p in parts], [p[2] if p[1] else None for p in parts]
    keys, exts = [], []
    for name in names:
        slash = name.rfind("/") + 1
        dot = name.find(".", slash)
        keys.append(name[:dot].replace("/", "_") if dot >= 0 else name)
        exts.append(name[dot + 1:] if dot >= 0 else None)
    return keys, exts


def _contiguous(mm, grp: np.ndarray, off: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Per member: it directly follows the previous member of the same sample in the tar (one header
    block after that member's zero padding). A writer copies such runs in one piece, then writes its own
    headers over the source's."""
    n = len(off)
    cont = np.zeros(n, bool)
    if n < 2:
        return cont
    end = off + (size + 511) // 512 * 512
    cont[1:] = (grp[1:] == grp[:-1]) & (off[1:] == end[:-1] + 512)
    rem = size % 512
    check = np.flatnonzero(cont[1:] & (rem[:-1] > 0))  # members whose padding a run would copy
    if len(check):
        blocks = np.frombuffer(mm, np.uint8, len(mm) // 512 * 512).reshape(-1, 512)
        word = np.arange(64)
        for a in range(0, len(check), 2048):
            c = check[a:a + 2048]
            tail = blocks[(off[c] + size[c]) // 512].view("<u8")  # the block holding the end, as 64 words
            w, r = rem[c] // 8, rem[c] % 8  # padding starts at byte r of word w
            dirty = ((tail != 0) & (word > w[:, None])).any(1)
            dirty |= (tail[np.arange(len(c)), w] >> (8 * r).astype(np.uint64)) != 0
            cont[c[dirty] + 1] = False
    return cont


def resolve_source(cfg: SourceConfig, root: Path, progress: bool = True) -> Source:
    pattern = cfg.path if os.path.isabs(os.path.expanduser(cfg.path)) else str(root / cfg.path)
    pattern = os.path.expanduser(pattern)
    files = _expand(pattern)
    if not files and cfg.bundled:
        _make_bundled(cfg, pattern, progress)
        files = _expand(pattern)
    if not files:
        hint = f" (bundled: {cfg.bundled} generated nothing there)" if cfg.bundled else ""
        raise MixError(f"source {cfg.name!r}: path {cfg.path!r} matches no file{hint} (looked in {pattern})")
    try:
        fmts = {cfg.format if cfg.format != "auto" else _fmt_of(f) for f in files}
    except ValueError as e:
        raise MixError(f"source {cfg.name!r}: {e}") from None
    if len(fmts) > 1:
        raise MixError(f"source {cfg.name!r}: path {cfg.path!r} mixes formats {sorted(fmts)}; one format per source")
    fmt = fmts.pop()
    rel = []
    for f in files:
        try:
            rel.append(os.path.relpath(f, root) if not os.path.relpath(f, root).startswith("..") else f)
        except ValueError:
            rel.append(f)
    src = Source(cfg=cfg, files=files, rel_files=rel, fmt=fmt)
    maps = src.buffers() if fmt == "webdataset" else [None] * len(files)  # tars: hash the mapping in place
    src.fingerprints = [{"path": r, "bytes": os.path.getsize(f), "xxh3": _fingerprint(f, m)}
                        for f, r, m in zip(files, rel, maps)]
    return src


def _make_bundled(cfg: SourceConfig, pattern: str, progress: bool) -> None:
    prefix = re.split(r"[*?\[{]", pattern, 1)[0]
    folder = Path(prefix if prefix.endswith("/") or os.path.isdir(prefix) else os.path.dirname(prefix))
    if cfg.bundled == "media":
        from pipelines.make_media_sample import write_media_sample

        print(f"source {cfg.name}: generating the bundled media sample into {folder}", file=sys.stderr)
        write_media_sample(folder)
    else:
        crawl_dir = folder.parent if folder.name in ("curated", "pairs") else folder  # text or image-text pairs
        print(f"source {cfg.name}: running the text crawl on the bundled sample into {crawl_dir}", file=sys.stderr)
        cmd = [sys.executable, str(ROOT / "pipelines" / "crawl.py"), "--output", str(crawl_dir)]
        if not progress:
            cmd.append("--no-progress")
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode:
            raise MixError(f"source {cfg.name!r}: the bundled crawl failed:\n{r.stdout[-2000:]}")
