"""One input file of the images job: pages -> candidates -> bytes -> processed images, staged.

``images_task(path, out_dir, job, pii_json, per_file)`` is the body of one task (crawlmix.images.job runs
one per input file through the executor): every <img> of every kept HTML page becomes a candidate; URL,
caption and size filters run before any bytes are read; the bytes come from a captured record (any indexed
WARC, ``per_file`` from ``index_file``) or, with fetch enabled, from HTTP; Pillow decodes, checks,
resizes and re-encodes. The rows go to OUTPUT/_staging/<task>.parquet (``ParquetSink``; OUTPUT may be a
URL: the rows are staged in this node's scratch and uploaded whole when complete; with ``pii_json``,
crawlmix.pii.fields.PiiSink: captions, alt, title, figcaption, surrounding text and every URL scrubbed
before a row is written, and the error records too), then the task's
completion marker (OUTPUT/_tasks/<task>.json, keyed on ``task_digest``: the job and the PII config) is
written last, carrying the task's stats and the version of the curated file its pages came from.
"""

from __future__ import annotations

import time
from collections import Counter, deque

from crawlmix import __version__
from crawlmix.images.captions import Candidate, choose_caption, page_images
from crawlmix.images.config import ImagesJob
from crawlmix.images.index import WarcIndex
from crawlmix.images.shards import ROW_NAMES, STAGE_SCHEMA
from crawlmix.io.paths import task_name
from crawlmix.runtime import storage
from crawlmix.runtime.atomic import ParquetSink
from crawlmix.runtime.completion import Completion
from crawlmix.runtime.funnel import StageStats

# Candidate funnel, in order: each failure reason belongs to one stage. All but the last run in the
# task; "dedup" runs across the whole run, in the shard pass.
STAGES = ["url", "caption", "size_hint", "dedup_url", "download", "decode", "filter", "dedup"]
TASK_STAGES = STAGES[:-1]
_FILTER_REASONS = {"too_small", "aspect_ratio", "too_large_area"}
_FINAL = "final"  # a candidate decided without bytes
_OCTET = ("application/octet-stream", "binary/octet-stream")  # captured records with a generic type: decode decides
_STAGE_ROWS = 1000  # staged rows per Parquet row group


def _row(**kw) -> dict:
    r = dict.fromkeys(ROW_NAMES)
    r.update(kw)
    return r


def funnel_counts(funnel: StageStats) -> dict:
    """stage -> {in, out, dropped}. Not ``StageStats.to_dict()``: that sorts the reasons by name, and the
    run's funnel lists reasons of equal count in the order they were first met."""
    return {s: {"in": v["in"], "out": v["out"], "dropped": dict(v["dropped"])} for s, v in funnel.stages.items()}


# ----------------------------------------------------------------------------------------------
# The WARC index, built once per worker process from the records the index step found

_INDEX_CACHE: dict[tuple, WarcIndex] = {}


def worker_index(per_file: list[dict] | None, job: ImagesJob) -> WarcIndex | None:
    """The ``WarcIndex`` of ``per_file``, built on first use in this process and kept for its next tasks
    (keyed by the lookup settings and each indexed file's path and record count)."""
    if per_file is None:
        return None
    lk = job.warc_lookup
    key = (lk.canonical_urls, lk.follow_redirects, tuple((f["path"], len(f["records"])) for f in per_file))
    idx = _INDEX_CACHE.get(key)
    if idx is None:
        _INDEX_CACHE.clear()  # one run's index at a time
        idx = _INDEX_CACHE[key] = WarcIndex(per_file, lk.canonical_urls, lk.follow_redirects)
    return idx


def task_digest(job: ImagesJob, pii_json: str | None) -> str:
    """What a task's marker is keyed on: the images job, and the PII config its rows were scrubbed with."""
    if not pii_json:
        return job.digest()
    from crawlmix.pii.config import PiiConfig

    return f"{job.digest()}+pii{PiiConfig.model_validate_json(pii_json).digest()}"


def kept_fingerprint(job: ImagesJob, name: str) -> str | None:
    """The version (xxh3 of the bytes) of the curated file(s) whose pages a task keeps (pages.kept_from; a
    split input's parts together, crawlmix.images.kept): a task staged from another version is redone. None
    without kept_from. No curated file raises: its text task failed (or has not run), and a task that staged
    no pages for that reason must not count as done."""
    if not job.pages.kept_from:
        return None
    from crawlmix.images.kept import bytes_fingerprint

    return bytes_fingerprint(job.pages.kept_from, name)


def images_task(path: str, out_dir: str, job: ImagesJob, pii_json: str | None,
                per_file: list[dict] | None) -> dict:
    """The body of one task: stage the candidate images of one input file (rows PII-scrubbed before they are
    written when ``pii_json`` is given), mark it done, return its stats."""
    from crawlmix.runtime.runstate import failpoint

    failpoint(f"images:{task_name(path)}")
    kept = kept_fingerprint(job, task_name(path))
    stats = FileImages(path, out_dir, job, worker_index(per_file, job), pii_json).run()
    stats["kept_from"] = kept
    return Completion(out_dir, task_digest(job, pii_json)).mark(stats["task"], stats)


