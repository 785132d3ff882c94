"""Sweep YAML schema (mixtures/*.sweep.yaml): validated at load, the bad field named in every error.

A sweep names a base mixture and one of its stages, the sources whose weights are searched (with bounds,
fixed weights and a prior), how many candidates, the proxy trainer and its budget, the eval targets, the
regression model and the confirmation seeds. See docs/tune.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from crawlmix.mix.config import MixtureConfig, StageConfig, check_name, load_mixture, read_yaml_url
from crawlmix.runtime import storage
from crawlmix.runtime.config import ConfigError, read_yaml_mapping, validate
from crawlmix.runtime.config import StrictModel as Strict
from crawlmix.runtime.resources import resolve_config


class SearchConfig(Strict):
    sources: list[str] | None = None  # None: every source of the stage; the others keep their base weight
    bounds: dict[str, tuple[float, float]] = {}  # per source [low, high] on its final weight
    fixed: dict[str, float] = {}  # per source, a weight that is not searched
    prior: Literal["base", "uniform", "size"] = "base"  # the Dirichlet's centre
    concentration: tuple[float, float] = (0.3, 3.0)  # per candidate, log-uniform in this range (times #sources)

    @field_validator("bounds")
    @classmethod
    def _bounds(cls, v):
        for k, (lo, hi) in v.items():
            if not 0 <= lo <= hi <= 1:
                raise ValueError(f"{k}: need 0 <= low <= high <= 1, got [{lo}, {hi}]")
        return v

    @field_validator("fixed")
    @classmethod
    def _fixed(cls, v):
        for k, w in v.items():
            if not 0 <= w <= 1:
                raise ValueError(f"{k}: a fixed weight must be in [0, 1], got {w}")
        return v

    @field_validator("concentration")
    @classmethod
    def _conc(cls, v):
        if not 0 < v[0] <= v[1]:
            raise ValueError(f"need 0 < low <= high, got {list(v)}")
        return v


class CandidatesConfig(Strict):
    count: int = Field(32, ge=0)  # random candidates besides the base and uniform mixes
    max_tries: int = Field(20000, gt=0)  # Dirichlet draws before giving up on the constraints


class ProxyBudget(Strict):
    tokens: int = Field(gt=0)  # tokens (the base mixture's tokenizer) in each proxy run's mix


class ProxyResources(Strict):
    num_cpus: float = Field(1, gt=0)
    num_gpus: float = Field(0, ge=0)


class ProxyConfig(Strict):
    # builtin:ngram (a byte-level n-gram LM, text members only) or 'command' (a user trainer, see docs/tune.md)
    trainer: str = "builtin:ngram"
    command: str | None = None  # e.g. "python train.py --shards {shards} --eval {eval} --out {out}"
    timeout_s: float = Field(3600, gt=0)  # per run (command trainer)
    max_failures: int = Field(0, ge=0)  # more failed runs than this stop the sweep
    budget: ProxyBudget
    resources: ProxyResources = ProxyResources()
    order: int = Field(5, ge=1, le=6)  # builtin:ngram
    smoothing: Literal["witten-bell"] = "witten-bell"

    @model_validator(mode="after")
    def _trainer(self):
        if self.trainer not in ("builtin:ngram", "command"):
            raise ValueError(f"trainer must be 'builtin:ngram' or 'command', got {self.trainer!r}")
        if self.trainer == "command" and not self.command:
            raise ValueError("trainer 'command' needs 'command' (a template with {shards}, {eval} and {out})")
        return self


class TargetConfig(Strict):
    name: str
    path: str  # JSONL with a 'text' field, or Parquet with a 'text' column; relative to --root
    weight: float = Field(1.0, ge=0)  # in the objective (the mean over targets, weighted)
    text_field: str = "text"
    # generate a held-out slice of a stage source when the path is missing: {source: NAME, every: 5}
    holdout: dict | None = None

    _name = field_validator("name")(check_name)


class EvalConfig(Strict):
    targets: list[TargetConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self):
        names = [t.name for t in self.targets]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate target names in {names}")
        return self


class RegressionConfig(Strict):
    model: Literal["powerlaw", "loglinear"] = "powerlaw"
    folds: int = Field(5, ge=0)  # k-fold for the held-out Spearman / R^2 (0: leave-one-out, K+2 more fits)
    starts: int = Field(8, gt=0)  # seeded SLSQP starts for the proposal


class ConfirmConfig(Strict):
    seeds: int = Field(3, ge=1)  # real proxy runs of the tuned, base and uniform mixes, each


class SweepConfig(Strict):
    digest_exclude: ClassVar[Any] = {"storage_options"}  # where the bytes are, not what is done

    name: str
    base: str  # the base mixture, e.g. mixtures/text-pretrain.yaml
    stage: str
    seed: int = 0
    search: SearchConfig = SearchConfig()
    candidates: CandidatesConfig = CandidatesConfig()
    proxy: ProxyConfig
    eval: EvalConfig
    regression: RegressionConfig = RegressionConfig()
    confirm: ConfirmConfig = ConfirmConfig()
    # fsspec options for URL paths (the output, eval targets, the base mixture's sources), flat or per
    # protocol; None: the base mixture's storage_options, else the environment (docs/storage.md)
    storage_options: dict | None = None

    _name = field_validator("name")(check_name)


def check_against(sweep: SweepConfig, mix: MixtureConfig, where: str) -> StageConfig:
    """The sweep's stage of the base mixture; every source the sweep names must be in it."""
    stages = {st.name: st for st in mix.stages}
    if sweep.stage not in stages:
        raise ConfigError(f"{where}: stage: {sweep.stage!r} is not a stage of {sweep.base} ({', '.join(stages)})")
    st = stages[sweep.stage]
    names = [s.name for s in st.sources]
    for field, keys in (("search.sources", sweep.search.sources or []), ("search.bounds", sweep.search.bounds),
                        ("search.fixed", sweep.search.fixed)):
        for k in keys:
            if k not in names:
                raise ConfigError(f"{where}: {field}.{k}: unknown source {k!r}; stage {st.name!r} of {sweep.base} "
                                  f"has {', '.join(names)}")
    for t in sweep.eval.targets:
        if t.holdout is not None and t.holdout.get("source") not in names:
            raise ConfigError(f"{where}: eval.targets.{t.name}.holdout.source: unknown source "
                              f"{t.holdout.get('source')!r}; the stage has {', '.join(names)}")
    return st


