"""The search space and the candidate mixtures: fixed weights, bounds, epoch limits, seeded Dirichlet draws.

A source may be used at most max_epochs times its pool. With per-sample mean tokens t_j, a mix w on a
token budget B draws about w_i * B / sum_j(w_j t_j) samples of source i; on a sample budget S, w_i * S.
Both are linear constraints in w (a_i . w <= 0 form below), checked at the proxy budget and at the
base mixture's own budget, with a small margin for the mixer's rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from crawlmix.mix.config import MixtureConfig, StageConfig, stage_weights
from crawlmix.runtime.config import ConfigError

MARGIN = 0.97  # of the epoch cap: the mixer's per-shard rounding may draw a sample or two more
ROUND = 9  # digits of a written weight


@dataclass
class Space:
    sources: list[str]  # every source of the stage, in the stage's order
    free: list[str]  # searched
    fixed: dict[str, float]  # not searched: sweep 'fixed' + stage sources outside search.sources
    lo: np.ndarray  # per source (stage order)
    hi: np.ndarray
    prior: np.ndarray  # over all sources, sums to 1
    base: np.ndarray  # the base mixture's weights
    pool: np.ndarray  # distinct samples per source (after max_samples)
    mean_tokens: np.ndarray
    max_epochs: np.ndarray
    budgets: list[tuple[str, str, int]] = field(default_factory=list)  # (label, 'tokens'|'samples', amount)

    def epoch_rows(self) -> list[tuple[str, str, np.ndarray]]:
        """Linear constraints A w <= 0, one per (budget, source): draws_i - cap_i <= 0."""
        rows = []
        cap = self.pool * self.max_epochs * MARGIN
        for label, kind, amount in self.budgets:
            for i, s in enumerate(self.sources):
                a = np.zeros(len(self.sources))
                if kind == "tokens":  # w_i * B - cap_i * sum_j w_j t_j <= 0
                    a -= cap[i] * self.mean_tokens
                    a[i] += amount
                else:  # w_i * S - cap_i <= 0, with sum w = 1: w_i * S - cap_i * sum_j w_j
                    a -= cap[i]
                    a[i] += amount
                rows.append((label, s, a))
        return rows

    def violations(self, w: np.ndarray) -> list[str]:
        out = []
        for label, s, a in self.epoch_rows():
            if float(a @ w) > 1e-9:
                out.append(f"{s} at the {label} budget")
        out += [f"{s} outside bounds" for s, x, lo, hi in zip(self.sources, w, self.lo, self.hi)
                if x < lo - 1e-9 or x > hi + 1e-9]
        return out

    def feasible(self, w: np.ndarray) -> bool:
        return not self.violations(w)

    def weights(self, w: np.ndarray) -> dict[str, float]:
        return dict(zip(self.sources, rounded(w)))


def rounded(w: np.ndarray) -> list[float]:
    """Weights rounded to ROUND digits, the largest one absorbing the rounding so they sum to 1."""
    w = np.clip(np.asarray(w, np.float64), 0, None)
    w = w / w.sum()
    r = [round(float(x), ROUND) for x in w]
    i = int(np.argmax(r))
    r[i] = round(1.0 - sum(x for j, x in enumerate(r) if j != i), ROUND)
    return r


def build_space(sweep, mix: MixtureConfig, stage: StageConfig, stats: dict[str, tuple[int, float]]) -> Space:
    """stats: per source (pool size, mean tokens per sample) from the mixer's index."""
    names = [s.name for s in stage.sources]
    base_w = stage_weights(mix, stage)
    base = np.array([base_w.get(n, 0.0) for n in names])
    searched = sweep.search.sources or names
    fixed = {n: float(base_w.get(n, 0.0)) for n in names if n not in searched}
    fixed.update(sweep.search.fixed)
    free = [n for n in searched if n not in fixed]
    if not free:
        raise ConfigError("search: no source left to search (every source is fixed)")
    rest = 1.0 - sum(fixed.values())
    if rest < -1e-9:
        raise ConfigError(f"search.fixed: fixed weights sum to {sum(fixed.values())!r} > 1")
    lo = np.zeros(len(names))
    hi = np.ones(len(names))
    for i, n in enumerate(names):
        if n in fixed:
            lo[i] = hi[i] = fixed[n]
        elif n in sweep.search.bounds:
            lo[i], hi[i] = sweep.search.bounds[n]
    fi = [names.index(n) for n in free]
    if lo[fi].sum() > rest + 1e-9 or hi[fi].sum() < rest - 1e-9:
        raise ConfigError(f"search.bounds: no feasible mixture: the searched sources ({', '.join(free)}) must share "
                          f"{rest:g}, but their bounds allow [{lo[fi].sum():g}, {hi[fi].sum():g}]")
    pool = np.array([stats[n][0] for n in names], np.float64)
    mean_tokens = np.array([stats[n][1] for n in names], np.float64)
    max_epochs = np.array([s.max_epochs for s in stage.sources], np.float64)
    if sweep.search.prior == "base":
        pr = base.copy()
    elif sweep.search.prior == "uniform":
        pr = np.ones(len(names))
    else:  # size: tokens available
        pr = pool * mean_tokens
    pr = np.where(pr > 0, pr, 1e-3 * max(pr.max(), 1e-9))
    budgets = [("proxy", "tokens", sweep.proxy.budget.tokens)]
    b = stage.budget
    budgets.append(("target", "tokens", b.tokens) if b.tokens else ("target", "samples", b.samples))
    return Space(names, free, fixed, lo, hi, pr / pr.sum(), base, pool, mean_tokens, max_epochs, budgets)


