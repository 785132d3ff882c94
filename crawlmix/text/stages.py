"""The text stages as one protocol: a stage has a name, sets itself up once per task, and processes a
batch of documents, saying for each one whether it passes or why it was dropped.

The curator (crawlmix.text.curate) runs them in order over each batch and does all the counting: the
funnel (in / out / dropped by reason), the removed/ rows and the timings are built in one place.
Decisions are those of datatrove's pipeline, page by page (tests/filters/test_datatrove_parity.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from crawlmix.io.warc import Page
from crawlmix.text import langid
from crawlmix.text.config import TextJob
from crawlmix.text.extract import (ExtractTimeout, PageBoundError, bounded_text, over_bounds, parse_html,
                                   probe_text, probe_window, time_limit)
from crawlmix.text.quality import Quality
from crawlmix.text.url_filter import url_filter_for

# report(stage, reason, record, message): a problem with a document that is not (only) a drop
Report = Callable[[str, str, str, str], None]


@dataclass
class Doc:
    page: Page
    html: str = ""
    dom: object = None  # resiliparse DOM of the whole page, when the probe parsed it (short pages)
    text: str = ""
    extractor: str = ""
    lang: str = "unknown"
    score: float = 0.0
    probe: str = ""  # visible text of the probe's window (the language probe reads its start)
    bound: tuple[str, str] | None = None  # (reason, detail): the probe found the page over a bound
    signals: dict | None = None  # set by the quality stage
    out_text: str = ""  # the text as written (C4's line filter may rewrite it)

    @property
    def ref(self) -> str:
        return str(self.page.ref)


@dataclass(frozen=True)
class Drop:
    """Why a document stopped at a stage (``error``: also listed as bad input, with ``message``)."""

    reason: str
    detail: str = ""
    lang: str = ""
    score: float | None = None
    error: bool = False
    message: str = ""


class Stage(Protocol):
    name: str

    def setup(self, cfg: TextJob) -> None:
        """Load what the stage needs (lists, models), once per task."""

    def process(self, docs: list[Doc], report: Report) -> list[Drop | None]:
        """One verdict per document, in order: None passes it on."""


def lid_k(cfg: TextJob, margin: float = 0.0) -> int:
    """Labels to score. At most floor(1/t) languages can score above t (scores sum to 1), so the top
    floor(1/t) decide exactly as datatrove's all-label call (-1: all, when some threshold is <= 0).
    Fewer labels is cheaper: building the 176-label answer costs more than the decision."""
    lc = cfg.langid
    lowest = min([lc.threshold, *lc.thresholds.values()]) - margin
    return int(1 / lowest) if lowest > 0 else -1


def lang_ok(cfg: TextJob, scores: dict[str, float], margin: float = 0.0) -> bool:
    """datatrove's LanguageFilter decision: some kept language scores above its threshold."""
    lc = cfg.langid
    if lc.languages is None:
        lang = max(scores, key=scores.get) if scores else "unknown"
        return scores.get(lang, 0.0) > lc.thresholds.get(lang, lc.threshold) - margin
    return any(scores.get(lang, 0.0) > lc.thresholds.get(lang, lc.threshold) - margin for lang in lc.languages)


class UrlFilterStage:
    name = "url_filter"

    def setup(self, cfg: TextJob) -> None:
        self.urlf = url_filter_for(cfg.url_filter.model_dump_json()) if cfg.url_filter.enabled else None

    def process(self, docs, report):
        out = []
        for d in docs:
            why = self.urlf.check(d.page.url) if self.urlf else None
            out.append(Drop(why) if why else None)
        return out


