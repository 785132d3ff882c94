"""crawlmix mixture tuning: proxy runs over candidate mixtures, a mixing law per target, tuned weights.

    python pipelines/tune_mix.py --sweep mixtures/text-pretrain.sweep.yaml --output output/tune/text-pretrain
    python pipelines/tune_mix.py --sweep mixtures/smolvlm-video.sweep.yaml --output out/ --count 6
    python pipelines/submit.py --address http://HEAD:8265 -- python pipelines/tune_mix.py --sweep X.sweep.yaml --output DIR --ray

Candidates (the base mix, uniform, and seeded Dirichlet draws inside the bounds and epoch limits) are
built by the mixer in process and trained by the proxy (one executor task per run); a law per target is
fitted on them, the weights minimising the predicted loss are proposed, then confirmed by real runs
beside the base and uniform mixes. Writes OUTPUT/tuned.yaml, candidates.csv and report.json. A run is
finished when its marker (OUTPUT/_tasks/<run>.json) holds the sweep's run hash and the run's weights and
seed; a rerun trains only the others. See docs/tune.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from crawlmix.io.paths import file_digest
from crawlmix.mix.config import parse_mixture
from crawlmix.mix.fetch import location
from crawlmix.mix.plan import prepare
from crawlmix.mix.sources import MixError
from crawlmix.runtime import storage
from crawlmix.runtime.atomic import exit_on_output_error
from crawlmix.runtime.completion import Completion
from crawlmix.runtime.config import ConfigError
from crawlmix.runtime.executor import Executor, Resources
from crawlmix.runtime.resources import resolve_config
from crawlmix.tune import candidates as cand
from crawlmix.tune.config import base_path, load_sweep
from crawlmix.tune.fit import Law, heldout, propose
from crawlmix.tune.proxy import proxy_task
from crawlmix.tune.report import write_all
from crawlmix.tune.targets import resolve_targets


class TuneError(RuntimeError):
    """The sweep cannot go on (too many failed runs, nothing to fit)."""


def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def source_stats(base_raw: dict, stage: str, root: Path, overrides: dict, progress: bool) -> dict:
    """Per source (pool of distinct samples, mean tokens per sample), from the mixer's own index."""
    raw = json.loads(json.dumps(base_raw))
    raw.pop("tuning", None)
    st = next(s for s in raw["stages"] if s["name"] == stage)
    st["budget"], st["normalize"] = {"samples": 1, "tokens": None}, True
    for s in st["sources"]:
        s["weight"] = 1.0
        s.update(overrides.get(s["name"], {}))
        s["max_epochs"] = 1e9  # only the index is wanted here
    raw["stages"] = [st]
    plans, _ = prepare(parse_mixture(raw, "stats mixture"), root, [stage], progress)
    out = {}
    for src in plans[0].sources:
        pool = min(src.n, src.cfg.max_samples or src.n)
        out[src.name] = (pool, float(src.tokens.mean()) if src.n else 0.0)
    return out


def run_batch(runs: list[dict], ctx: dict, ex: Executor, done: Completion, res: Resources, desc: str,
              max_failures: int, failed_so_far: int) -> int:
    """Train every run without a valid marker; fills run['losses'/'status'/'error']; returns failures."""
    todo = []
    for r in runs:
        rec = done.get(r["id"])
        if rec and rec.get("weights") == r["weights"] and rec.get("seed") == r["seed"]:
            r.update(losses=rec["losses"], status="ok", error="")
        else:
            todo.append(r)
    failures = failed_so_far
    for o in ex.imap(proxy_task, [(r,) for r in todo], desc=desc, shared=(ctx,), resources=res):
        r = o.args[0]
        if o.ok:
            r.update(losses=o.result["losses"], status="ok", error="")
            done.mark(r["id"], {"weights": r["weights"], "seed": r["seed"], "kind": r["kind"], **o.result})
        else:
            failures += 1
            r.update(losses={}, status="failed", error=o.message()[:500])
            print(f"run {r['id']} ({r['kind']}) failed: {r['error']}", file=sys.stderr)
    if failures > max_failures:
        first = next(r for r in runs if r["status"] == "failed")
        raise TuneError(f"{failures} proxy run(s) failed, more than proxy.max_failures={max_failures}; "
                        f"first: {first['id']}: {first['error']}")
    return failures


