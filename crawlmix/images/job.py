"""crawlmix image-text pairs: crawled HTML pages -> WebDataset shards in img2dataset's layout.

    python pipelines/images.py --input 'crawl/*.warc.gz' --output out/images
    python pipelines/images.py --input 'crawl/*.warc.gz' --output out/images --fetch --config jobs/images.yaml
    ray job submit --working-dir . -- python pipelines/images.py --ray --input ... --output ...

Three passes. (1) Index: the image records (and 3xx redirects) of every input WARC and of
``warc_lookup.extra_warcs`` are indexed by URL, one task per file. (2) Pages, one task per input
file: every <img> (with <picture>/<source> and the best srcset candidate) of every kept HTML page
becomes a candidate with its alt text, figcaption, title and surrounding text; URL, caption and
size filters run before any bytes are read; the bytes come from a captured record (any input
file) or, with --fetch, from HTTP; Pillow decodes, checks, resizes and re-encodes. Each task
writes OUTPUT/_staging/<task>.parquet and a marker in OUTPUT/_tasks/ (a rerun does only what is
missing). (3) Shards: one pass over the staged rows in input order drops exact (sha256) and
perceptual-hash near duplicates across the whole run and writes {:05d}.tar (.jpg/.txt/.json),
{:05d}.parquet (a row per candidate image, failures with their reason) and {:05d}_stats.json.

Tasks run in this process (--workers 1), in a local process pool, or on Ray (--ray, or when
RAY_ADDRESS is set).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from collections import Counter, deque
from pathlib import Path


import pyarrow as pa
import pyarrow.parquet as pq

from crawlmix import __version__
from crawlmix.runtime.config import ConfigError
from crawlmix.images.captions import Candidate, choose_caption, page_images
from crawlmix.images.index import WarcIndex, index_file
from crawlmix.images.shards import ROW_NAMES, STAGE_SCHEMA, task_name, write_shards
from crawlmix.images.config import ImagesJob, load_images_job
from crawlmix.io.paths import resolve_inputs

# Candidate funnel, in order: each failure reason belongs to one stage.
STAGES = ["url", "caption", "size_hint", "dedup_url", "download", "decode", "filter", "dedup"]
_FILTER_REASONS = {"too_small", "aspect_ratio", "too_large_area"}


# ----------------------------------------------------------------------------------------------
# One input file: pages -> candidates -> bytes -> processed images (staged)

_FINAL = "final"  # a candidate decided without bytes
_OCTET = ("application/octet-stream", "binary/octet-stream")  # captured records with a generic type: decode decides


def _row(**kw) -> dict:
    r = dict.fromkeys(ROW_NAMES)
    r.update(kw)
    return r


class _Task:
    def __init__(self, path: str, out_dir: Path, job: ImagesJob, index: WarcIndex | None):
        from crawlmix.images.process import ImageProcessor

        self.path, self.job, self.index = path, job, index
        self.name = task_name(path)
        self.out = out_dir
        self.proc = ImageProcessor(job.process, job.filters)
        self.ufilter = None
        if job.url_filter.enabled and (job.filters.url_filter or job.pages.url_filter):
            from crawlmix.text.url_filter import url_filter_for

            self.ufilter = url_filter_for(job.url_filter.model_dump_json())
        self.fetcher = None
        self.pages = Counter()
        self.reasons: Counter = Counter()
        self.stage_reasons: dict[str, Counter] = {}
        self.sources: Counter = Counter()
        self.matches: Counter = Counter()
        self.errors: list[dict] = []
        self.examples: list[dict] = []
        self.timings = Counter()
        self.fetch_n, self.fetch_s = 0, 0.0
        self.seen_urls: set[str] = set()
        self.rows: list[dict] = []
        self.writer = None
        self.staged = 0

    # -- bookkeeping
    def report(self, reason, record, message, dropped=True):
        if reason == "http_status":  # non-2xx pages are not bad input
            self.pages["http_status"] += 1
            return
        self.errors.append({"stage": "read", "reason": reason, "record": record, "message": message,
                            "dropped": dropped})

    def fail(self, row: dict, stage: str, reason: str, detail: str = "") -> None:
        row.update(status="failed", stage=stage, reason=reason, error_message=reason, detail=detail)
        self.reasons[reason] += 1
        self.stage_reasons.setdefault(stage, Counter())[reason] += 1
        if stage in ("decode", "download") and len(self.examples) < 20:
            self.examples.append({"stage": stage, "reason": reason, "record": f"{row['page_url']} -> {row['url']}",
                                  "message": detail})
        return row, _FINAL

    def _emit(self, row: dict) -> None:
        self.rows.append(row)
        if len(self.rows) >= 1000:
            self._flush()

    def _flush(self) -> None:
        if self.writer is None:
            self.tmp = self.out / "_staging" / f"{self.name}.parquet.tmp"
            self.tmp.parent.mkdir(parents=True, exist_ok=True)
            meta = {"crawlmix_version": __version__, "config_hash": self.job.digest(), "input": self.path}
            self.writer = pq.ParquetWriter(self.tmp, STAGE_SCHEMA.with_metadata(meta), compression="zstd")
        if self.rows:
            self.writer.write_table(pa.Table.from_pylist(self.rows, schema=STAGE_SCHEMA))
            self.staged += len(self.rows)
            self.rows = []

    # -- the work
    def run(self) -> dict:
        from crawlmix.io.warc import iter_pages

        job = self.job
        t_start = time.perf_counter()
        if job.fetch.enabled:
            from crawlmix.images.fetch import Fetcher

            self.fetcher = Fetcher(job.fetch)
        window: deque = deque()
        depth = max(8, job.fetch.concurrency * 2) if self.fetcher else 1
        seen_pages: set[str] = set()
        kept = self._kept_pages()
        try:
            for page in iter_pages(self.path, self.report, max_record_bytes=job.pages.max_record_bytes):
                self.pages["read"] += 1
                if page.text is not None:  # WET: no HTML, no images
                    continue
                if kept is not None and page.id not in kept:
                    self.pages["not_kept"] += 1
                    continue
                if job.pages.skip_repeated_pages:
                    if page.url in seen_pages:
                        self.pages["repeated"] += 1
                        continue
                    seen_pages.add(page.url)
                if self.ufilter is not None and job.pages.url_filter:
                    why = self.ufilter.check(page.url)
                    if why:
                        self.pages[f"url_filter:{why}"] += 1
                        continue
                t0 = time.perf_counter()
                try:
                    cands = page_images(page.html, page.url, job)
                except Exception as e:  # a page the parser chokes on is bad input, not a crash
                    self.errors.append({"stage": "parse", "reason": "html_parse_error",
                                        "record": f"{page.source}@{page.offset} ({page.url})",
                                        "message": f"{type(e).__name__}: {e}"})
                    continue
                self.timings["parse"] += time.perf_counter() - t0
                if not cands:
                    self.pages["no_images"] += 1
                    continue
                lang, score = self._page_language(page.html)
                if job.pages.languages is not None and (
                        lang not in job.pages.languages or score < job.pages.language_threshold):
                    self.pages["language"] += 1
                    continue
                self.pages["with_images"] += 1
                for c in cands:  # rows leave the window in page order, whatever finishes first
                    window.append(self._prepare(c, page, lang, score))
                    while len(window) > depth:
                        self._finish(*window.popleft())
            while window:
                self._finish(*window.popleft())
        finally:
            if self.fetcher is not None:
                self.fetcher.close()
            if self.index is not None:
                self.index.close()
        self._flush()
        self.writer.close()
        os.replace(self.tmp, self.out / "_staging" / f"{self.name}.parquet")
        self.timings["total"] = time.perf_counter() - t_start
        return {"task": self.name, "input": self.path, "pages": dict(self.pages),
                "candidates": self.staged, "reasons": dict(self.reasons),
                "stage_reasons": {k: dict(v) for k, v in self.stage_reasons.items()},
                "sources": dict(self.sources), "warc_matches": dict(self.matches), "errors": self.errors,
                "examples": self.examples, "fetch": {"requests": self.fetch_n, "seconds": round(self.fetch_s, 3)},
                "timings": {k: round(v, 3) for k, v in self.timings.items()}}

    def _kept_pages(self) -> set[str] | None:
        """Ids of the pages the text run kept (pages.kept_from), or None for every page."""
        if not self.job.pages.kept_from:
            return None
        f = Path(self.job.pages.kept_from) / "curated" / f"{self.name}.parquet"
        try:
            return set(pq.read_table(f, columns=["id"]).column("id").to_pylist())
        except (OSError, KeyError, pa.ArrowException) as e:
            self.errors.append({"stage": "pages", "reason": "no_curated_file", "record": str(f),
                                "message": f"pages.kept_from: {type(e).__name__}: {str(e)[:200]}"})
            return set()

    def _page_language(self, html: str) -> tuple[str, float]:
        from crawlmix.text import langid
        from crawlmix.text.extract import probe_text

        t0 = time.perf_counter()
        try:
            text = probe_text(html)[:2000]
            lang, score, _ = langid.best(text) if text.strip() else ("unknown", 0.0, {})
        except Exception:
            lang, score = "unknown", 0.0
        self.timings["page_language"] += time.perf_counter() - t0
        return lang, round(score, 4)

    def _prepare(self, c: Candidate, page, lang: str, score: float):
        """Filters that need no bytes: (row, _FINAL) when decided, else (row, None: a captured record
        | Future: a fetch)."""
        job = self.job
        caption, csrc = choose_caption(c, job)
        row = _row(url=c.urls[0] if c.urls else "", caption=caption, caption_source=csrc, alt=c.alt,
                   title=c.title, figcaption=c.figcaption, surrounding=c.surrounding, candidates=c.urls,
                   page_url=page.url, page_id=page.id, page_language=lang, page_language_score=score,
                   image_index=c.index, input=self.path)
        if not c.urls:
            if c.data_uri:
                return self.fail(row, "url", "data_uri", "image inlined as a data: URI")
            return self.fail(row, "url", "no_url", "<img> without src")
        if not all(u.startswith(("http://", "https://")) for u in c.urls[:1]):
            return self.fail(row, "url", "bad_url", f"not an http(s) URL: {c.urls[0][:100]}")
        if self.ufilter is not None and job.filters.url_filter:
            why = self.ufilter.check(c.urls[0])
            if why:
                return self.fail(row, "url", f"url_blocklist:{why}", "image URL rejected by the URL filter")
        cc = job.captions
        if not caption:
            if cc.require_caption:
                return self.fail(row, "caption", "no_caption", "no " + "/".join(cc.sources))
        else:
            words = len(caption.split())
            if len(caption) < cc.min_chars or words < cc.min_words:
                return self.fail(row, "caption", "caption_too_short", f"{len(caption)} chars, {words} words")
            t0 = time.perf_counter()
            from crawlmix.text import langid

            clang, cscore, _ = langid.best(caption)
            self.timings["caption_language"] += time.perf_counter() - t0
            row.update(caption_language=clang, caption_language_score=round(cscore, 4))
            if cc.languages is not None and (clang not in cc.languages or cscore < cc.language_threshold):
                return self.fail(row, "caption", "caption_language", f"{clang} {cscore:.2f}")
        if job.filters.use_declared_size and c.declared and max(c.declared) < job.filters.min_side:
            return self.fail(row, "size_hint", "too_small", f"declared {c.declared[0]}x{c.declared[1]} in the HTML")
        if c.urls[0] in self.seen_urls:
            return self.fail(row, "dedup_url", "duplicate_url", "same image URL earlier in this file")
        self.seen_urls.add(c.urls[0])
        if self.index is not None:
            for u in c.urls:
                hit = self.index.find(u)
                if hit is not None:
                    (wpath, off, status, ct, _), match = hit
                    row.update(url=u, source="warc", warc_file=wpath, warc_offset=off, warc_match=match,
                               http_status=status, content_type=ct)
                    return row, None
        if self.fetcher is not None:
            return row, self.fetcher.submit(c.urls[0])
        return self.fail(row, "download", "not_captured", "no WARC record of this image (use --fetch)")

    def _finish(self, row: dict, fut) -> None:
        if fut is _FINAL:
            self._emit(row)
        else:
            self._get_and_process(row, fut)
            self._emit(row)

    def _get_and_process(self, row: dict, fut) -> None:
        job = self.job
        if fut is None:  # a captured record
            t0 = time.perf_counter()
            data, why = self.index.read(row["warc_file"], row["warc_offset"], job.process.max_bytes)
            self.timings["warc_read"] += time.perf_counter() - t0
            if data is None:
                self.fail(row, "download", "warc_read_error", why)
                return
            ctype = row["content_type"] or ""
            self.matches[row["warc_match"]] += 1
        else:
            t0 = time.perf_counter()
            res = fut.result()
            self.timings["fetch_wait"] += time.perf_counter() - t0
            self.fetch_n += 1
            self.fetch_s += res.elapsed_s
            row.update(source="fetch", http_status=res.status, content_type=res.content_type)
            if res.final_url and res.final_url != row["url"]:
                row["detail"] = f"redirected to {res.final_url}"
            if not res.ok:
                self.fail(row, "download", res.reason, res.detail)
                return
            data, ctype = res.data, res.content_type
        row["bytes"] = len(data)
        if ctype == "image/svg+xml":
            self.fail(row, "decode", "svg", "Content-Type image/svg+xml")
            return
        if ctype and not ctype.startswith("image/") and ctype not in _OCTET:
            self.fail(row, "download", "wrong_content_type", f"Content-Type {ctype!r}")
            return
        from crawlmix.images.process import ImageError

        t0 = time.perf_counter()
        try:
            img = self.proc.process(data)
        except ImageError as e:
            self.timings["process"] += time.perf_counter() - t0
            self.fail(row, "filter" if e.reason in _FILTER_REASONS else "decode", e.reason, e.detail)
            return
        self.timings["process"] += time.perf_counter() - t0
        self.sources[row["source"]] += 1
        row.update(status="success", width=img.width, height=img.height, original_width=img.original_width,
                   original_height=img.original_height, source_format=img.source_format,
                   source_mode=img.source_mode, sha256=img.sha256, phash=f"{img.phash:016x}",
                   image=img.data, ext=img.ext)


def images_file(path: str, out_dir: str, job: ImagesJob, index: WarcIndex | None) -> dict:
    """The body of one task: stage the candidate images of one input file; return its stats."""
    out = Path(out_dir)
    stats = _Task(path, out, job, index).run()
    marker = out / "_tasks" / f"{stats['task']}.json"
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps(stats, indent=1) + "\n")
    os.replace(tmp, marker)
    return stats


# ----------------------------------------------------------------------------------------------
# Driver

_WORKER_INDEX: WarcIndex | None = None


def _pool_init(per_file, canonical, follow):
    global _WORKER_INDEX
    _WORKER_INDEX = WarcIndex(per_file, canonical, follow) if per_file is not None else None


def _pool_images_file(path, out_dir, job):
    return images_file(path, out_dir, job, _WORKER_INDEX)


def _ray_images_file(path, out_dir, job, per_file):
    idx = WarcIndex(per_file, job.warc_lookup.canonical_urls, job.warc_lookup.follow_redirects) \
        if per_file is not None else None
    return images_file(path, out_dir, job, idx)


def _map(fn, items: list, workers: int, backend: str, desc: str, progress: bool, extra=(), init=None):
    """[(item, result | Exception)] in the order of ``items``."""
    from tqdm import tqdm

    results: dict[int, object] = {}
    bar = tqdm(total=len(items), unit="file", desc=desc, disable=not progress)
    if backend == "inline":
        if init:
            init[0](*init[1])
        for i, it in enumerate(items):
            try:
                results[i] = fn(it, *extra)
            except Exception as e:
                results[i] = e
            bar.update(1)
    elif backend == "pool":
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        kw = {"initializer": init[0], "initargs": init[1]} if init else {}
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"), **kw) as ex:
            futs = {ex.submit(fn, it, *extra): i for i, it in enumerate(items)}
            for fut in as_completed(futs):
                try:
                    results[futs[fut]] = fut.result()
                except Exception as e:  # includes a worker that died (BrokenProcessPool)
                    results[futs[fut]] = e
                bar.update(1)
    else:  # ray
        from crawlmix.runtime.executor import init_ray

        ray = init_ray(workers)
        remote = ray.remote(num_cpus=1, max_retries=1)(fn)
        refs = [ray.put(x) for x in extra]
        pending, todo = {}, list(enumerate(items))
        while todo or pending:
            while todo and len(pending) < workers:
                i, it = todo.pop(0)
                pending[remote.remote(it, *refs)] = i
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                i = pending.pop(ref)
                try:
                    results[i] = ray.get(ref)
                except Exception as e:
                    results[i] = e
                bar.update(1)
    bar.close()
    return [(it, results[i]) for i, it in enumerate(items)]


def run(inputs: list[str], out_dir: Path, job: ImagesJob, workers=1, backend: str | None = None,
        overwrite: bool = False, progress: bool = True) -> dict:
    if not isinstance(workers, int):  # an Executor
        backend, progress, workers = workers.backend, workers.progress, workers.workers
    out_dir.mkdir(parents=True, exist_ok=True)
    prev = out_dir / "stats.json"
    if prev.exists() and not overwrite:
        old = json.loads(prev.read_text())
        if old.get("config_hash") != job.digest():
            raise ConfigError(f"{out_dir} holds a run with another config ({old.get('config_hash')}); "
                              f"use a new --output or --overwrite")
    if overwrite:
        for d in ("_tasks", "_staging"):
            for m in (out_dir / d).glob("*"):
                m.unlink()
    (out_dir / "config.json").write_text(json.dumps(job.model_dump(mode="json"), indent=2) + "\n")
    backend = backend or ("inline" if workers <= 1 or len(inputs) <= 1 else "pool")
    t0 = time.perf_counter()
    errors: list[dict] = []

    # 1. index the captured image records of every input (and sibling) WARC
    per_file = None
    if job.warc_lookup.enabled:
        extra = resolve_inputs(job.warc_lookup.extra_warcs) if job.warc_lookup.extra_warcs else []
        to_index = list(dict.fromkeys(inputs + extra))
        per_file = []
        for path, res in _map(index_file, to_index, workers, backend, "index", progress):
            if isinstance(res, Exception):
                errors.append({"stage": "index", "reason": "task_failed", "record": path,
                               "message": f"{type(res).__name__}: {str(res)[-500:]}"})
            else:
                per_file.append(res)
                errors += res["errors"]
    t_index = time.perf_counter() - t0
    n_indexed = sum(len(f["records"]) for f in per_file or [])

    # 2. one task per input file (finished tasks are skipped)
    todo = [p for p in inputs if overwrite or not (out_dir / "_tasks" / f"{task_name(p)}.json").exists()
            or not (out_dir / "_staging" / f"{task_name(p)}.parquet").exists()]
    lk = job.warc_lookup
    if backend == "inline":
        idx = WarcIndex(per_file, lk.canonical_urls, lk.follow_redirects) if per_file is not None else None
        done = _map(images_file, todo, 1, "inline", "images", progress, extra=(str(out_dir), job, idx))
    elif backend == "pool":
        done = _map(_pool_images_file, todo, workers, "pool", "images", progress, extra=(str(out_dir), job),
                    init=(_pool_init, (per_file, lk.canonical_urls, lk.follow_redirects)))
    else:
        done = _map(_ray_images_file, todo, workers, "ray", "images", progress,
                    extra=(str(out_dir), job, per_file))
    failed = []
    for path, res in done:
        if isinstance(res, Exception):
            failed.append(path)
            errors.append({"stage": "task", "reason": "task_failed", "record": path,
                           "message": f"{type(res).__name__}: {str(res)[-500:]}"})
    task_stats = []
    for p in inputs:
        m = out_dir / "_tasks" / f"{task_name(p)}.json"
        if m.exists() and p not in failed:
            task_stats.append(json.loads(m.read_text()))
    t_tasks = time.perf_counter() - t0 - t_index

    # 3. dedup across the run + shards
    meta = {"crawlmix_version": __version__, "config_hash": job.digest(), "seed": str(job.seed)}
    sh = write_shards(out_dir, [p for p in inputs if p not in failed], job, meta, progress)
    stats = merge(task_stats, sh, errors)
    stats.update({"job": job.name, "crawlmix_version": __version__, "config_hash": job.digest(), "seed": job.seed,
                  "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "output": str(out_dir),
                  "inputs": len(inputs), "workers": workers, "backend": backend, "failed_tasks": failed,
                  "indexed_image_records": n_indexed,
                  "wall_s": round(time.perf_counter() - t0, 2),
                  "phase_s": {"index": round(t_index, 2), "images": round(t_tasks, 2),
                              "shards": round(time.perf_counter() - t0 - t_index - t_tasks, 2)}})
    stats = {k: stats[k] for k in sorted(stats, key=lambda k: (k not in _HEAD, _HEAD.index(k) if k in _HEAD else 0))}
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=1, ensure_ascii=False) + "\n")
    return stats


_HEAD = ["job", "crawlmix_version", "config_hash", "seed", "created", "output", "inputs", "workers", "backend",
         "wall_s", "phase_s", "pages", "candidates", "successes", "funnel", "reasons", "sources", "warc_matches"]


def merge(task_stats: list[dict], sh: dict, errors: list[dict]) -> dict:
    pages, reasons, sources, matches, timings = Counter(), Counter(), Counter(), Counter(), Counter()
    examples, fetch_n, fetch_s, candidates = [], 0, 0.0, 0
    for t in task_stats:
        pages.update(t["pages"])
        reasons.update(t["reasons"])
        sources.update(t["sources"])
        matches.update(t["warc_matches"])
        timings.update(t["timings"])
        errors = errors + t["errors"]
        examples += t["examples"][: max(0, 20 - len(examples))]
        fetch_n += t["fetch"]["requests"]
        fetch_s += t["fetch"]["seconds"]
        candidates += t["candidates"]
    reasons.update(sh["duplicates"])
    by_stage = {st: Counter() for st in STAGES}
    for t in task_stats:
        for st, rs in t["stage_reasons"].items():
            by_stage[st].update(rs)
    by_stage["dedup"].update(sh["duplicates"])
    funnel, n = [], candidates
    for stage in STAGES:
        dropped = by_stage[stage]
        out = n - sum(dropped.values())
        funnel.append({"stage": stage, "in": n, "out": out, "dropped": dict(dropped.most_common())})
        n = out
    successes = sum(s["successes"] for s in sh["shards"])
    return {"pages": dict(pages), "candidates": candidates, "successes": successes, "funnel": funnel,
            "reasons": dict(reasons.most_common()), "sources": dict(sources), "warc_matches": dict(matches),
            "fetch": {"requests": fetch_n, "mean_s": round(fetch_s / fetch_n, 4) if fetch_n else None},
            "shards": sh["shards"], "timings_s": {k: round(v, 3) for k, v in timings.items()},
            "error_count": len(errors), "errors": errors[:1000], "image_error_examples": examples}


def summary(stats: dict) -> str:
    p = stats["pages"]
    lines = [f"crawlmix {stats['crawlmix_version']}  job={stats['job']}  config={stats['config_hash']}  "
             f"files={stats['inputs']}  wall={stats['wall_s']}s",
             f"output: {stats['output']}/{{00000..}}.tar  .parquet  _stats.json  stats.json", "",
             f"pages read {p.get('read', 0)}, with images {p.get('with_images', 0)}, "
             f"repeated {p.get('repeated', 0)}, no <img> {p.get('no_images', 0)}, "
             f"URL-filtered {sum(v for k, v in p.items() if k.startswith('url_filter'))}, "
             f"language {p.get('language', 0)}", "",
             f"{'stage':<12}{'in':>8}{'out':>8}  dropped (top reasons)"]
    for f in stats["funnel"]:
        top = ", ".join(f"{r}={n}" for r, n in list(f["dropped"].items())[:4])
        lines.append(f"{f['stage']:<12}{f['in']:>8}{f['out']:>8}  {top}")
    src = ", ".join(f"{k}={v}" for k, v in stats["sources"].items()) or "-"
    lines += ["", f"candidates {stats['candidates']}  ->  image-text pairs {stats['successes']} "
                  f"in {len(stats['shards'])} shard(s)  (bytes from: {src})"]
    if stats["error_count"]:
        lines.append(f"bad input: {stats['error_count']} (listed under 'errors' in stats.json), e.g.")
        lines += [f"  {e['reason']}: {e['record']}: {e['message'][:120]}" for e in stats["errors"][:3]]
    return "\n".join(lines)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="images.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("--input", action="append", required=True, metavar="PATH_OR_GLOB",
                    help="WARC file, glob or fsspec URL; repeatable")
    ap.add_argument("--output", required=True, metavar="DIR", help="output folder (shards, stats.json)")
    ap.add_argument("--config", metavar="YAML", help="images job config (default: jobs/images.yaml)")
    ap.add_argument("--fetch", action="store_true",
                    help="download images no input WARC captured (network; sets fetch.enabled)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="parallel tasks (default: all cores, %(default)s here)")
    ap.add_argument("--ray", action="store_true", help="run tasks on Ray (also when RAY_ADDRESS is set)")
    ap.add_argument("--overwrite", action="store_true", help="redo finished tasks")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    try:
        job = load_images_job(a.config, {"fetch": {"enabled": True}} if a.fetch else None)
        inputs = resolve_inputs(a.input)
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    backend = "ray" if a.ray or os.environ.get("RAY_ADDRESS") else None
    try:
        stats = run(inputs, Path(a.output), job, max(1, a.workers), backend, a.overwrite, not a.no_progress)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary(stats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
