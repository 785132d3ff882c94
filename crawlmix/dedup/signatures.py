"""Dedup stage 1, signatures: text normalisation, token hashes, MinHash, and the per-file signature task.

Normalisation follows datatrove's simplify_text (lowercase, numbers -> 0, punctuation and whitespace folded,
accents stripped); word n-grams are shingled (CJK, Thai, ... scripts by character) and MinHashed with
seeds from datasketch's permutations. All of it is numpy over the text's codepoint array (per-codepoint
lookup tables, a polynomial hash per token, n-gram hashes, a (num_perm x shingles) multiply-add): no
Python object per token.
"""

from __future__ import annotations

import hashlib
import unicodedata
from pathlib import Path

import numpy as np
import pyarrow as pa
import regex
import xxhash

from crawlmix.dedup.config import DedupConfig
from crawlmix.dedup.files import read_table, stem
from crawlmix.io.paths import file_digest
from crawlmix.runtime import storage
from crawlmix.runtime.atomic import write_table
from crawlmix.runtime.completion import Completion

# Scripts written without spaces (Han, kana, Thai, Lao, Khmer, Myanmar, Tibetan) are shingled by character;
# elsewhere words are runs of letters / digits / spacing marks, and punctuation and whitespace are separators.
_CHAR_RANGES = ((0x0E00, 0x0FFF), (0x1000, 0x109F), (0x1780, 0x17FF), (0x2E80, 0x2FDF), (0x3005, 0x3007),
                (0x3021, 0x3029), (0x3040, 0x30FF), (0x31F0, 0x31FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF),
                (0xF900, 0xFAFF), (0xFF66, 0xFF9F), (0x20000, 0x3134F))
_DECIMAL_SEPS = ".,،٫⎖⎗⎘"  # datatrove's NUMBERS_PATTERN: \p{Nd}+([.,،٫⎖⎗⎘]\p{Nd}+)? -> "0"
# codepoint classes: a token is a run of WORD / DIGIT codepoints, or one CHAR codepoint
_SEP, _DEC, _WORD, _DIGIT, _CHAR, _MARK = 0, 1, 2, 3, 4, 5
_TEXT_CHUNK = 1 << 18  # characters tokenised at a time: bounds memory on 10 MB documents (~6-12 MB peak)
_BLOCK = 1 << 19  # hash values per vectorised permutation block (2 MB of uint32)
_BASE = 0xD6E8FEB86659FD93  # odd base of the per-token polynomial hash (mod 2**64)