# ----------------------------------------------------------------------------------------------
# One input file

class FileImages:
    """The candidate images of one input file, staged in page order."""

    def __init__(self, path: str, out_dir: str, job: ImagesJob, index: WarcIndex | None, pii_json: str | None = None):
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
        self.funnel = StageStats(TASK_STAGES)
        self.sources: Counter = Counter()
        self.matches: Counter = Counter()
        self.errors: list[dict] = []
        self.examples: list[dict] = []
        self.timings = Counter()
        self.fetch_n, self.fetch_s = 0, 0.0
        self.seen_urls: set[str] = set()
        meta = {"crawlmix_version": __version__, "config_hash": job.digest(), "input": path}
        self.pii_json = pii_json
        sink = ParquetSink
        if pii_json:  # captions, alt, figcaption, surrounding text, URLs: scrubbed before a row is staged
            from functools import partial

            from crawlmix.pii.config import PiiConfig
            from crawlmix.pii.fields import PiiSink

            sink = partial(PiiSink, pii=PiiConfig.model_validate_json(pii_json))
        self.sink = sink(storage.join(out_dir, "_staging", f"{self.name}.parquet"), STAGE_SCHEMA, meta,
                         compression="zstd", rows_per_group=_STAGE_ROWS)

    # -- bookkeeping
    def report(self, reason, record, message, dropped=True):
        if reason in ("http_status", "unsupported_mime"):  # non-2xx pages, PDFs, ...: not bad input
            self.pages[reason] += 1
            return
        self.errors.append({"stage": "read", "reason": reason, "record": str(record), "message": message,
                            "dropped": dropped})

    def _through(self, last: str) -> None:
        """A candidate went through every task stage before ``last`` and entered ``last``."""
        for stage in TASK_STAGES:
            self.funnel.enter(stage)
            if stage == last:
                return
            self.funnel.passed(stage)

    def fail(self, row: dict, stage: str, reason: str, detail: str = ""):
        row.update(status="failed", stage=stage, reason=reason, error_message=reason, detail=detail)
        self.reasons[reason] += 1
        self._through(stage)
        self.funnel.drop(stage, reason)
        if stage in ("decode", "download") and len(self.examples) < 20:
            self.examples.append({"stage": stage, "reason": reason, "record": f"{row['page_url']} -> {row['url']}",
                                  "message": detail})
        return row, _FINAL

    # -- the work
    def run(self) -> dict:
        t_start = time.perf_counter()
        try:
            self._pages()
            rows = self.sink.close()
        except BaseException:
            self.sink.abort()
            raise
        pii = None
        if self.pii_json:  # the error records quote page and image URLs: scrubbed like the rows
            from crawlmix.pii.fields import field_scrubber_for
            from crawlmix.pii.spans import PiiStats

            side = PiiStats()
            fs = field_scrubber_for(self.pii_json)
            self.errors, self.examples = fs.records(self.errors, side), fs.records(self.examples, side)
            reps = side.replacements + self.sink.field_stats.replacements
            pii = {"replacements": dict(sorted(reps.items())),
                   "errors": dict(sorted((side.errors + self.sink.field_stats.errors).items()))}
        self.timings["total"] = time.perf_counter() - t_start
        return {"task": self.name, "input": self.path, "pii": pii, "pages": dict(self.pages),
                "candidates": rows, "reasons": dict(self.reasons), "funnel": funnel_counts(self.funnel),
                "sources": dict(self.sources), "warc_matches": dict(self.matches), "errors": self.errors,
                "examples": self.examples, "fetch": {"requests": self.fetch_n, "seconds": round(self.fetch_s, 3)},
                "timings": {k: round(v, 3) for k, v in self.timings.items()}}

    def _pages(self) -> None:
        from crawlmix.io.warc import iter_pages

        job = self.job
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
                    self.pages[getattr(e, "reason", "html_parse_error")] += 1  # too_deep, ...: the text bounds
                    self.errors.append({"stage": "parse", "reason": getattr(e, "reason", "html_parse_error"),
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

    def _kept_pages(self) -> set[str] | None:
        """Ids of the pages the text run kept (pages.kept_from: every curated part of this file), or None for
        every page. A missing or unreadable file fails the task (no marker): "no pages" would be taken for done."""
        if not self.job.pages.kept_from:
            return None
        from crawlmix.images.kept import kept_ids

        return kept_ids(self.job.pages.kept_from, self.name)

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
        if fut is not _FINAL:
            self._get_and_process(row, fut)
        self.sink.add(row)

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
        for stage in TASK_STAGES:  # a pair so far: through every stage of the task
            self.funnel.enter(stage)
            self.funnel.passed(stage)
        row.update(status="success", width=img.width, height=img.height, original_width=img.original_width,
                   original_height=img.original_height, source_format=img.source_format,
                   source_mode=img.source_mode, sha256=img.sha256, phash=f"{img.phash:016x}",
                   image=img.data, ext=img.ext)
