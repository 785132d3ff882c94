"""One input file of the interleaved job: HTML pages -> documents of text blocks and images, staged.

``interleaved_task(path, out_dir, job, pii_json, kept_from, per_file)`` is the body of one task
(crawlmix.interleaved.job runs one per input file through the executor). Per page, cheapest first:

  pages     WET records, pages the text run did not keep (``kept_from``), re-crawls, the URL blocklist
  walk      the DOM in reading order (crawlmix.interleaved.walk); a page that does not parse, or gives nothing
  text      fewer than ``documents.min_words`` words in its text blocks
  language  fastText lid.176 on the text (``documents.languages``; every page is labelled)
  quality   the text job's Gopher / C4 / FineWeb / user rules on the joined text
  images    every image checked, its bytes read or fetched, decoded, filtered, deduplicated within the
            document (crawlmix.interleaved.media); then ``min_images`` / ``max_images``

With a PII config, every text block, the page URL and every image URL are scrubbed here, before anything is
written. Kept documents go to OUTPUT/interleaved/_staging/<task>.parquet, dropped ones (with stage and
reason) to _staging/<task>.removed.parquet (OUTPUT may be a URL: staged in this node's scratch, uploaded
whole); the task's completion marker is written last.

``images_off`` (no WARC record an image could be read from, fetching off: crawlmix.interleaved.job): the
image side is skipped. No page is parsed for image candidates: the walk runs on a tree parsed once (with the
text stages' page bounds) and the captions it protects from the link-list rule are looked for only for a
block that would be dropped as one and is the text of a caption-like element (``PageCaptions``); every
``<img>`` is left out, as it would have been (not captured), so the documents are the same, and the image
funnel is not counted (``images_seen`` says how many ``<img>`` were not looked at).
"""

from __future__ import annotations

import time
from collections import Counter, deque
from functools import lru_cache

from crawlmix import __version__
from crawlmix.interleaved.config import InterleavedJob
from crawlmix.interleaved.media import DocumentImages
from crawlmix.interleaved.schema import STAGE_SCHEMA, staging_paths
from crawlmix.interleaved.walk import Img, arrange, walk
from crawlmix.io.paths import task_name
from crawlmix.runtime.atomic import ParquetSink
from crawlmix.runtime.completion import Completion
from crawlmix.runtime.funnel import StageStats
from crawlmix.text.schema import REMOVED_SCHEMA

DOC_STAGES = ["read", "pages", "walk", "text", "language", "quality", "images", "dedup"]
DOC_TASK_STAGES = DOC_STAGES[:-1]
NOT_ERRORS = {"http_status"}


@lru_cache(maxsize=4)
def _quality(cfg_json: str):
    from crawlmix.text.config import QualityConfig
    from crawlmix.text.quality import Quality

    return Quality(QualityConfig.model_validate_json(cfg_json))


def interleaved_task(path: str, out_dir: str, job: InterleavedJob, run_hash: str, pii_json: str | None,
                     kept_from: str | None, kept_state: str | None, images_off: bool,
                     per_file: list[dict] | None) -> dict:
    """Stage the documents of one input file, mark the task done (with ``kept_state``, what the text run
    kept when it ran, and ``images_off``), return its stats. ``out_dir``: OUTPUT/interleaved, a path or a URL."""
    from crawlmix.images.task import worker_index

    index = worker_index(per_file, job.images_job())
    stats = FileDocuments(path, out_dir, job, run_hash, pii_json, kept_from, index, images_off).run()
    return Completion(out_dir, run_hash).mark(stats["task"], {**stats, "kept": kept_state, "images_off": images_off})


def _walk_without_images(html: str, dom, max_images: int):
    """The walk of a page whose images cannot be kept: one parse, the text stages' page bounds checked (as
    page_images checks them), the protected captions found only if a block needs them."""
    from resiliparse.parse.html import HTMLTree

    from crawlmix.images.captions import PageCaptions
    from crawlmix.text.extract import check_bounds

    tree = check_bounds(HTMLTree.parse(html))
    return walk(html, dom, PageCaptions(tree, max_images), tree=tree)


