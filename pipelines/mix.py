"""crawlmix mixer: mixture YAML + curated sources -> sharded WebDataset mixes at exact ratios.

    python pipelines/mix.py --mixture mixtures/smolvlm-video.yaml --output output/mix
    python pipelines/mix.py --mixture mixtures/text-pretrain.yaml --output out/ --dry-run
    python pipelines/mix.py --mixture mixtures/smolvlm-vision.yaml --output out/ --ray --workers 8
    ray job submit --working-dir . -- python pipelines/mix.py --mixture mixtures/X.yaml --output DIR --ray

Writes OUTPUT/<stage>/shard-000000.tar ... (one sample = members sharing a dot-free key: .txt, images,
.json with source, modality, id, url, language and provenance), a shard-NNNNNN.stats.json per shard
(samples, bytes, tokens, per-source / per-modality counts, md5), a wids shardindex.json and the
resolved plan mix.lock.json per stage. Every shard holds each source's share of its samples to within
one sample; the same mixture + inputs give byte-identical shards; a rerun writes only missing shards.
Every source is read, checked and planned before the first shard is written.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import hashlib
import json
import math
import mmap
import os
import re
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from pipelines import __version__  # noqa: E402
from pipelines.config import ConfigError  # noqa: E402
from pipelines.mixture_config import (  # noqa: E402
    MixtureConfig, SourceConfig, StageConfig, TokenConfig, load_mixture, stage_weights)

IMAGE_EXTS = {"jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "ppm", "pgm", "avif"}
TEXT_EXTS = {"txt", "text"}


class MixError(ConfigError):
    """A mixture that cannot be built from its inputs (missing, empty or corrupt source, too little data)."""


# ---------------------------------------------------------------------------------------------- tar writing
# USTAR headers with fixed mode, owner, mtime: the same samples always give the same bytes.
TAR_MTIME = 0
_TAR_TEMPLATE = bytearray(512)
for _off, _val in ((100, b"0000444\0"), (108, b"0000000\0"), (116, b"0000000\0"), (136, b"%011o\0" % TAR_MTIME),
                   (148, b" " * 8), (156, b"0"), (257, b"ustar\x0000"), (265, b"crawlmix"), (297, b"crawlmix")):
    _TAR_TEMPLATE[_off:_off + len(_val)] = _val
_TAR_BASE_SUM = sum(_TAR_TEMPLATE)
_ZEROS = bytes(1024)


def tar_member_bytes(n):
    """Bytes a member of n data bytes takes in a tar (header + data padded to 512); works on numpy arrays."""
    return 512 + (n + 511) // 512 * 512


def tar_header(name: str, size: int) -> bytes:
    nb = name.encode()
    if len(nb) > 100:
        raise ValueError(f"tar member name longer than 100 bytes: {name!r}")
    h = bytearray(_TAR_TEMPLATE)
    h[0:len(nb)] = nb
    sz = b"%011o\0" % size
    h[124:136] = sz
    chk = _TAR_BASE_SUM + sum(nb) + sum(sz)
    h[148:156] = b"%06o\0 " % chk
    return bytes(h)


class TarWriter:
    """Minimal deterministic tar writer (USTAR, mode 0444, owner crawlmix, mtime 0); md5 computed on the fly.

    One write per sample (headers, data and padding joined); a background writer thread was measured
    slower (GIL hand-offs cost more than the overlap gains on small samples).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.f = open(self.path, "wb")
        self.md5 = hashlib.md5()
        self.bytes = 0

    def _w(self, blob: bytes) -> None:
        self.f.write(blob)
        self.md5.update(blob)
        self.bytes += len(blob)

    def write(self, key: str, members: list[tuple[str, bytes]]) -> int:
        parts = []
        for ext, data in members:
            parts.append(tar_header(f"{key}.{ext}", len(data)))
            parts.append(data)
            pad = -len(data) % 512
            if pad:
                parts.append(_ZEROS[:pad])
        blob = b"".join(parts)
        self._w(blob)
        return len(blob)

    def close(self) -> None:
        self._w(_ZEROS)
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            self.close()
        else:
            self.f.close()


# ---------------------------------------------------------------------------------------------- tokens
_WS_RE = re.compile(r"\w+|[^\w\s]+")  # the `tokenizers` Whitespace pre-tokenizer's pattern


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
            return np.fromiter((len(t.encode()) for t in texts), np.int64, len(texts))
        return np.fromiter((len(_WS_RE.findall(t)) for t in texts), np.int64, len(texts))


