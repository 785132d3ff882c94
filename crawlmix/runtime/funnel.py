"""The funnel: per-stage in / out / dropped-by-reason counts of one task, and their merge for a run.

Built here for every stage (text, images); stats.json and the dashboard read it.
"""

from __future__ import annotations

from collections import Counter, defaultdict


class StageStats:
    """Per-task funnel: stage -> in/out/dropped-by-reason, languages, errors, timings."""

    MAX_ERRORS = 200

    def __init__(self, stages: list[str]):
        self.stages = {s: {"in": 0, "out": 0, "dropped": Counter()} for s in stages}
        self.languages: Counter = Counter()
        self.errors: list[dict] = []
        self.error_count = 0
        self.timings: defaultdict = defaultdict(float)

    def enter(self, stage: str) -> None:
        self.stages[stage]["in"] += 1

    def passed(self, stage: str) -> None:
        self.stages[stage]["out"] += 1

    def drop(self, stage: str, reason: str) -> None:
        self.stages[stage]["dropped"][reason] += 1

    def error(self, stage: str, reason: str, record: str, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < self.MAX_ERRORS:
            self.errors.append({"stage": stage, "reason": reason, "record": record, "message": message})

    def to_dict(self) -> dict:
        return {
            "stages": {s: {"in": v["in"], "out": v["out"], "dropped": dict(sorted(v["dropped"].items()))}
                       for s, v in self.stages.items()},
            "languages": dict(sorted(self.languages.items())),
            "errors": self.errors,
            "error_count": self.error_count,
            "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
        }


def merge_stats(parts: list[dict], header: dict) -> dict:
    """Sum per-task stats into the job's stats.json (deterministic order)."""
    stages: dict = {}
    languages: Counter = Counter()
    timings: Counter = Counter()
    errors: list = []
    error_count = 0
    files = []
    for p in sorted(parts, key=lambda x: x["task"]):
        files.append({"task": p["task"], "input": p["input"], "curated": p["curated_rows"], "removed": p["removed_rows"],
                      "errors": p["error_count"]})
        for s, v in p["stages"].items():
            agg = stages.setdefault(s, {"in": 0, "out": 0, "dropped": Counter()})
            agg["in"] += v["in"]
            agg["out"] += v["out"]
            agg["dropped"].update(v["dropped"])
        languages.update(p["languages"])
        timings.update(p["timings_s"])
        errors.extend(p["errors"])
        error_count += p["error_count"]
    first = next(iter(stages.values()), {"in": 0})
    last = list(stages.values())[-1] if stages else {"out": 0}
    return {
        **header,
        "docs_in": first["in"],
        "docs_out": last["out"],
        "stages": {s: {"in": v["in"], "out": v["out"], "dropped": dict(v["dropped"].most_common())}
                   for s, v in stages.items()},
        "languages": dict(languages.most_common()),
        "errors": errors[:1000],
        "error_count": error_count,
        "files": files,
        "timings_s": {k: round(v, 3) for k, v in sorted(timings.items())},
    }


def bad_input_lines(stats: dict, shown: int = 3) -> list[str]:
    """A run summary's bad-input lines: how many, where they are listed, the first few."""
    if not stats.get("error_count"):
        return []
    return [f"bad input: {stats['error_count']} (listed under 'errors' in stats.json), e.g."] + [
        f"  {e['reason']}: {e['record']}: {e['message'][:120]}" for e in stats["errors"][:shown]]
