"""The dashboard over an object store: ``--root s3://bucket/prefix`` (or ``gs://``, any fsspec URL).

The dashboard's readers are written against pathlib (``root / rel``, ``glob``, ``rglob``, ``is_file``,
``read_text``, ``stat``, ``relative_to``, ``resolve``, ``parents``). For a URL root they get RemotePath
objects that answer the same calls: the folder structure and the sizes and modification times come from one
listing of every key under the root (paged by the store, taken again when older than LISTING_TTL seconds),
and file contents are read through crawlmix.runtime.storage. An object store has no symlinks, so the
symlink refusal of a local root has nothing to look at; a path that normalises outside the root is refused
the same way (``..`` and absolute paths). Parquet files are opened through fsspec (pyarrow reads the footer
and the columns it needs with ranged reads), tars are read as streams.
"""

from __future__ import annotations

import bisect
import contextlib
import datetime as dt
import fnmatch
import io
import posixpath
import tarfile
import threading
import time
from pathlib import Path, PurePosixPath
from types import SimpleNamespace

from crawlmix.runtime import storage

LISTING_TTL = 5.0  # seconds a listing of the root is reused (every runs() takes a fresh one)


def _mtime(info: dict) -> float:
    for k in ("LastModified", "last_modified", "mtime", "updated", "timeCreated", "created"):
        v = info.get(k)
        if isinstance(v, dt.datetime):
            return (v if v.tzinfo else v.replace(tzinfo=dt.timezone.utc)).timestamp()
        if isinstance(v, (int, float)):
            return float(v)
        if isinstance(v, str):
            with contextlib.suppress(ValueError):
                return dt.datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()
    return 0.0