class _Tables:
    """Per-codepoint tables, built once per process (~0.15 s, 19 MB):

    fold   uint32  lowercase (str.lower), then canonical decomposition without combining marks ('É' -> 'e'),
                   decimal digits -> '0'
    cls    uint8   class of the folded codepoint (_SEP, _DEC, _WORD, _DIGIT, _CHAR, _MARK)
    value  uint64  a random 64-bit value per folded codepoint (splitmix64 of it), 0 for separators
    power, inverse  _BASE**i and _BASE**-i mod 2**64 for i <= _TEXT_CHUNK
    """

    _built: _Tables | None = None

    def __init__(self):
        cp = np.arange(0x110000, dtype=np.uint32)
        chars = cp.view("<U1")
        everything = cp.tobytes().decode("utf-32-le", "surrogatepass")
        cls = np.full(len(cp), _SEP, dtype=np.uint8)
        cls[np.char.isalnum(chars)] = _WORD  # stdlib re's [^\W_]
        for pattern, value in ((r"\p{Mc}", _WORD), (r"\p{Mn}", _MARK)):  # spacing marks join words; Mn is dropped
            cls[[m.start() for m in regex.finditer(pattern, everything)]] = value
        in_ranges = np.zeros(len(cp), dtype=bool)
        for lo, hi in _CHAR_RANGES:
            in_ranges[lo:hi + 1] = True
        cls[in_ranges & (cls == _WORD)] = _CHAR
        digits = np.char.isdecimal(chars)  # Unicode Nd, as datatrove's \p{Nd}
        cls[digits] = _DIGIT
        cls[[ord(c) for c in _DECIMAL_SEPS]] = _DEC
        # str.lower per codepoint ('İ' is the one codepoint whose lowercase is two: i + a combining dot)
        lower = everything.replace("\u0130", "I").lower()
        fold = np.frombuffer(lower.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).copy()
        fold[0x3C2] = 0x3C3  # final sigma, which str.lower only produces from context
        # NFD with combining marks dropped (datatrove strips diacritics so), where that leaves one codepoint
        decomposable = np.array([i for i in range(0x30000) if unicodedata.decomposition(chr(i))[:1] not in ("", "<")])
        for i in np.flatnonzero(np.isin(fold, decomposable)).tolist():
            base = [ch for ch in unicodedata.normalize("NFD", chr(fold[i])) if cls[ord(ch)] != _MARK]
            if len(base) == 1:
                fold[i] = ord(base[0])
        fold[digits] = ord("0")
        self.fold = fold
        self.cls = cls.take(fold)
        value = _splitmix(cp.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15))
        value[cls < _WORD] = 0
        self.value = value.take(fold)
        with np.errstate(over="ignore"):
            self.power = np.cumprod(np.full(_TEXT_CHUNK + 1, _BASE, dtype=np.uint64))
            self.power[1:] = self.power[:-1].copy()
            self.power[0] = 1
            self.inverse = np.cumprod(np.full(_TEXT_CHUNK + 1, pow(_BASE, -1, 1 << 64), dtype=np.uint64))
            self.inverse[1:] = self.inverse[:-1].copy()
            self.inverse[0] = 1

    @classmethod
    def get(cls) -> _Tables:
        if cls._built is None:
            cls._built = cls()
        return cls._built


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, in place on a uint64 array (a bijection with full avalanche)."""
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x


def _splitmix(x: np.ndarray) -> np.ndarray:
    return _mix(np.array(x, dtype=np.uint64, copy=True))


def _normalised(text: str, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """datatrove's simplify_text on codepoint arrays: (table[folded codepoint], class) per remaining codepoint.

    Lowercase; numbers (\\p{Nd}+ with at most one decimal separator, matched left to right) become "0";
    accents stripped (canonical decomposition, combining marks dropped)."""
    if text.isascii():
        raw = np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    else:
        raw = text.encode("utf-16-le", "surrogatepass")  # faster than UTF-32; exact without astral codepoints
        raw = (np.frombuffer(raw, dtype=np.uint16) if len(raw) == 2 * len(text) else
               np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32))
    cls = _Tables.get().cls.take(raw)
    keep = None
    if raw.dtype != np.uint8:
        marks = cls == _MARK
        if marks.any():
            keep = ~marks
    digits = cls == _DIGIT
    if digits.any():
        repeat = np.zeros(len(cls), dtype=bool)
        np.logical_and(digits[1:], digits[:-1], out=repeat[1:])  # "0" once per run of digits
        keep = ~repeat if keep is None else keep & ~repeat
        # "<digits><one decimal separator><digits>" is one number; the regex then resumes after it, so along
        # a chain like 1,000,000 every second separator goes, with the "0" of the digits after it
        dec = np.flatnonzero(cls[1:-1] == _DEC) + 1
        dec = dec[digits[dec - 1] & digits[dec + 1]]
        if len(dec) > 1:
            other = np.flatnonzero(~digits)
            first = np.ones(len(dec), dtype=bool)  # not one digit run after the previous separator
            first[1:] = other[np.searchsorted(other, dec[:-1] + 1)] != dec[1:]
            if not first.all():
                j = np.arange(len(dec))
                dec = dec[(j - np.maximum.accumulate(np.where(first, j, 0))) % 2 == 0]
        keep[dec] = False
        keep[dec + 1] = False
    values = table.take(raw)
    if keep is not None:
        values, cls = values[keep], cls[keep]
    return values, cls


def _token_starts(cls: np.ndarray) -> np.ndarray:
    tok = cls >= _WORD
    start = np.empty(len(cls), dtype=bool)
    start[:1] = tok[:1]
    np.greater(tok[1:], tok[:-1], out=start[1:])
    if len(cls) and cls.max() >= _CHAR:  # one token per CHAR codepoint; a word may follow one directly
        char = cls == _CHAR
        start |= char
        start[1:] |= char[:-1] & tok[1:]
    return start


def tokens(text: str) -> list[str]:
    """The normalised tokens MinHash shingles (lowercased, numbers -> "0", accents stripped, CJK per character)."""
    c, cls = _normalised(text, _Tables.get().fold)
    starts = np.flatnonzero(_token_starts(cls))
    if not len(starts):
        return []
    ends = starts + np.add.reduceat((cls >= _WORD).astype(np.int64), starts)  # trailing separators excluded
    s = c.tobytes().decode("utf-32-le", "surrogatepass")
    return [s[a:b] for a, b in zip(starts.tolist(), ends.tolist())]


def _token_hashes(text: str) -> np.ndarray:
    """64-bit hash of every normalised token, in order, without a Python object per token: a polynomial hash
    (mod 2**64, odd base) over random 64-bit codepoint values, summed per token, then splitmix64-finalised.
    (Polynomials mod 2**64 have known crafted collisions, Thue-Morse strings of >= 2048 characters in one
    token: harmless for dedup, where a collision only makes two documents share a shingle.)"""
    t = _Tables.get()
    v, cls = _normalised(text, t.value)
    starts = np.flatnonzero(_token_starts(cls))
    if not len(starts):
        return np.zeros(0, dtype=np.uint64)
    with np.errstate(over="ignore"):
        v *= t.power[:len(v)]
        h = np.add.reduceat(v, starts)  # separators are 0: each sum runs up to the next token's start
        h *= t.inverse[starts]  # shifted to start at power 0: the same token hashes alike anywhere
    return _mix(h)


def _text_chunks(text: str):
    """Pieces of at most _TEXT_CHUNK characters, cut after a space or newline where there is one."""
    i, n = 0, len(text)
    while n - i > _TEXT_CHUNK:
        j = i + _TEXT_CHUNK
        cut = max(text.rfind(" ", j - _TEXT_CHUNK // 4, j), text.rfind("\n", j - _TEXT_CHUNK // 4, j))
        cut = cut + 1 if cut > i else j
        yield text[i:cut]
        i = cut
    yield text[i:]


class MinHasher:
    """Vectorised MinHash over hashed word n-grams, seeded with datasketch's permutation parameters."""

    def __init__(self, cfg: DedupConfig):
        from datasketch import MinHash

        self.cfg = cfg
        self.bands, self.rows = cfg.lsh_params()
        self.num_perm = self.bands * self.rows
        perm = MinHash(num_perm=self.num_perm, seed=cfg.seed).permutations
        # datasketch's seeded parameters, mixed into odd 32-bit multipliers and 32-bit offsets:
        # h_i(x) = a_i * x + b_i mod 2**32 on the low 32 bits of the (splitmix-finalised) shingle hash
        with np.errstate(over="ignore"):
            a, b = perm[0].astype(np.uint64), perm[1].astype(np.uint64)
            self.a = ((_splitmix(a ^ (b << np.uint64(32))) >> np.uint64(32)).astype(np.uint32) | np.uint32(1))[:, None]
            self.b = (_splitmix(b + np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(32)).astype(np.uint32)[:, None]
        # odd multipliers weighting the n token hashes of an n-gram, then a splitmix64 finaliser
        self._weights = [np.uint64(int(x) | 1) for x in _splitmix(np.arange(1, cfg.n_grams + 1, dtype=np.uint64))]
        self._block = max(64, _BLOCK // self.num_perm)  # shingles per block
        self._buf = np.empty(self.num_perm * self._block, dtype=np.uint32)

    def _ngrams(self, t: np.ndarray, n: int) -> np.ndarray:
        """32-bit hashes of the n-grams of the token hashes t (len(t) >= n); repeats are left in, as a
        minimum does not change with them."""
        m = len(t) - n + 1
        w = self._weights
        with np.errstate(over="ignore"):
            h = t[:m] * w[0]
            for k in range(1, n):
                h += t[k:k + m] * w[k]
        return _mix(h).astype(np.uint32)

    def _minimum(self, sh: np.ndarray, sig: np.ndarray | None) -> np.ndarray:
        """Element-wise minimum of sig and the num_perm hashes of the shingles sh."""
        with np.errstate(over="ignore"):
            for i in range(0, len(sh), self._block):
                x = sh[i:i + self._block]
                phv = self._buf[:self.num_perm * len(x)].reshape(self.num_perm, len(x))
                np.multiply(self.a, x, out=phv)
                phv += self.b
                low = phv.min(axis=1)
                sig = low if sig is None else np.minimum(sig, low, out=sig)
        return sig

    def hashes(self, text: str, minhash: bool = True) -> tuple[int, np.ndarray | None]:
        """(64-bit hash of the normalised token sequence, uint32 MinHash signature, None for a text without
        tokens), tokenising 10 MB texts piece by piece."""
        exact = xxhash.xxh3_64()
        n, carry, total, sig = self.cfg.n_grams, np.zeros(0, dtype=np.uint64), 0, None
        for piece in _text_chunks(text):
            t = _token_hashes(piece)
            exact.update(t.tobytes())
            total += len(t)
            if not minhash:
                continue
            if len(carry):
                t = np.concatenate([carry, t])
            if len(t) >= n:
                sig = self._minimum(self._ngrams(t, n), sig)
                t = t[len(t) - n + 1:]
            carry = t
        if minhash and 0 < total < n:  # a document shorter than n tokens is one shingle
            sig = self._minimum(self._ngrams(carry, total), sig)
        return exact.intdigest(), sig

    def signature(self, text: str) -> np.ndarray | None:
        return self.hashes(text)[1]

    def band_hashes(self, sigs: np.ndarray) -> np.ndarray:
        """(docs, bands) uint64: one hash per band of `rows` signature values."""
        v = sigs.reshape(len(sigs), self.bands, self.rows).astype(np.uint64)
        h = np.zeros(v.shape[:2], dtype=np.uint64)
        with np.errstate(over="ignore"):
            for r in range(self.rows):
                h = (h ^ v[:, :, r]) * np.uint64(0x100000001B3) + np.uint64(r + 1)
                h ^= h >> np.uint64(29)
        return h


def _norm_url(url: str) -> str:
    u = (url or "").strip().split("#", 1)[0]
    scheme, sep, rest = u.partition("://")
    host, slash, path = rest.partition("/")
    return f"{scheme.lower()}{sep}{host.lower()}{slash}{path}".rstrip("/")


# ---------------------------------------------------------------- the signature task

def signature_key(cfg: DedupConfig) -> str:
    """What a signature file depends on besides its input: the dedup config, its LSH shape, and this
    module's code (and datasketch's permutations). The key of the signature tasks' completion markers."""
    import datasketch

    h = hashlib.sha256(f"{cfg.digest()} {cfg.lsh_params()} {datasketch.__version__} {np.__version__}".encode())
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()[:16]


def signature_table(src: str, cfg: DedupConfig) -> pa.Table:
    """One row per document of src: id, date, length, exact / URL hashes, the signature and its band hashes."""
    mh = MinHasher(cfg)
    t = read_table(src, columns=["id", "url", "date", "text"])
    texts = t.column("text").to_pylist()
    n = len(texts)
    sigs = np.zeros((n, mh.num_perm), dtype=np.uint32)
    has_sig = np.zeros(n, dtype=bool)
    exact = np.zeros(n, dtype=np.uint64)
    for i, text in enumerate(texts):
        text = text or ""
        exact[i], s = mh.hashes(text, cfg.minhash)
        if s is not None:
            sigs[i], has_sig[i] = s, True
    urls = np.fromiter((xxhash.xxh3_64_intdigest(_norm_url(u).encode()) for u in t.column("url").to_pylist()),
                       dtype=np.uint64, count=n)
    bands = mh.band_hashes(sigs)
    cols = {"row": pa.array(np.arange(n, dtype=np.int64)), "id": t.column("id"), "date": t.column("date"),
            "length": pa.array(np.fromiter(map(len, (x or "" for x in texts)), dtype=np.int64, count=n)),
            "exact": pa.array(exact), "url": pa.array(urls), "has_sig": pa.array(has_sig),
            "sig": pa.FixedSizeBinaryArray.from_buffers(pa.binary(4 * mh.num_perm), n,
                                                         [None, pa.py_buffer(sigs.tobytes())])}
    for j in range(mh.bands):
        cols[f"band_{j}"] = pa.array(bands[:, j])
    return pa.table(cols)


def signature_task(src: str, sig_path: str, cfg_json: str, markers: str | None = None) -> dict:
    """Writes src's signature file. With ``markers`` (a folder), a completion marker there, named after
    the signature file, keyed on signature_key and holding src's digest, lets a rerun skip a file whose
    input bytes, config and code are unchanged: it would write the same bytes. Paths may be URLs: src is
    then read from one download into this node's scratch folder (digest and table)."""
    with storage.temp_copy(src) as local:
        return _signature_task(src, local, sig_path, cfg_json, markers)


def _signature_task(src: str, local: str, sig_path: str, cfg_json: str, markers: str | None) -> dict:
    cfg = DedupConfig.model_validate_json(cfg_json)
    name, lsh = stem(sig_path), list(cfg.lsh_params())
    marks = Completion(markers, signature_key(cfg)) if markers else None
    if marks is not None:
        source = file_digest(local)
        done = marks.get(name)
        if done and done.get("source") == source and storage.exists(sig_path):
            return {"src": src, "rows": done["rows"], "resumed": True, "lsh": lsh}
        marks.forget(name)  # a marker never outlives the file it vouches for
    table = signature_table(local, cfg)
    write_table(sig_path, table, compression="zstd")
    if marks is not None:
        marks.mark(name, {"src": src, "source": source, "rows": table.num_rows})
    return {"src": src, "rows": table.num_rows, "resumed": False, "lsh": lsh}
