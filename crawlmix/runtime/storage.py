"""Where crawlmix reads and writes: a local path or an fsspec URL (``s3://``, ``gs://``, ``file://``, ...).

Every function takes either form. Local paths (and ``file://`` URLs) go straight to ``os`` / ``open``:
no fsspec, no overhead, the same bytes as before. A URL goes through the fsspec filesystem for its
protocol (``s3fs`` for ``s3://``, ``gcsfs`` for ``gs://``), built with :func:`storage_options`:

- the options given to :func:`configure` (a job's ``storage_options:`` section), else the JSON in the
  ``CRAWLMIX_STORAGE_OPTIONS`` environment variable; a mapping either flat (``{"endpoint_url": ...}``,
  for every protocol) or by protocol (``{"s3": {...}, "gs": {...}}``), passed to the filesystem as is;
- for S3, the standard environment: ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (read by botocore)
  and ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) for an S3-compatible store.

Writing is not here: outputs go through crawlmix.runtime.atomic (local: ``NAME.tmp`` + rename; a URL:
a file in this node's :func:`local_scratch`, then one upload under the final key). Listing is lazy
(:func:`iglob`, :func:`ls` are iterators; S3 pages through the listing, never holding it whole).
"""

from __future__ import annotations

import contextlib
import glob as _glob
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

ENV_OPTIONS = "CRAWLMIX_STORAGE_OPTIONS"  # JSON storage options, for processes configure() did not reach
ENV_SCRATCH = "CRAWLMIX_SCRATCH"  # this node's local scratch folder (default: TMPDIR/crawlmix-scratch-UID)
_LOCAL = ("file", "local")
_MAGIC = re.compile(r"[*?\[]")
_options: dict | None = None


# -- what a location is ------------------------------------------------------------------------------
def protocol(path) -> str:
    """``s3``, ``gs``, ``https``, ... for a URL; ``file`` for a local path."""
    s = os.fspath(path)
    return s.split("://", 1)[0].lower() if "://" in s else "file"


def is_url(path) -> bool:
    """Any ``scheme://`` location (``file://`` included)."""
    return "://" in os.fspath(path)


def is_remote(path) -> bool:
    """A location fsspec serves (not a local path or ``file://`` URL)."""
    return protocol(path) not in _LOCAL


def local(path) -> str:
    """A local location as an OS path (``file:///x`` -> ``/x``)."""
    s = os.fspath(path)
    return s.split("://", 1)[1] if is_url(s) and protocol(s) in _LOCAL else s


def join(base, *parts: str) -> str:
    """``base/part/...`` for a path or a URL (always a str)."""
    s = os.fspath(base)
    if not is_remote(s):
        return os.path.join(s, *parts)
    for p in parts:
        s = s.rstrip("/") + "/" + str(p).lstrip("/")
    return s


def name(path) -> str:
    return os.fspath(path).rstrip("/").rsplit("/", 1)[-1] if is_remote(path) else os.path.basename(local(path))


def parent(path) -> str:
    s = os.fspath(path)
    return s.rstrip("/").rsplit("/", 1)[0] if is_remote(s) else os.path.dirname(local(s))


# -- options and filesystems -------------------------------------------------------------------------
def configure(options: dict | None) -> None:
    """Set this process's storage options (a job's ``storage_options:``); None: back to the environment.

    Each Ray task runs in its own worker process: a task that writes to a URL calls this with the job's
    options first (or the cluster sets ``CRAWLMIX_STORAGE_OPTIONS``)."""
    global _options
    _options = dict(options) if options else None


def storage_options(path) -> dict:
    """The fsspec options for ``path``'s protocol (see the module doc for where they come from)."""
    from fsspec.registry import known_implementations

    base = _options
    if base is None:
        raw = os.environ.get(ENV_OPTIONS)
        base = json.loads(raw) if raw else {}
    proto = protocol(path)
    opts = {k: v for k, v in base.items() if not (k in known_implementations and isinstance(v, dict))}
    if isinstance(base.get(proto), dict):
        opts.update(base[proto])
    if proto in ("s3", "s3a") and "endpoint_url" not in opts and "endpoint_url" not in opts.get("client_kwargs", {}):
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            opts["endpoint_url"] = endpoint
    return opts


