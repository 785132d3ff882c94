"""Mixer sources: find, fingerprint and index the curated inputs of a mixture (used by crawlmix/mix/plan.py).

A source (Parquet from a crawl, WebDataset tars, JSONL) is indexed once, before anything is written: per
sample its payload members (extension, where the bytes are, size), its output ``.json`` (built once), its
token count and its exact size in a shard. Writers then only copy bytes (crawlmix/mix/write.py).

The files are read by crawlmix/mix/readers.py: tars memory-mapped and indexed from their headers alone
(crawlmix/mix/tar_index.py: a plain USTAR tar with NumPy, any other by a header walk; checksums and sizes
are verified either way), Parquet and JSONL into one UTF-8 text blob. Token counts for the builtin
tokenizers are vectorised (character classes, not a regex per text; crawlmix/mix/tokens.py). The output
``.json`` is canonical JSON from a per-file template (crawlmix/mix/members.py).
"""

from __future__ import annotations

import dataclasses
import glob
import mmap
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crawlmix.io.paths import file_digest
from crawlmix.mix.config import SourceConfig
from crawlmix.mix.members import JSON_HEAD
from crawlmix.mix.readers import index_tars, index_texts
from crawlmix.mix.tokens import TokenCounter
from crawlmix.runtime.config import ConfigError
from crawlmix.runtime.resources import PACKAGE

MAX_MEMBER_BYTES = 0o77777777777  # the largest size an 11-digit octal USTAR size field holds (8 GiB - 1)


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
    """xxh3-64 of the file (of its mapping when one is open: tars are hashed in place)."""
    import xxhash

    return xxhash.xxh3_64(mm).hexdigest() if mm is not None else file_digest(path)


# ---------------------------------------------------------------------------------------------- the index
@dataclass
class Source:
    """One source's index: per sample its payload members, output .json, size in a shard and tokens.

    Members are flat arrays: sample i's payload members are m_start[i]:m_start[i+1], each an extension
    (exts[m_ext]), an offset and a size in buffer m_buf (a tar file of the source, or for Parquet / JSONL
    the source's UTF-8 text blob). Sample i's .json at epoch e is JSON_HEAD + str(e) + json_rest[j_start[i]:
    j_start[i+1]]. Tars are memory-mapped lazily and never pickled; everything else travels with the index
    (to Ray workers, which map the tars again; forked writers share the driver's copy).
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
        return dataclasses.replace(self, cfg=cfg)

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

    # -- indexing -----------------------------------------------------------------------------------
    def error(self, msg: str) -> MixError:
        return MixError(f"source {self.name!r}: {msg}")

    def build_index(self, tokens: TokenCounter, common: dict) -> None:
        """Read the files into the member arrays and the output .json of every sample
        (crawlmix/mix/readers.py), then count tokens and tar bytes per sample."""
        read = index_tars if self.fmt == "webdataset" else index_texts
        file_of, rests, texts, img_counts = read(self, common)
        self.file_of = np.asarray(file_of, np.int32)
        self.json_rest, lens = rests.data, np.asarray(rests.lens, np.int64)
        self.j_start = np.zeros(len(lens) + 1, np.int64)
        np.cumsum(lens, out=self.j_start[1:])
        self.json_len = lens + len(JSON_HEAD) + 1
        per = self.cfg.modality == "video" and "per_video_frame" or "per_image"
        self.tokens = tokens.count(texts) + np.asarray(img_counts, np.int64) * getattr(tokens.cfg, per)
        sizes = self.m_size
        if len(sizes) and int(sizes.max()) > MAX_MEMBER_BYTES:
            raise self.error(f"a member of {int(sizes.max()):,} bytes is larger than a USTAR tar member can be")
        cum = np.zeros(len(sizes) + 1, np.int64)  # tar bytes of members [0, m)
        np.cumsum(tar_member_bytes(sizes), out=cum[1:])
        self.body_bytes = cum[self.m_start[1:]] - cum[self.m_start[:-1]]


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
        from crawlmix.samples.media_sample import write_media_sample

        print(f"source {cfg.name}: generating the bundled media sample into {folder}", file=sys.stderr)
        write_media_sample(folder)
    else:
        crawl_dir = folder.parent if folder.name in ("curated", "pairs") else folder  # text or image-text pairs
        print(f"source {cfg.name}: running the text crawl on the bundled sample into {crawl_dir}", file=sys.stderr)
        cmd = [sys.executable, "-m", "crawlmix.crawl.job", "--output", str(crawl_dir)]
        if not progress:
            cmd.append("--no-progress")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PACKAGE.parent), os.environ.get("PYTHONPATH")]))}
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        if r.returncode:
            raise MixError(f"source {cfg.name!r}: the bundled crawl failed:\n{r.stdout[-2000:]}")
