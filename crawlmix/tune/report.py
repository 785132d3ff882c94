"""The sweep's outputs: candidates.csv, report.json (the dashboard reads its shape) and tuned.yaml."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import yaml

from crawlmix.mix.config import parse_mixture, read_yaml_url
from crawlmix.runtime import storage
from crawlmix.runtime.atomic import write_json, write_text
from crawlmix.runtime.config import read_yaml_mapping
from crawlmix.tune.candidates import uniform


def _stats(runs: list[dict], kind: str, targets: list[str]) -> dict:
    ok = [r for r in runs if r["kind"] == kind and r["status"] == "ok"]
    out = {}
    for t in targets:
        v = np.array([r["losses"][t] for r in ok], np.float64)
        out[t] = {"mean": round(float(v.mean()), 6), "std": round(float(v.std()), 6), "n": len(v)} if len(v) else None
    return out


def write_csv(path: Path | str, runs: list[dict], sources: list[str], targets: list[str]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "kind", "seed", *sources, *[f"loss_{t}" for t in targets], "status"])
    for r in runs:
        w.writerow([r["id"], r["kind"], r["seed"], *[repr(r["weights"][s]) for s in sources],
                    *["" if r["losses"].get(t) is None else repr(r["losses"][t]) for t in targets], r["status"]])
    write_text(path, buf.getvalue())


def build_report(sweep, sweep_hash: str, space, targets: list[str], runs: list[dict], heldout: dict,
                 tuned: dict, predicted: dict, text_only: bool) -> dict:
    base_w = space.weights(space.base)
    return {
        "kind": "crawlmix-tuning", "name": sweep.name, "sweep_hash": sweep_hash, "base": sweep.base,
        "stage": sweep.stage, "sources": list(space.sources), "targets": targets,
        "proxy": {"trainer": sweep.proxy.trainer, "text_only": text_only, "budget_tokens": sweep.proxy.budget.tokens},
        "runs": [{k: r[k] for k in ("id", "kind", "seed", "weights", "losses", "predicted", "status", "error")}
                 for r in runs],
        "regression": {"model": sweep.regression.model, "heldout": heldout},
        "tuned": {"weights": tuned, "predicted": predicted, "confirmed": _stats(runs, "confirm-tuned", targets)},
        "baselines": {"base": {"weights": base_w, "confirmed": _stats(runs, "confirm-base", targets)},
                      "uniform": {"weights": space.weights(uniform(space)),
                                  "confirmed": _stats(runs, "confirm-uniform", targets)}},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write_tuned(path: Path | str, base_path: Path | str, stage: str, report: dict) -> dict:
    """The base mixture with the stage's tuned weights and a ``tuning:`` block; checked by the mixer's loader."""
    read = read_yaml_url if storage.is_remote(base_path) else read_yaml_mapping
    raw = read(base_path, "mixture")
    tuned = report["tuned"]["weights"]
    for st in raw["stages"]:
        if st["name"] == stage:
            for s in st["sources"]:
                s["weight"] = tuned[s["name"]]
    n_ok = sum(r["status"] == "ok" for r in report["runs"])
    raw["tuning"] = {
        "sweep": report["name"], "sweep_hash": report["sweep_hash"], "stage": stage,
        "proxy": report["proxy"], "runs": len(report["runs"]), "runs_ok": n_ok,
        "model": report["regression"]["model"], "heldout": report["regression"]["heldout"],
        "predicted": report["tuned"]["predicted"], "confirmed": report["tuned"]["confirmed"],
        "baselines": {k: {"weights": v["weights"], "confirmed": v["confirmed"]} for k, v in report["baselines"].items()},
    }
    text = (f"# Tuned by crawlmix.tune from {report['base']} (sweep {report['name']}, {report['sweep_hash']}).\n"
            + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True, width=120))
    parse_mixture(yaml.safe_load(text), where=str(path))  # loads in pipelines/mix.py, or fail here
    write_text(path, text)
    return raw


def write_all(out: Path | str, sweep, sweep_hash, space, targets, runs, heldout, tuned, predicted, text_only,
              base_path: Path | str) -> dict:
    report = build_report(sweep, sweep_hash, space, targets, runs, heldout, tuned, predicted, text_only)
    write_csv(storage.join(out, "candidates.csv"), runs, space.sources, targets)  # out: a folder or a URL
    write_tuned(storage.join(out, "tuned.yaml"), base_path, sweep.stage, report)
    write_json(storage.join(out, "report.json"), json.loads(json.dumps(report)))
    return report
