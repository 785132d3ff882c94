"""Interleaved-documents job configuration (jobs/interleaved.yaml): YAML validated at load, the bad field named.

Every key is optional. The image sections (``warc_lookup``, ``fetch``, ``process``, ``filters``) are the
images job's own models (crawlmix.images.config), so an image is looked up, fetched, decoded and filtered
exactly as for image-text pairs; ``quality`` is the text job's section (crawlmix.text.config). A bad file
fails before any work with ``jobs/x.yaml: invalid interleaved config\\n  documents.min_wordz: unknown key``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from crawlmix.images.config import (CaptionConfig, FetchConfig, FilterConfig, ImagesJob, PagesConfig,
                                    ProcessConfig, WarcLookupConfig)
from crawlmix.filters.fineweb_quality import FineWebQuality
from crawlmix.filters.gopher_quality import GopherQuality
from crawlmix.runtime.config import StrictModel, read_yaml_mapping, validate
from crawlmix.runtime.resources import resolve_config, shipped
from crawlmix.text.config import QualityConfig, UrlFilterConfig

DEFAULT_INTERLEAVED_JOB = shipped("jobs/interleaved.yaml")

# Tags whose whole subtree is never read: scripts and styles, embedded documents, forms' controls and the
# HTML5 furniture elements (navigation, complementary boxes, page footers).
SKIP_TAGS = ["script", "style", "noscript", "template", "head", "title", "svg", "math", "iframe", "object",
             "embed", "canvas", "video", "audio", "map", "button", "select", "option", "input", "textarea",
             "nav", "aside", "footer", "dialog", "menu"]
# class / id words (split on "-", "_" and spaces, lower-cased) of site furniture: navigation, ads, menus,
# sharing and cookie boxes, tables of contents, MediaWiki's and WordPress's chrome.
FURNITURE_WORDS = [
    "nav", "navbar", "navigation", "navbox", "navpanel", "menu", "menubar", "breadcrumb", "breadcrumbs", "sidebar",
    "footer", "printfooter", "masthead", "toolbar", "banner", "ad", "ads", "advert", "adverts", "advertisement",
    "adsbygoogle", "sponsor", "sponsored", "promo", "share", "sharing", "social", "cookie", "cookies", "consent",
    "newsletter", "subscribe", "popup", "modal", "pagination", "pager", "catlinks",
    "noprint", "editsection", "sitenotice", "topicon", "metadata", "related", "comments", "login",
    "signup", "search", "logo", "icon", "icons", "reflist", "references", "refbegin",
]
# whole class / id names of furniture (names whose words alone say too little: "overflow-hidden" is content)
FURNITURE_NAMES = ["hidden", "sr-only", "visually-hidden", "screen-reader-text", "mw-jump", "sitesub", "toc",
                   "table-of-contents", "ez-toc-container", "skip-link", "skip-links", "skiplinks", "skip-to-content"]
# ARIA roles of furniture
FURNITURE_ROLES = ["navigation", "banner", "contentinfo", "complementary", "search", "menu", "menubar",
                   "toolbar", "dialog", "alert", "tablist"]
# image URL words that name spacers, tracking pixels and counters
IMAGE_URL_WORDS = ["spacer", "pixel", "blank.gif", "1x1", "transparent.gif", "clear.gif", "tracking", "tracker",
                   "beacon", "counter", "doubleclick", "/ads/", "/ad/"]


class InterleavedPages(StrictModel):
    """Which HTML pages become documents."""
    max_record_bytes: int = Field(50_000_000, gt=0)
    max_html_chars: int = Field(5_000_000, gt=0)  # longer HTML is cut before parsing
    url_filter: bool = True  # drop pages whose URL the blocklist (url_filter section) rejects
    skip_repeated_pages: bool = True  # a page URL seen before in the same file (re-crawls) is one document


class DomConfig(StrictModel):
    """The reading-order walk (crawlmix.interleaved.walk)."""
    skip_tags: list[str] = list(SKIP_TAGS)
    keep_header_in: list[str] = ["article", "main"]  # a <header> inside these holds the title: read it
    furniture_words: list[str] = list(FURNITURE_WORDS)
    furniture_names: list[str] = list(FURNITURE_NAMES)
    furniture_roles: list[str] = list(FURNITURE_ROLES)
    hidden: bool = True  # skip hidden / aria-hidden / display:none elements
    # a block whose text is mostly link text and short is a link list (menus, tag clouds, "see also")
    max_link_density: float = Field(0.7, ge=0, le=1)
    link_block_max_words: int = Field(12, ge=0)
    min_block_chars: int = Field(2, ge=0)  # shorter text blocks ("|", "»") are dropped
    caption_window: int = Field(8, ge=0)  # blocks either side of an image searched for its caption
    merge_text: bool = True  # consecutive text blocks become one text entry ("\n\n"-joined), as OBELICS


class InterleavedImages(StrictModel):
    """Images of a document: candidates as the images job makes them, checked and processed the same way."""
    max_per_page: int = Field(500, gt=0)  # <img> read per page
    url_words: list[str] = list(IMAGE_URL_WORDS)  # image URLs holding one of these are dropped (spacers, pixels)
    warc_lookup: WarcLookupConfig = WarcLookupConfig()
    fetch: FetchConfig = FetchConfig()
    process: ProcessConfig = ProcessConfig(image_size=512, resize_only_if_bigger=True)  # never upscaled
    # min_side, max_aspect_ratio, max_area; use_declared_size (<img width height> both below min_side: never
    # read); url_filter (the url_filter section on image URLs too)
    filters: FilterConfig = FilterConfig(min_side=64, max_aspect_ratio=3.0)


class InterleavedDedup(StrictModel):
    exact: bool = True  # sha256 of the original bytes
    perceptual: bool = True  # 64-bit pHash (crawlmix.images.process.phash)
    phash_max_distance: int = Field(4, ge=0, le=16)
    within_document: bool = True  # a second copy of an image in one document is removed
    across_documents: bool = True  # an image kept by an earlier document of the run is removed from later ones
    # an image (sha256) in at least this many documents of the run is site furniture (logos, buttons) and is
    # removed from all of them (OBELICS: more than 10 times); 0: off
    furniture_min_documents: int = Field(10, ge=0)


class DocumentRules(StrictModel):
    min_words: int = Field(20, ge=0)  # words of all text blocks together
    min_images: int = Field(0, ge=0)
    max_images: int = Field(30, ge=1)  # OBELICS drops documents with more
    languages: list[str] | None = None  # None: every language (labelled with fastText lid.176)
    language_threshold: float = Field(0.5, ge=0, le=1)


class InterleavedShards(StrictModel):
    samples_per_shard: int = Field(1000, gt=0, le=100_000)  # documents per WebDataset shard
    compression: Literal["zstd", "snappy", "gzip", "none"] = "zstd"
    webdataset: bool = True


class InterleavedJob(StrictModel):
    name: str = "interleaved"
    seed: int = 0  # nothing here draws at random; recorded for provenance like every job
    pages: InterleavedPages = InterleavedPages()
    url_filter: UrlFilterConfig = UrlFilterConfig()
    dom: DomConfig = DomConfig()
    images: InterleavedImages = InterleavedImages()
    dedup: InterleavedDedup = InterleavedDedup()
    documents: DocumentRules = DocumentRules()
    # the text job's quality rules over the document's joined text blocks (C4's line filter decides but does
    # not rewrite them). Default: the repetition and C4 rules; Gopher's word-shape and FineWeb's line-shape
    # rules are off, as they are tuned on extracted main text and a whole page's headings, table cells and
    # captions trip them (docs/interleaved.md); switch them on in the YAML.
    quality: QualityConfig = QualityConfig(languages=["en"], gopher_quality=GopherQuality(enabled=False),
                                           fineweb_quality=FineWebQuality(enabled=False))
    shards: InterleavedShards = InterleavedShards()

    @model_validator(mode="after")
    def _check(self):
        if self.documents.min_images > self.documents.max_images:
            raise ValueError("documents.min_images is larger than documents.max_images")
        return self

    def images_job(self) -> ImagesJob:
        """The images job these settings amount to: what crawlmix.images' candidates, WARC index, fetcher and
        processor read (captions are not required here: an image's context is the document)."""
        im = self.images
        return ImagesJob(name=self.name, seed=self.seed, url_filter=self.url_filter,
                         pages=PagesConfig(max_images_per_page=im.max_per_page),
                         captions=CaptionConfig(surrounding_chars=0, require_caption=False),
                         warc_lookup=im.warc_lookup, fetch=im.fetch, process=im.process, filters=im.filters)


def load_interleaved_job(path: str | Path | None = None, overrides: dict | None = None) -> InterleavedJob:
    """Load and validate; ``overrides`` ({"images": {"fetch": {"enabled": True}}}) are merged before validation."""
    path = resolve_config(path) if path else DEFAULT_INTERLEAVED_JOB
    raw = read_yaml_mapping(path, "interleaved job")
    _merge(raw, overrides or {})
    return validate(InterleavedJob, raw, str(path), "interleaved config")


def _merge(raw: dict, over: dict) -> None:
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(raw.get(k), dict):
            _merge(raw[k], v)
        elif isinstance(v, dict) and raw.get(k) is None:
            raw[k] = dict(v)
        else:
            raw[k] = v