def tune(sweep_path, out: Path | str, root: Path | str = Path("."), workers: int = 1, use_ray: bool = False,
         progress: bool = True, dry_run: bool = False, count: int | None = None) -> dict:
    """Run the sweep; ``out``, ``root``, the eval targets and the sources may be local or URLs (s3://...),
    reached with the sweep's storage_options (else the base mixture's, else the environment)."""
    storage.configure(None)
    sweep, mix, stage = load_sweep(sweep_path, count)
    remote = storage.is_remote(sweep_path)
    base = base_path(sweep, sweep_path if remote else resolve_config(storage.local(sweep_path)))
    options = sweep.storage_options or mix.storage_options
    storage.configure(options)
    out, root = location(out), location(root)
    targets, overrides = resolve_targets(sweep, stage, root, progress)
    base_raw = mix.model_dump(mode="json")
    base_raw["storage_options"] = options  # every proxy mix (in every worker) reaches the store with them
    stats = source_stats(base_raw, stage.name, root, overrides, progress)
    space = cand.build_space(sweep, mix, stage, stats)
    cand.check_feasible(space)
    draws = cand.sample(space, sweep.candidates.count, sweep.seed, sweep.candidates.max_tries,
                        sweep.search.concentration)
    text_only = sweep.proxy.trainer == "builtin:ngram"
    tnames = [t.name for t in sweep.eval.targets]
    runs = [{"id": f"r{i:03d}", "kind": k, "seed": sweep.seed, "weights": space.weights(w)}
            for i, (k, w) in enumerate([("base", space.base), ("uniform", cand.uniform(space))]
                                       + [("candidate", w) for w in draws])]
    for r in runs:
        r.update(losses={}, predicted=None, status="pending", error="")
    if dry_run:
        return {"sweep": sweep.name, "runs": runs, "sources": space.sources, "targets": targets}
    run_hash = _sha([mix.digest(), stage.name, sweep.proxy.model_dump(mode="json", exclude={"max_failures"}),
                     {k: file_digest(p) for k, p in targets.items()}, overrides, stats])
    sweep_hash = _sha([sweep.digest(), mix.digest(), run_hash])
    storage.makedirs(out)
    ctx = {"output": _abs(out), "base_raw": base_raw, "stage": stage.name, "root": _abs(root),
           "budget_tokens": sweep.proxy.budget.tokens, "overrides": overrides, "trainer": sweep.proxy.trainer,
           "command": sweep.proxy.command, "timeout_s": sweep.proxy.timeout_s, "order": sweep.proxy.order,
           "targets": targets, "text_fields": {t.name: t.text_field for t in sweep.eval.targets}}
    done = Completion(out, run_hash)
    ex = Executor.auto(workers, progress, ray=True if use_ray else False)
    res = Resources(num_cpus=sweep.proxy.resources.num_cpus, num_gpus=sweep.proxy.resources.num_gpus)
    fails = run_batch(runs, ctx, ex, done, res, "proxy runs", sweep.proxy.max_failures, 0)

    fi = np.array([space.sources.index(s) for s in space.free])
    ok = [r for r in runs if r["status"] == "ok"]
    if len(ok) < 3:
        raise TuneError(f"only {len(ok)} proxy run(s) succeeded; at least 3 are needed to fit a mixing law")
    W = np.array([[r["weights"][s] for s in space.sources] for r in ok])[:, fi]
    laws, held = {}, {}
    for t in tnames:
        y = np.array([r["losses"][t] for r in ok])
        laws[t] = Law(sweep.regression.model, len(fi)).fit(W, y, sweep.seed)
        held[t] = heldout(sweep.regression.model, W, y, sweep.regression.folds, sweep.seed)
    tw = {t.name: t.weight for t in sweep.eval.targets}
    ranked = sorted(ok, key=lambda r: sum(tw[t] * r["losses"][t] for t in tnames))
    trust = np.array([[r["weights"][s] for s in space.sources] for r in ranked[:max(3, len(ranked) // 4)]])
    starts = list(trust[:3])
    w_star = propose(laws, tw, space, fi, starts, sweep.seed, sweep.regression.starts, trust)
    if w_star is None or not space.feasible(np.array(cand.rounded(w_star))):
        w_star = starts[0]  # no feasible optimum found: the best observed mix
    tuned = space.weights(w_star)

    def predict(weights: dict) -> dict:
        w = np.array([[weights[s] for s in space.sources]])[:, fi]
        return {t: round(float(laws[t].predict(w)[0]), 6) for t in tnames}

    confirm = []
    for j in range(sweep.confirm.seeds):
        for kind, w in (("confirm-tuned", tuned), ("confirm-base", runs[0]["weights"]),
                        ("confirm-uniform", runs[1]["weights"])):
            confirm.append({"id": f"r{len(runs) + len(confirm):03d}", "kind": kind, "seed": sweep.seed + 1 + j,
                            "weights": dict(w), "losses": {}, "predicted": None, "status": "pending", "error": ""})
    run_batch(confirm, ctx, ex, done, res, "confirm runs", sweep.proxy.max_failures, fails)
    runs += confirm
    for r in runs:
        r["predicted"] = predict(r["weights"])
    report = write_all(out, sweep, sweep_hash, space, tnames, runs, held, tuned, predict(tuned), text_only, base)
    return report


def _abs(p: Path | str) -> str:
    """A location that holds in another process: an absolute path, or the URL."""
    return p if isinstance(p, str) else str(p.resolve())


def summary(rep: dict) -> str:
    lines = [f"tuned {rep['name']} (sweep {rep['sweep_hash']}): stage {rep['stage']}, {len(rep['runs'])} runs, "
             f"model {rep['regression']['model']}, proxy {rep['proxy']['trainer']}"
             + (" (proxy: text-only)" if rep["proxy"]["text_only"] else "")]
    lines.append(f"{'source':<20}{'base':>9}{'uniform':>9}{'tuned':>9}")
    for s in rep["sources"]:
        lines.append(f"{s:<20}{rep['baselines']['base']['weights'][s]:>9.4f}"
                     f"{rep['baselines']['uniform']['weights'][s]:>9.4f}{rep['tuned']['weights'][s]:>9.4f}")
    for t in rep["targets"]:
        h = rep["regression"]["heldout"][t]
        c = {k: (v.get(t) or {}).get("mean") for k, v in (("tuned", rep["tuned"]["confirmed"]),
                                                          ("base", rep["baselines"]["base"]["confirmed"]),
                                                          ("uniform", rep["baselines"]["uniform"]["confirmed"]))}
        lines.append(f"target {t}: predicted {rep['tuned']['predicted'][t]:.4f}, confirmed tuned {c['tuned']} / "
                     f"base {c['base']} / uniform {c['uniform']} (held-out spearman {h['spearman']}, r2 {h['r2']})")
    return "\n".join(lines)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="tune_mix.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="See docs/tune.md for the sweep YAML reference.")
    ap.add_argument("--sweep", required=True, metavar="YAML",
                    help="sweep file or URL (e.g. mixtures/text-pretrain.sweep.yaml)")
    ap.add_argument("--output", required=True, metavar="DIR",
                    help="output folder or URL (s3://bucket/prefix; tuned.yaml, candidates.csv, ...)")
    ap.add_argument("--root", default=".", metavar="DIR",
                    help="relative source and eval paths resolve against this folder or URL (default: the current "
                         "directory)")
    ap.add_argument("--workers", type=int, default=1, help="proxy runs side by side (processes, or Ray workers)")
    ap.add_argument("--ray", action="store_true", help="one Ray task per proxy run (a local Ray or RAY_ADDRESS)")
    ap.add_argument("--count", type=int, default=None, metavar="K", help="override candidates.count")
    ap.add_argument("--dry-run", action="store_true", help="validate, index the sources, list the candidates; train nothing")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    return ap.parse_args(argv)


@exit_on_output_error
def main(argv=None) -> int:
    a = parse_args(argv)
    try:
        rep = tune(a.sweep, a.output, a.root, workers=max(1, a.workers), use_ray=a.ray,
                   progress=not a.no_progress, dry_run=a.dry_run, count=a.count)
    except (ConfigError, MixError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except TuneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if a.dry_run:
        print(f"dry run: {len(rep['runs'])} runs over {', '.join(rep['sources'])}; targets {', '.join(rep['targets'])}")
        for r in rep["runs"]:
            print(f"{r['id']} {r['kind']:<10} " + " ".join(f"{s}={v:.4f}" for s, v in r["weights"].items()))
        return 0
    print(summary(rep))
    print(f"wrote {a.output}/tuned.yaml, candidates.csv, report.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