def filesystem(path):
    """(fsspec filesystem, path within it) for a URL; instances are cached by fsspec."""
    from fsspec.core import url_to_fs

    return url_to_fs(os.fspath(path), **storage_options(path))


def _url(fs, p: str) -> str:
    return fs.unstrip_protocol(p)


# -- reading -----------------------------------------------------------------------------------------
def open(path, mode: str = "rb", **kw):  # noqa: A001 (the module's open, like gzip.open)
    """Open for reading (writes go through crawlmix.runtime.atomic, which publishes whole files)."""
    if any(c in mode for c in "wax+"):
        raise ValueError(f"storage.open is for reading; write {path} with crawlmix.runtime.atomic")
    if not is_remote(path):
        import builtins

        return builtins.open(local(path), mode, **kw)
    fs, p = filesystem(path)
    return fs.open(p, mode, **kw)


def read_bytes(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def read_text(path, encoding: str = "utf-8") -> str:
    return read_bytes(path).decode(encoding)


def read_json(path):
    return json.loads(read_bytes(path))


def exists(path) -> bool:
    if not is_remote(path):
        return os.path.exists(local(path))
    fs, p = filesystem(path)
    return fs.exists(p)


def isfile(path) -> bool:
    if not is_remote(path):
        return os.path.isfile(local(path))
    fs, p = filesystem(path)
    return fs.isfile(p)


def isdir(path) -> bool:
    if not is_remote(path):
        return os.path.isdir(local(path))
    fs, p = filesystem(path)
    return fs.isdir(p)


def size(path) -> int:
    if not is_remote(path):
        return os.path.getsize(local(path))
    fs, p = filesystem(path)
    return int(fs.size(p))


# -- listing (lazy) ----------------------------------------------------------------------------------
def _sync_iter(fs, agen) -> Iterator:
    """Drive an async generator of an async fsspec filesystem one item at a time from sync code."""
    from fsspec.asyn import sync

    try:
        while True:
            try:
                item = sync(fs.loop, agen.__anext__)
            except StopAsyncIteration:
                return
            yield item
    finally:
        sync(fs.loop, agen.aclose)


def _entries(fs, prefix: str, recursive: bool) -> Iterator[dict]:
    """Info dicts of the files whose path starts with ``prefix`` (below one level when not recursive),
    in key order; S3 pages through the listing (1,000 keys per request), other stores list at once."""
    bucket, _, key = prefix.partition("/")
    if hasattr(fs, "_iterdir") and bucket and not _MAGIC.search(bucket):
        for e in _sync_iter(fs, fs._iterdir(bucket, delimiter="" if recursive else "/", prefix=key)):
            if e.get("type") == "file":
                yield e
        return
    found = fs.find(prefix.rsplit("/", 1)[0] if "/" in prefix else prefix, detail=True, maxdepth=None)
    for p in sorted(found):
        if p.startswith(prefix) and (recursive or "/" not in p[len(prefix):]) and found[p].get("type") == "file":
            yield found[p]


def glob_regex(pattern: str) -> re.Pattern:
    """A glob as a regex over full paths: ``*`` and ``?`` stay inside one folder, ``**`` crosses them."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[" and (j := pattern.find("]", i + 2)) > 0:
            body = pattern[i + 1:j]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body).replace("\\", "\\\\") + "]")
            i = j + 1
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out))


def iglob(pattern, detail: bool = False) -> Iterator:
    """The files matching a glob (a plain name matches itself when it is a file), in sorted order, lazily:
    paths, or (path, size) with ``detail``. On S3 only the keys under the glob's literal prefix are listed."""
    s = os.fspath(pattern)
    if not is_remote(s):
        lp = os.path.expanduser(local(s))
        found = sorted(_glob.glob(lp, recursive=True)) if _MAGIC.search(lp) else [lp]
        for p in found:
            if os.path.isfile(p):
                yield (p, os.path.getsize(p)) if detail else p
        return
    fs, p = filesystem(s)
    m = _MAGIC.search(p)
    if m is None:
        try:
            info = fs.info(p)
        except FileNotFoundError:
            return
        if info.get("type") == "file":
            yield (_url(fs, p), int(info.get("size") or 0)) if detail else _url(fs, p)
        return
    rx = glob_regex(p)
    rest = p[m.start():]
    for e in _entries(fs, p[:m.start()], recursive="/" in rest or "**" in rest):
        if rx.fullmatch(e["name"]):
            yield (_url(fs, e["name"]), int(e.get("size") or 0)) if detail else _url(fs, e["name"])


def ls(path) -> Iterator[str]:
    """The files directly inside a folder (sorted, lazily; nothing when it does not exist)."""
    s = os.fspath(path)
    if not is_remote(s):
        d = local(s)
        if not os.path.isdir(d):
            return
        for n in sorted(os.listdir(d)):
            if os.path.isfile(p := os.path.join(d, n)):
                yield p
        return
    fs, p = filesystem(s)
    for e in _entries(fs, p.rstrip("/") + "/", recursive=False):
        yield _url(fs, e["name"])


# -- changing ----------------------------------------------------------------------------------------
def makedirs(path) -> None:
    """Create a local folder (object stores have no folders: nothing to do)."""
    if not is_remote(path):
        os.makedirs(local(path), exist_ok=True)


def remove(path) -> None:
    """Delete one file; a missing one is fine."""
    if not is_remote(path):
        try:
            os.unlink(local(path))
        except FileNotFoundError:
            pass
        return
    fs, p = filesystem(path)
    try:
        fs.rm_file(p)
    except FileNotFoundError:
        pass


def rmtree(path) -> None:
    """Delete a folder (every key under ``path/``) and all it holds; a missing one is fine."""
    if not is_remote(path):
        if os.path.exists(local(path)):
            shutil.rmtree(local(path))
        return
    fs, p = filesystem(path)
    try:
        fs.rm(p.rstrip("/"), recursive=True)
    except FileNotFoundError:
        pass
    fs.invalidate_cache(p)


def upload(src: str | Path, dest) -> None:
    """Copy a finished local file to ``dest`` in one put (S3: one PUT, or a multipart upload that becomes
    visible only when it completes; never a partial object under ``dest``)."""
    if not is_remote(dest):
        shutil.copyfile(src, local(dest))
        return
    fs, p = filesystem(dest)
    fs.put_file(os.fspath(src), p)
    fs.invalidate_cache(p)


def download(src, dest: str | Path) -> Path:
    """Copy ``src`` to a local file (for readers that need a path)."""
    dest = Path(dest)
    if not is_remote(src):
        shutil.copyfile(local(src), dest)
    else:
        fs, p = filesystem(src)
        fs.get_file(p, os.fspath(dest))
    return dest


@contextlib.contextmanager
def temp_copy(path, folder: str = "copies") -> Iterator[str]:
    """A local path holding ``path``'s bytes for the length of a block: the path itself when it is local;
    for a URL, a download into this node's scratch (``folder``), deleted when the block ends."""
    if not is_remote(path):
        yield local(path)
        return
    dest = local_scratch(folder) / f"{uuid.uuid4().hex}-{name(path)}"
    try:
        download(path, dest)
        yield str(dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            dest.unlink()


def local_scratch(*parts: str) -> Path:
    """This node's local scratch folder (``$CRAWLMIX_SCRATCH``, else ``TMPDIR/crawlmix-scratch-UID``),
    created. Tasks stage files here and upload them; nothing else ever reads another node's scratch."""
    root = os.environ.get(ENV_SCRATCH) or os.path.join(tempfile.gettempdir(), f"crawlmix-scratch-{os.getuid()}")
    d = Path(root).joinpath(*parts)
    d.mkdir(parents=True, exist_ok=True)
    return d
