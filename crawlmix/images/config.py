"""Image-text job configuration (jobs/images.yaml): YAML validated at load, the bad field named.

Every key is optional; the defaults are the ones documented in docs/images.md. Built on the config base
(crawlmix.runtime.config): unknown keys are errors, and a bad file fails before any work with
``jobs/x.yaml: invalid images config\\n  filters.min_sidez: unknown key``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from crawlmix.runtime.config import StrictModel as Strict
from crawlmix.runtime.config import read_yaml_mapping, validate
from crawlmix.runtime.resources import resolve_config, shipped
from crawlmix.text.config import UrlFilterConfig

DEFAULT_IMAGES_JOB = shipped("jobs/images.yaml")

CaptionSource = Literal["figcaption", "alt", "title", "surrounding"]


class PagesConfig(Strict):
    """Which HTML pages images are taken from."""
    max_record_bytes: int = Field(50_000_000, gt=0)
    url_filter: bool = True  # drop pages whose URL the blocklist (url_filter section) rejects
    languages: list[str] | None = None  # page language (fastText on the visible text); None: keep all
    language_threshold: float = Field(0.5, ge=0, le=1)
    skip_repeated_pages: bool = True  # a page URL seen before in the same file (re-crawls) gives no new images
    max_images_per_page: int = Field(500, gt=0)
    # A text run's output folder (the crawl's --output, crawlmix.crawl.job): only pages it kept (ids in
    # curated/<task>.parquet, same task names) give images. None: every HTML page.
    kept_from: str | None = None


class CaptionConfig(Strict):
    sources: list[CaptionSource] = ["figcaption", "alt", "title"]  # the first non-empty one is the caption
    surrounding_chars: int = Field(500, ge=0)  # text around the image kept in the .json (and as a source)
    min_chars: int = Field(5, ge=0)
    max_chars: int = Field(1000, gt=0)  # longer captions are cut at a word boundary (not dropped)
    min_words: int = Field(2, ge=0)
    languages: list[str] | None = None  # caption language (fastText); None: label only
    language_threshold: float = Field(0.5, ge=0, le=1)
    require_caption: bool = True  # images without any caption are dropped (reason no_caption)


class FetchConfig(Strict):
    """HTTP fetch of images that no input WARC captured (only with --fetch or enabled: true)."""
    enabled: bool = False
    concurrency: int = Field(64, gt=0)  # requests in flight per worker
    per_host: int = Field(8, gt=0)  # requests in flight per host
    per_host_interval_s: float = Field(0.0, ge=0)  # minimum gap between request starts to one host
    timeout_s: float = Field(20.0, gt=0)  # whole request, body included
    connect_timeout_s: float = Field(5.0, gt=0)
    retries: int = Field(2, ge=0)  # extra attempts on timeouts, connection errors, 429 and 5xx
    backoff_s: float = Field(0.5, ge=0)  # first retry waits this long (x2 each time, +-25% jitter)
    max_bytes: int = Field(10_000_000, gt=0)
    max_redirects: int = Field(5, ge=0)
    user_agent: str = "crawlmix/0.1 (image-text dataset builder; +https://github.com/crawlmix/crawlmix)"
    user_agent_token: str = "crawlmix"  # X-Robots-Tag lines addressed to this token apply to us
    disallowed_header_directives: list[str] = ["noai", "noimageai", "noindex", "noimageindex"]  # as img2dataset
    content_types: list[str] = ["image/"]  # accepted Content-Type prefixes
    allow_missing_content_type: bool = True  # no Content-Type: let the decoder decide


class WarcLookupConfig(Strict):
    """Image bytes from image records of the input WARCs (and of extra sibling WARCs)."""
    enabled: bool = True
    extra_warcs: list[str] = []  # globs of sibling WARCs indexed for images but not read for pages
    canonical_urls: bool = True  # also match URLs that differ only in %-escapes, case of host, scheme
    follow_redirects: int = Field(5, ge=0)  # follow captured 3xx records this many hops


class ProcessConfig(Strict):
    image_size: int = Field(256, gt=0)
    resize_mode: Literal["no", "keep_ratio", "keep_ratio_largest", "center_crop", "border"] = "keep_ratio"
    resize_only_if_bigger: bool = False
    resample: Literal["lanczos", "bicubic", "bilinear", "box"] = "lanczos"
    jpeg_draft: bool = True  # let libjpeg decode large JPEGs at 1/2..1/8 scale (>= 2x the target size)
    border_color: tuple[int, int, int] = (255, 255, 255)
    encode_format: Literal["jpg", "webp", "png"] = "jpg"
    encode_quality: int = Field(95, ge=1, le=100)
    max_bytes: int = Field(10_000_000, gt=0)  # bigger payloads (captured or fetched) are dropped
    max_pixels: int = Field(89_478_485, gt=0)  # decompression-bomb guard (Pillow's default limit)
    animated: Literal["drop", "first_frame"] = "drop"
    formats: list[str] = ["JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF"]  # Pillow format names


class FilterConfig(Strict):
    min_side: int = Field(64, ge=1)  # smaller originals (icons, 1x1 tracking pixels) are dropped
    max_aspect_ratio: float = Field(3.0, ge=1)  # long side / short side of the original
    max_area: int = Field(50_000_000, gt=0)  # pixels of the original
    use_declared_size: bool = True  # skip <img width/height> both below min_side before fetching
    url_filter: bool = True  # apply the url_filter section to image URLs too


class ImageDedupConfig(Strict):
    exact: bool = True  # sha256 of the original bytes, across the whole run
    perceptual: bool = True  # 64-bit DCT hash (pHash) of the decoded image, across the whole run
    phash_max_distance: int = Field(4, ge=0, le=16)  # Hamming distance counted as a near duplicate


class PairShardConfig(Strict):
    samples_per_shard: int = Field(10_000, gt=0, le=10_000)
    compression: Literal["zstd", "snappy", "gzip", "none"] = "zstd"


class ImagesJob(Strict):
    name: str = "images"
    seed: int = 0
    pages: PagesConfig = PagesConfig()
    url_filter: UrlFilterConfig = UrlFilterConfig()
    captions: CaptionConfig = CaptionConfig()
    warc_lookup: WarcLookupConfig = WarcLookupConfig()
    fetch: FetchConfig = FetchConfig()
    process: ProcessConfig = ProcessConfig()
    filters: FilterConfig = FilterConfig()
    dedup: ImageDedupConfig = ImageDedupConfig()
    shards: PairShardConfig = PairShardConfig()

    @model_validator(mode="after")
    def _check(self):
        if self.captions.min_chars > self.captions.max_chars:
            raise ValueError("captions.min_chars is larger than captions.max_chars")
        return self

    # the config hash leaves out pages.kept_from: where a crawl's output lies, not a setting
    digest_exclude = {"pages": {"kept_from"}}


def load_images_job(path: str | Path | None = None, overrides: dict | None = None) -> ImagesJob:
    """Load and validate; ``overrides`` ({"fetch": {"enabled": True}}) are merged before validation."""
    path = resolve_config(path) if path else DEFAULT_IMAGES_JOB
    raw = read_yaml_mapping(path, "images job")
    for section, values in (overrides or {}).items():
        if isinstance(raw.get(section), dict):
            raw[section] = {**raw[section], **values}
        elif raw.get(section) is None:
            raw[section] = values
    return validate(ImagesJob, raw, str(path), "images config")
