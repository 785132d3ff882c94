"""What the crawl's driver keeps of its finished tasks: a few hundred bytes a task, not the result itself.

A task's result (its marker's record: the funnel of every stage, languages, timings, bad-input records,
PII counts) is ~8 KB in the driver's memory; 100,000 tasks would hold ~0.8 GB. :class:`Finished` keeps,
per task, only stats.json's ``files`` entry (task, input, row and error counts) and, overall, the first
ERRORS_KEPT bad-input records in task order; the funnel, languages, timings and PII counts are summed as
results arrive. :meth:`Finished.stats` then gives what crawlmix.runtime.funnel.merge_stats gives for the
whole results, in the same order: every stage, drop reason and language is placed where its first
appearance over the tasks in name order puts it (the order merge_stats builds, which breaks ties between
equal counts), whatever order the tasks finished in.
"""

from __future__ import annotations

from collections import Counter

from crawlmix.runtime.funnel import merge_stats

ERRORS_KEPT = 1000  # stats.json lists this many bad-input records (merge_stats keeps the first 1000)


class Finished:
    def __init__(self):
        self.files: list[tuple] = []  # (task, input, curated_rows, removed_rows, error_count)
        self.errors: dict[str, list] = {}  # task -> its first bad-input records (tasks that had some)
        self._kept_errors = 0
        self.stages: dict[str, dict] = {}  # stage -> {"in", "out", "dropped": Counter}
        self.languages: Counter = Counter()
        self.timings: Counter = Counter()
        self.first: dict[tuple, tuple] = {}  # (stage | None, name) -> (task, position) of its first appearance
        self.pii: dict | None = None  # summed ``pii`` of the results (crawlmix.pii.job.crawl_task)
        self._inputs: dict[str, str] = {}  # one string object per input path

    def __len__(self) -> int:
        return len(self.files)

    def _seen(self, key: tuple, task: str, i: int) -> None:
        if key not in self.first or (task, i) < self.first[key]:
            self.first[key] = (task, i)

    def add(self, r: dict) -> None:
        task = r["task"]
        inp = self._inputs.setdefault(r["input"], r["input"])
        self.files.append((task, inp, r["curated_rows"], r["removed_rows"], r["error_count"]))
        if r["errors"]:
            self.errors[task] = r["errors"][:ERRORS_KEPT]
            self._kept_errors += len(self.errors[task])
            if self._kept_errors > 2 * ERRORS_KEPT:
                self._trim_errors()
        for i, (s, v) in enumerate(r["stages"].items()):
            self._seen(("stage", s), task, i)
            agg = self.stages.setdefault(s, {"in": 0, "out": 0, "dropped": Counter()})
            agg["in"] += v["in"]
            agg["out"] += v["out"]
            agg["dropped"].update(v["dropped"])
            for j, reason in enumerate(v["dropped"]):
                self._seen((s, reason), task, j)
        for i, lang in enumerate(r["languages"]):
            self._seen(("lang", lang), task, i)
        self.languages.update(r["languages"])
        self.timings.update(r["timings_s"])
        if r.get("pii"):
            self._add_pii(r["pii"])

    def _trim_errors(self) -> None:
        """Keep the records of the first tasks (by name) that hold ERRORS_KEPT of them: no later task's
        record can be among stats.json's first ERRORS_KEPT."""
        kept, n = {}, 0
        for task in sorted(self.errors):
            if n >= ERRORS_KEPT:
                break
            kept[task] = self.errors[task]
            n += len(kept[task])
        self.errors, self._kept_errors = kept, n

    def _add_pii(self, p: dict) -> None:
        from crawlmix.pii.spans import PiiStats

        if self.pii is None:
            self.pii = {"text": PiiStats(), "fields": Counter(), "field_errors": Counter()}
        self.pii["text"].add(PiiStats.from_dict(p["text"]))
        self.pii["fields"].update(p["fields"])
        self.pii["field_errors"].update(p.get("field_errors", {}))

    def tasks(self) -> list[str]:
        """The finished tasks' names, sorted."""
        return sorted(f[0] for f in self.files)

    def pii_results(self) -> list[dict]:
        """The summed PII counts as one result (what crawlmix.pii.job.crawl_pii_stats reads)."""
        if self.pii is None:
            return []
        return [{"pii": {"text": self.pii["text"].to_dict(), "fields": dict(self.pii["fields"]),
                         "field_errors": dict(self.pii["field_errors"])}}]

    def _ordered(self, kind, names) -> list:
        return sorted(names, key=lambda n: self.first[(kind, n)])

    def stats(self, header: dict) -> dict:
        """merge_stats(every result, header), from the sums: one part holding them (named "", so it comes
        first, its keys in first-appearance order) and, per task, a part with only its counts."""
        stages = {}
        for s in self._ordered("stage", self.stages):
            v = self.stages[s]
            stages[s] = {"in": v["in"], "out": v["out"],
                         "dropped": Counter({r: v["dropped"][r] for r in self._ordered(s, v["dropped"])})}
        empty: dict = {}
        total = {"task": "", "input": "", "curated_rows": 0, "removed_rows": 0, "error_count": 0, "errors": [],
                 "stages": stages, "languages": {k: self.languages[k] for k in self._ordered("lang", self.languages)},
                 "timings_s": dict(self.timings)}
        parts = [total] + [{"task": t, "input": i, "curated_rows": c, "removed_rows": r, "error_count": e,
                            "errors": self.errors.get(t, []), "stages": empty, "languages": empty, "timings_s": empty}
                           for t, i, c, r, e in self.files]
        stats = merge_stats(parts, header)
        stats["files"] = stats["files"][1:]  # the sums' own entry
        return stats
