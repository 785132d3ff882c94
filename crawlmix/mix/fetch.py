"""Mixer inputs and outputs on an object store (``s3://``, ``gs://``, ...): where a path points, and the local
copy of a remote source file.

The readers memory-map tars and read Parquet / JSONL from local files, so a source file behind a URL is
downloaded once into this node's local scratch (crawlmix.runtime.storage.local_scratch) and indexed there,
as a local one would be. The copy is named by the object's version (:func:`stamp`: its URL, size and
ETag / generation / modification time), so a changed object is fetched again and an unchanged one never
is: ``SCRATCH/mix-sources/<stamp>/<file name>`` (the file keeps its name: sample ids fall back to it).
A download goes to a temporary file published by one rename (crawlmix.runtime.atomic), so a crash never
leaves a partial copy under the final name. A writer on another node (a Ray task) fetches the tars it
copies from into its own scratch the same way and checks the bytes against the digest the driver indexed:
an object that changed in between stops the task instead of mixing other bytes than were planned.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import xxhash

from crawlmix.runtime import storage
from crawlmix.runtime.atomic import atomic_path

SCRATCH = "mix-sources"
_VERSION_KEYS = ("ETag", "etag", "generation", "md5Hash", "VersionId", "LastModified", "last_modified", "updated",
                 "mtime")


class SourceChanged(RuntimeError):
    """A remote source file is not the one the mix was planned from (its bytes changed since)."""


def location(p) -> str | Path:
    """A location as the mixer keeps it: a URL string for an object store, a Path for a local path
    (``file://`` URLs included)."""
    s = os.fspath(p)
    return s if storage.is_remote(s) else Path(storage.local(s))


def stamp(url: str) -> str:
    """The version of a remote object: a hash of its URL, size and the store's version fields (S3: ETag and
    LastModified; GCS: generation / md5Hash; others: mtime). Asked of the store, not of a cached listing."""
    fs, p = storage.filesystem(url)
    fs.invalidate_cache(p)
    info = fs.info(p)
    version = {k: str(info[k]) for k in _VERSION_KEYS if info.get(k) is not None}
    return xxhash.xxh64_hexdigest(json.dumps([url, int(info.get("size") or 0), version], sort_keys=True))


def local_copy(path: str, version: str | None = None, digest: str | None = None) -> str:
    """A local file holding ``path``'s bytes: ``path`` itself when it is local; for a URL, the copy in this
    node's scratch named by ``version`` (:func:`stamp`, asked of the store when None), downloaded when it is
    not there yet. With ``digest`` (the xxh3-64 the driver indexed), a fresh download must have it."""
    if not storage.is_remote(path):
        return storage.local(path)
    version = version or stamp(path)
    dest = storage.local_scratch(SCRATCH, version) / storage.name(path)
    if dest.is_file():
        return str(dest)
    with atomic_path(dest, unique=True) as tmp:
        storage.download(path, tmp)
        if digest is not None:
            from crawlmix.io.paths import file_digest

            got = file_digest(str(tmp))
            if got != digest:
                raise SourceChanged(f"{path} changed since the mix was planned (xxh3 {got}, planned {digest}); "
                                    f"rerun the mix to plan it from the new bytes")
    return str(dest)


def relative(path: str, root) -> str:
    """``path`` relative to ``root`` when it lies under it (how a source file is named in the lock and the
    samples' provenance), else as it is; for URLs as for local paths, so a mix read from
    ``--root s3://bucket/data`` names its files like one read from a local copy of that folder."""
    if storage.is_remote(path) or storage.is_remote(root):
        base = os.fspath(root).rstrip("/") + "/"
        return path[len(base):] if path.startswith(base) else path
    try:
        rel = os.path.relpath(path, root)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel
