"""The run-wide pass of the interleaved job: staged documents -> OUTPUT/interleaved/ (Parquet + WebDataset).

One pass over the tasks' staged documents in input order (reading only the ``shas`` column first when
``dedup.furniture_min_documents`` is on):

* an image whose sha256 is in at least ``furniture_min_documents`` documents is site furniture (a logo, a
  button) and leaves every document (``repeated_furniture``);
* with ``dedup.across_documents``, an image an earlier document kept (same sha256, or pHash within
  ``phash_max_distance`` bits: crawlmix.images.shards.NearDupIndex) leaves later ones
  (``duplicate_sha256`` / ``near_duplicate``); text around a removed image is joined again;
* a document left with fewer than ``documents.min_images`` images is dropped (stage ``dedup``).

Written, each atomically: ``<task>.parquet`` (OUTPUT_SCHEMA), ``removed/<task>.parquet`` (the task's drops
and this pass's), and ``{:05d}.tar`` shards (crawlmix.io.tar: deterministic headers), one sample per
document: ``KEY.json`` (texts, images with their metadata, provenance), ``KEY.0.jpg``, ``KEY.1.jpg``, ...
The output may be a URL: each file is written in this node's local scratch and uploaded whole
(crawlmix.runtime.atomic), the staged documents are read back by byte ranges.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections import Counter

import pyarrow as pa

from crawlmix.images.shards import NearDupIndex, open_parquet
from crawlmix.interleaved.config import InterleavedJob
from crawlmix.interleaved.schema import OUTPUT_SCHEMA, REMOVED, staging_paths
from crawlmix.io.tar import TarWriter
from crawlmix.runtime import storage
from crawlmix.runtime.atomic import TMP_SUFFIX, atomic_path, write_table
from crawlmix.text.schema import REMOVED_SCHEMA


class ShardWriter:
    """WebDataset shards {:05d}.tar, ``per_shard`` documents each, each published when complete."""

    def __init__(self, root: str, per_shard: int):
        self.root, self.per_shard = root, per_shard
        self.shard, self.n = -1, per_shard
        self.shards: list[dict] = []
        self._stack = None
        self.tar = None

    def add(self, doc: dict, images: list[tuple[str, bytes]]) -> str:
        if self.n >= self.per_shard:
            self._close()
            self.shard, self.n = self.shard + 1, 0
            self._stack = contextlib.ExitStack()
            tmp = self._stack.enter_context(atomic_path(storage.join(self.root, f"{self.shard:05d}.tar")))
            self.tar = TarWriter(tmp)
            self.shards.append({"shard": f"{self.shard:05d}.tar", "documents": 0, "images": 0, "bytes": 0})
        key = f"{self.shard:05d}{self.n:05d}"
        self.n += 1
        doc = {"key": key, **doc}
        members = [("json", json.dumps(doc, ensure_ascii=False, sort_keys=True).encode())] + images
        st = self.shards[-1]
        st["bytes"] += self.tar.write(key, members)
        st["documents"] += 1
        st["images"] += len(images)
        return key

    def _close(self) -> None:
        if self.tar is not None:
            self.tar.close()
            self.shards[-1]["md5"] = self.tar.md5.hexdigest()
            self.shards[-1]["bytes"] = self.tar.bytes
            self._stack.close()  # publishes the tar
            self.tar = self._stack = None

    def close(self) -> list[dict]:
        self._close()
        return self.shards

    def abort(self) -> None:
        if self.tar is not None:
            self.tar.f.close()
            with contextlib.suppress(RuntimeError):
                self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)  # removes the .tmp
            self.tar = self._stack = None


def clear_outputs(root: str) -> None:
    """The previous run's final files (they are all written again from the staged documents)."""
    suffixes = (".parquet", ".tar", TMP_SUFFIX)
    for folder in (root, storage.join(root, REMOVED)):
        for f in list(storage.ls(folder)):
            if storage.name(f).endswith(suffixes):
                storage.remove(f)


def furniture(root: str, tasks: list[str], min_docs: int) -> set[str]:
    """sha256 of every image in at least ``min_docs`` documents of the run (logos, buttons, icons)."""
    if min_docs <= 0:
        return set()
    counts: Counter = Counter()
    for t in tasks:
        f = staging_paths(root, t)[0]
        if storage.exists(f):
            with open_parquet(f) as pf:
                for shas in pf.read(columns=["shas"]).column("shas").to_pylist():
                    counts.update(set(shas or ()))
    return {sha for sha, n in counts.items() if n >= min_docs}


def _staged_documents(path: str):
    """The documents a task staged (a path or a URL), read 32 at a time; none when it staged no file."""
    if not storage.exists(path):
        return
    with open_parquet(path) as pf:
        for batch in pf.iter_batches(batch_size=32):
            yield from batch.to_pylist()