# ---------------------------------------------------------------------------------------------- sources
def _dumps(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


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


def _fingerprint(path: str) -> str:
    import xxhash

    h = xxhash.xxh3_64()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 23):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Source:
    """One source's index: per sample its output size (without .json), .json length at epoch 0 and tokens.

    Heavy content (texts, memory-mapped tars) is opened lazily and not pickled, so the index travels
    cheaply to Ray workers.
    """

    cfg: SourceConfig
    files: list[str]
    rel_files: list[str]
    fmt: str
    fingerprints: list[dict] = field(default_factory=list)
    file_of: np.ndarray = None  # file index per sample
    row_of: np.ndarray = None  # row / line / sample index inside the file
    body_bytes: np.ndarray = None  # tar bytes of the non-json members
    json_len: np.ndarray = None  # length of the output .json at epoch 0
    tokens: np.ndarray = None
    members: list = None  # tar sources: per sample [(ext, offset, size), ...], json member last if any
    file_meta: list = None  # per file provenance (Parquet schema metadata of a crawl)
    _data: dict = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def n(self) -> int:
        return len(self.file_of)

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_data"] = None
        return d

    # -- output json ------------------------------------------------------------------------------
    def _json(self, common: dict, sid, url, language, index, meta: dict, epoch: int, file_i: int) -> bytes:
        prov = dict(common, file=self.rel_files[file_i], index=index)
        if self.file_meta and self.file_meta[file_i]:
            prov["input"] = self.file_meta[file_i]
        return _dumps({"source": self.name, "modality": self.cfg.modality, "id": sid, "url": url,
                       "language": language, "epoch": epoch, "provenance": prov, "meta": meta})

    # -- loading ------------------------------------------------------------------------------------
    def _load_parquet(self, index: bool):
        import pyarrow.parquet as pq

        tf = self.cfg.text_field
        tables, file_meta = [], []
        for f in self.files:
            try:
                pf = pq.ParquetFile(f)
            except Exception as e:  # noqa: BLE001
                raise MixError(f"source {self.name!r}: cannot read Parquet {f}: {e}") from None
            names = pf.schema_arrow.names
            if tf not in names:
                raise MixError(f"source {self.name!r}: {f} has no column {tf!r} (columns: {', '.join(names[:12])})")
            cols = [c for c in names if c in (tf, "id", "url", "language", "language_score", "date", "source",
                                              "offset", "charset", "cc_languages", "extractor")]
            tables.append(pf.read(columns=cols))
            md = pf.schema_arrow.metadata or {}
            file_meta.append({k.decode(): md[k].decode() for k in (b"config_hash", b"seed", b"crawlmix_version")
                              if k in md})
        return tables, file_meta

    def _load_jsonl(self):
        files = []
        for f in self.files:
            rows = []
            opener = gzip.open if f.endswith(".gz") else open
            try:
                with opener(f, "rt", encoding="utf-8") as fh:
                    for ln, line in enumerate(fh, 1):
                        if not line.strip():
                            continue
                        try:
                            obj = json.loads(line)
                        except json.JSONDecodeError as e:
                            raise MixError(f"source {self.name!r}: {f}:{ln}: not valid JSON ({e.msg})") from None
                        if not isinstance(obj, dict) or not isinstance(obj.get(self.cfg.text_field), str):
                            raise MixError(f"source {self.name!r}: {f}:{ln}: no string field "
                                           f"{self.cfg.text_field!r}")
                        rows.append((ln, obj))
            except (OSError, EOFError, UnicodeDecodeError) as e:
                raise MixError(f"source {self.name!r}: cannot read {f}: {e}") from None
            files.append(rows)
        return files

    def _open(self) -> dict:
        if self._data is None:
            if self.fmt == "parquet":
                tables, _ = self._load_parquet(index=False)
                self._data = {"tables": [{c: t.column(c).to_pylist() if c != self.cfg.text_field else t.column(c)
                                          for c in t.column_names} for t in tables]}
            elif self.fmt == "jsonl":
                self._data = {"rows": self._load_jsonl()}
            else:
                maps = []
                for f in self.files:
                    fh = open(f, "rb")
                    maps.append(mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if os.path.getsize(f) else b"")
                    fh.close()
                self._data = {"maps": maps}
        return self._data

    # -- per-sample access (writer) -----------------------------------------------------------------
    def sample(self, i: int, epoch: int, common: dict) -> list[tuple[str, bytes]]:
        """The output members of sample i: the payload members, then .json."""
        d = self._open()
        fi, row = int(self.file_of[i]), int(self.row_of[i])
        if self.fmt == "parquet":
            t = d["tables"][fi]
            text = t[self.cfg.text_field][row].as_py()
            get = (lambda c: t[c][row] if c in t else None)
            meta = {k: get(k) for k in ("date", "language_score", "charset", "cc_languages", "extractor")
                    if get(k) is not None}
            if get("source") is not None:
                meta["warc"] = get("source")
                meta["warc_offset"] = get("offset")
            sid = get("id") or f"{Path(self.files[fi]).name}:{row}"
            js = self._json(common, sid, get("url"), get("language"), row, meta, epoch, fi)
            return [("txt", text.encode()), ("json", js)]
        if self.fmt == "jsonl":
            ln, obj = d["rows"][fi][row]
            meta = {k: v for k, v in obj.items() if k not in (self.cfg.text_field, "id", "url", "language")}
            sid = obj.get("id") or f"{Path(self.files[fi]).name}:{ln}"
            js = self._json(common, sid, obj.get("url"), obj.get("language"), ln, meta, epoch, fi)
            return [("txt", obj[self.cfg.text_field].encode()), ("json", js)]
        mm = d["maps"][fi]
        out, meta, key = [], {}, None
        for ext, off, size, k in self.members[i]:
            key = k
            if ext == "json":
                meta = json.loads(bytes(mm[off:off + size]))
            else:
                out.append((ext, mm[off:off + size]))
        out.append(("json", self._tar_json(common, meta, key, epoch, fi)))
        return out

    def _tar_json(self, common, meta, key, epoch, fi) -> bytes:
        if not isinstance(meta, dict):
            meta = {"value": meta}
        sid = meta.get("id") or meta.get("key") or key
        return self._json(common, sid, meta.get("url"), meta.get("language"), key, meta, epoch, fi)

    # -- indexing -----------------------------------------------------------------------------------
    def build_index(self, tokens: TokenCounter, common: dict) -> None:
        langs = set(self.cfg.languages) if self.cfg.languages else None
        file_of, row_of, body, jlen, texts, img_counts = [], [], [], [], [], []
        if self.fmt == "parquet":
            tables, self.file_meta = self._load_parquet(index=True)
            self._data = {"tables": [{c: t.column(c).to_pylist() if c != self.cfg.text_field else t.column(c)
                                      for c in t.column_names} for t in tables]}
            for fi, t in enumerate(self._data["tables"]):
                n = len(t[self.cfg.text_field])
                for row in range(n):
                    if langs is not None and (t.get("language") or [None] * n)[row] not in langs:
                        continue
                    mem = self.sample_rowwise(fi, row, common)
                    file_of.append(fi)
                    row_of.append(row)
                    body.append(tar_member_bytes(len(mem[0][1])))
                    jlen.append(len(mem[1][1]))
                    texts.append(mem[0][1].decode())
                    img_counts.append(0)
        elif self.fmt == "jsonl":
            self.file_meta = [None] * len(self.files)
            self._data = {"rows": self._load_jsonl()}
            for fi, rows in enumerate(self._data["rows"]):
                for row, (ln, obj) in enumerate(rows):
                    if langs is not None and obj.get("language") not in langs:
                        continue
                    mem = self.sample_rowwise(fi, row, common)
                    file_of.append(fi)
                    row_of.append(row)
                    body.append(tar_member_bytes(len(mem[0][1])))
                    jlen.append(len(mem[1][1]))
                    texts.append(obj[self.cfg.text_field])
                    img_counts.append(0)
        else:
            self.file_meta = [None] * len(self.files)
            self.members = []
            maps = self._open()["maps"]
            for fi, f in enumerate(self.files):
                mm = maps[fi]
                for key, mem in _scan_tar(f, self.name, mm):
                    if all(e == "json" for e, *_ in mem):
                        continue  # nothing but metadata: webdataset would yield an empty sample
                    mem.sort(key=lambda m: m[0] == "json")  # payload first, json last
                    meta, txt = {}, []
                    for ext, off, size, _ in mem:
                        if ext == "json":
                            try:
                                meta = json.loads(mm[off:off + size])
                            except ValueError as e:
                                raise MixError(f"source {self.name!r}: corrupt tar {f}: {key}.json is "
                                               f"not valid JSON ({e})") from None
                        elif ext.rsplit(".", 1)[-1] in TEXT_EXTS:
                            txt.append(bytes(mm[off:off + size]).decode("utf-8", "replace"))
                    if langs is not None and (meta.get("language") if isinstance(meta, dict) else None) not in langs:
                        continue
                    file_of.append(fi)
                    row_of.append(len(self.members))
                    self.members.append(mem)
                    body.append(sum(tar_member_bytes(s) for e, _, s, _ in mem if e != "json"))
                    jlen.append(len(self._tar_json(common, meta, key, 0, fi)))
                    texts.append("\n".join(txt))
                    img_counts.append(sum(1 for e, *_ in mem if e.rsplit(".", 1)[-1].lower() in IMAGE_EXTS))
            # tar samples are addressed by their position in self.members
        self.file_of = np.asarray(file_of, np.int32)
        self.row_of = np.asarray(row_of, np.int64)
        self.body_bytes = np.asarray(body, np.int64)
        self.json_len = np.asarray(jlen, np.int64)
        per = self.cfg.modality == "video" and "per_video_frame" or "per_image"
        self.tokens = tokens.count(texts) + np.asarray(img_counts, np.int64) * getattr(tokens.cfg, per)
        if self.fmt == "webdataset":
            self.row_of = np.arange(len(self.members), dtype=np.int64)

    def sample_rowwise(self, fi: int, row: int, common: dict):
        """Index-time twin of sample(): (file, row) instead of a sample id, epoch 0."""
        saved_f, saved_r = self.file_of, self.row_of
        self.file_of, self.row_of = np.asarray([fi]), np.asarray([row])
        try:
            return self.sample(0, 0, common)
        finally:
            self.file_of, self.row_of = saved_f, saved_r

    def sample_bytes(self, idx: np.ndarray, epoch: np.ndarray) -> np.ndarray:
        """Exact tar bytes of samples idx at the given epochs (the json grows by the epoch's extra digits)."""
        digits = np.where(epoch < 10, 1, np.floor(np.log10(np.maximum(epoch, 1))).astype(np.int64) + 1)
        return self.body_bytes[idx] + tar_member_bytes(self.json_len[idx] + digits - 1)