def parse_sweep(raw, where: str = "sweep") -> SweepConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level, got {type(raw).__name__}")
    return validate(SweepConfig, raw, where, "sweep", named=True)


def load_sweep(path: str | Path, count: int | None = None) -> tuple[SweepConfig, MixtureConfig, StageConfig]:
    """The sweep, its base mixture and stage, checked together; ``count`` overrides candidates.count. The
    sweep and its base may be URLs (the base is read with the sweep's storage_options)."""
    remote = storage.is_url(path) and storage.is_remote(path)
    path = str(path) if remote else resolve_config(storage.local(path))
    raw = read_yaml_url(path, "sweep") if remote else read_yaml_mapping(path, "sweep")
    if count is not None and isinstance(raw.get("candidates", {}), dict):
        raw = {**raw, "candidates": {**(raw.get("candidates") or {}), "count": count}}
    sweep = parse_sweep(raw, str(path))
    if sweep.storage_options:
        storage.configure(sweep.storage_options)
    mix = load_mixture(base_path(sweep, path))
    return sweep, mix, check_against(sweep, mix, str(path))


def base_path(sweep: SweepConfig, path: str | Path) -> str | Path:
    """Where the sweep's base mixture is: a URL as it is; a path as the user wrote it (resolve_config), else
    beside the sweep's mixtures/ folder (a sweep outside the checkout, or behind a URL)."""
    if storage.is_remote(sweep.base):
        return sweep.base
    base = resolve_config(sweep.base)
    if not base.exists() and not Path(sweep.base).is_absolute():
        if storage.is_remote(path):
            return storage.join(storage.parent(storage.parent(path)), sweep.base)
        base = Path(path).parent.parent / sweep.base  # a sweep beside its mixtures/, outside the checkout
    return base
