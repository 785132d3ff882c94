"""The one atomic writer: an output appears under its final name only when it is complete.

Everything crawlmix writes (Parquet, JSON, tar shards, markers) goes through ``atomic_path``. The target
is a local path or a URL (crawlmix.runtime.storage):

- local: the bytes go to ``NAME.tmp`` beside the target, and one ``os.replace`` publishes them. A crash
  leaves at most a ``.tmp`` file, which no reader opens and the next run overwrites;
- a URL (``s3://``, ``gs://``, ...): the bytes go to a file in this node's local scratch, then one upload
  puts them under the final key (an S3 PUT or multipart upload is all-or-nothing: a reader never sees a
  partial object). A crash leaves at most a scratch file on the node that crashed.

A write that fails for the disk or the store (full, read-only, no permission, refused) raises
:class:`OutputError`, an ``OSError`` naming the output; the temporary file is removed and nothing is
published, so the task's completion marker is never written and a rerun redoes it.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from crawlmix.runtime import storage

if TYPE_CHECKING:  # pyarrow is imported where Parquet is written (the mixer never needs it)
    import pyarrow as pa

TMP_SUFFIX = ".tmp"
# errors that can only come from writing (whatever file they name)
WRITE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}


class OutputError(OSError):
    """Writing an output failed (disk full, read-only, no permission, the store refused).

    ``filename`` is the output; ``filename2`` the local file it was being staged in, when that differs.
    Entry points catch it, print it and exit non-zero (:func:`exit_on_output_error`)."""

    def __str__(self) -> str:
        code = errno.errorcode.get(self.errno or 0, "")
        staged = f" (staged in {self.filename2})" if self.filename2 else ""
        return f"cannot write {self.filename}: {self.strerror}{f' [{code}]' if code else ''}{staged}"


def output_error(e: OSError, path, tmp=None) -> OutputError:
    """``e`` as an OutputError naming ``path`` (and the staging file ``tmp`` when it is elsewhere)."""
    if isinstance(e, OutputError):
        return e
    code, text = e.errno, e.strerror
    if code is None:  # pyarrow: "... Detail: [errno 28] No space left on device"
        code = _errno_in_message(e)
        text = os.strerror(code) if code else (str(e) or type(e).__name__)
    code = code or errno.EIO
    if not text or "[errno" in text.lower():  # pyarrow's "Error writing bytes ... [errno 28] ...": the plain words
        text = os.strerror(code)
    staged = str(tmp) if tmp is not None and storage.is_remote(path) else None
    return OutputError(code, text, str(path), None, staged)


def _is_write_error(e: BaseException, tmp: Path) -> bool:
    """An OSError from the block that writes ``tmp`` is about the output when only a write can cause it, or
    it names the temporary file (an input the block reads may fail too: that stays the input's error)."""
    if not isinstance(e, OSError) or isinstance(e, OutputError):
        return False
    code = e.errno if e.errno is not None else _errno_in_message(e)
    if code in WRITE_ERRNOS:
        return True
    if e.filename is not None:
        return os.fspath(e.filename) == os.fspath(tmp)
    return code in (errno.EACCES, errno.EPERM)


def _errno_in_message(e: OSError) -> int | None:
    import re

    m = re.search(r"\[errno (\d+)\]", str(e), re.I)
    return int(m.group(1)) if m else None


def exit_on_output_error(main):
    """Decorate an entry point's ``main``: an OutputError is printed (``error: cannot write PATH: ...``)
    and the process exits 1 instead of showing a traceback."""

    @functools.wraps(main)
    def run(*args, **kw):
        try:
            return main(*args, **kw)
        except OutputError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1

    return run


def tmp_path(path, unique: bool = False) -> Path:
    """Where ``path`` is written before it is published: local, ``NAME.tmp`` beside it (``unique``, when
    several processes may write the same file at once: ``NAME.<pid>-<random>.tmp``); a URL, a unique file in
    this node's scratch folder."""
    if storage.is_remote(path):
        return storage.local_scratch("staging") / f"{uuid.uuid4().hex}-{storage.name(path)}{TMP_SUFFIX}"
    path = Path(storage.local(path))
    tag = f".{os.getpid()}-{uuid.uuid4().hex[:8]}" if unique else ""
    return path.with_name(path.name + tag + TMP_SUFFIX)


def publish(tmp: str | Path, path) -> None:
    """Make a finished temporary file the output ``path``: local, one rename (a file or a folder, atomic on
    one file system); a URL, one upload, then the local copy is removed."""
    if not storage.is_remote(path):
        try:
            os.replace(tmp, storage.local(path))
        except OSError as e:
            raise output_error(e, path, tmp) from e
        return
    try:
        storage.upload(tmp, path)
    except OSError as e:
        raise output_error(e, path, tmp) from e
    except Exception as e:  # the store's client (a refused connection, a bad endpoint): still names the output
        raise OutputError(errno.EIO, f"{type(e).__name__}: {e}", str(path), None, str(tmp)) from e
    Path(tmp).unlink()


def _discard(tmp: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()


@contextlib.contextmanager
def atomic_path(path, mkdir: bool = True, unique: bool = False) -> Iterator[Path]:
    """Yields the temporary (local) path to write; on success it becomes ``path``, on error it is removed."""
    try:
        if mkdir and not storage.is_remote(path):
            Path(storage.local(path)).parent.mkdir(parents=True, exist_ok=True)
        tmp = tmp_path(path, unique)
    except OSError as e:
        raise output_error(e, path) from e
    try:
        yield tmp
        publish(tmp, path)
    except BaseException as e:
        _discard(tmp)
        if _is_write_error(e, tmp):
            raise output_error(e, path, tmp) from e
        raise


@contextlib.contextmanager
def atomic_open(path, mode: str = "wb", unique: bool = False, **kw):
    """``open`` on the temporary file; published when the block ends without an error."""
    with atomic_path(path, unique=unique) as tmp:
        try:
            f = open(tmp, mode, **kw)
        except OSError as e:
            raise output_error(e, path, tmp) from e
        with f:
            yield f


def write_bytes(path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_text(path, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def write_json(path, data, indent: int | None = 2) -> None:
    write_text(path, json.dumps(data, indent=indent, ensure_ascii=False) + "\n")


def write_table(path, table: pa.Table, compression: str | None = "zstd", **kw) -> None:
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        try:
            pq.write_table(table, tmp, compression=compression, **kw)
        except OSError as e:
            raise output_error(e, path, tmp) from e


class ParquetSink:
    """Streams rows to ``path`` (a local path or a URL) in row groups; the file appears atomically on close().

    A write error aborts the sink (its temporary file removed) and raises OutputError."""

    def __init__(self, path, schema: pa.Schema, metadata: dict | None = None,
                 compression: str = "zstd", rows_per_group: int = 2_000):
        self.path = path if storage.is_remote(path) else Path(storage.local(path))
        self.tmp = tmp_path(self.path)
        self.schema = schema.with_metadata({k: str(v) for k, v in (metadata or {}).items()}) if metadata else schema
        self.compression = None if compression == "none" else compression
        self.rows_per_group = rows_per_group
        self.buf: list[dict] = []
        self.writer = None  # a pyarrow.parquet.ParquetWriter once the first rows come
        self.rows = 0

    @contextlib.contextmanager
    def _writing(self):
        try:
            yield
        except OSError as e:
            self.abort()
            raise output_error(e, self.path, self.tmp) from e

    def add(self, row: dict) -> None:
        self.buf.append(row)
        if len(self.buf) >= self.rows_per_group:
            self._flush()

    def add_table(self, table: pa.Table) -> None:
        self._flush()
        with self._writing():
            self._open()
            self.writer.write_table(table)
        self.rows += table.num_rows

    def _open(self) -> None:
        if self.writer is None:
            import pyarrow.parquet as pq

            if not storage.is_remote(self.path):
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(self.tmp, self.schema, compression=self.compression)

    def _flush(self) -> None:
        import pyarrow as pa

        with self._writing():
            self._open()
            if self.buf:
                self.writer.write_table(pa.Table.from_pylist(self.buf, schema=self.schema))
                self.rows += len(self.buf)
                self.buf = []

    def close(self) -> int:
        self._flush()
        with self._writing():
            self.writer.close()
        try:
            publish(self.tmp, self.path)
        except OutputError:
            _discard(self.tmp)
            raise
        return self.rows

    def abort(self) -> None:
        if self.writer is not None:
            with contextlib.suppress(OSError):
                self.writer.close()
            self.writer = None
        _discard(self.tmp)