def _tar_members(mm, path: str):
    """(name, data offset, size) of each regular file in an uncompressed tar (USTAR, GNU long names, pax
    paths); checksums and sizes are verified, so garbage or a cut-off file raises tarfile.ReadError."""
    from tarfile import ReadError

    size, pos, long_name, pax_name = len(mm), 0, None, None
    arr = np.frombuffer(mm, np.uint8) if size else None
    while pos + 512 <= size:
        h = mm[pos:pos + 512]
        if h.count(0) == 512:
            return  # end-of-archive blocks
        try:
            chk = int(h[148:156].rstrip(b"\0 ").lstrip(b" ") or b"-1", 8)
        except ValueError:
            chk = -1
        if chk != int(arr[pos:pos + 512].sum(dtype=np.int64)) - sum(h[148:156]) + 256:
            raise ReadError(f"bad header checksum at byte {pos} (not a tar, or damaged)")
        raw = h[124:136]
        n = int.from_bytes(raw[1:], "big") if raw[0] & 0x80 else int(raw.rstrip(b"\0 ").lstrip(b" ") or b"0", 8)
        data = pos + 512
        if data + n > size:
            raise ReadError(f"member at byte {pos} is cut off ({n} bytes declared, file ends at {size})")
        kind = h[156:157]
        if kind == b"L":  # GNU long name: the data is the next member's name
            long_name = bytes(mm[data:data + n]).rstrip(b"\0").decode("utf-8", "replace")
        elif kind == b"x":  # pax header: take its path record
            for rec in bytes(mm[data:data + n]).split(b"\n"):
                k, _, v = rec.partition(b" ")[2].partition(b"=")
                if k == b"path":
                    pax_name = v.decode("utf-8", "replace")
        elif kind in (b"0", b"\0", b"7"):
            name = pax_name or long_name
            if name is None:
                name = h[0:100].split(b"\0", 1)[0].decode("utf-8", "replace")
                if h[257:262] == b"ustar" and h[345] != 0:
                    name = h[345:500].split(b"\0", 1)[0].decode("utf-8", "replace") + "/" + name
            yield name, data, n
            long_name = pax_name = None
        else:  # directories, links, global pax headers: not sample members
            long_name = pax_name = None
        pos = data + (n + 511) // 512 * 512
    if pos < size and bytes(mm[pos:]).count(0) != size - pos:
        raise ReadError(f"cut off inside a header at byte {pos}")


