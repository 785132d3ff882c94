"""Tuning runs for the dashboard: a folder holding report.json with "kind": "crawlmix-tuning" (written by
pipelines/tune_mix.py), beside it tuned.yaml and candidates.csv.

The report is read defensively: it is never trusted to have every key, the right types, or finite numbers.
`tuning()` returns a normalised copy (every section present, empty where the report has nothing) with
`missing` naming the parts that were absent and `problems` naming what was unreadable (bad JSON, wrong
types, NaN / infinities, ok runs without a loss), so the page can show what is there and say what is not.
The dashboard only reads these files; it does not import the tuning code.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

from crawlmix.dashboard.common import NotFound, finite, mtime_iso, size

KIND = "crawlmix-tuning"
REPORT, TUNED, CANDIDATES = "report.json", "tuned.yaml", "candidates.csv"
MAX_REPORT_BYTES = 64 << 20
PAGE_SIZE = 25


def read_report(d: Path) -> tuple[dict | None, str]:
    """(the parsed report, "") or (None, why it could not be read)."""
    p = d / REPORT
    if not p.is_file():
        return None, f"{REPORT} is missing"
    if p.stat().st_size > MAX_REPORT_BYTES:
        return None, f"{REPORT} is too large to show ({p.stat().st_size} bytes)"
    try:
        raw = json.loads(p.read_text(errors="replace"))
    except ValueError as e:
        return None, f"{REPORT} is not valid JSON ({e})"
    if not isinstance(raw, dict):
        return None, f"{REPORT} is not a JSON object"
    return raw, ""


def _is_tuning(d: Path, raw: dict | None) -> bool:
    """A report of this kind, or an unreadable report beside the other files a tuning run writes."""
    if raw is not None:
        return raw.get("kind") == KIND
    return (d / TUNED).is_file() or (d / CANDIDATES).is_file()


def tuning_entry(report: Path, root: Path) -> dict | None:
    """The runs-list entry for the folder holding this report.json, or None if it is not a tuning run."""
    d = report.parent
    raw, problem = read_report(d)
    if not _is_tuning(d, raw):
        return None
    raw = finite(raw or {})
    runs = raw.get("runs") if isinstance(raw.get("runs"), list) else []
    created = raw.get("created") if isinstance(raw.get("created"), str) else ""
    return {"kind": "tuning", "path": str(d.relative_to(root)) or ".", "name": str(raw.get("name") or d.name),
            "config_hash": raw.get("sweep_hash"), "created": created or mtime_iso(report), "docs": len(runs),
            "bytes": size(d), "version": raw.get("crawlmix_version"), "seed": None, "problem": problem}


def _num(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


class _Reader:
    """Typed access into the raw report that records what is missing or of the wrong type."""

    def __init__(self):
        self.missing: list[str] = []
        self.problems: list[str] = []

    def get(self, obj, key: str, typ: type, where: str = "", required: bool = True):
        name = f"{where}.{key}" if where else key
        v = obj.get(key) if isinstance(obj, dict) else None
        if v is None:
            if required:
                self.missing.append(name)
            return typ()
        if not isinstance(v, typ) or (typ is float and isinstance(v, bool)):
            if typ is float and isinstance(v, int) and not isinstance(v, bool):
                return float(v)
            self.problems.append(f"{name} is {type(v).__name__}, expected {typ.__name__}")
            return typ()
        return v

    def nums(self, obj, key: str, where: str, required: bool = True) -> dict[str, float | None]:
        """A {name: number} map; values that are not numbers become None."""
        d = self.get(obj, key, dict, where, required)
        out = {}
        for k, v in d.items():
            out[str(k)] = _num(v)
            if v is not None and out[str(k)] is None:
                self.problems.append(f"{where}.{key}.{k} is not a number ({v!r})")
        return out

    def confirmed(self, obj, where: str, targets: list[str]) -> dict[str, dict]:
        d = self.get(obj, "confirmed", dict, where)
        out = {}
        for t, v in d.items():
            out[str(t)] = {"mean": _num(v.get("mean")), "std": _num(v.get("std")), "n": _num(v.get("n"))} \
                if isinstance(v, dict) else {"mean": _num(v), "std": None, "n": None}
        if d:
            self.missing += [f"{where}.confirmed.{t}" for t in targets if out.get(t, {}).get("mean") is None]
        return out


def tuning(d: Path, rel: str) -> dict:
    """The normalised report of the tuning run in folder d (see the module docstring)."""
    raw, problem = read_report(d)
    if not _is_tuning(d, raw):
        raise NotFound(f"{rel} is not a tuning run")
    r = _Reader()
    if problem:
        r.problems.append(problem)
    nan: list[str] = []
    raw = finite(raw or {}, "", nan)
    r.problems += [f"{p} is NaN or infinite (left out)" for p in nan]
    if not raw:  # nothing readable: name the report once, not each of its keys
        r.missing.append(REPORT)
    get = r.get if raw else (lambda obj, key, typ, where="", required=True: typ())

    runs = []
    for i, x in enumerate(get(raw, "runs", list)):
        if not isinstance(x, dict):
            r.problems.append(f"runs[{i}] is not an object")
            continue
        rid = str(x.get("id") or f"#{i}")
        losses = r.nums(x, "losses", f"run {rid}", required=False)
        predicted = r.nums(x, "predicted", f"run {rid}", required=False) or None
        status = str(x.get("status") or ("ok" if any(v is not None for v in losses.values()) else "failed"))
        if not x.get("status"):
            r.problems.append(f"run {rid} has no status (taken as {status})")
        runs.append({"id": rid, "kind": str(x.get("kind") or "?"), "seed": x.get("seed"),
                     "weights": r.nums(x, "weights", f"run {rid}", required=False), "losses": losses,
                     "predicted": predicted, "status": status, "error": str(x.get("error") or "")})

    tuned_raw = get(raw, "tuned", dict)
    base_raw = get(raw, "baselines", dict)
    targets = [str(t) for t in get(raw, "targets", list)]
    if not targets:  # derive them from what was measured
        targets = sorted({t for x in runs for t in x["losses"]} | set(_dictget(tuned_raw, "confirmed")))
    sources = [str(s) for s in get(raw, "sources", list)]
    if not sources:
        sources = sorted({s for x in runs for s in x["weights"]} | set(_dictget(tuned_raw, "weights")))
    for x in runs:
        if x["status"] == "ok":
            r.problems += [f"run {x['id']} is ok but has no loss for {t}" for t in targets if x["losses"].get(t) is None]

    tuned = {"weights": r.nums(tuned_raw, "weights", "tuned") if raw else {},
             "predicted": r.nums(tuned_raw, "predicted", "tuned") if raw else {},
             "confirmed": r.confirmed(tuned_raw, "tuned", targets) if raw else {}}
    baselines = {}
    for name in ("base", "uniform"):
        b = get(base_raw, name, dict, "baselines") if base_raw else {}
        weights = r.nums(b, "weights", f"baselines.{name}", required=False)
        if not weights:  # the sweep's own run of it
            weights = next((x["weights"] for x in runs if x["kind"] == name and x["weights"]), {})
        baselines[name] = {"weights": weights, "confirmed": r.confirmed(b, f"baselines.{name}", targets) if b else {}}

    reg_raw = get(raw, "regression", dict)
    heldout = {}
    for t, v in _dictget(reg_raw, "heldout").items():
        heldout[str(t)] = {"spearman": _num(v.get("spearman")), "r2": _num(v.get("r2"))} if isinstance(v, dict) else \
            {"spearman": None, "r2": None}
    if reg_raw and "heldout" not in reg_raw:
        r.missing.append("regression.heldout")
    elif reg_raw:
        r.missing += [f"regression.heldout.{t}" for t in targets if t not in heldout]

    proxy_raw = get(raw, "proxy", dict)
    proxy = {"trainer": proxy_raw.get("trainer"), "text_only": bool(proxy_raw.get("text_only")),
             "budget_tokens": _num(proxy_raw.get("budget_tokens"))}
    if proxy_raw and not proxy["trainer"]:
        r.missing.append("proxy.trainer")

    tuned_yaml = (d / TUNED).read_text(errors="replace")[:4000] if (d / TUNED).is_file() else None
    r.missing += [f for f, there in ((TUNED, tuned_yaml is not None), (CANDIDATES, (d / CANDIDATES).is_file()))
                  if not there]
    created = get(raw, "created", str) or mtime_iso(d)
    # where tune_mix.py keeps each run's proxy mix, relative to this folder (plain ids only)
    run_mixes = {x["id"]: f"runs/{x['id']}/mix" for x in runs
                 if re.fullmatch(r"\w[\w.-]*", x["id"]) and (d / "runs" / x["id"] / "mix").is_dir()}
    return {"path": rel, "name": get(raw, "name", str) or d.name, "sweep_hash": get(raw, "sweep_hash", str),
            "base": get(raw, "base", str), "stage": get(raw, "stage", str), "created": created,
            "sources": sources, "targets": targets, "proxy": proxy, "runs": runs,
            "regression": {"model": reg_raw.get("model") if reg_raw else None, "heldout": heldout},
            "tuned": tuned, "baselines": baselines, "tuned_yaml": tuned_yaml, "run_mixes": run_mixes,
            "missing": list(dict.fromkeys(r.missing)), "problems": list(dict.fromkeys(r.problems))}


def _dictget(obj, key: str) -> dict:
    v = obj.get(key) if isinstance(obj, dict) else None
    return v if isinstance(v, dict) else {}


def candidates(d: Path, rel: str, page: int) -> dict:
    """One page of the candidate table: candidates.csv as written, or the report's runs when it is missing."""
    page = max(0, page)
    if (d / CANDIDATES).is_file():
        with (d / CANDIDATES).open(newline="", errors="replace") as f:  # a Path, or a RemotePath (remote.py)
            reader = csv.reader(f)
            columns = next(reader, [])
            rows = [(row + [""] * len(columns))[:len(columns)] for row in reader if row]
        source = CANDIDATES
    else:
        t = tuning(d, rel)
        columns = (["id", "kind", "seed", "status"] + [f"w:{s}" for s in t["sources"]]
                   + [f"loss:{x}" for x in t["targets"]] + [f"pred:{x}" for x in t["targets"]] + ["error"])
        rows = [[x["id"], x["kind"], x["seed"], x["status"]] + [x["weights"].get(s) for s in t["sources"]]
                + [x["losses"].get(y) for y in t["targets"]] + [(x["predicted"] or {}).get(y) for y in t["targets"]]
                + [x["error"]] for x in t["runs"]]
        source = f"{REPORT} runs ({CANDIDATES} is missing)"
    return {"columns": columns, "rows": rows[page * PAGE_SIZE:(page + 1) * PAGE_SIZE], "total": len(rows),
            "page": page, "page_size": PAGE_SIZE, "source": source}