class RemoteTree:
    """Every file under a URL root: {key relative to the root: (size, mtime)}, and the folders they imply."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self._lock = threading.Lock()
        self._at = -1e9
        self.files: dict[str, tuple[int, float]] = {}
        self.keys: list[str] = []  # the files' keys, sorted
        self.dirs: dict[str, float] = {"": 0.0}  # folder -> newest mtime inside

    @property
    def root(self) -> RemotePath:
        return RemotePath(self, "")

    def refresh(self, force: bool = False) -> None:
        with self._lock:
            if not force and time.monotonic() - self._at < LISTING_TTL:
                return
            fs, prefix = storage.filesystem(self.url)
            prefix = prefix.rstrip("/")
            fs.invalidate_cache(prefix)
            try:
                found = fs.find(prefix, detail=True)
            except FileNotFoundError:
                found = {}
            files, dirs = {}, {"": 0.0}
            for name, info in found.items():
                if info.get("type") != "file" or not name.startswith(prefix + "/"):
                    continue
                key = name[len(prefix) + 1:]
                m = _mtime(info)
                files[key] = (int(info.get("size") or 0), m)
                d = posixpath.dirname(key)
                while True:
                    dirs[d] = max(dirs.get(d, 0.0), m)
                    if not d:
                        break
                    d = posixpath.dirname(d)
            self.files, self.keys, self.dirs, self._at = files, sorted(files), dirs, time.monotonic()

    def listing(self) -> tuple[dict, dict]:
        self.refresh()
        return self.files, self.dirs

    def under(self, folder: str) -> list[str]:
        """Keys of the files under ``folder`` ("" the root), sorted."""
        self.refresh()
        keys = self.keys
        if not folder:
            return keys
        lo = bisect.bisect_left(keys, folder + "/")
        hi = bisect.bisect_left(keys, folder + "0")  # "0" is the character after "/"
        return keys[lo:hi]


class RemotePath:
    """A location under a RemoteTree's root, with the part of pathlib.Path the dashboard uses. ``key`` is
    relative to the root ("" the root itself); a key starting with ".." lies outside it."""

    __slots__ = ("tree", "key")

    def __init__(self, tree: RemoteTree, key: str):
        self.tree, self.key = tree, key

    # -- names
    def __truediv__(self, other) -> RemotePath:
        o = str(other)
        if o.startswith("/"):  # as pathlib: an absolute part replaces the path (here: outside the root)
            return RemotePath(self.tree, ".." + o)
        k = posixpath.normpath(posixpath.join(self.key, o) if self.key else o or ".")
        return RemotePath(self.tree, "" if k == "." else k)

    def __str__(self) -> str:
        return f"{self.tree.url}/{self.key}" if self.key else self.tree.url

    __fspath__ = __str__

    def __repr__(self) -> str:
        return f"RemotePath({str(self)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, RemotePath) and other.tree.url == self.tree.url and other.key == self.key

    def __hash__(self) -> int:
        return hash((self.tree.url, self.key))

    def __lt__(self, other: RemotePath) -> bool:
        return self.key < other.key

    @property
    def name(self) -> str:
        return posixpath.basename(self.key) if self.key else storage.name(self.tree.url)

    @property
    def suffix(self) -> str:
        return posixpath.splitext(self.name)[1]

    @property
    def parent(self) -> RemotePath:
        if not self.key or self.key == ".." or self.key.startswith("../"):
            return RemotePath(self.tree, posixpath.normpath(posixpath.join(self.key or ".", "..")))
        return RemotePath(self.tree, posixpath.dirname(self.key))

    @property
    def parents(self) -> list[RemotePath]:
        out, p = [], self
        while p.key and not p.key.startswith(".."):
            p = p.parent
            out.append(p)
        return out

    def resolve(self) -> RemotePath:
        k = posixpath.normpath(self.key) if self.key else ""
        return RemotePath(self.tree, "" if k == "." else k)

    def relative_to(self, other: RemotePath) -> PurePosixPath:
        if not other.key:
            return PurePosixPath(self.key)
        if self.key != other.key and not self.key.startswith(other.key + "/"):
            raise ValueError(f"{self} is not under {other}")
        return PurePosixPath(self.key[len(other.key) + 1:])

    # -- what is there (from the listing)
    def is_file(self) -> bool:
        return self.key in self.tree.listing()[0]

    def is_dir(self) -> bool:
        return self.key in self.tree.listing()[1]

    def exists(self) -> bool:
        return self.is_file() or self.is_dir()

    def stat(self) -> SimpleNamespace:
        files, dirs = self.tree.listing()
        if self.key in files:
            size, m = files[self.key]
        elif self.key in dirs:
            size, m = 0, dirs[self.key]
        else:
            raise FileNotFoundError(str(self))
        return SimpleNamespace(st_size=size, st_mtime=m, st_mtime_ns=int(m * 1e9))

    def _under(self) -> list[str]:
        return self.tree.under(self.key)

    def glob(self, pattern: str) -> list[RemotePath]:
        """Files directly in this folder whose name matches (the dashboard globs for files only)."""
        n = len(self.key) + 1 if self.key else 0
        return [RemotePath(self.tree, k) for k in self._under()
                if "/" not in k[n:] and fnmatch.fnmatchcase(k[n:], pattern)]

    def rglob(self, pattern: str) -> list[RemotePath]:
        """Files at any depth under this folder whose name matches."""
        return [RemotePath(self.tree, k) for k in self._under() if fnmatch.fnmatchcase(posixpath.basename(k), pattern)]

    # -- contents (from the store)
    def read_bytes(self) -> bytes:
        return storage.read_bytes(str(self))

    def read_text(self, encoding: str = "utf-8", errors: str | None = None) -> str:
        return self.read_bytes().decode(encoding, errors or "strict")

    def open(self, mode: str = "r", encoding: str | None = None, errors: str | None = None, newline: str | None = None):
        f = storage.open(str(self), "rb")
        if "b" in mode:
            return f
        return io.TextIOWrapper(f, encoding=encoding or "utf-8", errors=errors, newline=newline)


def parquet_file(f: Path | RemotePath):
    """pyarrow.parquet.ParquetFile of a local file or a RemotePath (read through fsspec)."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(f if isinstance(f, Path) else storage.open(str(f), "rb"))


def read_table(f: Path | RemotePath, columns: list[str]):
    """The columns of a Parquet file, local (pyarrow.parquet.read_table, as before) or remote."""
    import pyarrow.parquet as pq

    return pq.read_table(f, columns=columns) if isinstance(f, Path) else parquet_file(f).read(columns=columns)


@contextlib.contextmanager
def open_tar(p: Path | RemotePath):
    """A tar to read, local or remote."""
    if isinstance(p, Path):
        with tarfile.open(p) as tar:
            yield tar
        return
    with storage.open(str(p), "rb") as f, tarfile.open(fileobj=f) as tar:
        yield tar