class LanguageProbe:
    """Visible text of the start of each page's body (probe_window); pages that cannot reach the job's
    languages, even with the margin, stop here. A window over the page bounds (extract.max_depth, ...)
    is not probed: the page goes on to the extraction stage, which drops it with that reason."""

    name = "langid_prefilter"

    def setup(self, cfg: TextJob) -> None:
        self.cfg, self.x = cfg, cfg.extract
        self.k = lid_k(cfg, cfg.extract.prefilter_margin)

    def process(self, docs, report):
        x = self.x
        for d in docs:
            d.probe = d.page.text
            if d.probe is None:
                try:
                    with time_limit(x.timeout_s, "language probe"):
                        window = probe_window(d.html, x.prefilter_html_chars)
                        dom = parse_html(window)
                        d.bound = over_bounds(dom, x.max_depth, x.max_elements)  # the window's: the page's too
                        if d.bound and window is not d.html:
                            d.bound = (d.bound[0], f"{d.bound[1]} in the probe's window of {len(window)} characters")
                        d.probe = "" if d.bound else probe_text(dom)
                        if window is d.html and not d.bound:  # the whole page: the extraction reuses its DOM
                            d.dom = dom
                except ExtractTimeout as e:
                    d.dom, d.probe, d.bound = None, "", ("extract_timeout", str(e))
                except Exception as e:  # noqa: BLE001 - a page must never stop the file
                    d.dom, d.probe = None, ""
                    report("extract", "extract_error", d.ref, f"resiliparse: {type(e).__name__}: {e}")
        return [self._verdict(d) for d in docs]

    def _verdict(self, d: Doc) -> Drop | None:
        probe, d.probe = d.probe, ""
        if not probe.strip():
            return None
        scores = langid.predict(probe[: self.x.prefilter_chars], k=self.k)
        if lang_ok(self.cfg, scores, self.x.prefilter_margin):
            return None
        lang = max(scores, key=scores.get) if scores else ""
        d.dom = None
        return Drop("language", lang=lang, score=scores.get(lang))


class Extract:
    name = "extract"

    def setup(self, cfg: TextJob) -> None:
        self.x = cfg.extract
        self.skip = tuple(cfg.extract.skip_elements)

    def process(self, docs, report):
        return [self._one(d) for d in docs]

    def _one(self, d: Doc) -> Drop | None:
        x = self.x
        try:
            if d.bound is not None:
                raise PageBoundError(*d.bound)
            if d.page.text is not None:
                d.text, d.extractor = d.page.text, "wet"
            else:
                d.text, d.extractor = bounded_text(d.html, x.engine, self.skip, x.fallback_below_chars, d.dom,
                                                   x.max_depth, x.max_elements, x.timeout_s)
        except PageBoundError as e:  # too_deep, too_many_elements, extract_timeout: bad input, named
            return Drop(e.reason, e.detail[:500], error=True, message=e.detail)
        except Exception as e:  # noqa: BLE001
            msg = f"{type(e).__name__}: {e}"
            return Drop("extract_error", msg[:500], error=True, message=msg)
        finally:
            d.dom = d.html = d.bound = None
        return None if d.text.strip() else Drop("empty_text")


class LanguageId:
    name = "langid"

    def setup(self, cfg: TextJob) -> None:
        self.cfg, self.lc = cfg, cfg.langid
        self.k = lid_k(cfg)

    def process(self, docs, report):
        return [self._one(d) for d in docs]

    def _one(self, d: Doc) -> Drop | None:
        lc = self.lc
        if not lc.enabled:
            return None
        scores = langid.predict(d.text, k=self.k)
        d.lang = max(scores, key=scores.get) if scores else "unknown"
        d.score = scores.get(d.lang, 0.0)
        if lc.label_only or lang_ok(self.cfg, scores):
            return None
        return Drop("language" if lc.languages else "low_score", lang=d.lang, score=d.score)


class QualityStage:
    """Signals once per document, then the rules over them (crawlmix.text.quality, crawlmix.filters)."""

    name = "quality"

    def setup(self, cfg: TextJob) -> None:
        self.quality = Quality(cfg.quality)

    def process(self, docs, report):
        out = []
        for d in docs:
            d.signals, d.out_text, ruleset, why = self.quality(d.text, d.lang, d.score)
            out.append(Drop(f"{ruleset}:{why}", lang=d.lang, score=d.score) if why else None)
        return out


def _stage_types(cfg: TextJob) -> list[type]:
    """The job's stages in order (the language probe only when language ID filters)."""
    probe = cfg.extract.prefilter and cfg.langid.enabled and not cfg.langid.label_only
    return [UrlFilterStage, *([LanguageProbe] if probe else []), Extract, LanguageId, QualityStage]


def build_stages(cfg: TextJob) -> list[Stage]:
    stages = [t() for t in _stage_types(cfg)]
    for s in stages:
        s.setup(cfg)
    return stages


def stage_names(cfg: TextJob) -> list[str]:
    """The funnel's rows: reading, then every stage."""
    return ["read"] + [t.name for t in _stage_types(cfg)]
