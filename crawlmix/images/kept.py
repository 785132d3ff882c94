"""The pages a text run kept, read by the images and interleaved steps (``pages.kept_from`` / ``kept_from``).

A text run (crawlmix.crawl) writes ``KEPT_FROM/curated/<task>.parquet`` per input file or, when it split a
large file into byte-range tasks (crawlmix.io.paths.Span), ``curated/<task>@START-END.parquet`` per span.
The images and interleaved steps run one task per input FILE and gather every part of it here. ``kept_from``
is a local folder or a URL (``s3://bucket/run``): everything goes through crawlmix.runtime.storage, and
only the ``id`` column (or the footer, to count rows) is read.
"""

from __future__ import annotations

import glob

from crawlmix.runtime import storage


def curated_parts(kept_from: str, name: str) -> list[str]:
    """The curated files holding the kept pages of input task ``name``: ``curated/<name>.parquet`` and every
    ``curated/<name>@START-END.parquet`` (in file order). FileNotFoundError when there is none: the text task
    of that file failed or has not run, and a task that staged no pages for that reason must not pass for done."""
    folder = storage.join(kept_from, "curated")
    whole = storage.join(folder, f"{name}.parquet")
    found = [whole] if storage.isfile(whole) else []
    found += storage.iglob(storage.join(glob.escape(folder), f"{name}@*.parquet"))  # '@' is never in a name
    if not found:
        raise FileNotFoundError(f"pages.kept_from: {whole} does not exist (nor any {name}@START-END.parquet "
                                f"part): its text task failed or has not run; rerun the text job first")
    return found


def _read(path: str, what):
    """``what(pyarrow.parquet.ParquetFile)`` over a local path or a URL (only the byte ranges it needs)."""
    from crawlmix.images.shards import open_parquet

    with open_parquet(path) as f:
        return what(f)


def kept_ids(kept_from: str, name: str) -> set[str]:
    """Ids of the pages the text run kept of input task ``name`` (all its parts). A missing or unreadable
    file raises: "no pages" would be taken for done."""
    ids: set[str] = set()
    for p in curated_parts(kept_from, name):
        ids.update(_read(p, lambda f: f.read(columns=["id"]).column("id").to_pylist()))
    return ids


def kept_count(kept_from: str, name: str) -> int:
    """How many pages the text run kept of input task ``name``: its parts' row counts (footers only)."""
    return sum(_read(p, lambda f: f.metadata.num_rows) for p in curated_parts(kept_from, name))


def bytes_fingerprint(kept_from: str, name: str) -> str:
    """The version of what the text run kept of task ``name``: xxh3 of the curated file's bytes (one file),
    or of its parts' names and bytes' xxh3 (a split file)."""
    from crawlmix.io.paths import file_digest

    parts = curated_parts(kept_from, name)
    if len(parts) == 1 and storage.name(parts[0]) == f"{name}.parquet":
        return file_digest(parts[0])
    import xxhash

    return xxhash.xxh3_64_hexdigest("\n".join(f"{storage.name(p)}:{file_digest(p)}" for p in parts))


def ids_state(kept_from: str | None, name: str) -> str | None:
    """What the text run kept of task ``name``, as a hash of its sorted ids (all parts; a split file and the
    same file unsplit give the same state); None without ``kept_from``, "missing" without a curated file."""
    if not kept_from:
        return None
    import xxhash

    try:
        ids = sorted(kept_ids(kept_from, name))
    except Exception:  # noqa: BLE001 - no file: the task reports it; the state says "missing"
        return "missing"
    return xxhash.xxh64_hexdigest("\n".join(ids))
