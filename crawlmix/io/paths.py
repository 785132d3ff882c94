"""Input resolution and file access: local paths and globs, fsspec URLs, Common Crawl dumps; splitting a
large gzipped WARC/ARC into byte-range tasks at gzip member (record) boundaries.

Local paths and URLs (``s3://``, ``gs://``, ``https://``, ``file://``) go through crawlmix.runtime.storage,
whose storage options (a job's ``storage_options:`` or the AWS_* environment) reach the filesystem.
"""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import xxhash

from crawlmix.runtime import storage

CC_BASE = "https://data.commoncrawl.org/"


def task_name(path: str) -> str:
    """A file's task name: its base name made filesystem-safe, plus a hash of the full path. Every stage
    names its per-file outputs and markers by it (the images stage finds a crawl's curated/<task>.parquet)."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(path.split("://")[-1]).name)[:80]
    return f"{stem}-{xxhash.xxh64_hexdigest(path)[:8]}"


def file_digest(path: str) -> str:
    """xxh3-64 of a file's bytes, read in 8 MiB chunks (GB/s): how a marker or a lock names a file's version."""
    h = xxhash.xxh3_64()
    with storage.open(path, "rb") as f:
        while chunk := f.read(1 << 23):
            h.update(chunk)
    return h.hexdigest()


def is_url(path: str) -> bool:
    return storage.is_url(path)


def open_binary(path: str):
    """A local file or a URL, open for reading bytes (seekable: byte ranges seek)."""
    return storage.open(path, "rb")


def iter_input_files(patterns: Iterable[str]) -> Iterator[tuple[str, int | None]]:
    """(path, size) of every input a list of paths / globs / URLs names, lazily (an S3 glob pages through
    its listing), in order, repeats dropped. A pattern that matches nothing raises FileNotFoundError;
    a URL without a wildcard is taken as it is (size None: not asked for)."""
    seen: set[bytes] = set()
    for pat in patterns:
        if storage.is_remote(pat) and not any(c in pat for c in "*?["):
            found = iter([(pat, None)])
        elif storage.is_remote(pat):
            found = storage.iglob(pat, detail=True)
        else:
            lp = storage.local(pat)
            found = storage.iglob(lp, detail=True)
            if not any(c in lp for c in "*?[") and Path(lp).exists() and not Path(lp).is_file():
                found = iter([(lp, None)])  # a folder named as input: the reader reports it
        n = 0
        for path, size in found:
            n += 1
            key = xxhash.xxh128_digest(path)
            if key not in seen:
                seen.add(key)
                yield path, size
        if not n:
            raise FileNotFoundError(f"--input {pat!r} matches no file")


def iter_inputs(patterns: Iterable[str]) -> Iterator[str]:
    """The input paths of :func:`iter_input_files`, lazily."""
    return (p for p, _ in iter_input_files(patterns))


def resolve_inputs(patterns: list[str]) -> list[str]:
    """Expand local globs and fsspec globs; keep order, drop repeats. Missing inputs raise."""
    return list(iter_inputs(patterns))


# -- byte-range tasks --------------------------------------------------------------------------------
SPLITTABLE = (".warc.gz", ".arc.gz", ".wet.gz")  # gzip per record (WARC 1.x, Common Crawl, ARC): cut between
GZIP_MAGIC = b"\x1f\x8b\x08"
_ARC_HEADER = re.compile(rb"[A-Za-z][\w+.-]*:\S* \S+ \d{14} ")
_SCAN = 1 << 20  # bytes read per step when looking for the next member


@dataclass(frozen=True)
class Span:
    """One task's share of an input: records whose gzip member starts in [start, end) (nominal byte
    positions, moved forward to the next member start by the reader); ``end`` None: the whole file."""

    path: str
    start: int = 0
    end: int | None = None

    @property
    def whole(self) -> bool:
        return self.start == 0 and self.end is None

    @property
    def name(self) -> str:
        """The task name: the file's, plus ``@START-END`` (zero-padded, so names sort in file order)."""
        base = task_name(self.path)
        return base if self.whole else f"{base}@{self.start:012d}-{self.end if self.end is not None else 0:012d}"


def spans(path: str, split_bytes: int, size: int | None = None) -> list[Span]:
    """The tasks of one input: the whole file, or (a gzipped WARC/ARC larger than ``split_bytes``; 0 never
    splits) consecutive ranges of ``split_bytes``. Only the size is needed here: each task finds its own
    record boundaries (:func:`member_range`), so planning 100k inputs reads none of them."""
    if not split_bytes or not path.lower().endswith(SPLITTABLE):
        return [Span(path)]
    size = storage.size(path) if size is None else size
    if size <= split_bytes:
        return [Span(path)]
    return [Span(path, lo, min(lo + split_bytes, size)) for lo in range(0, size, split_bytes)]


