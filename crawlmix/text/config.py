"""Config of the text stages (the read, url_filter, extract, langid, quality and output sections of a job)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from crawlmix.filters.c4_quality import C4Quality
from crawlmix.filters.fineweb_quality import FineWebQuality
from crawlmix.filters.gopher_quality import GopherQuality
from crawlmix.filters.gopher_repetition import GopherRepetition
from crawlmix.filters.signals import SignalParams
from crawlmix.filters.user_rules import UserRule

from crawlmix.runtime.config import StrictModel as Strict

# Elements the main-content extraction skips (CSS selectors): page and article headers (site banners,
# titles, bylines), footers and image captions, none of which an article body contains.
DEFAULT_SKIP = ("header", "footer", "[class*=caption]")
# Parse bounds (extract.max_depth / max_elements): resiliparse's main-content extraction costs about
# elements x nesting depth (a page 10,000 tags deep: 1.7 s, 40,000: 31 s, 100,000: > 400 s), so a page
# over either bound is dropped (too_deep / too_many_elements) before anything but the linear parse runs.
# bench/realpages.warc.gz (1,171 pages): depth <= 51, <= 10,112 elements. Browsers stop nesting at 512.
MAX_DEPTH = 256
MAX_ELEMENTS = 100_000


def check_selectors(selectors: list[str]) -> None:
    """Raise ValueError naming the first CSS selector resiliparse cannot parse."""
    from resiliparse.extract.html2text import extract_plain_text

    for sel in selectors:
        try:
            extract_plain_text("<p>x</p>", main_content=True, skip_elements=[sel])
        except Exception as e:  # resiliparse's CSSParserException
            raise ValueError(f"not a CSS selector resiliparse can use: {sel!r} ({e})") from None


class ReadConfig(Strict):
    max_record_bytes: int = Field(50_000_000, gt=0)  # larger payloads are counted and skipped
    mime_types: list[str] = ["text/html", "application/xhtml+xml"]
    # a gzipped WARC/ARC larger than this becomes several tasks, cut at record (gzip member) boundaries;
    # the output is the same as one task's (0: never split)
    split_bytes: int = Field(256 * 1024 * 1024, ge=0)


class UrlFilterConfig(Strict):
    enabled: bool = True
    use_ut1_lists: bool = True  # datatrove's shipped UT1 blocklist and banned-word lists
    soft_word_threshold: int = Field(2, ge=1)
    extra_domains: list[str] = []
    extra_urls: list[str] = []
    banned_words: list[str] = []
    banned_subwords: list[str] = []
    soft_banned_words: list[str] = []


class ExtractConfig(Strict):
    # resiliparse main content (default; F1 0.952 on the extraction truth set) or trafilatura (0.951, ~7x slower).
    engine: Literal["resiliparse", "trafilatura"] = "resiliparse"
    # CSS selectors resiliparse skips in main-content extraction (page/article headers, footers, captions)
    skip_elements: list[str] = list(DEFAULT_SKIP)
    # resiliparse main content shorter than this (chars) usually means its main-content detection
    # missed the page: trafilatura extracts it instead, when that gives more text (0: never)
    fallback_below_chars: int = Field(200, ge=0)
    # language probe: the visible text at the start of the body decides, with a margin, whether a page
    # can reach the job's languages before the main extraction runs (only when langid filters)
    prefilter: bool = True
    prefilter_margin: float = Field(0.6, ge=0, le=1)  # probe score may be this much below the threshold (en: > 0.05)
    prefilter_chars: int = Field(1000, gt=0)  # the language probe reads this much of the visible text
    prefilter_html_chars: int = Field(16_000, gt=0)  # ...of this much HTML from <body> on (parsed alone)
    max_html_chars: int = Field(5_000_000, gt=0)  # longer HTML is cut before extraction
    # bounds on one page (see MAX_DEPTH): deeper / larger DOMs are dropped as too_deep / too_many_elements
    max_depth: int = Field(MAX_DEPTH, gt=0)  # elements on the path from <html> down, <html> counted
    max_elements: int = Field(MAX_ELEMENTS, gt=0)
    # wall-time backstop per page (probe + parse + extraction; 0: none): dropped as extract_timeout. Python-level
    # work (trafilatura) is interrupted at the limit when the task runs in its process's main thread; a native
    # resiliparse call cannot be interrupted mid-way (the bounds above keep those short) and is dropped when it returns
    timeout_s: float = Field(30.0, ge=0)

    @field_validator("skip_elements")
    @classmethod
    def _selectors(cls, v: list[str]) -> list[str]:
        check_selectors(v)
        return v


class LangIdConfig(Strict):
    enabled: bool = True
    languages: list[str] | None = None  # None: keep every language
    threshold: float = Field(0.65, ge=0, le=1)
    thresholds: dict[str, float] = {}  # per-language overrides
    label_only: bool = False


class QualityConfig(Strict):
    enabled: bool = True
    languages: list[str] | None = ["en"]  # the built-in rules are tuned for these; None: all
    gopher_repetition: GopherRepetition = GopherRepetition()
    gopher_quality: GopherQuality = GopherQuality()
    c4_quality: C4Quality = C4Quality(filter_no_terminal_punct=False)  # as in FineWeb
    fineweb_quality: FineWebQuality = FineWebQuality()
    rules: list[UserRule] = []

    def signal_params(self) -> SignalParams:
        c4 = self.c4_quality
        return SignalParams(
            stop_words=tuple(self.gopher_quality.stop_words),
            c4_enabled=self.enabled and c4.enabled,
            c4_remove_citations=c4.remove_citations,
            c4_filter_no_terminal_punct=c4.filter_no_terminal_punct,
            c4_min_words_per_line=c4.min_words_per_line,
            c4_max_word_length=c4.max_word_length,
            c4_filter_javascript=c4.filter_javascript,
            c4_filter_policy=c4.filter_policy,
            fineweb_short_line_length=self.fineweb_quality.short_line_length,
        )


class OutputConfig(Strict):
    compression: Literal["zstd", "snappy", "gzip", "none"] = "zstd"
    rows_per_group: int = Field(2_000, gt=0)


class TextJob(Strict):
    """The sections the per-file text stages read; crawl's JobConfig adds dedup, PII and images."""

    name: str = "crawl"
    seed: int = 0
    read: ReadConfig = ReadConfig()
    url_filter: UrlFilterConfig = UrlFilterConfig()
    extract: ExtractConfig = ExtractConfig()
    langid: LangIdConfig = LangIdConfig()
    quality: QualityConfig = QualityConfig()
    output: OutputConfig = OutputConfig()
