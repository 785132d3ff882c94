"""Job configuration: YAML validated at load, the bad field named in every error."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from filters.c4_quality import C4Quality
from pipelines.errors import ConfigError  # noqa: F401  (re-exported)
from pipelines.extract import DEFAULT_SKIP
from filters.fineweb_quality import FineWebQuality
from filters.gopher_quality import GopherQuality
from filters.gopher_repetition import GopherRepetition
from filters.signals import SignalParams
from filters.user_rules import UserRule

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JOB = ROOT / "jobs" / "default.yaml"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReadConfig(Strict):
    max_record_bytes: int = Field(50_000_000, gt=0)  # larger payloads are counted and skipped
    mime_types: list[str] = ["text/html", "application/xhtml+xml"]


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

    @field_validator("skip_elements")
    @classmethod
    def _selectors(cls, v: list[str]) -> list[str]:
        from pipelines.extract import check_selectors

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


class DedupConfig(Strict):
    """Exact (normalised content + URL) and MinHash-LSH near-duplicate removal across all inputs."""

    enabled: bool = True
    exact: bool = True
    minhash: bool = True
    n_grams: int = Field(5, ge=1, le=32)
    threshold: float = Field(0.7, gt=0, le=1)  # target Jaccard; candidates are verified against it
    num_perm: int = Field(128, ge=8, le=1024)  # used when bands/rows are not given
    bands: int | None = Field(None, ge=1)
    rows: int | None = Field(None, ge=1)
    verify: bool = True  # drop LSH candidates whose signature similarity is below threshold
    seed: int = 1

    def lsh_params(self) -> tuple[int, int]:
        """(bands, rows): as given, or datasketch's optimum for the threshold and num_perm."""
        if self.bands and self.rows:
            return self.bands, self.rows
        if self.bands or self.rows:
            raise ValueError("dedup: give both bands and rows, or neither")
        from datasketch.lsh import _optimal_param

        return _optimal_param(self.threshold, self.num_perm, 0.5, 0.5)


class OutputConfig(Strict):
    compression: Literal["zstd", "snappy", "gzip", "none"] = "zstd"
    rows_per_group: int = Field(2_000, gt=0)


class ImagesStep(Strict):
    """Image-text pairs from the pages this crawl keeps (pipelines/images.py), written to OUTPUT/pairs/."""

    enabled: bool = False
    config: str = "jobs/images.yaml"  # an images job YAML, relative to the repository root or absolute
    fetch: bool = False  # download images no input WARC captured (network)


from pipelines.pii_config import PiiConfig  # noqa: E402


class JobConfig(Strict):
    name: str = "crawl"
    seed: int = 0
    read: ReadConfig = ReadConfig()
    url_filter: UrlFilterConfig = UrlFilterConfig()
    extract: ExtractConfig = ExtractConfig()
    langid: LangIdConfig = LangIdConfig()
    quality: QualityConfig = QualityConfig()
    dedup: DedupConfig = DedupConfig()
    pii: PiiConfig = PiiConfig()
    images: ImagesStep = ImagesStep()
    output: OutputConfig = OutputConfig()

    def digest(self) -> str:
        """Hash of the fully resolved config: provenance for every output."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _where(loc: tuple) -> str:
    return ".".join(str(x) for x in loc) or "(top level)"


def read_yaml_mapping(path: str | Path, what: str = "config") -> dict:
    """The top-level mapping of a YAML file, or a ConfigError naming the file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such {what} file") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    return raw


M = TypeVar("M", bound=BaseModel)


def validate(model: type[M], raw: dict, where: str, what: str = "config", prefix: str = "") -> M:
    """model.model_validate(raw), with every error naming its field (prefix.a.b: message (got ...))."""
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        msgs = []
        for err in e.errors():
            kind = err["type"]
            msg = "unknown key" if kind == "extra_forbidden" else err["msg"]
            got = "" if kind == "extra_forbidden" else f" (got {err.get('input')!r})"
            msgs.append(f"  {prefix}{_where(err['loc'])}: {msg}{got}")
        raise ConfigError(f"{where}: invalid {what}\n" + "\n".join(msgs)) from None


def load_job(path: str | Path | None = None) -> JobConfig:
    path = Path(path) if path else DEFAULT_JOB
    return validate(JobConfig, read_yaml_mapping(path, "job"), str(path), "job config")