def iter_tasks(patterns: Iterable[str], split_bytes: int) -> Iterator[Span]:
    """Every task of the inputs (see :func:`spans`), lazily, sizes taken from the listing where it has them."""
    for path, size in iter_input_files(patterns):
        yield from spans(path, split_bytes, size)


def is_record_member(data: bytes) -> bool:
    """Does ``data`` start a gzip member whose content starts a WARC or ARC record?"""
    try:
        return _record_head(zlib.decompressobj(31).decompress(data, 4096))
    except zlib.error:
        return False


def _record_head(head: bytes) -> bool:
    """Do these (decompressed) bytes start a WARC or ARC record header?"""
    return head.startswith((b"WARC/1.", b"WARC/0.")) and b"\n" in head or bool(_ARC_HEADER.match(head))


_CHECK_LIMIT = 64 << 20  # a member holding more than this is taken on its header alone


def _record_member_at(f, off: int) -> bool:
    """Is there, at ``off``, a whole gzip member holding exactly one record, followed by another record
    member or the end of the file? The header must start a WARC (or ARC) record and, for WARC, the member
    must end right after ``Content-Length`` bytes of block and the record's closing CRLF CRLF. A magic
    number inside compressed data, a gzipped record stored inside another record's payload, a whole-file
    gzip (many records in one member) or a truncated last member are not boundaries. (Left: a payload that
    is itself a stored multi-record .warc.gz could still pass at its first inner member.)"""
    f.seek(off)
    d, out = zlib.decompressobj(31), bytearray()
    while not d.eof:
        chunk = f.read(1 << 16)
        if not chunk:
            return False
        try:
            out += d.decompress(chunk)
        except zlib.error:
            return False
        if len(out) >= 16 and not _record_head(bytes(out[:4096])):
            return False
        if len(out) > _CHECK_LIMIT:
            return True
    nxt = d.unused_data
    if len(nxt) < 65536:
        nxt += f.read(65536 - len(nxt))
    if nxt and not is_record_member(nxt):  # what follows must be another record member, or the end
        return False
    if not out.startswith(b"WARC/"):
        return _record_head(bytes(out[:4096]))
    head, sep, _ = bytes(out[:65536]).partition(b"\r\n\r\n")
    m = re.search(rb"\r\ncontent-length:[ \t]*(\d+)", head, re.I)
    return bool(sep and m) and len(out) == len(head) + 4 + int(m.group(1)) + 4 and out.endswith(b"\r\n\r\n")


def member_start(f, pos: int) -> int | None:
    """The first offset >= ``pos`` of ``f`` (a seekable binary file of gzip members) where a gzip member
    holding one whole record begins (:func:`_record_member_at`); None when none does."""
    if pos <= 0:
        return 0
    base, buf = pos, b""
    f.seek(pos)
    while True:
        chunk = f.read(_SCAN)
        buf += chunk
        i = 0
        while (j := buf.find(GZIP_MAGIC, i)) >= 0:
            here = f.tell()
            ok = _record_member_at(f, base + j)
            f.seek(here)
            if ok:
                return base + j
            i = j + 1
        if not chunk:
            return None
        keep = buf[-2:]  # a magic split across two reads is still found
        base, buf = base + len(buf) - len(keep), keep


def member_range(f, start: int, end: int | None) -> tuple[int, int | None] | None:
    """A nominal [start, end) moved to record boundaries: (first member start >= start, first member start
    >= end, or None for the end of the file); None when no record starts inside. Neighbouring spans agree
    on their shared boundary, so every record belongs to exactly one span."""
    lo = member_start(f, start)
    if lo is None:
        return None
    hi = None if end is None else member_start(f, end)
    return None if hi is not None and hi <= lo else (lo, hi)


def cc_dump_paths(dump: str, files: str) -> list[str]:
    """WARC URLs of a Common Crawl dump, e.g. ("CC-MAIN-2024-22", "0:10"), via its warc.paths.gz.

    Reaches the network, and only when the user asks for a dump (the images stage's optional fetcher,
    crawlmix.images.fetch, is the other place that does).
    """
    import fsspec

    start, _, stop = files.partition(":")
    lo, hi = int(start or 0), int(stop) if stop else int(start or 0) + 1
    with fsspec.open(f"{CC_BASE}crawl-data/{dump}/warc.paths.gz", "rb") as f:
        names = gzip.decompress(f.read()).decode().split()
    return [CC_BASE + n for n in names[lo:hi]]