class FileDocuments:
    def __init__(self, path: str, root: str, job: InterleavedJob, run_hash: str, pii_json: str | None,
                 kept_from: str | None, index, images_off: bool = False):
        self.path, self.root, self.job, self.kept_from, self.index = path, root, job, kept_from, index
        self.images_off, self.images_seen = images_off, 0
        self.name = task_name(path)
        self.ij = job.images_job()
        self.funnel = StageStats(DOC_TASK_STAGES)
        self.errors: list[dict] = []
        self.blocks: Counter = Counter()
        self.timings: Counter = Counter()
        self.languages: Counter = Counter()
        self.scrubber = None
        self.pii = None
        if pii_json:  # crawlmix.pii's field scrubber: texts with presidio, URLs piece by piece
            from crawlmix.pii.fields import field_scrubber_for
            from crawlmix.pii.spans import PiiStats

            self.scrubber, self.pii = field_scrubber_for(pii_json), PiiStats()
        self.ufilter = None
        if job.url_filter.enabled and (job.pages.url_filter or job.images.filters.url_filter):
            from crawlmix.text.url_filter import url_filter_for

            self.ufilter = url_filter_for(job.url_filter.model_dump_json())
        meta = {"crawlmix_version": __version__, "config_hash": run_hash, "input": path}
        docs_file, removed_file = staging_paths(root, self.name)
        self.docs = ParquetSink(docs_file, STAGE_SCHEMA, meta, compression="zstd", rows_per_group=32)
        self.removed = ParquetSink(removed_file, REMOVED_SCHEMA, meta, compression="zstd", rows_per_group=1000)

    # -- bookkeeping
    def _drop(self, page, stage: str, reason: str, detail: str = "", lang: str = "", score=None) -> None:
        for s in DOC_TASK_STAGES:
            self.funnel.enter(s)
            if s == stage:
                break
            self.funnel.passed(s)
        self.funnel.drop(stage, reason)
        self._removed_row(page.id, page.url, stage, reason, detail, page.source, page.offset, lang, score)

    def _removed_row(self, id_, url, stage, reason, detail, source, offset, lang="", score=None) -> None:
        row = {"id": id_, "url": url, "stage": stage, "reason": reason, "detail": detail, "source": source,
               "offset": offset, "language": lang, "language_score": score, "cc_languages": "", "duplicate_of": None}
        if self.scrubber is not None:
            (row,) = self.scrubber.rows([row], None, self.pii)
        self.removed.add(row)

    def read_error(self, reason, ref, message, dropped=True) -> None:
        if reason not in NOT_ERRORS:
            self.errors.append({"stage": "read", "reason": reason, "record": str(ref), "message": message})
        if dropped:
            self.funnel.enter("read")
            self.funnel.drop("read", reason)
            self._removed_row(str(ref), ref.url or ref.record_id, "read", reason, message, self.path,
                              -1 if ref.offset is None else ref.offset)

    # -- the work
    def run(self) -> dict:
        t0 = time.perf_counter()
        fetcher = None
        try:
            if self.ij.fetch.enabled:
                from crawlmix.images.fetch import Fetcher

                fetcher = Fetcher(self.ij.fetch)
            self.media = DocumentImages(self.job, self.ij, self.index, fetcher, self.ufilter)
            self._pages(fetcher is not None)
            counts = {"documents": self.docs.close(), "removed": self.removed.close()}
        except BaseException:
            self.docs.abort()
            self.removed.abort()
            raise
        finally:
            if fetcher is not None:
                fetcher.close()
            if self.index is not None:
                self.index.close()
        self.timings["total"] = time.perf_counter() - t0
        self.timings.update(self.media.timings)
        media, errors = self.media.stats(), self.errors[:200]
        if self.scrubber is not None:  # error records quote page and image URLs
            errors = self.scrubber.records(errors, self.pii)
            media["examples"] = self.scrubber.records(media["examples"], self.pii)
        return {"task": self.name, "input": self.path, **counts,
                "funnel": {s: {"in": v["in"], "out": v["out"], "dropped": dict(v["dropped"])}
                           for s, v in self.funnel.stages.items()},
                "images": media, "blocks_dropped": dict(self.blocks), "languages": dict(self.languages),
                "pii": self.pii.to_dict() if self.pii is not None else None,
                "errors": errors, "error_count": len(self.errors), "images_seen": self.images_seen,
                "timings": {k: round(v, 3) for k, v in self.timings.items()}}

    def _pages(self, fetching: bool) -> None:
        from crawlmix.io.warc import iter_pages

        job = self.job
        kept = self._kept_pages()
        seen: set[str] = set()
        window: deque = deque()
        depth = max(2, job.images.fetch.concurrency // 8) if fetching else 1
        for page in iter_pages(self.path, self.read_error, max_record_bytes=job.pages.max_record_bytes):
            why = self._page_check(page, kept, seen)
            if why:
                self._drop(page, "pages", why)
                continue
            doc = self._text_side(page)
            if doc is None:
                continue
            window.append(doc)
            while len(window) > depth:
                self._finish(*window.popleft())
        while window:
            self._finish(*window.popleft())

    def _page_check(self, page, kept, seen) -> str | None:
        if page.text is not None:
            return "no_html"  # a WET record: no markup, no images
        if kept is not None and page.id not in kept:
            return "not_kept"
        if self.job.pages.skip_repeated_pages:
            if page.url in seen:
                return "repeated"
            seen.add(page.url)
        if self.ufilter is not None and self.job.pages.url_filter:
            why = self.ufilter.check(page.url)
            if why:
                return f"url_filter:{why}"
        return None

    def _kept_pages(self) -> set[str] | None:
        """Ids of the pages the text run kept (its curated/<task>.parquet, or every <task>@START-END part of a
        split file), or None for every page. A missing or unreadable file fails the task (no marker): "no
        pages" would be taken for done."""
        if not self.kept_from:
            return None
        from crawlmix.images.kept import kept_ids

        return kept_ids(self.kept_from, self.name)

    def _text_side(self, page):
        """Walk, text rules, language, quality; then the images are prepared (fetches start).
        (page, walk, candidates, pending, language, score), or None when the page was dropped."""
        from crawlmix.images.captions import page_images
        from crawlmix.text import langid

        job = self.job
        t0 = time.perf_counter()
        html = page.html[: job.pages.max_html_chars]
        try:
            if self.images_off:  # no candidates: one bounded parse, captions found only when a block needs them
                cands, w = [], _walk_without_images(html, job.dom, self.ij.pages.max_images_per_page)
            else:
                cands = page_images(html, page.url, self.ij)
                w = walk(html, job.dom, frozenset(c.figcaption for c in cands if c.figcaption))
        except Exception as e:  # noqa: BLE001 - a page the parser chokes on is bad input, not a crash
            msg = f"{type(e).__name__}: {e}"
            reason = getattr(e, "reason", None) or "html_parse_error"  # the text stages' page bounds: too_deep, ...
            self.errors.append({"stage": "walk", "reason": reason, "record": str(page.ref), "message": msg[:500]})
            self._drop(page, "walk", reason, msg[:500])
            return None
        self.timings["walk"] += time.perf_counter() - t0
        self.blocks.update(w.dropped_blocks)
        texts = [it.text for it in w.items if not isinstance(it, Img)]
        if not texts and not any(isinstance(it, Img) for it in w.items):
            self._drop(page, "walk", "empty", "no text block and no image")
            return None
        joined = "\n\n".join(texts)
        words = len(joined.split())
        if words < job.documents.min_words:
            self._drop(page, "text", "too_few_words", f"{words} words < documents.min_words")
            return None
        t0 = time.perf_counter()
        lang, score, _ = langid.best(joined[:100_000]) if joined.strip() else ("unknown", 0.0, {})
        score = round(score, 4)
        self.timings["language"] += time.perf_counter() - t0
        d = job.documents
        if d.languages is not None and (lang not in d.languages or score < d.language_threshold):
            self._drop(page, "language", "language", f"{lang} {score:.2f}", lang, score)
            return None
        t0 = time.perf_counter()
        _, _, ruleset, why = _quality(job.quality.model_dump_json())(joined, lang, score)
        self.timings["quality"] += time.perf_counter() - t0
        if why:
            self._drop(page, "quality", f"{ruleset}:{why}", "", lang, score)
            return None
        if self.images_off:  # every <img> is left out (nothing could be read), uncounted
            self.images_seen += w.images_total
            return page, w, cands, [], lang, score
        self.media.skipped(w.skipped_images)
        pending = []
        for it in w.items:
            if isinstance(it, Img):
                if it.index < len(cands):
                    pending.append(self.media.prepare(cands[it.index]))
                else:  # beyond images.max_per_page
                    self.media.skipped(Counter({"over_max_per_page": 1}))
        return page, w, cands, pending, lang, score

    def _finish(self, page, w, cands, pending, lang, score) -> None:
        job = self.job
        t0 = time.perf_counter()
        kept = self.media.document(pending)
        self.timings["images"] += time.perf_counter() - t0
        n = len(kept)
        d = job.documents
        if n < d.min_images or n > d.max_images:
            reason = "too_few_images" if n < d.min_images else "too_many_images"
            self._drop(page, "images", reason, f"{n} images kept", lang, score)
            return
        items = arrange(w.items, kept, {i: c.figcaption for i, c in enumerate(cands)}, job.dom.caption_window,
                        job.dom.merge_text)
        texts = [x if isinstance(x, str) else None for x in items]
        images = [None if isinstance(x, str) else x for x in items]
        url = page.url
        if self.scrubber is not None:
            url, texts, images = self._scrub(url, texts, images, lang)
        for s in DOC_TASK_STAGES:
            self.funnel.enter(s)
            self.funnel.passed(s)
        self.languages[lang] += 1
        self.docs.add({"id": page.id, "url": url, "language": lang, "language_score": score, "date": page.date,
                       "source": page.source, "offset": page.offset, "texts": texts, "images": images,
                       "shas": [im["sha256"] for im in images if im is not None]})

    def _scrub(self, url: str, texts: list, images: list, lang: str):
        """Every text block (and image caption / alt), the page URL and the image URLs, through crawlmix.pii."""
        fs, st = self.scrubber, self.pii
        blocks = [t for t in texts if t is not None]
        new = iter(fs.texts(blocks, [lang] * len(blocks), st))
        texts = [next(new) if t is not None else None for t in texts]
        ims = [im for im in images if im is not None]
        urls = iter(fs.urls([url] + [im["url"] for im in ims], st))
        url = next(urls)
        side = iter(fs.texts([x for im in ims for x in (im["caption"], im["alt"])], None, st))
        images = [None if im is None else {**im, "url": next(urls), "caption": next(side), "alt": next(side)}
                  for im in images]
        return url, texts, images
