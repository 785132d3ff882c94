"""Writers: curated and removed Parquet, per-task stats, and the merged stats.json."""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from filters.signals import SIGNAL_NAMES

_INT_SIGNALS = {"chars", "paragraphs", "words", "non_symbol_words", "lines", "stop_words", "c4_sentences",
                "c4_lorem_ipsum_line", "c4_curly_bracket_line", "c4_kept_lines", "fw_lines"}

CURATED_SCHEMA = pa.schema(
    [("id", pa.string()), ("url", pa.string()), ("text", pa.string()), ("language", pa.string()),
     ("language_score", pa.float64()), ("date", pa.string()), ("source", pa.string()), ("offset", pa.int64()),
     ("charset", pa.string()), ("cc_languages", pa.string()), ("extractor", pa.string())]
    + [(n, pa.int64() if n in _INT_SIGNALS else pa.float64()) for n in SIGNAL_NAMES]
)
REMOVED_SCHEMA = pa.schema(
    [("id", pa.string()), ("url", pa.string()), ("stage", pa.string()), ("reason", pa.string()),
     ("detail", pa.string()), ("source", pa.string()), ("offset", pa.int64()), ("language", pa.string()),
     ("language_score", pa.float64()), ("cc_languages", pa.string()), ("duplicate_of", pa.string())]
)


class RowWriter:
    """Streams rows to ``path`` in row groups; the file appears atomically on close."""

    def __init__(self, path: Path, schema: pa.Schema, metadata: dict, compression: str, rows_per_group: int):
        self.path, self.tmp = path, path.with_name(path.name + ".tmp")
        self.schema = schema.with_metadata({k: str(v) for k, v in metadata.items()})
        self.compression = None if compression == "none" else compression
        self.rows_per_group = rows_per_group
        self.buf: list[dict] = []
        self.writer: pq.ParquetWriter | None = None
        self.rows = 0

    def add(self, row: dict) -> None:
        self.buf.append(row)
        if len(self.buf) >= self.rows_per_group:
            self._flush()

    def _flush(self) -> None:
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(self.tmp, self.schema, compression=self.compression)
        if self.buf:
            self.writer.write_table(pa.Table.from_pylist(self.buf, schema=self.schema))
            self.rows += len(self.buf)
            self.buf = []

    def close(self) -> int:
        self._flush()
        self.writer.close()
        os.replace(self.tmp, self.path)
        return self.rows


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


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
