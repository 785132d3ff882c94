"""The one atomic writer: an output appears under its final name only when it is complete.

Everything crawlmix writes (Parquet, JSON, tar shards, markers) goes through ``atomic_path``: the
bytes go to ``NAME.tmp`` beside the target, and one ``os.replace`` publishes them. A crash leaves at
most a ``.tmp`` file, which no reader opens and the next run overwrites.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pyarrow is imported where Parquet is written (the mixer never needs it)
    import pyarrow as pa

TMP_SUFFIX = ".tmp"


def tmp_path(path: str | Path, unique: bool = False) -> Path:
    """``NAME.tmp`` beside ``path``; ``unique`` when several processes may write the same file at once
    (a per-machine cache): ``NAME.<pid>-<random>.tmp``."""
    path = Path(path)
    tag = f".{os.getpid()}-{uuid.uuid4().hex[:8]}" if unique else ""
    return path.with_name(path.name + tag + TMP_SUFFIX)


def publish(tmp: str | Path, path: str | Path) -> None:
    """Move a finished temporary file to its final name (atomic on one file system)."""
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_path(path: str | Path, mkdir: bool = True, unique: bool = False) -> Iterator[Path]:
    """Yields the temporary path to write; on success it becomes ``path``, on error it is removed."""
    path = Path(path)
    if mkdir:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path, unique)
    try:
        yield tmp
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    publish(tmp, path)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb", unique: bool = False, **kw):
    """``open`` on the temporary file; published when the block ends without an error."""
    with atomic_path(path, unique=unique) as tmp, open(tmp, mode, **kw) as f:
        yield f


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def write_json(path: str | Path, data, indent: int | None = 2) -> None:
    write_text(path, json.dumps(data, indent=indent, ensure_ascii=False) + "\n")


def write_table(path: str | Path, table: pa.Table, compression: str | None = "zstd", **kw) -> None:
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression=compression, **kw)


class ParquetSink:
    """Streams rows to ``path`` in row groups; the file appears atomically on close()."""

    def __init__(self, path: str | Path, schema: pa.Schema, metadata: dict | None = None,
                 compression: str = "zstd", rows_per_group: int = 2_000):
        self.path = Path(path)
        self.tmp = tmp_path(self.path)
        self.schema = schema.with_metadata({k: str(v) for k, v in (metadata or {}).items()}) if metadata else schema
        self.compression = None if compression == "none" else compression
        self.rows_per_group = rows_per_group
        self.buf: list[dict] = []
        self.writer = None  # a pyarrow.parquet.ParquetWriter once the first rows come
        self.rows = 0

    def add(self, row: dict) -> None:
        self.buf.append(row)
        if len(self.buf) >= self.rows_per_group:
            self._flush()

    def add_table(self, table: pa.Table) -> None:
        self._flush()
        self._open()
        self.writer.write_table(table)
        self.rows += table.num_rows

    def _open(self) -> None:
        if self.writer is None:
            import pyarrow.parquet as pq

            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(self.tmp, self.schema, compression=self.compression)

    def _flush(self) -> None:
        import pyarrow as pa

        self._open()
        if self.buf:
            self.writer.write_table(pa.Table.from_pylist(self.buf, schema=self.schema))
            self.rows += len(self.buf)
            self.buf = []

    def close(self) -> int:
        self._flush()
        self.writer.close()
        publish(self.tmp, self.path)
        return self.rows

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()
