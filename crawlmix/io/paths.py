"""Input resolution and file access: local paths and globs, fsspec URLs, Common Crawl dumps."""

from __future__ import annotations

import glob
import gzip
import os
import re
from pathlib import Path

import xxhash

CC_BASE = "https://data.commoncrawl.org/"


def task_name(path: str) -> str:
    """A file's task name: its base name made filesystem-safe, plus a hash of the full path. Every stage
    names its per-file outputs and markers by it (the images stage finds a crawl's curated/<task>.parquet)."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(path.split("://")[-1]).name)[:80]
    return f"{stem}-{xxhash.xxh64_hexdigest(path)[:8]}"


def file_digest(path: str) -> str:
    """xxh3-64 of a file's bytes, read in 8 MiB chunks (GB/s): how a marker or a lock names a file's version."""
    h = xxhash.xxh3_64()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 23):
            h.update(chunk)
    return h.hexdigest()


def is_url(path: str) -> bool:
    return "://" in path


def open_binary(path: str):
    if is_url(path):
        import fsspec

        return fsspec.open(path, "rb").open()
    return open(path, "rb")


def resolve_inputs(patterns: list[str]) -> list[str]:
    """Expand local globs and fsspec globs; keep order, drop repeats. Missing inputs raise."""
    out: list[str] = []
    for pat in patterns:
        if is_url(pat):
            import fsspec

            if any(c in pat for c in "*?["):
                fs, _, _ = fsspec.get_fs_token_paths(pat)
                proto = pat.split("://", 1)[0]
                found = [f"{proto}://{p}" if "://" not in p else p for p in sorted(fs.glob(pat))]
            else:
                found = [pat]
        else:
            found = sorted(glob.glob(os.path.expanduser(pat), recursive=True)) if any(c in pat for c in "*?[") \
                else ([pat] if Path(pat).exists() else [])
            found = [f for f in found if Path(f).is_file()] or found
        if not found:
            raise FileNotFoundError(f"--input {pat!r} matches no file")
        out.extend(found)
    return list(dict.fromkeys(out))


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
