"""The crawl job's config: the text sections plus the dedup, PII and images steps (jobs/*.yaml), and
``storage_options:`` for inputs and outputs on an object store (crawlmix.runtime.storage)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import field_validator

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


class InterleavedStep(StrictModel):
    """OBELICS-style interleaved documents from the pages this crawl keeps (crawlmix.interleaved), written to
    OUTPUT/interleaved/."""

    enabled: bool = False
    config: str = "jobs/interleaved.yaml"  # an interleaved job YAML: absolute, relative to the cwd or the checkout, or shipped
    fetch: bool = False  # download images no input WARC captured (network)


PROTOCOLS = ("s3", "s3a", "gs", "gcs", "az", "abfs", "http", "https", "file")  # per-protocol sections
_SECRET = re.compile(r"secret|token|password|passwd|credential|(^|_)key$", re.I)


class JobConfig(TextJob):
    dedup: DedupConfig = DedupConfig()
    pii: PiiConfig = PiiConfig()
    images: ImagesStep = ImagesStep()
    interleaved: InterleavedStep = InterleavedStep()
    # fsspec options for --input / --output URLs, flat ({endpoint_url: ...}) or per protocol ({s3: {...}});
    # applied in the driver and in every task (crawlmix.runtime.storage.configure); credentials are better
    # left to the standard environment (AWS_ACCESS_KEY_ID, ...), as config.json shows them redacted
    storage_options: dict[str, Any] | None = None
    digest_exclude = {"storage_options"}  # where the data is, not what is done to it

    @field_validator("storage_options")
    @classmethod
    def _options(cls, v):
        if v is None:
            return v
        for k, sub in v.items():
            if k in PROTOCOLS and not isinstance(sub, dict):
                raise ValueError(f"{k}: the options of the {k}:// protocol must be a mapping")
        try:
            json.dumps(v)
        except (TypeError, ValueError) as e:
            raise ValueError(f"must be plain YAML values (they travel to every task as JSON): {e}") from None
        return v

    def public_dump(self) -> dict:
        """The resolved config for config.json: secrets in storage_options shown as '***'."""
        return {**self.model_dump(mode="json"), "storage_options": redact(self.storage_options)}


def redact(value):
    """``value`` with the values of secret-looking keys (secret, token, password, key, ...) replaced."""
    if isinstance(value, dict):
        return {k: "***" if _SECRET.search(str(k)) and not isinstance(v, dict) else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def load_job(path: str | Path | None = None) -> JobConfig:
    path = resolve_config(path) if path else DEFAULT_JOB
    return validate(JobConfig, read_yaml_mapping(path, "job"), str(path), "job config")
