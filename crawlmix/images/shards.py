"""Shards of the images job (crawlmix.images.job): staged rows -> img2dataset's layout.

One pass over the staged rows (OUTPUT/_staging/<task>.parquet) in input order drops exact (sha256) and
perceptual-hash near duplicates (``NearDupIndex``) across the whole run and writes {:05d}.tar
(.jpg/.txt/.json), {:05d}.parquet (a row per candidate image, failures with their reason) and
{:05d}_stats.json, each published atomically (crawlmix.runtime.atomic; OUTPUT may be a URL: a shard is
written in this node's local scratch and uploaded whole). Also the row schemas the tasks stage with and the
task naming they share.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import tarfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from crawlmix.images.config import ImagesJob
from crawlmix.io.paths import task_name
from crawlmix.runtime import storage
from crawlmix.runtime.atomic import TMP_SUFFIX, atomic_path, write_json, write_table

# ----------------------------------------------------------------------------------------------
# Rows: one per candidate image (the shard Parquet); staging adds the encoded image.

ROW_FIELDS = [
    ("key", pa.string()), ("status", pa.string()), ("error_message", pa.string()),  # img2dataset's names
    ("stage", pa.string()), ("reason", pa.string()), ("detail", pa.string()),
    ("url", pa.string()), ("caption", pa.string()), ("caption_source", pa.string()),
    ("alt", pa.string()), ("title", pa.string()), ("figcaption", pa.string()), ("surrounding", pa.string()),
    ("candidates", pa.list_(pa.string())), ("page_url", pa.string()), ("page_id", pa.string()),
    ("page_language", pa.string()), ("page_language_score", pa.float64()),
    ("caption_language", pa.string()), ("caption_language_score", pa.float64()),
    ("image_index", pa.int32()), ("source", pa.string()), ("warc_file", pa.string()), ("warc_offset", pa.int64()),
    ("warc_match", pa.string()), ("http_status", pa.int32()), ("content_type", pa.string()),
    ("bytes", pa.int64()), ("width", pa.int32()), ("height", pa.int32()),
    ("original_width", pa.int32()), ("original_height", pa.int32()), ("source_format", pa.string()),
    ("source_mode", pa.string()), ("sha256", pa.string()), ("phash", pa.string()), ("duplicate_of", pa.string()),
    ("input", pa.string()),
]
ROW_SCHEMA = pa.schema(ROW_FIELDS)
STAGE_SCHEMA = pa.schema(ROW_FIELDS + [("image", pa.binary()), ("ext", pa.string())])
ROW_NAMES = [n for n, _ in ROW_FIELDS]


@contextlib.contextmanager
def open_parquet(path: str) -> Iterator[pq.ParquetFile]:
    """A ParquetFile over a local path or a URL (read by byte ranges: footer, then the row groups asked for)."""
    if not storage.is_remote(path):
        yield pq.ParquetFile(storage.local(path))
        return
    with storage.open(path, "rb") as f:
        yield pq.ParquetFile(f)


# ----------------------------------------------------------------------------------------------
# Shards: dedup across the run, img2dataset layout

class NearDupIndex:
    """64-bit hashes within ``dist`` bits: split into dist+1 bands, a near duplicate shares one
    band exactly (pigeonhole), then the full Hamming distance is checked."""

    def __init__(self, dist: int):
        self.dist = dist
        nb = dist + 1
        edges = [round(64 * i / nb) for i in range(nb + 1)]
        self.bands = [(edges[i], edges[i + 1] - edges[i]) for i in range(nb)]
        self.tables: list[dict[int, list[tuple[int, str]]]] = [{} for _ in range(nb)]

    def find_or_add(self, h: int, key: str) -> str | None:
        parts = [(h >> lo) & ((1 << width) - 1) for lo, width in self.bands]
        for t, p in zip(self.tables, parts):
            for other, okey in t.get(p, ()):
                if (h ^ other).bit_count() <= self.dist:
                    return okey
        for t, p in zip(self.tables, parts):
            t.setdefault(p, []).append((h, key))
        return None


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mtime, ti.mode, ti.uid, ti.gid, ti.uname, ti.gname = len(data), 0, 0o644, 0, 0, "", ""
    tar.addfile(ti, io.BytesIO(data))


class PairShardWriter:
    """Image-text pairs into img2dataset shards: {:05d}.tar, {:05d}.parquet, {:05d}_stats.json.

    The tar is written by tarfile (USTAR, mode 0644, uid/gid 0, mtime 0, tarfile's 10 KiB record padding),
    members in the order added. Neither webdataset.TarWriter (sorts members, its own header fields and
    padding) nor crawlmix.io.tar.TarWriter (mode 0444, owner crawlmix) writes these bytes: switching would
    change every existing shard, so this stays as it is."""

    def __init__(self, out: str | Path, job: ImagesJob, meta: dict):
        self.out, self.job, self.meta = out, job, meta
        self.n = self.shard = 0
        self.tar = None
        self.rows: list[dict] = []
        self.shards: list[dict] = []
        self._open()

    def _open(self):
        self._files = contextlib.ExitStack()  # the open tar, inside atomic_path: published on close
        tmp = self._files.enter_context(atomic_path(storage.join(self.out, f"{self.shard:05d}.tar")))
        self.tar = self._files.enter_context(tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT))
        self.n, self.rows = 0, []

    def next_key(self) -> str:
        """The key the next written image gets."""
        if self.n >= self.job.shards.samples_per_shard:
            return f"{self.shard + 1:05d}0000"
        return f"{self.shard:05d}{self.n:04d}"

    def add(self, row: dict, image: bytes | None, ext: str | None) -> None:
        if image is not None:
            if self.n >= self.job.shards.samples_per_shard:
                self._close()
                self.shard += 1
                self._open()
            key = f"{self.shard:05d}{self.n:04d}"
            row["key"] = key
            self.n += 1
            _tar_add(self.tar, f"{key}.{ext}", image)
            _tar_add(self.tar, f"{key}.txt", (row["caption"] or "").encode())
            _tar_add(self.tar, f"{key}.json", json.dumps(row, ensure_ascii=False, sort_keys=True).encode())
        self.rows.append(row)

    def _close(self):
        self._files.close()  # closes the tar, then publishes it
        comp = self.job.shards.compression
        write_table(storage.join(self.out, f"{self.shard:05d}.parquet"),
                    pa.Table.from_pylist(self.rows, schema=ROW_SCHEMA.with_metadata(self.meta)),
                    compression=None if comp == "none" else comp)
        reasons = Counter(r["reason"] for r in self.rows if r["status"] != "success")
        by_stage = Counter(r["stage"] for r in self.rows if r["status"] != "success")
        st = {"shard": f"{self.shard:05d}", "count": len(self.rows), "successes": self.n,
              "failed_to_download": by_stage["download"], "failed_to_resize": by_stage["decode"],
              "failed_filters": sum(by_stage[s] for s in ("url", "caption", "size_hint", "filter")),
              "duplicates": by_stage["dedup"] + by_stage["dedup_url"],
              "status_dict": dict(reasons.most_common()), "top_errors": dict(reasons.most_common(10)),
              "failed_by_stage": dict(sorted(by_stage.items()))}
        write_json(storage.join(self.out, f"{self.shard:05d}_stats.json"), st, indent=1)
        self.shards.append(st)

    def close(self) -> list[dict]:
        self._close()
        return self.shards

    def __enter__(self) -> "PairShardWriter":
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if kind is None:
            self.close()
        else:  # the open tar is closed and removed unpublished (the shards before it stay)
            self._files.__exit__(kind, exc, tb)


_SHARD_FILE = re.compile(r"\d{5}(\.tar|\.parquet|_stats\.json)(%s)?" % re.escape(TMP_SUFFIX))


def write_shards(out: str | Path, inputs: list[str], job: ImagesJob, meta: dict, progress=True) -> dict:
    """Read the staged rows in input order, drop duplicates across the run, write the shards (``out``: a
    local folder or a URL)."""
    for old in list(storage.ls(out)):
        if _SHARD_FILE.fullmatch(storage.name(old)):
            storage.remove(old)
    dups = Counter()
    with PairShardWriter(out, job, meta) as w:
        _add_rows(out, inputs, job, w, dups, progress)
    return {"shards": w.shards, "duplicates": dict(dups)}


def _add_rows(out: str | Path, inputs: list[str], job: ImagesJob, w: PairShardWriter, dups: Counter,
              progress: bool) -> None:
    """The staged rows of every input, in order, into ``w``; duplicates across the run become failed rows."""
    from tqdm import tqdm

    exact: dict[str, str] = {}
    near = NearDupIndex(job.dedup.phash_max_distance) if job.dedup.perceptual else None
    for path in tqdm(inputs, unit="file", desc="shards", disable=not progress):
        f = storage.join(out, "_staging", f"{task_name(path)}.parquet")
        if not storage.exists(f):
            continue
        with open_parquet(f) as pf:
            _add_file(pf, job, w, dups, exact, near)


def _add_file(pf: pq.ParquetFile, job: ImagesJob, w: PairShardWriter, dups: Counter, exact: dict, near) -> None:
    for batch in pf.iter_batches(batch_size=512):
        for row in batch.to_pylist():
            image, ext = row.pop("image"), row.pop("ext")
            if row["status"] == "success":
                dup = None
                if job.dedup.exact:
                    dup = exact.get(row["sha256"])
                    if dup is not None:
                        row.update(status="failed", stage="dedup", reason="duplicate_sha256",
                                   error_message="duplicate_sha256", duplicate_of=dup,
                                   detail="same bytes as an earlier image")
                if dup is None and near is not None:
                    dup = near.find_or_add(int(row["phash"], 16), w.next_key())
                    if dup is not None:
                        row.update(status="failed", stage="dedup", reason="near_duplicate",
                                   error_message="near_duplicate", duplicate_of=dup,
                                   detail=f"pHash within {job.dedup.phash_max_distance} bits of {dup}")
                if dup is not None:
                    dups[row["reason"]] += 1
                    image = None
                elif job.dedup.exact:
                    exact[row["sha256"]] = w.next_key()
            else:
                image = None
            w.add(row, image, ext)
