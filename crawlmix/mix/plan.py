"""Mixer planning: which sample of which source goes where, decided before a byte is written.

prepare() reads and indexes every source of the selected stages (crawlmix/mix/sources.py) and plans each
stage: the Planner apportions every shard's samples between the sources (within one sample of the
weights), the Drawer says which sample a source's k-th draw is (seeded subsets, reshuffled per epoch), and
StagePlan holds the stage's totals and every shard's plan hash. lock_record() is the resolved plan that
crawlmix/mix/job.py writes as mix.lock.json.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crawlmix import __version__
from crawlmix.mix.config import MixtureConfig, StageConfig, stage_weights
from crawlmix.mix.sources import MixError, Source, resolve_source
from crawlmix.mix.tokens import TokenCounter
from crawlmix.runtime.config import ConfigError


# ---------------------------------------------------------------------------------------------- planning
def _rng(seed: int, *parts) -> np.random.Generator:
    import zlib

    return np.random.default_rng([seed & 0xFFFFFFFF, *(zlib.crc32(str(p).encode()) for p in parts)])


class Drawer:
    """Which sample is a source's k-th draw: a seeded subset (max_samples), reshuffled every epoch."""

    def __init__(self, src: Source, seed: int, stage: str):
        self.src, self.seed, self.stage = src, seed, stage
        cfg = src.cfg
        base = _rng(seed, stage, cfg.name, "order").permutation(src.n) if cfg.shuffle else np.arange(src.n)
        self.pool = min(src.n, cfg.max_samples or src.n)
        self.subset = base[:self.pool]
        self.cap = int(math.floor(self.pool * cfg.max_epochs + 1e-9))
        self._orders: dict[int, np.ndarray] = {}

    def order(self, epoch: int) -> np.ndarray:
        o = self._orders.get(epoch)
        if o is None:
            if epoch == 0 or not self.src.cfg.shuffle:
                o = self.subset
            else:
                o = self.subset[_rng(self.seed, self.stage, self.src.cfg.name, "epoch", epoch).permutation(self.pool)]
            if len(self._orders) > 4:
                self._orders.pop(min(self._orders))
            self._orders[epoch] = o
        return o

    def draws(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        k = np.arange(start, start + count, dtype=np.int64)
        ep, pos = k // self.pool, k % self.pool
        if count and ep[0] == ep[-1]:  # all in one epoch
            return self.order(int(ep[0]))[pos], ep
        idx = np.empty(count, np.int64)
        for e in np.unique(ep):
            m = ep == e
            idx[m] = self.order(int(e))[pos[m]]
        return idx, ep


@dataclass
class ShardPlan:
    index: int
    start: int  # global sample number of the first sample
    src: np.ndarray  # source position per sample
    idx: np.ndarray  # sample index inside the source
    epoch: np.ndarray
    counts: np.ndarray  # samples per source
    nbytes: int  # exact tar size
    tokens: int

    def digest(self, stage_hash: str) -> str:
        h = hashlib.sha256(stage_hash.encode())
        for a in (self.src.astype(np.int32), self.idx.astype(np.int64), self.epoch.astype(np.int32)):
            h.update(a.tobytes())
        h.update(str(self.start).encode())
        return h.hexdigest()[:16]


class Planner:
    """Stratified interleaving with exact per-shard ratios.

    Each shard of S samples gives source i floor(w_i*S) or ceil(w_i*S) samples (so within one sample of
    its share); which sources get the ceil is decided by their cumulative deficit (Megatron's
    "most-behind source next", one shard at a time), so the whole stage stays within about one sample too.
    Inside a shard, samples are spread evenly (source i's t-th sample at position ~ (t+0.5)*S/n_i).
    """

    def __init__(self, stage: StageConfig, sources: list[Source], weights: dict[str, float], seed: int):
        self.stage, self.sources = stage, sources
        self.w = np.array([weights[s.name] for s in sources], np.float64)
        self.drawers = [Drawer(s, seed, stage.name) for s in sources]

    def _apportion(self, S: int, placed: int, C: np.ndarray) -> np.ndarray:
        T = self.w * S
        base = np.floor(T + 1e-9).astype(np.int64)
        r = int(S - base.sum())
        if r > 0:
            frac = T - base
            deficit = self.w * (placed + S) - (C + base)
            cand = np.flatnonzero(frac > 1e-9)
            if len(cand) < r:
                cand = np.arange(len(self.w))
            order = sorted(cand, key=lambda i: (-round(deficit[i], 9), -round(frac[i], 9), i))
            base[order[:r]] += 1
        return base

    def _materialize(self, counts: np.ndarray, C: np.ndarray):
        S = int(counts.sum())
        src = np.repeat(np.arange(len(counts)), counts)
        t = np.concatenate([np.arange(c) for c in counts]) if S else np.zeros(0, np.int64)
        ideal = (t + 0.5) / counts[src]
        order = np.lexsort((src, ideal))
        src = src[order]
        idx = np.empty(S, np.int64)
        ep = np.empty(S, np.int64)
        nbytes, tokens = 1024, 0
        for i, c in enumerate(counts):
            if not c:
                continue
            m = src == i
            di, de = self.drawers[i].draws(int(C[i]), int(c))
            idx[m], ep[m] = di, de
            nbytes += int(self.sources[i].sample_bytes(di, de).sum())
            tokens += int(self.sources[i].tokens[di].sum())
        return src, idx, ep, nbytes, tokens

    def _check_caps(self, counts: np.ndarray, C: np.ndarray, total: int) -> None:
        over = np.flatnonzero(C + counts > [d.cap for d in self.drawers])
        if len(over):
            i = int(over[0])
            d = self.drawers[i]
            need = int(math.ceil(self.w[i] * total))
            raise MixError(
                f"stage {self.stage.name!r}: source {self.sources[i].name!r} is too small for its share: weight "
                f"{self.w[i]:.4g} of {total} samples needs ~{need} draws, but it has {d.pool} samples "
                f"x max_epochs {d.src.cfg.max_epochs:g} = {d.cap} allowed; lower its weight or the budget, "
                f"raise max_epochs, or add data")

    def shards(self, total: int, token_budget: int | None = None):
        """Yield ShardPlans covering `total` samples (or until `token_budget` tokens are reached)."""
        lim = self.stage.shards
        C = np.zeros(len(self.sources), np.int64)
        placed, tok, s = 0, 0, 0
        while placed < total and (token_budget is None or tok < token_budget):
            S = min(lim.max_samples, total - placed)
            counts = self._apportion(S, placed, C)
            self._check_caps(counts, C, total)
            plan = self._materialize(counts, C)
            if lim.max_bytes and plan[3] > lim.max_bytes and S > 1:
                lo, hi = 1, S - 1  # largest S that fits; a single oversized sample gets a shard of its own
                best = None
                while lo <= hi:
                    mid = (lo + hi) // 2
                    c2 = self._apportion(mid, placed, C)
                    p2 = self._materialize(c2, C)
                    if p2[3] <= lim.max_bytes:
                        best, lo = (c2, p2), mid + 1
                    else:
                        hi = mid - 1
                if best is None:
                    c2 = self._apportion(1, placed, C)
                    best = (c2, self._materialize(c2, C))
                counts, plan = best
            src, idx, ep, nbytes, tokens = plan
            yield ShardPlan(s, placed, src, idx, ep, counts, nbytes, tokens)
            C += counts
            placed += int(counts.sum())
            tok += tokens
            s += 1


@dataclass
class StagePlan:
    stage: StageConfig
    sources: list[Source]
    weights: dict[str, float]
    samples: int
    shards: int
    bytes: int
    tokens: int
    draws: np.ndarray
    tokens_per_source: np.ndarray
    max_dev: float  # worst |count - weight * shard size| over shards and sources
    stage_hash: str
    shard_digests: list[str]

    def planner(self, seed):
        return Planner(self.stage, self.sources, self.weights, seed)


def plan_stage(mix: MixtureConfig, stage: StageConfig, sources: list[Source], fingerprint: str) -> StagePlan:
    weights = stage_weights(mix, stage)
    active = [s for s in sources if s.name in weights]
    for s in active:
        if s.n == 0:
            filt = f" after the languages filter {s.cfg.languages}" if s.cfg.languages else ""
            raise MixError(f"stage {stage.name!r}: source {s.name!r} is empty: 0 samples in {len(s.files)} "
                           f"file(s){filt} ({', '.join(s.rel_files[:3])})")
    planner = Planner(stage, active, weights, mix.seed)
    w = planner.w
    if stage.budget.samples:
        total = stage.budget.samples
        # early, readable check before the exact one below
        planner._check_caps(np.floor(w * total + 1e-9).astype(np.int64), np.zeros(len(w), np.int64), total)
    else:  # a token budget: walk the interleaved stream until the tokens are reached
        max_total = int(min(d.cap / wi for d, wi in zip(planner.drawers, w)))
        if max_total < 1:
            raise MixError(f"stage {stage.name!r}: not enough data for one sample")
        reached, total = 0, None
        try:
            for sp in planner.shards(max_total):
                toks = np.empty(len(sp.src), np.int64)
                for i, src in enumerate(planner.sources):
                    m = sp.src == i
                    toks[m] = src.tokens[sp.idx[m]]
                cum = reached + np.cumsum(toks)
                hit = np.flatnonzero(cum >= stage.budget.tokens)
                if len(hit):
                    total = sp.start + int(hit[0]) + 1
                    break
                reached = int(cum[-1])
        except MixError:
            pass
        if total is None:
            raise MixError(f"stage {stage.name!r}: token budget {stage.budget.tokens:,} is out of reach: the sources "
                           f"give about {reached:,} tokens before one of them runs past its max_epochs; lower the "
                           f"budget, raise max_epochs or add data")
        planner = Planner(stage, active, weights, mix.seed)
    stage_hash = hashlib.sha256(f"{fingerprint}:{stage.name}".encode()).hexdigest()[:16]
    draws = np.zeros(len(active), np.int64)
    toks = np.zeros(len(active), np.int64)
    nshards = nbytes = ntok = 0
    max_dev = 0.0
    digests = []
    for sp in planner.shards(total):
        S = len(sp.src)
        max_dev = max(max_dev, float(np.abs(sp.counts - w * S).max()))
        draws += sp.counts
        for i in range(len(active)):
            toks[i] += int(active[i].tokens[sp.idx[sp.src == i]].sum())
        nshards += 1
        nbytes += sp.nbytes
        ntok += sp.tokens
        digests.append(sp.digest(stage_hash))
    return StagePlan(stage, active, weights, total, nshards, nbytes, ntok, draws, toks, max_dev, stage_hash, digests)


def _brace(pattern: str, n: int) -> str:
    """The shard names as one brace pattern: shard-{000000..000010}.tar."""
    first, last = pattern.format(index=0), pattern.format(index=n - 1)
    if n == 1:
        return first
    i = 0
    while i < len(first) and first[i] == last[i]:
        i += 1
    while i > 0 and first[i - 1].isdigit():
        i -= 1
    j = 0
    while j < len(first) - i and first[-1 - j] == last[-1 - j] and not first[-1 - j].isdigit():
        j += 1
    return f"{first[:i]}{{{first[i:len(first) - j]}..{last[i:len(last) - j]}}}{first[len(first) - j:]}"


# ---------------------------------------------------------------------------------------------- the lock
def _members(sources: list[Source], layout: str) -> list[str]:
    """The member extensions a stage's samples have (layout 'uniform': the same for every sample)."""
    if layout == "uniform":
        return sorted({*sources[0].out_exts, "json"}) if sources else ["json", "txt"]
    return sorted({"json", *(e for s in sources for e in s.out_exts)})



def lock_record(mix: MixtureConfig, plan: StagePlan, common: dict) -> dict:
    """The resolved plan of a stage (mix.lock.json): per source and modality target vs realised, inputs, hashes."""
    st = plan.stage
    srcs = {}
    for i, s in enumerate(plan.sources):
        d = plan.draws[i]
        pool = min(s.n, s.cfg.max_samples or s.n)
        srcs[s.name] = {
            "modality": s.cfg.modality, "format": s.fmt, "path": s.cfg.path, "weight": s.cfg.weight,
            "target_share": round(plan.weights[s.name], 9), "samples": int(d),
            "realised_share": round(int(d) / plan.samples, 9), "tokens": int(plan.tokens_per_source[i]),
            "available": s.n, "pool": pool, "epochs_used": round(int(d) / pool, 4),
            "max_epochs": s.cfg.max_epochs, "files": s.fingerprints}
        if s.bad_rows:
            srcs[s.name]["bad_rows"] = s.bad_rows
            srcs[s.name]["bad_examples"] = s.bad
    mods: dict = {}
    for s, v in srcs.items():
        m = mods.setdefault(v["modality"], {"target_share": 0.0, "samples": 0, "tokens": 0})
        m["target_share"] = round(m["target_share"] + v["target_share"], 9)
        m["samples"] += v["samples"]
        m["tokens"] += v["tokens"]
    for m in mods.values():
        m["realised_share"] = round(m["samples"] / plan.samples, 9)
    return {"mixture": mix.name, "stage": st.name, "mixture_hash": common["mixture_hash"], "seed": mix.seed,
            "crawlmix_version": __version__, "tokenizer": common["tokenizer"], "budget": st.budget.model_dump(),
            "shard_limits": st.shards.model_dump(), "samples": plan.samples, "tokens": plan.tokens,
            "bytes": plan.bytes, "shards": plan.shards, "shard_pattern": _brace(st.shards.pattern, plan.shards),
            "max_shard_deviation": round(plan.max_dev, 6), "stage_hash": plan.stage_hash,
            "layout": mix.output.layout, "formats": mix.output.formats,
            "members": _members(plan.sources, mix.output.layout),
            "sources": srcs, "modalities": dict(sorted(mods.items())), "shard_plans": plan.shard_digests}


def sample_common(mix: MixtureConfig) -> dict:
    """Provenance shared by every sample's .json (the stage is the shard's folder)."""
    return {"mixture": mix.name, "mixture_hash": mix.digest(), "seed": mix.seed, "crawlmix_version": __version__}


def prepare(mix: MixtureConfig, root: Path, stages: list[str] | None = None, progress: bool = True):
    """Read, index and plan every selected stage; raises MixError/ConfigError before anything is written."""
    chosen = [st for st in mix.stages if not stages or st.name in stages]
    if stages:
        unknown = set(stages) - {st.name for st in mix.stages}
        if unknown:
            raise ConfigError(f"--stage {', '.join(sorted(unknown))}: not in the mixture "
                              f"({', '.join(st.name for st in mix.stages)})")
    tokens = TokenCounter(mix.tokens, root)
    mix_hash = mix.digest()
    common = sample_common(mix)
    cache: dict = {}
    plans = []
    for st in chosen:
        weights = stage_weights(mix, st)
        srcs = []
        for cfg in st.sources:
            if cfg.name not in weights:
                continue
            key = json.dumps({k: v for k, v in cfg.model_dump().items()
                              if k in ("path", "format", "languages", "text_field", "modality")}, sort_keys=True)
            if key not in cache:
                src = resolve_source(cfg, root, progress, mix.output.layout)
                src.build_index(tokens, common)
                cache[key] = src
            base = cache[key]
            src = base.renamed(cfg)
            if src.name != base.name or src.cfg.modality != base.cfg.modality:
                src.build_index(tokens, common)  # the name / modality inside each .json differ
            srcs.append(src)
        with_images = any(s.has_media for s in srcs)  # uniform layout: every sample of the stage gets .images.tar
        srcs = [s.laid_out(with_images) for s in srcs]
        fp = hashlib.sha256(json.dumps([mix_hash, tokens.spec, [s.fingerprints for s in srcs]],
                                       sort_keys=True).encode()).hexdigest()[:16]
        plans.append(plan_stage(mix, st, srcs, fp))
    return plans, tokens

