"""Dedup's reads of Parquet and NumPy files that may live on an object store (crawlmix.runtime.storage).

Every dedup file (the inputs, ``_dedup/sig/*.parquet``, ``_dedup/edges/*.npy``) is a local path or a URL
under the output folder, so that a task on any node finds what a task on another node wrote. Local paths
are read as before (no copy); a URL is read column by column through the store's file object (a band's
candidate task reads one column of every signature file, not the files), or, where a file is read whole
or several times, from a temporary copy in this node's scratch (storage.temp_copy).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from crawlmix.runtime import storage


def stem(path) -> str:
    """The file name without its last suffix (``Path(p).stem``, for a URL too)."""
    return os.path.splitext(storage.name(path))[0]


def read_table(path, columns: list[str] | None = None) -> pa.Table:
    """A Parquet file's table (or some of its columns)."""
    if not storage.is_remote(path):
        return pq.read_table(storage.local(path), columns=columns)
    with storage.open(path, "rb") as f:
        return pq.read_table(f, columns=columns)


@contextlib.contextmanager
def parquet_file(path) -> Iterator[pq.ParquetFile]:
    """A ParquetFile to iterate over (its batches are read as they are asked for)."""
    if not storage.is_remote(path):
        yield pq.ParquetFile(storage.local(path))
        return
    with storage.open(path, "rb") as f:
        yield pq.ParquetFile(f)
