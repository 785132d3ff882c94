"""crawlmix main job: Common Crawl WARC/WET/ARC files -> curated text, on Ray.

    python pipelines/crawl.py                          # the bundled sample, on a local Ray
    python pipelines/crawl.py --input 'data/*.warc.gz' --output out/ --config jobs/default.yaml
    ray job submit --working-dir . -- python pipelines/crawl.py --input ... --output ...
    python pipelines/crawl.py --cc-dump CC-MAIN-2024-22 --cc-files 0:10 --output out/

One Ray task per input file (crawlmix.text.curate), at most --workers at a time, then dedup, PII and
image-text pairs over what the tasks kept; every step runs on the same executor. Each finished task
leaves a marker in OUTPUT/_tasks/, so a rerun only does what is missing and yields the same output.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

from crawlmix import __version__
from crawlmix.crawl.config import JobConfig, load_job
from crawlmix.io.paths import cc_dump_paths, resolve_inputs
from crawlmix.runtime.config import ConfigError
from crawlmix.runtime.atomic import write_json, write_text
from crawlmix.runtime.completion import Completion
from crawlmix.runtime.executor import Executor
from crawlmix.runtime.funnel import merge_stats
from crawlmix.runtime.resources import project_dir, resolve_config


def sample_path() -> Path:
    return project_dir() / "sample" / "sample.warc.gz"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        prog="crawl.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="With no --input, the bundled sample (sample/sample.warc.gz, generated on first use) is processed.")
    ap.add_argument("--input", action="append", metavar="PATH_OR_GLOB",
                    help="WARC/WET/ARC file, glob or fsspec URL (s3://, https://); repeatable")
    ap.add_argument("--output", metavar="DIR", help="output folder (default: output/<job name>)")
    ap.add_argument("--config", metavar="YAML", help="job config (default: jobs/default.yaml)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="parallel tasks (default: all cores, %(default)s here)")
    ap.add_argument("--cc-dump", metavar="CC-MAIN-YYYY-WW", help="a Common Crawl dump to read (network)")
    ap.add_argument("--cc-files", default="0:1", metavar="START:STOP", help="file range of --cc-dump (default 0:1)")
    ap.add_argument("--overwrite", action="store_true", help="redo finished tasks (ignore completion markers)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    return ap.parse_args(argv)


def run(inputs: list[str], out_dir: Path, cfg: JobConfig, workers: int, overwrite=False, progress=True) -> dict:
    from crawlmix.dedup.job import run_dedup
    from crawlmix.io.paths import task_name
    from crawlmix.text.curate import STAGED, run_task

    out_dir.mkdir(parents=True, exist_ok=True)
    prev = out_dir / "stats.json"
    if prev.exists() and not overwrite:
        old = json.loads(prev.read_text())
        if old.get("config_hash") != cfg.digest():
            raise ConfigError(f"{out_dir} holds a run with another config ({old.get('config_hash')}); "
                              f"use a new --output or --overwrite")
    if overwrite:
        Completion(out_dir, cfg.digest()).clear()
    if cfg.dedup.enabled:  # dedup rewrites curated/ from the staged files: leave no stale output behind
        for old in list((out_dir / "curated").glob("*.parquet")) + list((out_dir / "removed").glob("*.dedup.parquet")):
            old.unlink()
    write_text(out_dir / "config.json", json.dumps(cfg.model_dump(mode="json"), indent=2) + "\n")

    ex = Executor("ray", workers, progress)  # the crawl always runs on Ray (local, or RAY_ADDRESS)
    failed = []

    def task_failed(o):
        failed.append({"stage": "task", "reason": "task_failed", "record": o.args[0], "message": o.message()})

    t0 = time.perf_counter()
    dedup = cfg.dedup.enabled
    results = [r for r in ex.map(run_task, [(p, str(out_dir), cfg, dedup) for p in inputs], desc="crawl",
                                 on_error=task_failed) if r is not None]
    dedup_stats = None
    if dedup:
        done = sorted(results, key=lambda r: r["task"])
        staged = [str(out_dir / STAGED / f"{r['task']}.parquet") for r in done]
        dedup_stats = run_dedup(staged, out_dir, cfg.dedup, ex, names=[r["task"] for r in done])
    pii_stats = None
    if cfg.pii.enabled:  # after dedup: scrub only what is kept
        from crawlmix.pii.job import merge_pii_stats, scrub_crawl_task

        names = sorted(task_name(p) for p in inputs)
        args = [(str(out_dir / "curated" / f"{n}.parquet"),
                 [str(r) for r in sorted((out_dir / "removed").glob(f"{n}*.parquet"))], cfg.pii.model_dump_json())
                for n in names if (out_dir / "curated" / f"{n}.parquet").exists()]
        parts = [r for r in ex.map(scrub_crawl_task, args, desc="pii") if r]
        pii_stats = merge_pii_stats(parts) if parts else None
    images_stats = None
    if cfg.images.enabled:  # image-text pairs from the pages this run kept
        from crawlmix.images.config import load_images_job
        from crawlmix.images.job import run as run_images

        job = load_images_job(resolve_config(cfg.images.config),
                              overrides={"pages": {"kept_from": str(out_dir)}, "fetch": {"enabled": cfg.images.fetch}})
        images_stats = run_images(list(inputs), out_dir / "pairs", job, ex, overwrite=overwrite)
    header = {"job": cfg.name, "crawlmix_version": __version__, "config_hash": cfg.digest(), "seed": cfg.seed,
              "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "output": str(out_dir), "inputs": len(inputs), "workers": workers,
              "wall_s": round(time.perf_counter() - t0, 2)}
    stats = merge_stats(results, header)
    if dedup_stats is not None:
        stats["stages"]["dedup"] = {k: dedup_stats[k] for k in ("in", "out", "dropped")}
        stats["dedup"] = {k: v for k, v in dedup_stats.items() if k not in ("in", "out", "dropped")}
        stats["docs_out"] = dedup_stats["out"]
    if pii_stats is not None:
        stats["pii"] = pii_stats
    if images_stats is not None:
        stats["images"] = {k: images_stats.get(k) for k in ("candidates", "successes", "funnel", "sources", "output")}
    stats["errors"] = failed + stats["errors"]
    stats["error_count"] += len(failed)
    stats["failed_tasks"] = [f["record"] for f in failed]
    stats["tasks"] = sorted(task_name(p) for p in inputs)
    write_json(out_dir / "stats.json", stats)
    return stats


def summary(stats: dict) -> str:
    lines = [f"crawlmix {stats['crawlmix_version']}  job={stats['job']}  config={stats['config_hash']}  "
             f"seed={stats['seed']}  files={stats['inputs']}  wall={stats['wall_s']}s",
             f"output: {stats['output']}/curated/*.parquet  removed/*.parquet  stats.json", "",
             f"{'stage':<18}{'in':>8}{'out':>8}  dropped (top reasons)"]
    for name, s in stats["stages"].items():
        top = ", ".join(f"{r}={n}" for r, n in list(s["dropped"].items())[:4])
        lines.append(f"{name:<18}{s['in']:>8}{s['out']:>8}  {top}")
    langs = ", ".join(f"{k}={v}" for k, v in list(stats["languages"].items())[:10])
    lines += ["", f"kept languages: {langs or '-'}", f"docs in {stats['docs_in']}  ->  kept {stats['docs_out']}"]
    if "pii" in stats:
        reps = stats["pii"].get("replacements", {})
        lines.append("pii replacements: " + (", ".join(f"{k}={v}" for k, v in reps.items()) or "none"))
    if "images" in stats:
        lines.append(f"image-text pairs: {stats['images']['successes']} of {stats['images']['candidates']} "
                     f"candidate images -> {stats['output']}/pairs/")
    if stats["error_count"]:
        lines.append(f"bad input: {stats['error_count']} (listed under 'errors' in stats.json), e.g.")
        lines += [f"  {e['reason']}: {e['record']}: {e['message'][:120]}" for e in stats["errors"][:3]]
    return "\n".join(lines)


def main(argv=None) -> int:
    a = parse_args(argv)
    try:
        cfg = load_job(a.config)  # a bad config fails here, before any work
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.cc_dump:
        inputs = cc_dump_paths(a.cc_dump, a.cc_files)
    elif a.input:
        try:
            inputs = resolve_inputs(a.input)
        except FileNotFoundError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    else:
        sample = sample_path()
        if not sample.exists():
            from crawlmix.samples.crawl_sample import write_sample

            write_sample(sample.parent)
        inputs = sorted(str(p) for p in sample.parent.glob("*.warc.gz")) + \
            sorted(str(p) for p in sample.parent.glob("*.arc.gz"))
    out = Path(a.output) if a.output else project_dir() / "output" / cfg.name
    try:
        stats = run(inputs, out, cfg, max(1, a.workers), overwrite=a.overwrite, progress=not a.no_progress)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary(stats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
