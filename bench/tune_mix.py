#!/usr/bin/env python3
"""Mixture tuning on the constructed task (tests/tune/task.py): for several hidden blends and seeds, tune
with K candidates and print the test-split bits/byte of the tuned, hidden, uniform and hand-set mixes.

    .venv/bin/python bench/tune_mix.py            # K=32, 3 blends x 2 seeds
    .venv/bin/python bench/tune_mix.py --count 16 --seeds 1
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from crawlmix.tune.job import tune  # noqa: E402
from tests.tune.task import HAND, language_texts, make_task, test_loss  # noqa: E402

BLENDS = [[0.45, 0.05, 0.3, 0.0, 0.15, 0.05], [0.1, 0.5, 0.1, 0.1, 0.1, 0.1], [0.25, 0.0, 0.0, 0.25, 0.25, 0.25]]
NAMES = [f"s{i}" for i in range(6)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=32)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--model", default="powerlaw", choices=["powerlaw", "loglinear"])
    a = ap.parse_args()
    print(f"sources: {language_texts()[1]}; K={a.count}; model {a.model}; loss = test-split bits/byte (5-gram)")
    print(f"{'blend':<6}{'seed':>5}{'tuned':>9}{'hidden':>9}{'uniform':>9}{'hand':>9}{'gap':>8}{'rho':>7}{'s':>7}")
    for b, hidden in enumerate(BLENDS):
        for seed in range(a.seeds):
            with tempfile.TemporaryDirectory() as d:
                root = Path(d)
                sweep = make_task(root, hidden, seed=seed, count=a.count, model=a.model)
                t = time.perf_counter()
                rep = tune(sweep, root / "out", root, progress=False)
                wall = time.perf_counter() - t
                got = [test_loss(root, w) for w in (rep["tuned"]["weights"], dict(zip(NAMES, hidden)),
                                                    {n: 1 / 6 for n in NAMES}, dict(zip(NAMES, HAND)))]
                rho = rep["regression"]["heldout"]["target"]["spearman"]
                print(f"{b:<6}{seed:>5}" + "".join(f"{x:>9.4f}" for x in got) + f"{got[0] - got[1]:>+8.4f}"
                      f"{rho:>7.3f}{wall:>7.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