def _scan_tar(path: str, source: str, mm):
    """(key, [(ext, data offset, size, key), ...]) per sample, grouping consecutive members by key
    (webdataset's rule: the key is the path up to the first dot of the file name)."""
    from tarfile import ReadError

    groups: list = []
    try:
        for name, off, n in _tar_members(mm, path):
            slash = name.rfind("/") + 1
            dot = name.find(".", slash)
            if dot < 0:
                raise ReadError(f"member {name} has no extension (not a WebDataset tar)")
            key, ext = name[:dot].replace("/", "_"), name[dot + 1:]
            if groups and groups[-1][0] == key:
                groups[-1][1].append((ext, off, n, key))
            else:
                groups.append((key, [(ext, off, n, key)]))
    except ReadError as e:
        raise MixError(f"source {source!r}: corrupt tar {path}: {e}") from None
    return groups


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
    rel = []
    for f in files:
        try:
            rel.append(os.path.relpath(f, root) if not os.path.relpath(f, root).startswith("..") else f)
        except ValueError:
            rel.append(f)
    fps = [{"path": r, "bytes": os.path.getsize(f), "xxh3": _fingerprint(f)} for f, r in zip(files, rel)]
    return Source(cfg=cfg, files=files, rel_files=rel, fmt=fmts.pop(), fingerprints=fps)


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


# ---------------------------------------------------------------------------------------------- planning
def _rng(seed: int, *parts) -> np.random.Generator:
    import zlib

    return np.random.default_rng([seed & 0xFFFFFFFF, *(zlib.crc32(str(p).encode()) for p in parts)])


