"""Mixture YAML schema: validated at load, the bad field named in every error.

A mixture names one or more training stages; each stage has a budget (samples or tokens), shard limits
and weighted sources. See docs/mix.md for the reference and mixtures/*.yaml for shipped examples.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from crawlmix.runtime import storage
from crawlmix.runtime.config import ConfigError, read_yaml_mapping, validate
from crawlmix.runtime.config import StrictModel as Strict

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")  # dot-free: names become directory names and keys
WEIGHT_TOLERANCE = 1e-6  # per active source: weights written with 6 decimals (0.166667 x 6) still load

Modality = Literal["text", "image", "multi-image", "video", "interleaved"]


def check_name(v: str) -> str:
    """A name that can be a folder and a key: letters, digits, '_' and '-'."""
    if not NAME_RE.match(v):
        raise ValueError(f"{v!r} must match {NAME_RE.pattern} (letters, digits, '_' and '-'; no dots or slashes)")
    return v


class SourceConfig(Strict):
    name: str
    modality: Modality
    # Parquet (a crawl's curated/*.parquet, or the crawl's output folder), WebDataset .tar, or JSONL(.gz);
    # a file, folder, glob or brace pattern; relative paths resolve against --root (default: the cwd).
    path: str
    format: Literal["auto", "parquet", "webdataset", "jsonl"] = "auto"
    weight: float = Field(ge=0)  # share of the stage's samples; 0 disables the source
    max_epochs: float = Field(1.0, gt=0)  # how often each sample may be used (fractions allowed)
    max_samples: int | None = Field(None, gt=0)  # use at most this many distinct samples (seeded subset)
    shuffle: bool = True  # seeded shuffle of the source, reshuffled each epoch
    languages: list[str] | None = None  # keep only these languages (text sources / samples with a language)
    text_field: str = "text"  # column (Parquet) or key (JSONL) holding the text
    # Generate the source when its path matches nothing: 'crawl' runs the crawl (crawlmix.crawl.job) on the
    # bundled sample into the path's crawl folder, 'media' writes the bundled media sample
    # (crawlmix.samples.media_sample) into the path's folder.
    bundled: Literal["crawl", "media"] | None = None

    _name = field_validator("name")(check_name)


class Budget(Strict):
    samples: int | None = Field(None, gt=0)
    tokens: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one(self):
        if (self.samples is None) == (self.tokens is None):
            raise ValueError("give exactly one of 'samples' or 'tokens'")
        return self


class ShardConfig(Strict):
    max_samples: int = Field(1000, gt=0)
    max_bytes: int | None = Field(None, gt=0)  # a shard closes before the sample that would exceed this
    pattern: str = "shard-{index:06d}.tar"

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, v: str) -> str:
        try:
            a, b = v.format(index=0), v.format(index=1)
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"must be a format string with {{index}} (e.g. shard-{{index:06d}}.tar): {e}") from None
        if a == b or not a.endswith(".tar") or "/" in a:
            raise ValueError("must contain {index}, end in .tar and have no '/'")
        return v


class StageConfig(Strict):
    name: str
    budget: Budget
    shards: ShardConfig = ShardConfig()
    normalize: bool | None = None  # None: the mixture's setting
    sources: list[SourceConfig] = Field(min_length=1)

    _name = field_validator("name")(check_name)

    @model_validator(mode="after")
    def _unique(self):
        seen = set()
        for s in self.sources:
            if s.name in seen:
                raise ValueError(f"duplicate source name {s.name!r} in stage {self.name!r}")
            seen.add(s.name)
        if not any(s.weight > 0 for s in self.sources):
            raise ValueError(f"stage {self.name!r}: every source has weight 0")
        return self


class TokenConfig(Strict):
    # 'builtin:whitespace' (default, offline): the `tokenizers` Whitespace pre-tokenizer's pieces
    # (words and punctuation runs); 'builtin:bytes': UTF-8 bytes; otherwise a local path to an HF tokenizer.json.
    tokenizer: str = "builtin:whitespace"
    per_image: int = Field(64, ge=0)  # tokens an image stands for (SmolVLM: 64 per 512px tile)
    per_video_frame: int = Field(64, ge=0)


class OutputConfig(Strict):
    # uniform: every sample of a stage carries the same members (.txt, .json, and .images.tar where the stage
    # has images), with one fixed .json schema, so Hugging Face `datasets` loads any stage (docs/loading.md);
    # source: the sources' payload members copied as they are (img2dataset style: .jpg, .0.jpg, ...)
    layout: Literal["uniform", "source"] = "uniform"
    # webdataset: OUTPUT/<stage>/shard-NNNNNN.tar; parquet: shard-NNNNNN.parquet (the same samples, aligned
    # texts / images lists). Not part of the mixture hash: adding a format rewrites the shards without it.
    formats: list[Literal["webdataset", "parquet"]] = Field(default_factory=lambda: ["webdataset"], min_length=1)

    @field_validator("formats")
    @classmethod
    def _formats(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"duplicate format in {v}")
        return sorted(v, reverse=True)  # webdataset first


class MixtureConfig(Strict):
    name: str
    seed: int = 0
    description: str = ""
    normalize: bool = False  # rescale weights that do not sum to 1 instead of failing
    tokens: TokenConfig = TokenConfig()
    output: OutputConfig = OutputConfig()
    stages: list[StageConfig] = Field(min_length=1)
    # written by crawlmix.tune (tuned.yaml): the sweep hash, runs, model, predicted vs confirmed loss,
    # baselines. Provenance that enters digest(); absent in hand-set mixtures (their hash is unchanged).
    tuning: dict | None = None
    # fsspec options for URL sources and outputs (s3://, gs://), flat or per protocol ({s3: {endpoint_url: ...}});
    # see docs/storage.md. Where the bytes are, not what they are: not part of digest().
    storage_options: dict | None = None

    _name = field_validator("name")(check_name)

    def digest_data(self) -> dict:
        data = super().digest_data()
        if data.get("tuning") is None:  # a hand-set mixture hashes as before the field existed
            data.pop("tuning")
        data.pop("storage_options", None)  # credentials and endpoints do not change a sample's bytes
        data["output"].pop("formats", None)  # which files are written does not change a sample's bytes
        return data

    @model_validator(mode="after")
    def _stages(self):
        seen = set()
        for st in self.stages:
            if st.name in seen:
                raise ValueError(f"duplicate stage name {st.name!r}")
            seen.add(st.name)
        return self


def stage_weights(mix: MixtureConfig, stage: StageConfig, where: str = "") -> dict[str, float]:
    """Normalised weights of the stage's active sources; fails naming sources and sum unless normalize."""
    active = {s.name: s.weight for s in stage.sources if s.weight > 0}
    total = math.fsum(active.values())
    normalize = mix.normalize if stage.normalize is None else stage.normalize
    if abs(total - 1.0) > WEIGHT_TOLERANCE * max(1, len(active)) and not normalize:
        parts = " + ".join(f"{s.name} {s.weight:g}" for s in stage.sources)
        raise ConfigError(f"{where}stages.{stage.name}: weights sum to {total!r} ({total * 100:.4g}%), not 1: "
                          f"{parts}; fix the weights or set 'normalize: true'")
    return {k: v / total for k, v in active.items()}


def parse_mixture(raw, where: str = "mixture") -> MixtureConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level, got {type(raw).__name__}")
    mix = validate(MixtureConfig, raw, where, "mixture", named=True)
    for st in mix.stages:  # weights are checked at load, before any source is read
        stage_weights(mix, st, where=f"{where}: ")
    return mix


def load_mixture(path: str | Path) -> MixtureConfig:
    """A mixture YAML from a local path or a URL (read with the environment's storage options)."""
    if storage.is_remote(path):
        return parse_mixture(read_yaml_url(str(path), "mixture"), where=str(path))
    path = Path(storage.local(path))
    return parse_mixture(read_yaml_mapping(path, "mixture"), where=str(path))


def read_yaml_url(url: str, what: str = "config") -> dict:
    """read_yaml_mapping for a URL: the top-level mapping, or a ConfigError naming the URL."""
    import yaml

    try:
        raw = yaml.safe_load(storage.read_text(url))
    except FileNotFoundError:
        raise ConfigError(f"{url}: no such {what} file") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{url}: not valid YAML: {e}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{url}: expected a mapping at the top level, got {type(raw).__name__}")
    return raw
