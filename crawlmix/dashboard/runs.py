"""What the dashboard reads under --root: discovery of crawl runs, mixes and tuning runs, and the aggregates of a
crawl run (summary charts, paged documents, threshold previews). Mixes live in mixes.py, tuning runs in tuning.py;
`Dashboard` is the one object the HTTP server talks to, and it refuses every path outside --root."""

from __future__ import annotations

import json
from collections import Counter
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from crawlmix.dashboard import interleaved, mixes, tuning
from crawlmix.dashboard.common import (Forbidden, NotFound, escaping_link, files, hidden, histogram, inside,
                                       mtime_iso, size)
from crawlmix.dashboard.remote import RemotePath, RemoteTree, parquet_file, read_table
from crawlmix.filters.signals import SIGNAL_NAMES
from crawlmix.runtime import runstate, storage

PAGE_SIZE = 25
# rules a threshold preview can move: signal -> (direction, datatrove default threshold)
PREVIEW_RULES = {
    "words": ("min", 50), "non_symbol_words": ("min", 50), "avg_word_length": ("min", 3), "stop_words": ("min", 2),
    "alpha_words_ratio": ("min", 0.8), "c4_sentences": ("min", 5), "line_punct_ratio": ("min", 0.12),
    "language_score": ("min", 0.65), "dup_line_frac": ("max", 0.3), "dup_para_frac": ("max", 0.3),
    "top_2_gram_char_frac": ("max", 0.2), "dup_5_gram_char_frac": ("max", 0.15), "short_line_ratio": ("max", 0.67),
    "char_dup_ratio": ("max", 0.01), "list_ratio": ("max", 0.3), "bullet_lines_ratio": ("max", 0.9),
}


class Dashboard:
    def __init__(self, root: str | Path):
        """``root``: a local folder, or a URL (``s3://bucket/prefix``: read through storage, remote.py)."""
        if storage.is_remote(root):
            self.tree = RemoteTree(str(root))
            self.root = self.tree.root
        else:
            self.tree = None
            self.root = Path(storage.local(root)).resolve()

    # ------------------------------------------------------------- paths and discovery
    def resolve(self, rel: str) -> Path:
        """A folder under --root; anything that resolves outside it is refused, and so is a folder holding
        a symlink that leads outside it (its readers would follow it)."""
        if rel is None:
            raise NotFound("missing path")
        p = (self.root / rel).resolve()
        if p != self.root and self.root not in p.parents:
            raise Forbidden(f"{rel!r} is outside the dashboard root")
        if not p.is_dir():
            raise NotFound(rel)
        link = escaping_link(p, self.root) if self.tree is None else None  # an object store has no links
        if link is not None:
            raise Forbidden(f"{rel!r} holds a symlink that leads outside the dashboard root: "
                            f"{link.relative_to(self.root)}")
        return p

    def runs(self) -> list[dict]:
        """Every crawl run, mix and tuning run under --root, newest first."""
        if self.tree is not None:
            self.tree.refresh(force=True)
        out = []
        for stats in self.root.rglob("stats.json"):
            d = stats.parent
            if hidden(d, self.root) or not inside(stats, self.root):
                continue
            try:
                s = json.loads(stats.read_text())
            except ValueError:
                continue
            if not isinstance(s, dict) or ("stages" not in s and s.get("kind") != "crawl"):
                continue
            out.append({"kind": "crawl", "status": s.get("status", "unknown"),  # only 'finished' is final
                        "path": str(d.relative_to(self.root)) or ".", "name": s.get("job", d.name),
                        "config_hash": s.get("config_hash"), "created": s.get("created", ""),
                        "docs": s.get("docs_out"), "docs_in": s.get("docs_in"), "bytes": size(d / "curated"),
                        "version": s.get("crawlmix_version"), "seed": s.get("seed")})
        tunings = []
        for report in self.root.rglob(tuning.REPORT):
            if not hidden(report.parent, self.root) and inside(report, self.root):
                entry = tuning.tuning_entry(report, self.root)
                if entry is not None:
                    tunings.append(entry)
        found: dict = {}
        for lock in self.root.rglob("mix.lock.json"):
            if inside(lock, self.root):
                mixes.mix_entry(lock, self.root, found)
        # a tuning run's proxy mixes (<tuning>/runs/<id>/mix) are shown from its page, not listed on their own
        inner = {t["path"]: 0 for t in tunings}
        for m in list(found.values()) + out:
            owner = next((t for t in inner if t == "." or m["path"].startswith(t + "/")), None)
            if owner is not None:
                inner[owner] += m["kind"] == "mix"
                m["inside_tuning"] = True
        out = [m for m in out + list(found.values()) if not m.get("inside_tuning")]
        for t in tunings:
            t["proxy_mixes"] = inner[t["path"]]
        out += tunings
        for r in out:
            if not r["created"]:
                r["created"] = mtime_iso(self.root / r["path"])
        return sorted(out, key=lambda r: str(r["created"]), reverse=True)

    # ------------------------------------------------------------- crawl runs
    def crawl_dir(self, rel: str) -> Path:
        """A crawl run's folder, when its files may be shown: never a run's internal folder (`_tasks`,
        `_prededup`, ...), never a run that has not finished (half-written; crawlmix.runtime.runstate).
        An incomplete run (tasks failed) is shown: what it wrote is final, only files are missing."""
        d = self.resolve(rel)
        if d != self.root and hidden(d, self.root):
            raise Forbidden(f"{rel!r} is a run's internal folder")
        why = runstate.why_not_finished(d, allow_incomplete=True)
        if why:
            raise Forbidden(why)
        return d

    def run(self, rel: str) -> dict:
        d = self.crawl_dir(rel)
        if not (d / "stats.json").exists():
            raise NotFound(f"{rel} is not a crawl run")
        return _run_summary(d, (d / "stats.json").stat().st_mtime_ns)

    def docs(self, rel: str, kind: str, reason: str | None, page: int) -> dict:
        d = self.crawl_dir(rel)
        if kind not in ("curated", "removed"):
            raise NotFound(kind)
        cols = (["id", "url", "language", "language_score", "text"] + [c for c in SIGNAL_NAMES]
                if kind == "curated" else ["id", "url", "stage", "reason", "detail", "language", "duplicate_of"])
        rows, total, start = [], 0, page * PAGE_SIZE
        for f in files(d / kind):
            pf = parquet_file(f)
            names = set(pf.schema_arrow.names)
            use = [c for c in cols if c in names]
            if reason:
                sel = read_table(f, ["reason"]).column("reason")
                idx = pc.indices_nonzero(pc.equal(sel, reason)).to_numpy()
            else:
                idx = None
            n = pf.metadata.num_rows if idx is None else len(idx)
            lo, hi = max(0, start - total), min(n, start + PAGE_SIZE - total)
            if lo < hi:
                if idx is None:
                    t = _read_rows(pf, lo, hi, use)
                else:
                    t = read_table(f, use).take(pa.array(idx[lo:hi]))  # one file's columns
                for r in t.to_pylist():
                    if "text" in r and r["text"] is not None:
                        r["text"] = r["text"][:600]
                    rows.append(r)
            total += n
        return {"rows": rows, "total": total, "page": page, "page_size": PAGE_SIZE}

    def preview(self, rel: str, signal: str, value: float) -> dict:
        if signal not in PREVIEW_RULES:
            raise NotFound(signal)
        d = self.crawl_dir(rel)
        direction, default = PREVIEW_RULES[signal]
        chunks = [c.cast(pa.float64()) for f in files(d / "curated") if signal in parquet_file(f).schema_arrow.names
                  for c in read_table(f, [signal]).column(signal).chunks]
        col = pa.chunked_array(chunks, type=pa.float64())
        cmp = pc.greater_equal if direction == "min" else pc.less_equal
        keep = pc.sum(pc.cast(cmp(col, value), pa.int64())).as_py() or 0
        return {"signal": signal, "direction": direction, "value": value, "default": default,
                "kept": keep, "total": len(col)}

    def interleaved(self, rel: str, page: int) -> dict:
        """The run's interleaved documents (OUTPUT/interleaved/): funnels and one page of documents."""
        return interleaved.view(self.crawl_dir(rel), page)

    # ------------------------------------------------------------- mixes and tuning runs
    def mix(self, rel: str) -> dict:
        return mixes.mix(self.root, self.resolve(rel), rel)

    def sample(self, rel: str, shard: str, index: int) -> dict:
        d = self.resolve(rel)
        if self.tree is not None and self.root not in (d / shard).resolve().parents:
            raise Forbidden(shard)  # asked of nothing outside the root
        try:  # a tar of an unfinished run, or in a run's internal folder, is not served
            runstate.check_inputs([(d / shard).resolve()], "sample", allow_incomplete=True)
        except runstate.RunNotFinished as e:
            raise Forbidden(str(e)) from None
        return mixes.sample(self.root, d, shard, index)

    def tuning(self, rel: str) -> dict:
        return tuning.tuning(self.resolve(rel), rel)

    def candidates(self, rel: str, page: int) -> dict:
        return tuning.candidates(self.resolve(rel), rel, page)