class Drawer:
    """Which sample is a source's k-th draw: a seeded subset (max_samples), reshuffled every epoch."""

    def __init__(self, src: Source, seed: int, stage: str):
        self.src, self.seed, self.stage = src, seed, stage
        cfg = src.cfg
        base = _rng(seed, stage, cfg.name, "order").permutation(src.n) if cfg.shuffle else np.arange(src.n)
        self.pool = min(src.n, cfg.max_samples or src.n)
        self.subset = base[:self.pool]
        self.cap = int(math.floor(self.pool * cfg.max_epochs + 1e-9))
        self._orders: dict[int, np.ndarray] = {}

    def order(self, epoch: int) -> np.ndarray:
        o = self._orders.get(epoch)
        if o is None:
            if epoch == 0 or not self.src.cfg.shuffle:
                o = self.subset
            else:
                o = self.subset[_rng(self.seed, self.stage, self.src.cfg.name, "epoch", epoch).permutation(self.pool)]
            if len(self._orders) > 4:
                self._orders.pop(min(self._orders))
            self._orders[epoch] = o
        return o

    def draws(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        k = np.arange(start, start + count, dtype=np.int64)
        ep, pos = k // self.pool, k % self.pool
        idx = np.empty(count, np.int64)
        for e in np.unique(ep):
            m = ep == e
            idx[m] = self.order(int(e))[pos[m]]
        return idx, ep


@dataclass
class ShardPlan:
    index: int
    start: int  # global sample number of the first sample
    src: np.ndarray  # source position per sample
    idx: np.ndarray  # sample index inside the source
    epoch: np.ndarray
    counts: np.ndarray  # samples per source
    nbytes: int  # exact tar size
    tokens: int

    def digest(self, stage_hash: str) -> str:
        h = hashlib.sha256(stage_hash.encode())
        for a in (self.src.astype(np.int32), self.idx.astype(np.int64), self.epoch.astype(np.int32)):
            h.update(a.tobytes())
        h.update(str(self.start).encode())
        return h.hexdigest()[:16]


class Planner:
    """Stratified interleaving with exact per-shard ratios.

    Each shard of S samples gives source i floor(w_i*S) or ceil(w_i*S) samples (so within one sample of
    its share); which sources get the ceil is decided by their cumulative deficit (Megatron's
    "most-behind source next", one shard at a time), so the whole stage stays within about one sample too.
    Inside a shard, samples are spread evenly (source i's t-th sample at position ~ (t+0.5)*S/n_i).
    """

    def __init__(self, stage: StageConfig, sources: list[Source], weights: dict[str, float], seed: int):
        self.stage, self.sources = stage, sources
        self.w = np.array([weights[s.name] for s in sources], np.float64)
        self.drawers = [Drawer(s, seed, stage.name) for s in sources]

    def _apportion(self, S: int, placed: int, C: np.ndarray) -> np.ndarray:
        T = self.w * S
        base = np.floor(T + 1e-9).astype(np.int64)
        r = int(S - base.sum())
        if r > 0:
            frac = T - base
            deficit = self.w * (placed + S) - (C + base)
            cand = np.flatnonzero(frac > 1e-9)
            if len(cand) < r:
                cand = np.arange(len(self.w))
            order = sorted(cand, key=lambda i: (-round(deficit[i], 9), -round(frac[i], 9), i))
            base[order[:r]] += 1
        return base

    def _materialize(self, counts: np.ndarray, C: np.ndarray):
        S = int(counts.sum())
        src = np.repeat(np.arange(len(counts)), counts)
        t = np.concatenate([np.arange(c) for c in counts]) if S else np.zeros(0, np.int64)
        ideal = (t + 0.5) / counts[src]
        order = np.lexsort((src, ideal))
        src = src[order]
        idx = np.empty(S, np.int64)
        ep = np.empty(S, np.int64)
        nbytes, tokens = 1024, 0
        for i, c in enumerate(counts):
            if not c:
                continue
            m = src == i
            di, de = self.drawers[i].draws(int(C[i]), int(c))
            idx[m], ep[m] = di, de
            nbytes += int(self.sources[i].sample_bytes(di, de).sum())
            tokens += int(self.sources[i].tokens[di].sum())
        return src, idx, ep, nbytes, tokens

    def _check_caps(self, counts: np.ndarray, C: np.ndarray, total: int) -> None:
        over = np.flatnonzero(C + counts > [d.cap for d in self.drawers])
        if len(over):
            i = int(over[0])
            d = self.drawers[i]
            need = int(math.ceil(self.w[i] * total))
            raise MixError(
                f"stage {self.stage.name!r}: source {self.sources[i].name!r} is too small for its share: weight "
                f"{self.w[i]:.4g} of {total} samples needs ~{need} draws, but it has {d.pool} samples "
                f"x max_epochs {d.src.cfg.max_epochs:g} = {d.cap} allowed; lower its weight or the budget, "
                f"raise max_epochs, or add data")

    def shards(self, total: int, token_budget: int | None = None):
        """Yield ShardPlans covering `total` samples (or until `token_budget` tokens are reached)."""
        lim = self.stage.shards
        C = np.zeros(len(self.sources), np.int64)
        placed, tok, s = 0, 0, 0
        while placed < total and (token_budget is None or tok < token_budget):
            S = min(lim.max_samples, total - placed)
            counts = self._apportion(S, placed, C)
            self._check_caps(counts, C, total)
            plan = self._materialize(counts, C)
            if lim.max_bytes and plan[3] > lim.max_bytes and S > 1:
                lo, hi = 1, S - 1  # largest S that fits; a single oversized sample gets a shard of its own
                best = None
                while lo <= hi:
                    mid = (lo + hi) // 2
                    c2 = self._apportion(mid, placed, C)
                    p2 = self._materialize(c2, C)
                    if p2[3] <= lim.max_bytes:
                        best, lo = (c2, p2), mid + 1
                    else:
                        hi = mid - 1
                if best is None:
                    c2 = self._apportion(1, placed, C)
                    best = (c2, self._materialize(c2, C))
                counts, plan = best
            src, idx, ep, nbytes, tokens = plan
            yield ShardPlan(s, placed, src, idx, ep, counts, nbytes, tokens)
            C += counts
            placed += int(counts.sum())
            tok += tokens
            s += 1


@dataclass
class StagePlan:
    stage: StageConfig
    sources: list[Source]
    weights: dict[str, float]
    samples: int
    shards: int
    bytes: int
    tokens: int
    draws: np.ndarray
    tokens_per_source: np.ndarray
    max_dev: float  # worst |count - weight * shard size| over shards and sources
    stage_hash: str
    shard_digests: list[str]

    def planner(self, seed):
        return Planner(self.stage, self.sources, self.weights, seed)


def plan_stage(mix: MixtureConfig, stage: StageConfig, sources: list[Source], fingerprint: str) -> StagePlan:
    weights = stage_weights(mix, stage)
    active = [s for s in sources if s.name in weights]
    for s in active:
        if s.n == 0:
            filt = f" after the languages filter {s.cfg.languages}" if s.cfg.languages else ""
            raise MixError(f"stage {stage.name!r}: source {s.name!r} is empty: 0 samples in {len(s.files)} "
                           f"file(s){filt} ({', '.join(s.rel_files[:3])})")
    planner = Planner(stage, active, weights, mix.seed)
    w = planner.w
    if stage.budget.samples:
        total = stage.budget.samples
        # early, readable check before the exact one below
        planner._check_caps(np.floor(w * total + 1e-9).astype(np.int64), np.zeros(len(w), np.int64), total)
    else:  # a token budget: walk the interleaved stream until the tokens are reached
        max_total = int(min(d.cap / wi for d, wi in zip(planner.drawers, w)))
        if max_total < 1:
            raise MixError(f"stage {stage.name!r}: not enough data for one sample")
        reached, total = 0, None
        try:
            for sp in planner.shards(max_total):
                toks = np.empty(len(sp.src), np.int64)
                for i, src in enumerate(planner.sources):
                    m = sp.src == i
                    toks[m] = src.tokens[sp.idx[m]]
                cum = reached + np.cumsum(toks)
                hit = np.flatnonzero(cum >= stage.budget.tokens)
                if len(hit):
                    total = sp.start + int(hit[0]) + 1
                    break
                reached = int(cum[-1])
        except MixError:
            pass
        if total is None:
            raise MixError(f"stage {stage.name!r}: token budget {stage.budget.tokens:,} is out of reach: the sources "
                           f"give about {reached:,} tokens before one of them runs past its max_epochs; lower the "
                           f"budget, raise max_epochs or add data")
        planner = Planner(stage, active, weights, mix.seed)
    stage_hash = hashlib.sha256(f"{fingerprint}:{stage.name}".encode()).hexdigest()[:16]
    draws = np.zeros(len(active), np.int64)
    toks = np.zeros(len(active), np.int64)
    nshards = nbytes = ntok = 0
    max_dev = 0.0
    digests = []
    for sp in planner.shards(total):
        S = len(sp.src)
        max_dev = max(max_dev, float(np.abs(sp.counts - w * S).max()))
        draws += sp.counts
        for i in range(len(active)):
            toks[i] += int(active[i].tokens[sp.idx[sp.src == i]].sum())
        nshards += 1
        nbytes += sp.nbytes
        ntok += sp.tokens
        digests.append(sp.digest(stage_hash))
    return StagePlan(stage, active, weights, total, nshards, nbytes, ntok, draws, toks, max_dev, stage_hash, digests)


# ---------------------------------------------------------------------------------------------- writing
def write_shard(stage_dir: str, name: str, sp: ShardPlan, sources: list[Source], common: dict, digest: str) -> dict:
    """Write one shard atomically (tmp + rename), then its stats json; returns the stats."""
    stage_dir = Path(stage_dir)
    path = stage_dir / name
    tmp = path.with_name(path.name + ".tmp")
    per_src: dict = {}
    mods: Counter = Counter()
    with TarWriter(tmp) as tw:
        for j in range(len(sp.src)):
            s = sources[int(sp.src[j])]
            i, e = int(sp.idx[j]), int(sp.epoch[j])
            n = tw.write(f"{sp.start + j:010d}", s.sample(i, e, common))
            st = per_src.setdefault(s.name, {"samples": 0, "bytes": 0, "tokens": 0})
            st["samples"] += 1
            st["bytes"] += n
            st["tokens"] += int(s.tokens[i])
            mods[s.cfg.modality] += 1
    if tw.bytes != sp.nbytes:  # the planner sized shards from the index; both must agree exactly
        raise RuntimeError(f"{path}: wrote {tw.bytes} bytes, planned {sp.nbytes}")
    os.replace(tmp, path)
    stats = {"shard": name, "samples": len(sp.src), "bytes": tw.bytes, "tokens": sp.tokens,
             "first_key": f"{sp.start:010d}", "last_key": f"{sp.start + len(sp.src) - 1:010d}",
             "sources": dict(sorted(per_src.items())), "modalities": dict(sorted(mods.items())),
             "md5": tw.md5.hexdigest(), "plan": digest, "mixture_hash": common["mixture_hash"],
             "crawlmix_version": __version__}
    _write_json(stage_dir / _stats_name(name), stats)
    return stats


def _stats_name(shard: str) -> str:
    return shard[:-4] + ".stats.json"


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def _done(stage_dir: Path, name: str, digest: str) -> dict | None:
    p = stage_dir / _stats_name(name)
    try:
        st = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    tar = stage_dir / name
    if st.get("plan") == digest and tar.exists() and tar.stat().st_size == st.get("bytes"):
        return st
    return None


def _brace(pattern: str, n: int) -> str:
    first, last = pattern.format(index=0), pattern.format(index=n - 1)
    if n == 1:
        return first
    i = 0
    while i < len(first) and first[i] == last[i]:
        i += 1
    while i > 0 and first[i - 1].isdigit():
        i -= 1
    j = 0
    while j < len(first) - i and first[-1 - j] == last[-1 - j] and not first[-1 - j].isdigit():
        j += 1
    return f"{first[:i]}{{{first[i:len(first) - j]}..{last[i:len(last) - j]}}}{first[len(first) - j:]}"


# ---------------------------------------------------------------------------------------------- the job
def _lock(mix: MixtureConfig, plan: StagePlan, common: dict) -> dict:
    st = plan.stage
    srcs = {}
    for i, s in enumerate(plan.sources):
        d = plan.draws[i]
        pool = min(s.n, s.cfg.max_samples or s.n)
        srcs[s.name] = {
            "modality": s.cfg.modality, "format": s.fmt, "path": s.cfg.path, "weight": s.cfg.weight,
            "target_share": round(plan.weights[s.name], 9), "samples": int(d),
            "realised_share": round(int(d) / plan.samples, 9), "tokens": int(plan.tokens_per_source[i]),
            "available": s.n, "pool": pool, "epochs_used": round(int(d) / pool, 4),
            "max_epochs": s.cfg.max_epochs, "files": s.fingerprints}
    mods: dict = {}
    for s, v in srcs.items():
        m = mods.setdefault(v["modality"], {"target_share": 0.0, "samples": 0, "tokens": 0})
        m["target_share"] = round(m["target_share"] + v["target_share"], 9)
        m["samples"] += v["samples"]
        m["tokens"] += v["tokens"]
    for m in mods.values():
        m["realised_share"] = round(m["samples"] / plan.samples, 9)
    return {"mixture": mix.name, "stage": st.name, "mixture_hash": common["mixture_hash"], "seed": mix.seed,
            "crawlmix_version": __version__, "tokenizer": common["tokenizer"], "budget": st.budget.model_dump(),
            "shard_limits": st.shards.model_dump(), "samples": plan.samples, "tokens": plan.tokens,
            "bytes": plan.bytes, "shards": plan.shards, "shard_pattern": _brace(st.shards.pattern, plan.shards),
            "max_shard_deviation": round(plan.max_dev, 6), "stage_hash": plan.stage_hash,
            "sources": srcs, "modalities": dict(sorted(mods.items())), "shard_plans": plan.shard_digests}


def sample_common(mix: MixtureConfig) -> dict:
    """Provenance shared by every sample's .json (the stage is the shard's folder)."""
    return {"mixture": mix.name, "mixture_hash": mix.digest(), "seed": mix.seed, "crawlmix_version": __version__}


def prepare(mix: MixtureConfig, root: Path, stages: list[str] | None = None, progress: bool = True):
    """Read, index and plan every selected stage; raises MixError/ConfigError before anything is written."""
    chosen = [st for st in mix.stages if not stages or st.name in stages]
    if stages:
        unknown = set(stages) - {st.name for st in mix.stages}
        if unknown:
            raise ConfigError(f"--stage {', '.join(sorted(unknown))}: not in the mixture "
                              f"({', '.join(st.name for st in mix.stages)})")
    tokens = TokenCounter(mix.tokens, root)
    mix_hash = mix.digest()
    common = sample_common(mix)
    cache: dict = {}
    plans = []
    for st in chosen:
        weights = stage_weights(mix, st)
        srcs = []
        for cfg in st.sources:
            if cfg.name not in weights:
                continue
            key = json.dumps({k: v for k, v in cfg.model_dump().items()
                              if k in ("path", "format", "languages", "text_field", "modality")}, sort_keys=True)
            if key not in cache:
                src = resolve_source(cfg, root, progress)
                src.build_index(tokens, common)
                cache[key] = src
            base = cache[key]
            src = Source(cfg=cfg, files=base.files, rel_files=base.rel_files, fmt=base.fmt,
                         fingerprints=base.fingerprints, file_of=base.file_of, row_of=base.row_of,
                         body_bytes=base.body_bytes, json_len=base.json_len, tokens=base.tokens,
                         members=base.members, file_meta=base.file_meta, _data=base._data)
            if src.name != base.name or src.cfg.modality != base.cfg.modality:
                src.build_index(tokens, common)  # the name / modality inside each .json differ
            srcs.append(src)
        fp = hashlib.sha256(json.dumps([mix_hash, tokens.spec, [s.fingerprints for s in srcs]],
                                       sort_keys=True).encode()).hexdigest()[:16]
        plans.append(plan_stage(mix, st, srcs, fp))
    return plans, tokens


def run(mix: MixtureConfig, out: Path, root: Path = Path("."), stages=None, overwrite=False, progress=True,
        use_ray=False, workers=1, dry_run=False) -> list[dict]:
    from tqdm import tqdm

    t0 = time.perf_counter()
    plans, tokens = prepare(mix, root, stages, progress)
    results = []
    for plan in plans:
        common = sample_common(mix)
        lock = _lock(mix, plan, dict(common, tokenizer=tokens.spec))
        stage_dir = out / plan.stage.name
        old = stage_dir / "mix.lock.json"
        if not dry_run and old.exists() and not overwrite:
            prev = json.loads(old.read_text())
            if prev.get("stage_hash") != plan.stage_hash or prev.get("shard_plans") != plan.shard_digests:
                raise MixError(f"{stage_dir} holds a mix of another mixture or other inputs (stage hash "
                               f"{prev.get('stage_hash')} != {plan.stage_hash}); use a new --output or --overwrite")
        results.append((plan, lock, common, stage_dir))
    summaries = []
    for plan, lock, common, stage_dir in results:
        if dry_run:
            summaries.append({"lock": lock, "written": 0, "skipped": 0, "wall_s": 0.0, "dry_run": True})
            continue
        ts = time.perf_counter()
        if overwrite and stage_dir.exists():
            for p in stage_dir.iterdir():
                if p.name.endswith((".tar", ".stats.json", ".tmp")) or p.name in ("mix.lock.json", "shardindex.json"):
                    p.unlink()
        stage_dir.mkdir(parents=True, exist_ok=True)
        for p in stage_dir.glob("*.tmp"):
            p.unlink()
        _write_json(stage_dir / "mix.lock.json", lock)
        pattern = plan.stage.shards.pattern
        stats_by_index: dict = {}
        written = skipped = 0
        bar = tqdm(total=plan.shards, unit="shard", desc=f"mix {plan.stage.name}", disable=not progress)
        todo = []
        pool = None
        if not use_ray and workers > 1 and plan.shards > 1 and hasattr(os, "fork"):
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            global _FORK_SOURCES
            _FORK_SOURCES = plan.sources  # inherited by the forked workers, never pickled
            pool = ProcessPoolExecutor(min(workers, plan.shards), mp_context=multiprocessing.get_context("fork"))
        flush = (lambda: _ray_write(todo, stage_dir, plan, common, workers, stats_by_index, bar)) if use_ray else \
            (lambda: _pool_write(pool, todo, stage_dir, common, stats_by_index, bar))
        try:
            for sp in plan.planner(mix.seed).shards(plan.samples):
                name = pattern.format(index=sp.index)
                digest = plan.shard_digests[sp.index]
                st = _done(stage_dir, name, digest)
                if st is not None:
                    stats_by_index[sp.index] = st
                    skipped += 1
                    bar.update(1)
                    continue
                if not use_ray and pool is None:
                    stats_by_index[sp.index] = write_shard(str(stage_dir), name, sp, plan.sources, common, digest)
                    written += 1
                    bar.update(1)
                else:
                    todo.append((sp, name, digest))
                    if len(todo) >= 4 * max(1, workers):
                        written += flush()
                        todo = []
            if todo:
                written += flush()
        finally:
            if pool is not None:
                pool.shutdown()
        bar.close()
        shardlist = [{"url": s["shard"], "nsamples": s["samples"], "filesize": s["bytes"], "md5sum": s["md5"]}
                     for _, s in sorted(stats_by_index.items())]
        _write_json(stage_dir / "shardindex.json", {"__kind__": "wids-shard-index-v1", "wids_version": 1,
                                                   "name": f"{mix.name}/{plan.stage.name}", "shardlist": shardlist})
        realised = {}
        for s in stats_by_index.values():
            for k, v in s["sources"].items():
                realised[k] = realised.get(k, 0) + v["samples"]
        summaries.append({"lock": lock, "written": written, "skipped": skipped, "realised": realised,
                          "wall_s": round(time.perf_counter() - ts, 3),
                          "bytes": sum(s["bytes"] for s in stats_by_index.values()),
                          "out": str(stage_dir)})
    for s in summaries:
        s["total_wall_s"] = round(time.perf_counter() - t0, 3)
    return summaries


_ACTORS: list = []
_FORK_SOURCES: list = []


def _fork_write(stage_dir, name, sp, common, digest) -> dict:
    return write_shard(stage_dir, name, sp, _FORK_SOURCES, common, digest)


def _pool_write(pool, todo, stage_dir, common, stats_by_index, bar) -> int:
    futs = {pool.submit(_fork_write, str(stage_dir), name, sp, common, digest): sp.index for sp, name, digest in todo}
    for f in futs:
        stats_by_index[futs[f]] = f.result()
        bar.update(1)
    return len(todo)


def _ray_write(todo, stage_dir, plan, common, workers, stats_by_index, bar) -> int:
    import ray

    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, log_to_driver=True)
        else:
            ray.init(address="local", num_cpus=max(1, workers), include_dashboard=False, log_to_driver=True,
                     runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    key = (id(plan), str(stage_dir))
    if not _ACTORS or _ACTORS[0][0] != key:
        _ACTORS.clear()

        @ray.remote(num_cpus=1)
        class ShardWriter:
            def __init__(self, sources):
                self.sources = sources

            def write(self, stage_dir, name, sp, common, digest):
                return write_shard(stage_dir, name, sp, self.sources, common, digest)

        ref = ray.put(plan.sources)
        _ACTORS.append((key, [ShardWriter.remote(ref) for _ in range(max(1, workers))]))
    actors = _ACTORS[0][1]
    pending = {}
    for n, (sp, name, digest) in enumerate(todo):
        pending[actors[n % len(actors)].write.remote(str(stage_dir), name, sp, common, digest)] = sp.index
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        for r in done:
            stats_by_index[pending.pop(r)] = ray.get(r)
            bar.update(1)
    return len(todo)


def summary(res: dict) -> str:
    lk = res["lock"]
    lines = [f"stage {lk['stage']} ({lk['mixture']}, mixture {lk['mixture_hash']}, seed {lk['seed']}): "
             f"{lk['samples']:,} samples, {lk['tokens']:,} tokens ({lk['tokenizer']}), "
             f"{lk['bytes'] / 1e6:.2f} MB in {lk['shards']} shard(s) {lk['shard_pattern']}"]
    b = lk["budget"]
    if b.get("tokens"):
        lines.append(f"token budget {b['tokens']:,}: realised {lk['tokens']:,}")
    if res.get("dry_run"):
        lines.append("dry run: nothing written")
    else:
        mbps = res["bytes"] / 1e6 / res["wall_s"] if res["wall_s"] else 0.0
        lines.append(f"wrote {res['written']} shard(s), kept {res['skipped']} finished, {res['wall_s']}s "
                     f"({mbps:.1f} MB/s) -> {res['out']}/")
    realised = res.get("realised") or {k: v["samples"] for k, v in lk["sources"].items()}
    n = lk["samples"]
    lines += ["", f"{'source':<18}{'modality':<13}{'target':>9}{'realised':>10}{'samples':>9}{'epochs':>8}"
                  f"{'tokens':>11}"]
    for k, v in lk["sources"].items():
        lines.append(f"{k:<18}{v['modality']:<13}{v['target_share'] * 100:>8.2f}%{realised.get(k, 0) / n * 100:>9.2f}%"
                     f"{realised.get(k, 0):>9}{v['epochs_used']:>8.2f}{v['tokens']:>11,}")
    lines += ["", f"{'modality':<31}{'target':>9}{'realised':>10}{'samples':>9}"]
    for k, v in lk["modalities"].items():
        r = sum(realised.get(s, 0) for s, sv in lk["sources"].items() if sv["modality"] == k)
        lines.append(f"{k:<31}{v['target_share'] * 100:>8.2f}%{r / n * 100:>9.2f}%{r:>9}")
    lines.append(f"\nworst shard deviation from the weights: {lk['max_shard_deviation']:.3f} samples (limit 1)")
    return "\n".join(lines)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="mix.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="See docs/mix.md for the mixture YAML reference.")
    ap.add_argument("--mixture", required=True, metavar="YAML", help="mixture file (e.g. mixtures/smolvlm-video.yaml)")
    ap.add_argument("--output", metavar="DIR", help="output folder (default: output/mix/<mixture name>)")
    ap.add_argument("--root", metavar="DIR", default=".",
                    help="relative source paths resolve against this folder (default: the current directory)")
    ap.add_argument("--stage", action="append", metavar="NAME", help="build only this stage (repeatable)")
    ap.add_argument("--dry-run", action="store_true", help="validate, read and plan; print the plan; write nothing")
    ap.add_argument("--overwrite", action="store_true", help="delete the stage's shards and rebuild them")
    ap.add_argument("--ray", action="store_true", help="write shards with Ray actors (a local Ray, or RAY_ADDRESS)")
    ap.add_argument("--workers", type=int, default=None,
                    help="shard writers: forked processes (default 1), or Ray actors with --ray (default: all "
                         f"cores, {os.cpu_count()} here); the output does not depend on it")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    try:
        mix = load_mixture(a.mixture)
        out = Path(a.output) if a.output else ROOT / "output" / "mix" / mix.name
        res = run(mix, out, Path(a.root), stages=a.stage, overwrite=a.overwrite, progress=not a.no_progress,
                  use_ray=a.ray, dry_run=a.dry_run,
                  workers=max(1, a.workers or ((os.cpu_count() or 1) if a.ray else 1)))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"crawlmix {__version__} mix {mix.name}  mixture={mix.digest()}  seed={mix.seed}")
    for r in res:
        print()
        print(summary(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