def write_outputs(root: str, tasks: list[str], job: InterleavedJob, meta: dict, progress: bool = False) -> dict:
    """The run-wide pass over the staged documents of ``tasks`` (in this order); returns its counts."""
    from tqdm import tqdm

    clear_outputs(root)
    furn = furniture(root, tasks, job.dedup.furniture_min_documents)
    dd = job.dedup
    exact: dict[str, str] = {}
    near = NearDupIndex(dd.phash_max_distance) if dd.perceptual and dd.across_documents else None
    image_drops: Counter = Counter()
    doc_drops: Counter = Counter()
    n_in = n_out = n_images = 0
    schema = OUTPUT_SCHEMA.with_metadata({k: str(v) for k, v in meta.items()})
    writer = ShardWriter(root, job.shards.samples_per_shard) if job.shards.webdataset else None
    comp = None if job.shards.compression == "none" else job.shards.compression
    try:
        for t in tqdm(tasks, unit="file", desc="interleaved output", disable=not progress):
            docs_file, removed_file = staging_paths(root, t)
            rows, removed = [], []
            if storage.exists(removed_file):
                with open_parquet(removed_file) as pf:
                    removed = pf.read().to_pylist()
            for doc in _staged_documents(docs_file):
                n_in += 1
                doc, why = _dedup(doc, furn, exact, near, dd, image_drops, job.dom.merge_text)
                n_img = sum(im is not None for im in doc["images"])
                if n_img < job.documents.min_images:
                    doc_drops["too_few_images"] += 1
                    removed.append(_removed(doc, f"{n_img} images left after the run-wide dedup ({why})"))
                    continue
                n_out += 1
                n_images += n_img
                rows.append(_output_row(doc, meta))
                if writer is not None:
                    writer.add(_sample_json(doc, meta), [(f"{i}.{im['ext']}", im["bytes"]) for i, im in
                                                        enumerate(x for x in doc["images"] if x is not None)])
            write_table(storage.join(root, f"{t}.parquet"), pa.Table.from_pylist(rows, schema=schema),
                        compression=comp)
            write_table(storage.join(root, REMOVED, f"{t}.parquet"),
                        pa.Table.from_pylist(removed, schema=REMOVED_SCHEMA.with_metadata(schema.metadata)),
                        compression=comp)
        shards = writer.close() if writer is not None else []
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    return {"in": n_in, "out": n_out, "images": n_images, "dropped": dict(doc_drops),
            "image_dedup": dict(image_drops.most_common()), "shards": shards}


def _dedup(doc: dict, furn: set[str], exact: dict, near, dd, drops: Counter, merge: bool) -> tuple[dict, str]:
    """The document without its furniture and its images earlier documents kept; texts joined again."""
    items, why = [], Counter()
    for text, im in zip(doc["texts"], doc["images"]):
        if im is None:
            items.append(text)
            continue
        reason = None
        if im["sha256"] in furn:
            reason = "repeated_furniture"
        elif dd.across_documents:
            if dd.exact and im["sha256"] in exact:
                reason = "duplicate_sha256"
            elif near is not None and near.find_or_add(int(im["phash"], 16), doc["id"]) is not None:
                reason = "near_duplicate"
            elif dd.exact:
                exact[im["sha256"]] = doc["id"]
        if reason is None:
            items.append(im)
        else:
            drops[reason] += 1
            why[reason] += 1
    merged: list = []
    for x in items:
        if merge and isinstance(x, str) and merged and isinstance(merged[-1], str):
            merged[-1] = merged[-1] + "\n\n" + x
        else:
            merged.append(x)
    doc = {**doc, "texts": [x if isinstance(x, str) else None for x in merged],
           "images": [None if isinstance(x, str) else x for x in merged]}
    return doc, ", ".join(f"{k}={v}" for k, v in why.items()) or "none removed"


def _output_row(doc: dict, meta: dict) -> dict:
    return {"id": doc["id"], "url": doc["url"], "language": doc["language"], "texts": doc["texts"],
            "images": [None if im is None else {k: im[k] for k in ("url", "bytes", "width", "height")}
                       for im in doc["images"]],
            "source": doc["source"], "offset": doc["offset"], "crawlmix_version": meta["crawlmix_version"],
            "config_hash": meta["config_hash"]}


def _sample_json(doc: dict, meta: dict) -> dict:
    images, k = [], 0
    for im in doc["images"]:
        if im is None:
            images.append(None)
            continue
        images.append({"member": f"{k}.{im['ext']}", **{f: im[f] for f in (
            "url", "width", "height", "original_width", "original_height", "sha256", "phash", "caption", "alt",
            "origin")}})
        k += 1
    return {"id": doc["id"], "url": doc["url"], "language": doc["language"], "language_score": doc["language_score"],
            "date": doc["date"], "source": doc["source"], "offset": doc["offset"], "texts": doc["texts"],
            "images": images, "crawlmix_version": meta["crawlmix_version"], "config_hash": meta["config_hash"]}


def _removed(doc: dict, detail: str) -> dict:
    return {"id": doc["id"], "url": doc["url"], "stage": "dedup", "reason": "too_few_images", "detail": detail,
            "source": doc["source"], "offset": doc["offset"], "language": doc["language"],
            "language_score": doc["language_score"], "cc_languages": "", "duplicate_of": None}


def digest(*parts: str) -> str:
    """One hash of several config digests (the job's and, when it scrubs, the PII config's)."""
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
