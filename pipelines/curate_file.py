"""One input file through every text stage: read -> URL filter -> (language prefilter) ->
extract -> language ID -> quality -> curated/removed Parquet. This is the body of a Ray task.

Run alone (no Ray):  python pipelines/curate_file.py FILE --output DIR [--config jobs/X.yaml]
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import xxhash

from pipelines import __version__, langid
from pipelines.config import JobConfig, load_job
from pipelines.extract import probe_text, resiliparse_text, trafilatura_text
from pipelines.quality import Quality
from pipelines.read_warc import iter_pages
from pipelines.url_filter import url_filter_for
from pipelines.write import CURATED_SCHEMA, REMOVED_SCHEMA, RowWriter, StageStats, write_json


STAGED = "_prededup"  # where tasks put curated rows when the job deduplicates afterwards
NOT_ERRORS = {"http_status"}  # counted as read drops, but they are not bad input


def task_name(path: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(path.split("://")[-1]).name)[:80]
    return f"{stem}-{xxhash.xxh64_hexdigest(path)[:8]}"


def stage_names(cfg: JobConfig) -> list[str]:
    names = ["read", "url_filter"]
    if cfg.extract.engine == "cascade" and cfg.langid.enabled and not cfg.langid.label_only:
        names.append("langid_prefilter")
    names += ["extract", "langid", "quality"]
    return names


class _Clock:
    def __init__(self, stats: StageStats):
        self.stats, self.t = stats, time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.stats.timings[stage] += now - self.t
        self.t = now


def _lid_k(cfg) -> int:
    """Labels to score. At most floor(1/t) languages can score above t (scores sum to 1), so the
    top 5 decide exactly as datatrove's all-label call whenever every threshold is >= 0.2."""
    lc = cfg.langid
    lowest = min([lc.threshold, *lc.thresholds.values()]) - cfg.extract.prefilter_margin
    return 5 if lowest >= 0.2 else -1


def _lang_ok(cfg, scores: dict[str, float], margin: float = 0.0) -> bool:
    """datatrove's LanguageFilter decision: some kept language scores above its threshold."""
    lc = cfg.langid
    if lc.languages is None:
        lang = max(scores, key=scores.get) if scores else "unknown"
        return scores.get(lang, 0.0) > lc.thresholds.get(lang, lc.threshold) - margin
    return any(scores.get(lang, 0.0) > lc.thresholds.get(lang, lc.threshold) - margin for lang in lc.languages)


