"""The crawl job's config: the text sections plus the dedup, PII and images steps (jobs/*.yaml)."""

from __future__ import annotations

from pathlib import Path

from crawlmix.dedup.config import DedupConfig
from crawlmix.pii.config import PiiConfig
from crawlmix.runtime.config import StrictModel, read_yaml_mapping, validate
from crawlmix.runtime.resources import resolve_config, shipped
from crawlmix.text.config import TextJob

DEFAULT_JOB = shipped("jobs/default.yaml")


class ImagesStep(StrictModel):
    """Image-text pairs from the pages this crawl keeps (crawlmix.images), written to OUTPUT/pairs/."""

    enabled: bool = False
    config: str = "jobs/images.yaml"  # an images job YAML: absolute, relative to the cwd or the checkout, or shipped
    fetch: bool = False  # download images no input WARC captured (network)


class JobConfig(TextJob):
    dedup: DedupConfig = DedupConfig()
    pii: PiiConfig = PiiConfig()
    images: ImagesStep = ImagesStep()


def load_job(path: str | Path | None = None) -> JobConfig:
    path = resolve_config(path) if path else DEFAULT_JOB
    return validate(JobConfig, read_yaml_mapping(path, "job"), str(path), "job config")