def uniform(space: Space) -> np.ndarray:
    w = np.array([space.fixed.get(n, 0.0) for n in space.sources])
    fi = [space.sources.index(n) for n in space.free]
    w[fi] = (1.0 - w.sum()) / len(fi)
    return w


def sample(space: Space, count: int, seed: int, max_tries: int, conc=(0.3, 3.0)) -> list[np.ndarray]:
    """``count`` feasible Dirichlet draws around the prior (free sources only); deterministic in seed."""
    rng = np.random.default_rng([seed, 0x7E57])
    fi = np.array([space.sources.index(n) for n in space.free])
    rest = 1.0 - sum(space.fixed.values())
    centre = space.prior[fi] / space.prior[fi].sum()
    c_lo, c_hi = conc
    out: list[np.ndarray] = []
    tries = 0
    while len(out) < count:
        if tries >= max_tries:
            raise ConfigError(f"search: only {len(out)} of {count} candidates satisfy the bounds and max_epochs "
                              f"limits after {max_tries} draws; widen search.bounds, raise max_epochs, lower "
                              f"proxy.budget.tokens or candidates.count")
        tries += 1
        conc = float(np.exp(rng.uniform(np.log(c_lo), np.log(c_hi)))) * len(fi)
        d = rng.dirichlet(np.maximum(centre * conc, 1e-3))
        w = np.array([space.fixed.get(n, 0.0) for n in space.sources])
        w[fi] = d * rest
        w = np.array(rounded(w))
        if space.feasible(w) and not any(np.allclose(w, o, atol=1e-6) for o in out):
            out.append(w)
    return out


def check_feasible(space: Space) -> None:
    """Fail early, naming the constraint, when bounds + epoch limits leave no mixture (a linear program)."""
    from scipy.optimize import linprog

    n = len(space.sources)
    rows = space.epoch_rows()
    A = np.array([a for _, _, a in rows]) if rows else None
    res = linprog(np.zeros(n), A_ub=A, b_ub=np.zeros(len(rows)) if rows else None,
                  A_eq=np.ones((1, n)), b_eq=[1.0], bounds=list(zip(space.lo, space.hi)), method="highs")
    if res.status != 0:
        caps = ", ".join(f"{s} <= {space.pool[i] * space.max_epochs[i]:g} samples"
                         for i, s in enumerate(space.sources))
        raise ConfigError(f"search.bounds: no feasible mixture under the bounds, fixed weights and max_epochs "
                          f"limits ({caps}; budgets {[(k, a) for _, k, a in space.budgets]})")
