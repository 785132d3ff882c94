"""Mixer sources: find, fingerprint and index the curated inputs of a mixture (used by crawlmix/mix/plan.py).

A source (Parquet from a crawl, WebDataset tars, JSONL) is indexed once, before anything is written: per
sample its payload members (extension, where the bytes are, size), its output ``.json`` (built once), its
token count and its exact size in a shard. Writers then only copy bytes (crawlmix/mix/write.py).

The files are read by crawlmix/mix/readers.py: tars memory-mapped and indexed from their headers alone
(crawlmix/mix/tar_index.py: a plain USTAR tar with NumPy, any other by a header walk; checksums and sizes
are verified either way), Parquet and JSONL into one UTF-8 text blob. Token counts for the builtin
tokenizers are vectorised (character classes, not a regex per text; crawlmix/mix/tokens.py). The output
``.json`` is canonical JSON from a per-file template (crawlmix/mix/members.py). A source behind a URL is read
from its copy in this node's local scratch (crawlmix/mix/fetch.py), named and fingerprinted as a local file.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import mmap
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crawlmix.io.paths import file_digest
from crawlmix.mix import fetch
from crawlmix.mix.config import SourceConfig
from crawlmix.mix.interleaved_source import index_interleaved
from crawlmix.mix.layout import has_media, lay_out
from crawlmix.mix.members import JSON_HEAD
from crawlmix.mix.readers import index_tars, index_texts
from crawlmix.mix.tokens import TokenCounter
from crawlmix.runtime import storage
from crawlmix.runtime.config import ConfigError
from crawlmix.runtime.resources import PACKAGE
from crawlmix.runtime.runstate import check_inputs

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
def _expand(pattern: str, interleaved: bool = False) -> list[str]:
    """The files a source path names. A folder means its files; a crawl's output folder its curated/ (for an
    interleaved source its interleaved/, whose Parquet documents sit beside WebDataset copies: Parquet only)."""
    import braceexpand

    out = []
    for p in braceexpand.braceexpand(pattern):
        if storage.is_remote(p):
            out += _expand_url(p, interleaved)
        elif any(c in p for c in "*?["):
            out += sorted(glob.glob(p, recursive=True))
        elif os.path.isdir(p):
            sub = os.path.join(p, "interleaved" if interleaved else "curated")
            d = sub if os.path.isdir(sub) else p
            exts = ("*.parquet",) if interleaved else ("*.parquet", "*.tar", "*.jsonl", "*.jsonl.gz")
            out += sorted(f for ext in exts for f in glob.glob(os.path.join(d, ext)))
        elif os.path.exists(p):
            out.append(p)
    return list(dict.fromkeys(f for f in out if storage.is_remote(f) or os.path.isfile(f)))


def _expand_url(p: str, interleaved: bool) -> list[str]:
    """_expand for one URL (no braces): a glob lists the keys under its literal prefix, a folder (a prefix)
    its files (a crawl's curated/ or interleaved/ when it has one), a file is itself."""
    if any(c in p for c in "*?["):
        return list(storage.iglob(p))
    if storage.isfile(p):
        return [p]
    exts = (".parquet",) if interleaved else (".parquet", ".tar", ".jsonl", ".jsonl.gz")
    for d in (storage.join(p, "interleaved" if interleaved else "curated"), p):
        found = list(storage.ls(d))
        if found:
            return [f for f in found if f.endswith(exts)]
    return []


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
    """One source's index: per sample its parts, output members, output .json, size in a shard and tokens.

    Parts (q_*, from crawlmix/mix/readers.py) are the sample's payload as the source has it: sample i's
    parts are q_start[i]:q_start[i+1], each a kind (text / image / other), an extension (exts[q_ext]) and
    an offset and size in buffer q_buf (a tar file of the source, or an in-memory blob). The output members
    (m_*, from crawlmix/mix/layout.py) are what the layout makes of them: sample i's members are
    m_start[i]:m_start[i+1], each an extension (out_exts[m_ext]), a size and pieces p_start[m]:p_start[m+1]
    (offset in the member, buffer, offset, size; buffers() ends with the layout's framing buffer; a nested
    tar header is a piece the writer makes, see layout.NESTED_HEADER). Sample
    i's .json at epoch e is JSON_HEAD + str(e) + json_rest[j_start[i]:j_start[i+1]]. Tars are memory-mapped
    lazily and never pickled; everything else travels with the index (to Ray workers, which map the tars
    again; forked writers share the driver's copy).
    """

    cfg: SourceConfig
    files: list[str]
    rel_files: list[str]
    fmt: str
    layout: str = "uniform"
    fingerprints: list[dict] = field(default_factory=list)
    stamps: list = None  # per file: the version of a remote file (crawlmix/mix/fetch.py), None for a local one
    file_of: np.ndarray = None  # file index per sample
    body_bytes: np.ndarray = None  # tar bytes of the payload members per sample
    json_len: np.ndarray = None  # length of the output .json at epoch 0
    tokens: np.ndarray = None
    exts: list = None  # part extensions (q_ext indexes this)
    q_start: np.ndarray = None  # n + 1: part range per sample
    q_ext: np.ndarray = None
    q_kind: np.ndarray = None  # readers.TEXT / IMAGE / OTHER
    q_buf: np.ndarray = None  # which buffer: a tar file index, or an in-memory blob
    q_off: np.ndarray = None
    q_size: np.ndarray = None
    q_cont: np.ndarray = None  # the part directly follows the previous one in its tar (see readers._contiguous)
    out_exts: list = None  # output member extensions (m_ext indexes this)
    m_start: np.ndarray = None  # n + 1: output member range per sample
    m_ext: np.ndarray = None
    m_size: np.ndarray = None
    p_start: np.ndarray = None  # members + 1: piece range per member
    p_dst: np.ndarray = None  # offset in the member
    p_buf: np.ndarray = None
    p_off: np.ndarray = None
    p_size: np.ndarray = None
    p_cont: np.ndarray = None  # copy with the previous piece in one run (layout 'source', see _contiguous)
    p_aux: np.ndarray = None  # a nested tar header piece (p_buf layout.NESTED_HEADER): its member's size
    nested_names: list = None  # names of nested tar members (p_off of a header piece indexes this)
    extra: bytes = b""  # the layout's framing buffer (separators), the last of buffers()
    with_images: bool = False  # the uniform layout's .images.tar member is there
    json_rest: bytes | bytearray = b""
    j_start: np.ndarray = None  # n + 1
    blobs: list | None = None  # Parquet / JSONL / interleaved: the parts' bytes in memory
    file_meta: list = None  # per file provenance (Parquet schema metadata of a crawl)
    bad: list = field(default_factory=list)  # rows skipped as unusable: "file row N (id): reason"
    bad_rows: int = 0
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

    def local_path(self, i: int) -> str:
        """A local file holding file i's bytes: the file, or (a URL) its copy in this node's scratch, fetched
        on first use (on a writer of another node too, checked against the digest the driver indexed)."""
        f = self.files[i]
        if not storage.is_remote(f):
            return f
        digest = self.fingerprints[i]["xxh3"] if i < len(self.fingerprints) else None
        return fetch.local_copy(f, self.stamps[i] if self.stamps else None, digest)

    def base_buffers(self) -> list:
        """What q_buf indexes: the tar files memory-mapped (opened on first use), or the in-memory blobs."""
        if self.fmt != "webdataset":
            return self.blobs
        if self._maps is None:
            self._maps = [_map(self.local_path(i)) for i in range(len(self.files))]
        return self._maps

    def buffers(self) -> list:
        """What p_buf indexes: base_buffers() and the layout's framing buffer."""
        return [*self.base_buffers(), self.extra]

    def sample_bytes(self, idx: np.ndarray, epoch: np.ndarray) -> np.ndarray:
        """Exact tar bytes of samples idx at the given epochs (the json grows by the epoch's extra digits)."""
        return self.body_bytes[idx] + tar_member_bytes(self.json_len[idx] + digits(epoch) - 1)

    @property
    def has_media(self) -> bool:
        return has_media(self)

    def laid_out(self, with_images: bool) -> Source:
        """The source with its output members for a stage that does (not) carry .images.tar members."""
        if self.layout == "source" or with_images == self.with_images:
            return self
        other = dataclasses.replace(self)
        other._lay_out(with_images)
        return other

    # -- indexing -----------------------------------------------------------------------------------
    def error(self, msg: str) -> MixError:
        return MixError(f"source {self.name!r}: {msg}")

    def build_index(self, tokens: TokenCounter, common: dict) -> None:
        """Read the files into the part arrays and the output .json of every sample
        (crawlmix/mix/readers.py), count tokens, then lay out the output members."""
        if self.cfg.modality == "interleaved":
            read = index_interleaved
        else:
            read = index_tars if self.fmt == "webdataset" else index_texts
        file_of, rests, texts, img_counts = read(self, common)
        self.file_of = np.asarray(file_of, np.int32)
        self.json_rest, lens = rests.data, np.asarray(rests.lens, np.int64)
        self.j_start = np.zeros(len(lens) + 1, np.int64)
        np.cumsum(lens, out=self.j_start[1:])
        self.json_len = lens + len(JSON_HEAD) + 1
        per = self.cfg.modality == "video" and "per_video_frame" or "per_image"
        self.tokens = tokens.count(texts) + np.asarray(img_counts, np.int64) * getattr(tokens.cfg, per)
        sizes = self.q_size
        if len(sizes) and int(sizes.max()) > MAX_MEMBER_BYTES:
            raise self.error(f"a member of {int(sizes.max()):,} bytes is larger than a USTAR tar member can be")
        self._lay_out(self.has_media)

    def _lay_out(self, with_images: bool) -> None:
        self.with_images = with_images
        lay_out(self, with_images)
        sizes = self.m_size
        if len(sizes) and int(sizes.max()) > MAX_MEMBER_BYTES:
            raise self.error(f"a member of {int(sizes.max()):,} bytes is larger than a USTAR tar member can be")
        cum = np.zeros(len(sizes) + 1, np.int64)  # tar bytes of members [0, m)
        np.cumsum(tar_member_bytes(sizes), out=cum[1:])
        self.body_bytes = cum[self.m_start[1:]] - cum[self.m_start[:-1]]


def source_pattern(path: str, root: Path | str) -> str:
    """A source path as a pattern to expand: a URL as it is (``file://`` as its local path), an absolute
    path as it is, a relative one under ``root`` (a folder or a URL)."""
    if storage.is_url(path):
        return path if storage.is_remote(path) else storage.local(path)
    if os.path.isabs(os.path.expanduser(path)):
        return os.path.expanduser(path)
    if storage.is_remote(root):
        return storage.join(root, path)
    return os.path.expanduser(str(Path(root) / path))


def resolve_source(cfg: SourceConfig, root: Path | str, progress: bool = True, layout: str = "uniform") -> Source:
    pattern = source_pattern(cfg.path, root)
    il = cfg.modality == "interleaved"
    files = _expand(pattern, il)
    if not files and cfg.bundled:
        _make_bundled(cfg, pattern, progress)
        files = _expand(pattern, il)
    if not files:
        hint = f" (bundled: {cfg.bundled} generated nothing there)" if cfg.bundled else ""
        raise MixError(f"source {cfg.name!r}: path {cfg.path!r} matches no file{hint} (looked in {pattern})")
    try:  # only finished runs' outputs: never a half-written or unscrubbed crawl (crawlmix.runtime.runstate)
        check_inputs(files, f"source {cfg.name!r}")
    except ConfigError as e:
        raise MixError(str(e)) from None
    try:
        fmts = {cfg.format if cfg.format != "auto" else _fmt_of(f) for f in files}
    except ValueError as e:
        raise MixError(f"source {cfg.name!r}: {e}") from None
    if len(fmts) > 1:
        raise MixError(f"source {cfg.name!r}: path {cfg.path!r} mixes formats {sorted(fmts)}; one format per source")
    fmt = fmts.pop()
    rel = [fetch.relative(f, root) for f in files]
    if cfg.modality == "interleaved" and fmt != "parquet":
        raise MixError(f"source {cfg.name!r}: modality interleaved reads Parquet in the OBELICS layout (id, url, "
                       f"language, texts, images), not {fmt}")
    src = Source(cfg=cfg, files=files, rel_files=rel, fmt=fmt, layout=layout, stamps=[None] * len(files))
    local = []
    for i, f in enumerate(files):  # a remote file: fetched once into local scratch (again when it changed)
        try:
            src.stamps[i] = fetch.stamp(f) if storage.is_remote(f) else None
            local.append(src.local_path(i))
        except OSError as e:
            raise MixError(f"source {cfg.name!r}: cannot fetch {f}: {e}") from None
    maps = src.base_buffers() if fmt == "webdataset" else [None] * len(files)  # tars: hash the mapping in place
    src.fingerprints = [{"path": r, "bytes": os.path.getsize(f), "xxh3": _fingerprint(f, m)}
                        for f, r, m in zip(local, rel, maps)]
    return src


def _make_bundled(cfg: SourceConfig, pattern: str, progress: bool) -> None:
    prefix = re.split(r"[*?\[{]", pattern, 1)[0]
    remote = storage.is_remote(prefix)
    if remote:  # a URL: the folder the pattern names (an object store has no folders to ask about)
        folder = prefix.rstrip("/") if prefix.endswith("/") or storage.isdir(prefix) else storage.parent(prefix)
    else:
        folder = Path(prefix if prefix.endswith("/") or os.path.isdir(prefix) else os.path.dirname(prefix))
    if cfg.bundled == "media":
        from crawlmix.samples.media_sample import write_media_sample

        print(f"source {cfg.name}: generating the bundled media sample into {folder}", file=sys.stderr)
        if not remote:
            write_media_sample(folder)
            return
        import tempfile

        with tempfile.TemporaryDirectory(dir=storage.local_scratch()) as tmp:  # written here, then uploaded
            write_media_sample(Path(tmp))
            for f in sorted(Path(tmp).iterdir()):
                if f.is_file():
                    storage.upload(f, storage.join(folder, f.name))
    else:
        name = storage.name(folder) if remote else folder.name
        crawl_dir = (storage.parent(folder) if remote else folder.parent) if name in ("curated", "pairs") else folder
        print(f"source {cfg.name}: running the text crawl on the bundled sample into {crawl_dir}", file=sys.stderr)
        cmd = [sys.executable, "-m", "crawlmix.crawl.job", "--output", str(crawl_dir)]
        if not progress:
            cmd.append("--no-progress")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PACKAGE.parent), os.environ.get("PYTHONPATH")]))}
        if remote:  # the crawl reaches the store with this process's storage options
            env[storage.ENV_OPTIONS] = json.dumps({storage.protocol(folder): storage.storage_options(folder)})
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        if r.returncode:
            raise MixError(f"source {cfg.name!r}: the bundled crawl failed:\n{r.stdout[-2000:]}")
