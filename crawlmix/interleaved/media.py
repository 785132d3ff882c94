"""The images of one document: each ``<img>`` the walk kept checked, its bytes found, decoded, filtered and
deduplicated, with crawlmix.images' own parts: candidates (``captions.page_images``), the WARC image index
(``index.WarcIndex``), the fetcher (``fetch.Fetcher``: X-Robots-Tag ``noai`` / ``noimageai`` honoured) and
the Pillow processor (``process.ImageProcessor``: size / aspect filters, resize, sha256, pHash).

An image that fails leaves the document; its reason is counted in the image funnel (``IMAGE_STAGES``).
Outcomes are cached per task by URL, so an image met again (the same logo on every page of a file) is read
and decoded once.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from dataclasses import dataclass

from crawlmix.images.captions import Candidate
from crawlmix.images.process import ImageError, ProcessedImage, hamming
from crawlmix.runtime.funnel import StageStats

# The image funnel, in order. "dom" counts <img> elements the walk did not read (furniture, hidden, not
# rendered); "dedup" runs across the run, after the tasks (crawlmix.interleaved.output).
IMAGE_STAGES = ["dom", "url", "size_hint", "download", "decode", "filter", "dedup_document", "dedup"]
IMAGE_TASK_STAGES = IMAGE_STAGES[:-1]
_FILTER_REASONS = {"too_small", "aspect_ratio", "too_large_area"}
_GENERIC_TYPES = ("application/octet-stream", "binary/octet-stream")  # captured with a generic type: decode decides
_CACHE = 512  # outcomes remembered per task (URL -> image or failure)


@dataclass
class Failure:
    stage: str
    reason: str
    detail: str = ""


@dataclass
class Pending:
    """One image of a document between its cheap checks and its bytes."""
    cand: Candidate
    url: str = ""
    hit: tuple | None = None  # (warc path, offset, status, content type, location), match kind
    future: object = None  # a fetch
    outcome: object = None  # ProcessedImage | Failure once known
    origin: str = ""  # warc | fetch


class DocumentImages:
    """One per task: prepares every image of a document, then finishes them in page order."""

    def __init__(self, job, images_job, index, fetcher, ufilter):
        from crawlmix.images.process import ImageProcessor

        self.job, self.ij, self.index, self.fetcher, self.ufilter = job, images_job, index, fetcher, ufilter
        self.proc = ImageProcessor(images_job.process, images_job.filters)
        self.url_words = tuple(w.lower() for w in job.images.url_words)
        self.funnel = StageStats(IMAGE_TASK_STAGES)
        self.reasons: Counter = Counter()
        self.sources: Counter = Counter()
        self.matches: Counter = Counter()
        self.examples: list[dict] = []
        self.timings: Counter = Counter()
        self.fetch_n, self.fetch_s = 0, 0.0
        self.cache: OrderedDict[str, object] = OrderedDict()

    # -- bookkeeping
    def skipped(self, reasons: Counter) -> None:
        """<img> elements the walk did not read."""
        for reason, n in reasons.items():
            for _ in range(n):
                self._count(Failure("dom", reason))

    def _count(self, outcome) -> None:
        """One image's way through the task's stages: up to its failure, or through all of them."""
        last = outcome.stage if isinstance(outcome, Failure) else None
        for stage in IMAGE_TASK_STAGES:
            self.funnel.enter(stage)
            if stage == last:
                self.funnel.drop(stage, outcome.reason)
                self.reasons[outcome.reason] += 1
                return
            self.funnel.passed(stage)

    # -- before any bytes
    def prepare(self, c: Candidate) -> Pending:
        p = Pending(c, c.urls[0] if c.urls else "")
        p.outcome = self._cheap_checks(c)
        if p.outcome is not None:
            return p
        hit = self.cache.get(p.url)
        if hit is not None:
            self.cache.move_to_end(p.url)
            p.outcome, p.origin = hit
            return p
        if self.index is not None:
            for u in c.urls:
                found = self.index.find(u)
                if found is not None:
                    p.url, p.hit, p.origin = u, found, "warc"
                    return p
        if self.fetcher is not None:
            p.future, p.origin = self.fetcher.submit(p.url), "fetch"
            return p
        p.outcome = Failure("download", "not_captured", "no WARC record of this image (fetch is off)")
        return p

    def _cheap_checks(self, c: Candidate) -> Failure | None:
        if not c.urls:
            return Failure("url", "data_uri", "inlined as a data: URI") if c.data_uri else \
                Failure("url", "no_url", "<img> without src")
        url = c.urls[0]
        if not url.startswith(("http://", "https://")):
            return Failure("url", "bad_url", f"not an http(s) URL: {url[:100]}")
        low = url.lower()
        word = next((w for w in self.url_words if w in low), None)
        if word is not None:
            return Failure("url", "furniture_url", f"image URL holds {word!r}")
        if self.ufilter is not None and self.ij.filters.url_filter:
            why = self.ufilter.check(url)
            if why:
                return Failure("url", f"url_blocklist:{why}", "image URL rejected by the URL filter")
        f = self.ij.filters
        if f.use_declared_size and c.declared and max(c.declared) < f.min_side:
            return Failure("size_hint", "too_small", f"declared {c.declared[0]}x{c.declared[1]} in the HTML")
        return None

    # -- bytes, decode, filters
    def finish(self, p: Pending) -> None:
        if p.outcome is None:
            p.outcome = self._bytes_and_process(p)
            if len(self.cache) >= _CACHE:
                self.cache.popitem(last=False)
            self.cache[p.url] = (p.outcome, p.origin)
            if isinstance(p.outcome, Failure) and p.outcome.stage in ("download", "decode") and len(self.examples) < 20:
                self.examples.append({"stage": p.outcome.stage, "reason": p.outcome.reason, "record": p.url,
                                      "message": p.outcome.detail})

    def _bytes_and_process(self, p: Pending):
        max_bytes = self.ij.process.max_bytes
        if p.hit is not None:
            (wpath, off, _status, ctype, _loc), match = p.hit
            t0 = time.perf_counter()
            data, why = self.index.read(wpath, off, max_bytes)
            self.timings["warc_read"] += time.perf_counter() - t0
            if data is None:
                return Failure("download", "warc_read_error", why)
            self.matches[match] += 1
        else:
            t0 = time.perf_counter()
            res = p.future.result()
            self.timings["fetch_wait"] += time.perf_counter() - t0
            self.fetch_n += 1
            self.fetch_s += res.elapsed_s
            if not res.ok:
                return Failure("download", res.reason, res.detail)
            data, ctype = res.data, res.content_type
        ctype = ctype or ""
        if ctype == "image/svg+xml":
            return Failure("decode", "svg", "Content-Type image/svg+xml")
        if ctype and not ctype.startswith("image/") and ctype not in _GENERIC_TYPES:
            return Failure("download", "wrong_content_type", f"Content-Type {ctype!r}")
        t0 = time.perf_counter()
        try:
            img = self.proc.process(data)
        except ImageError as e:
            return Failure("filter" if e.reason in _FILTER_REASONS else "decode", e.reason, e.detail)
        finally:
            self.timings["process"] += time.perf_counter() - t0
        return img

    def document(self, pending: list[Pending]) -> dict[int, dict]:
        """Finish a document's images (page order) and dedup them within it: candidate index -> image record
        for each kept image; every image is counted once."""
        dd = self.job.dedup
        kept: dict[int, dict] = {}
        shas: set[str] = set()
        hashes: list[int] = []
        for p in pending:
            self.finish(p)
            out = p.outcome
            if isinstance(out, ProcessedImage) and dd.within_document:
                if (dd.exact and out.sha256 in shas) or \
                        (dd.perceptual and any(hamming(out.phash, h) <= dd.phash_max_distance for h in hashes)):
                    out = Failure("dedup_document", "duplicate_in_document", "an earlier image of this document")
            self._count(out)
            if isinstance(out, Failure):
                continue
            shas.add(out.sha256)
            hashes.append(out.phash)
            self.sources[p.origin] += 1
            c = p.cand
            kept[c.index] = {"url": p.url, "bytes": out.data, "width": out.width, "height": out.height,
                             "original_width": out.original_width, "original_height": out.original_height,
                             "sha256": out.sha256, "phash": f"{out.phash:016x}", "ext": out.ext,
                             "caption": c.figcaption, "alt": c.alt, "origin": p.origin}
        return kept

    def stats(self) -> dict:
        return {"funnel": {s: {"in": v["in"], "out": v["out"], "dropped": dict(v["dropped"])}
                           for s, v in self.funnel.stages.items()},
                "reasons": dict(self.reasons), "sources": dict(self.sources), "warc_matches": dict(self.matches),
                "examples": self.examples, "fetch": {"requests": self.fetch_n, "seconds": round(self.fetch_s, 3)}}