def _read_rows(pf: pq.ParquetFile, lo: int, hi: int, columns: list[str]) -> pa.Table:
    """Rows [lo, hi) of a file, reading only the row groups that hold them."""
    parts, start = [], 0
    for g in range(pf.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        if start + n > lo and start < hi:
            t = pf.read_row_group(g, columns=columns)
            parts.append(t.slice(max(0, lo - start), min(n, hi - start) - max(0, lo - start)))
        start += n
    return pa.concat_tables(parts) if parts else pa.table({c: [] for c in columns})


@lru_cache(maxsize=16)
def _run_summary(d: Path | RemotePath, _mtime: int) -> dict:
    stats = json.loads((d / "stats.json").read_text())
    chars, domains, langs = [], Counter(), Counter()
    for f in files(d / "curated"):
        t = read_table(f, ["chars", "url", "language"])
        chars += t.column("chars").to_pylist()
        domains.update(urlsplit(u).hostname or "" for u in t.column("url").to_pylist())
        langs.update(t.column("language").to_pylist())
    blocked = Counter()
    reasons = Counter()
    for f in files(d / "removed"):
        t = read_table(f, ["stage", "reason", "url"])
        for stage, reason, url in zip(*(t.column(c).to_pylist() for c in ("stage", "reason", "url"))):
            reasons[f"{stage}:{reason}"] += 1
            if stage == "url_filter":
                blocked[urlsplit(url).hostname or url] += 1
    config = json.loads((d / "config.json").read_text()) if (d / "config.json").exists() else {}
    return {"stats": stats, "config": config, "length_histogram": histogram(chars),
            "languages": dict(langs.most_common()), "top_domains": domains.most_common(15),
            "blocklist_hits": blocked.most_common(15), "removed_reasons": dict(reasons.most_common()),
            "preview_rules": {k: {"direction": v[0], "default": v[1]} for k, v in PREVIEW_RULES.items()}}


__all__ = ["Dashboard", "Forbidden", "NotFound", "PAGE_SIZE", "PREVIEW_RULES"]
