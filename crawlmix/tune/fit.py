"""Mixing laws, one per eval target, their held-out quality, and the proposal on the simplex.

- powerlaw (BiMix-style): L(w) = c + sum_i k_i * (w_i + eps)^(-a_i), k_i >= 0, a_i in [0, 3]
- loglinear (Ye et al. data mixing law): L(w) = c + exp(sum_i t_i w_i)

Only the searched sources enter a law (fixed sources are constant). Each law is fitted by scipy's
least_squares (soft-L1) from several seeded starts; held-out Spearman and R^2 come from leave-one-out (or k-fold)
refits. The proposal minimises the weighted mean of the predicted losses under the bounds, the fixed
weights and the epoch limits (linear constraints) with SLSQP from several seeded starts.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import least_squares, minimize, nnls
from scipy.stats import spearmanr

EPS = 1e-3


class Law:
    def __init__(self, model: str, n: int):
        self.model, self.n = model, n
        self.p: np.ndarray | None = None

    def predict(self, W: np.ndarray, p: np.ndarray | None = None) -> np.ndarray:
        p = self.p if p is None else p
        W = np.atleast_2d(W)
        if self.model == "powerlaw":
            c, k, a = p[0], p[1:1 + self.n], p[1 + self.n:]
            return c + ((W + EPS) ** (-a) * k).sum(axis=1)
        c, t = p[0], p[1:]
        return c + np.exp(np.clip(W @ t, -50, 50))

    def _starts(self, y: np.ndarray, rng) -> list[tuple[np.ndarray, tuple]]:
        n, lo_y = self.n, float(y.min())
        out = []
        if self.model == "powerlaw":
            lb = np.r_[-np.inf, np.zeros(n), np.zeros(n)]
            ub = np.r_[lo_y, np.full(n, np.inf), np.full(n, 3.0)]
            for a in (0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0):  # shared exponent: c, k by non-negative least squares
                X = np.c_[np.ones(len(y)), (self._W + EPS) ** (-a)]
                coef, _ = nnls(X, y)
                out.append((np.r_[min(coef[0], lo_y - 1e-6), coef[1:], np.full(n, a)], (lb, ub)))
            for j in range(4):
                c0 = lo_y - (0.05 if j == 0 else float(rng.uniform(0.01, 1.0)))
                k0 = np.full(n, max(lo_y - c0, 1e-3) / n / 10) * (1 if j == 0 else rng.uniform(0.2, 5, n))
                a0 = np.full(n, 0.3) if j == 0 else rng.uniform(0.05, 1.0, n)
                out.append((np.r_[c0, k0, a0], (lb, ub)))
        else:
            lb = np.r_[-np.inf, np.full(n, -50.0)]
            ub = np.r_[lo_y - 1e-6, np.full(n, 50.0)]
            for j in range(4):
                c0 = lo_y - (0.5 if j == 0 else float(rng.uniform(0.05, 2.0)))
                t0 = np.full(n, np.log(max(float(y.mean()) - c0, 1e-3))) + (0 if j == 0 else rng.normal(0, 0.5, n))
                out.append((np.r_[c0, t0], (lb, ub)))
        return out

    def fit(self, W: np.ndarray, y: np.ndarray, seed: int = 0) -> Law:
        rng = np.random.default_rng(seed)
        self._W = W
        best, best_cost = None, np.inf
        scale = max(float(np.median(np.abs(y - np.median(y)))), 1e-6)  # robust: far-off mixes do not dominate
        for p0, (lb, ub) in self._starts(y, rng):
            p0 = np.clip(p0, lb + 1e-9, ub - 1e-9)
            ridge = 1e-3 * scale

            def resid(p):
                r = (self.predict(W, p) - y) / scale
                return np.r_[r, ridge * p[1:]]

            try:
                r = least_squares(resid, p0, bounds=(lb, ub), max_nfev=400 * len(p0), loss="soft_l1", f_scale=0.1)
            except (ValueError, FloatingPointError):
                continue
            if r.cost < best_cost:
                best, best_cost = r.x, r.cost
        self.p = best if best is not None else self._starts(y, rng)[0][0]
        return self


def heldout(model: str, W: np.ndarray, y: np.ndarray, folds: int, seed: int) -> dict:
    """Spearman and R^2 of out-of-fold predictions (leave-one-out when folds is 0)."""
    m = len(y)
    if m < 4:
        return {"spearman": None, "r2": None, "folds": 0}
    k = m if folds <= 0 or folds >= m else folds
    order = np.random.default_rng([seed, 1]).permutation(m)
    pred = np.empty(m)
    for f in range(k):
        test = order[f::k]
        train = np.setdiff1d(np.arange(m), test)
        pred[test] = Law(model, W.shape[1]).fit(W[train], y[train], seed).predict(W[test])
    ss = float(((y - y.mean()) ** 2).sum())
    r2 = 1 - float(((y - pred) ** 2).sum()) / ss if ss > 0 else None
    rho = spearmanr(y, pred).statistic if np.ptp(y) > 0 else None
    return {"spearman": None if rho is None or np.isnan(rho) else round(float(rho), 4),
            "r2": None if r2 is None else round(r2, 4), "folds": k}


def propose(laws: dict, target_weights: dict[str, float], space, free_idx: np.ndarray, starts: list[np.ndarray],
            seed: int, n_starts: int, trust: np.ndarray | None = None) -> np.ndarray:
    """Weights over all sources minimising the weighted mean predicted loss, under every constraint. With
    ``trust`` (the best observed mixes), each source stays within the range those mixes used: a law
    fitted on proxy runs is not trusted far outside them (e.g. at a weight of 0 no good run had)."""
    n = len(space.sources)
    lo, hi = space.lo.copy(), space.hi.copy()
    if trust is not None and len(trust):
        lo[free_idx] = np.maximum(lo[free_idx], trust[:, free_idx].min(axis=0))
        hi[free_idx] = np.minimum(hi[free_idx], trust[:, free_idx].max(axis=0))
    tw = np.array([target_weights[t] for t in laws])
    tw = tw / tw.sum()

    def objective(w):
        wf = w[free_idx][None, :]
        return float(sum(a * law.predict(wf)[0] for a, law in zip(tw, laws.values())))

    rows = [a for _, _, a in space.epoch_rows()]
    cons = [{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones(n)}]
    if rows:
        A = np.array(rows)
        cons.append({"type": "ineq", "fun": lambda w: -(A @ w), "jac": lambda w: -A})
    bounds = list(zip(lo, hi))
    rng = np.random.default_rng([seed, 2])
    x0s = list(starts)
    while len(x0s) < n_starts + len(starts):
        w = np.array([space.fixed.get(s, 0.0) for s in space.sources])
        w[free_idx] = rng.dirichlet(np.ones(len(free_idx))) * (1 - w.sum())
        x0s.append(w)
    best, best_f = None, np.inf
    for x0 in x0s:
        r = minimize(objective, np.clip(x0, lo, hi), method="SLSQP", bounds=bounds, constraints=cons,
                     options={"maxiter": 300, "ftol": 1e-10})
        w = np.clip(r.x, lo, hi)
        w = w / w.sum()
        f = objective(w)
        if f < best_f - 1e-12 and space.feasible(w):
            best, best_f = w, f
    return best