def curate_file(path: str, out_dir: str | Path, cfg: JobConfig) -> dict:
    out = Path(out_dir)
    task = task_name(path)
    meta = {"crawlmix_version": __version__, "config_hash": cfg.digest(), "seed": cfg.seed, "input": path}
    curated = RowWriter(out / (STAGED if cfg.dedup.enabled else "curated") / f"{task}.parquet", CURATED_SCHEMA, meta, cfg.output.compression,
                        cfg.output.rows_per_group)
    removed = RowWriter(out / "removed" / f"{task}.parquet", REMOVED_SCHEMA, meta, cfg.output.compression,
                        cfg.output.rows_per_group)
    stages = stage_names(cfg)
    st = StageStats(stages)
    urlf = url_filter_for(cfg.url_filter.model_dump_json()) if cfg.url_filter.enabled else None
    quality = Quality(cfg.quality)
    prefilter = "langid_prefilter" in stages
    engine = cfg.extract.engine

    def drop(page, stage, reason, detail="", lang="", score=None):
        st.drop(stage, reason)
        removed.add({"id": page.id, "url": page.url, "stage": stage, "reason": reason, "detail": detail,
                     "source": page.source, "offset": page.offset, "language": lang, "language_score": score,
                     "cc_languages": page.cc_languages})

    def read_error(reason, record, message, dropped=True):
        if reason not in NOT_ERRORS:
            st.error("read", reason, record, message)
        if not dropped:
            return
        st.enter("read")
        st.drop("read", reason)
        off = record.rsplit("@", 1)[-1].split(" ")[0]
        url = record[record.index(" (") + 2:-1] if record.endswith(")") and " (" in record else ""
        removed.add({"id": record, "url": url, "stage": "read", "reason": reason, "detail": message, "source": path,
                     "offset": int(off) if off.isdigit() else -1, "language": "", "language_score": None,
                     "cc_languages": ""})

    clock = _Clock(st)
    for page in iter_pages(path, read_error, max_record_bytes=cfg.read.max_record_bytes,
                           mime_types=tuple(cfg.read.mime_types)):
        st.enter("read")
        st.passed("read")
        clock.lap("read")
        name = f"{path}@{page.offset} ({page.url})"

        st.enter("url_filter")
        why = urlf.check(page.url) if urlf else None
        clock.lap("url_filter")
        if why:
            drop(page, "url_filter", why)
            continue
        st.passed("url_filter")

        html = page.html[: cfg.extract.max_html_chars]
        if prefilter:
            st.enter("langid_prefilter")
            if page.text is None:
                try:
                    probe = probe_text(html)
                except Exception as e:  # noqa: BLE001 - a page must never stop the file
                    probe = ""
                    st.error("extract", "extract_error", name, f"resiliparse: {type(e).__name__}: {e}")
            else:
                probe = page.text
            clock.lap("extract")
            if probe.strip():
                scores = langid.predict(probe[: cfg.extract.prefilter_chars], k=_lid_k(cfg))
                if not _lang_ok(cfg, scores, cfg.extract.prefilter_margin):
                    lang = max(scores, key=scores.get) if scores else ""
                    clock.lap("langid")
                    drop(page, "langid_prefilter", "language", lang=lang, score=scores.get(lang))
                    continue
            clock.lap("langid")
            st.passed("langid_prefilter")

        st.enter("extract")
        try:
            if page.text is not None:
                text, extractor = page.text, "wet"
            elif engine == "resiliparse":
                text, extractor = resiliparse_text(html), "resiliparse"
            else:
                text, extractor = trafilatura_text(html), "trafilatura"
        except Exception as e:  # noqa: BLE001
            clock.lap("extract")
            st.error("extract", "extract_error", name, f"{type(e).__name__}: {e}")
            drop(page, "extract", "extract_error", f"{type(e).__name__}: {e}"[:500])
            continue
        clock.lap("extract")
        if not text.strip():
            drop(page, "extract", "empty_text")
            continue
        st.passed("extract")

        st.enter("langid")
        if cfg.langid.enabled:
            scores = langid.predict(text, k=_lid_k(cfg))
            lang = max(scores, key=scores.get) if scores else "unknown"
            score = scores.get(lang, 0.0)
            clock.lap("langid")
            if not cfg.langid.label_only and not _lang_ok(cfg, scores):
                drop(page, "langid", "language" if cfg.langid.languages else "low_score", lang=lang, score=score)
                continue
        else:
            lang, score = "unknown", 0.0
        st.passed("langid")

        st.enter("quality")
        signals, out_text, ruleset, why = quality(text, lang, score)
        clock.lap("quality")
        if why:
            drop(page, "quality", f"{ruleset}:{why}", lang=lang, score=score)
            continue
        st.passed("quality")
        st.languages[lang] += 1
        curated.add({"id": page.id, "url": page.url, "text": out_text, "language": lang, "language_score": score,
                     "date": page.date, "source": path, "offset": page.offset, "charset": page.charset,
                     "cc_languages": page.cc_languages, "extractor": extractor, **signals})
        clock.lap("write")

    result = {"task": task, "input": path, **meta, **st.to_dict(),
              "curated_rows": curated.close(), "removed_rows": removed.close()}
    return result


def run_task(path: str, out_dir: str, cfg: JobConfig) -> dict:
    """curate_file with a completion marker: a finished task is skipped on rerun."""
    marker = Path(out_dir) / "_tasks" / f"{task_name(path)}.json"
    if marker.exists():
        import json

        done = json.loads(marker.read_text())
        if done.get("config_hash") == cfg.digest():
            return done
    result = curate_file(path, out_dir, cfg)
    marker.parent.mkdir(parents=True, exist_ok=True)
    write_json(marker, result)
    return result


def main(argv=None) -> int:
    import argparse
    import json

    ap = argparse.ArgumentParser(description="Curate one WARC/WET/ARC file without Ray (the body of one crawl task).")
    ap.add_argument("file")
    ap.add_argument("--output", required=True)
    ap.add_argument("--config", help="job YAML (default jobs/default.yaml)")
    a = ap.parse_args(argv)
    r = curate_file(a.file, a.output, load_job(a.config))
    print(json.dumps({k: r[k] for k in ("stages", "languages", "curated_rows", "removed_rows")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
