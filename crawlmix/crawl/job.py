"""crawlmix main job: Common Crawl WARC/WET/ARC files -> curated text, on Ray.

    python pipelines/crawl.py                          # the bundled sample, on a local Ray
    python pipelines/crawl.py --input 'data/*.warc.gz' --output out/ --config jobs/default.yaml
    python pipelines/crawl.py --input 's3://bucket/in/*.warc.gz' --output s3://bucket/out/run1
    ray job submit --working-dir . -- python pipelines/crawl.py --input ... --output ...
    python pipelines/crawl.py --cc-dump CC-MAIN-2024-22 --cc-files 0:10 --output out/

One Ray task per input file, or per byte range of a large one (read.split_bytes: a gzipped WARC/ARC is
cut at record boundaries, tasks named NAME@START-END), at most --workers at a time, submitted as the
inputs are listed (the driver never holds the task list); PII is scrubbed inside each task, before any row
is written, and each task also computes dedup's signatures of the rows it kept; then dedup, image-text pairs
and interleaved documents over what the tasks kept, every step on the same executor. Inputs and output may
be URLs (s3://, gs://; the job's ``storage_options:`` reach the driver and every task): tasks write to their
node's scratch and upload, nothing assumes a shared disk. Each finished task leaves a marker in
OUTPUT/_tasks/, so a rerun only does what is missing and yields the same output.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from crawlmix import __version__
from crawlmix.crawl.config import JobConfig, load_job
from crawlmix.crawl.results import Finished
from crawlmix.io.paths import Span, cc_dump_paths, iter_input_files, iter_tasks, task_name
from crawlmix.runtime import storage
from crawlmix.runtime.atomic import exit_on_output_error, write_text
from crawlmix.runtime.completion import Completion
from crawlmix.runtime.config import ConfigError
from crawlmix.runtime.executor import Executor, TaskError, shutdown_ray
from crawlmix.runtime.funnel import bad_input_lines
from crawlmix.runtime.resources import project_dir, resolve_config

TASK_RETRIES = 1  # a task whose worker died (killed, out of memory) is run again this many times (Ray)


def sample_path() -> Path:
    return project_dir() / "sample" / "sample.warc.gz"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        prog="crawl.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="With no --input, the bundled sample (sample/sample.warc.gz, generated on first use) is processed.")
    ap.add_argument("--input", action="append", metavar="PATH_OR_GLOB",
                    help="WARC/WET/ARC file, glob or fsspec URL (s3://bucket/in/*.warc.gz, https://); repeatable")
    ap.add_argument("--output", metavar="DIR_OR_URL",
                    help="output folder or URL, e.g. s3://bucket/out/run1 (default: output/<job name>)")
    ap.add_argument("--config", metavar="YAML", help="job config (default: jobs/default.yaml)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="parallel tasks (default: all cores, %(default)s here)")
    ap.add_argument("--cc-dump", metavar="CC-MAIN-YYYY-WW", help="a Common Crawl dump to read (network)")
    ap.add_argument("--cc-files", default="0:1", metavar="START:STOP", help="file range of --cc-dump (default 0:1)")
    ap.add_argument("--overwrite", action="store_true", help="redo finished tasks (ignore completion markers)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    return ap.parse_args(argv)


def use_storage_options(cfg: JobConfig) -> None:
    """The job's ``storage_options:`` for this process and, through CRAWLMIX_STORAGE_OPTIONS, for every
    task's process (a cluster's through Ray's runtime env, a local Ray's by inheritance: init_ray)."""
    if cfg.storage_options is not None:
        storage.configure(cfg.storage_options)
        os.environ[storage.ENV_OPTIONS] = json.dumps(cfg.storage_options)


def crawl_task(path: str, start: int, end: int | None, out_dir: str, cfg: JobConfig, staged: bool) -> dict:
    """One input file (or its byte range [start, end)) through the text stages: with PII on, every row is
    scrubbed before it is written (crawlmix.pii.job.crawl_task); its marker in OUTPUT/_tasks/ is written
    last. ``out_dir`` may be a URL: outputs are staged in this node's scratch and uploaded whole."""
    from crawlmix.runtime.runstate import failpoint

    if cfg.storage_options is not None:  # (the environment has them too; a Ray started elsewhere may not)
        storage.configure(cfg.storage_options)
    name = Span(path, start, end).name
    failpoint(f"task:{name}")  # tests: a worker killed on every attempt
    if cfg.pii.enabled:
        from crawlmix.pii.job import crawl_task as scrubbed_task

        result = scrubbed_task(path, out_dir, cfg, staged, cfg.pii.model_dump_json(), start, end)
    else:
        from crawlmix.text.curate import run_task

        result = run_task(path, out_dir, cfg, staged, start, end)
    if staged:  # dedup's signatures of the staged rows, here rather than in a round after the crawl
        from crawlmix.dedup.job import sign_staged
        from crawlmix.text.curate import STAGED

        sign_staged(storage.join(out_dir, STAGED, f"{name}.parquet"), out_dir, name, cfg.dedup.model_dump_json())
    return result


def plan(patterns: list[str], split_bytes: int) -> Iterator[tuple]:
    """The crawl's tasks, (path, start, end), drawn lazily from the inputs as they are listed (an S3 glob
    page by page): the executor submits them as it has room, so the driver never holds the task list."""
    for s in iter_tasks(patterns, split_bytes):
        yield s.path, s.start, s.end


def span_label(s: Span) -> str:
    """How a failed task is named to the user: its input, plus the byte range of a split file's task."""
    return s.path if s.whole else s.path + s.name[len(task_name(s.path)):]


def count_records(path: str, start: int = 0, end: int | None = None) -> int | None:
    """WARC response / conversion records of a task that failed (headers only, nothing decoded): how many
    records it holds that no output accounts for (a split file's task: those starting in its range).
    None for ARC files."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    from crawlmix.io.paths import member_range, open_binary

    if ".arc" in storage.name(path) and ".warc" not in storage.name(path):
        return None
    with open_binary(path) as fh:
        span = member_range(fh, start, end) if start or end is not None else (0, None)
        if span is None:
            return 0
        fh.seek(span[0])
        n, kinds = 0, WarcRecordType.response | WarcRecordType.conversion
        for r in ArchiveIterator(fh, record_types=kinds, parse_http=False):
            if span[1] is not None and r.stream_pos >= span[1]:
                break  # the next task's records
            n += 1
        return n


def _forget_failed(out_dir: str, names: list[str]) -> None:
    """A failed task's outputs from an earlier run are stale: none of them stays beside this run's."""
    from crawlmix.text.curate import STAGED

    for n in names:
        for f in (storage.join(out_dir, STAGED, f"{n}.parquet"), storage.join(out_dir, "curated", f"{n}.parquet"),
                  *storage.iglob(storage.join(out_dir, "removed", f"{n}.*parquet"))):
            storage.remove(f)


def _clear_dedup_outputs(out_dir: str) -> None:
    """Dedup rewrites curated/ from the staged files: no stale output of an earlier run stays behind."""
    for pattern in (("curated", "*.parquet"), ("removed", "*.dedup.parquet")):
        for f in storage.iglob(storage.join(out_dir, *pattern)):
            storage.remove(f)


def run(patterns: list[str], out_dir: str | Path, cfg: JobConfig, workers: int, overwrite=False,
        progress=True) -> dict:
    """The job: tasks -> dedup -> images -> stats.json. ``patterns``: input paths, globs or URLs, listed
    lazily; ``out_dir``: a folder or a URL. stats.json says 'running' from the first step (readers refuse
    the folder) and 'finished' or 'incomplete' (tasks failed) at the end."""
    from crawlmix.dedup.job import run_dedup
    from crawlmix.runtime import runstate
    from crawlmix.runtime.executor import Resources
    from crawlmix.text.curate import STAGED

    use_storage_options(cfg)
    out_dir = str(out_dir)
    storage.makedirs(out_dir)
    _, old = runstate.read_state(out_dir)
    if old and not overwrite and old.get("config_hash") != cfg.digest():
        raise ConfigError(f"{out_dir} holds a run with another config ({old.get('config_hash')}); "
                          f"use a new --output or --overwrite")
    shown = patterns[:20] + ([f"... and {len(patterns) - 20} more"] if len(patterns) > 20 else [])
    header = {"kind": "crawl", "job": cfg.name, "crawlmix_version": __version__, "config_hash": cfg.digest(),
              "seed": cfg.seed, "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "output": out_dir, "input": shown, "workers": workers}
    runstate.begin(out_dir, header)  # before any output is touched: readers refuse the folder from here on
    if overwrite:
        Completion(out_dir, cfg.digest()).clear()
    if cfg.dedup.enabled:
        _clear_dedup_outputs(out_dir)
    write_text(storage.join(out_dir, "config.json"), json.dumps(cfg.public_dump(), indent=2) + "\n")

    ex = Executor("ray", workers, progress)  # the crawl always runs on Ray (local, or RAY_ADDRESS)
    t0 = time.perf_counter()
    steps_s: dict[str, float] = {}  # wall time of each step (bench/scaling.py reads them)
    mark = [t0]

    def lap() -> float:
        now = time.perf_counter()
        took, mark[0] = round(now - mark[0], 2), now
        return took

    ex.start()
    steps_s["startup"] = lap()  # Ray: connect, or start a local one
    dedup = cfg.dedup.enabled
    results = Finished()  # a few hundred bytes per finished task (crawlmix/crawl/results.py)
    files: dict[str, int] = {}  # input file -> its first task's position (input order)
    failed_spans: list[Span] = []
    failed = []
    marks = Completion(out_dir, cfg.digest())
    reused = [0]

    def todo() -> Iterator[tuple]:
        """The planned tasks, less those whose marker says they finished under this config: the driver reads
        the marker (as the task would) and no worker is asked to do nothing (a rerun redoes only what is left)."""
        for i, t in enumerate(plan(patterns, cfg.read.split_bytes)):
            files.setdefault(t[0], i)
            rec = marks.get(Span(*t).name)
            if rec is None:
                yield t
            else:
                results.add(rec)
                reused[0] += 1

    for o in ex.imap(crawl_task, todo(), desc="crawl", shared=(out_dir, cfg, dedup),
                     resources=Resources(max_retries=TASK_RETRIES)):
        if o.ok:
            results.add(o.result)
        else:
            failed_spans.append(Span(*o.args))
            failed.append({"stage": "task", "reason": "task_failed", "record": span_label(failed_spans[-1]),
                           "message": o.message()})
    runstate.failpoint("driver:tasks")
    steps_s["crawl"] = lap()
    header["tasks_reused"] = reused[0]  # finished by an earlier run (their markers), not run again
    inputs = sorted(files, key=files.__getitem__)
    _forget_failed(out_dir, [s.name for s in failed_spans])
    done = results.tasks()  # sorted
    dedup_stats = None
    if dedup:
        staged = [storage.join(out_dir, STAGED, f"{t}.parquet") for t in done]
        dedup_stats = run_dedup(staged, out_dir, cfg.dedup, ex, names=done)
    runstate.failpoint("driver:dedup")
    steps_s["dedup"] = lap()
    pii_stats = None
    if cfg.pii.enabled:  # scrubbed inside the tasks; counted from their markers and the final files
        from crawlmix.pii.job import crawl_pii_stats

        pii_stats = crawl_pii_stats(results.pii_results(), [storage.join(out_dir, "curated", f"{t}.parquet")
                                                            for t in done])
    bad_files = {s.path for s in failed_spans}
    ok_inputs = [p for p in inputs if p not in bad_files]
    images_stats = None
    if cfg.images.enabled:  # image-text pairs from the pages this run kept (rows scrubbed before staging)
        from crawlmix.images.config import load_images_job
        from crawlmix.images.job import run as run_images

        job = load_images_job(resolve_config(cfg.images.config),
                              overrides={"pages": {"kept_from": out_dir}, "fetch": {"enabled": cfg.images.fetch}})
        images_stats = run_images(ok_inputs, storage.join(out_dir, "pairs"), job, ex, overwrite=overwrite,
                                  pii=cfg.pii if cfg.pii.enabled else None)
        failed += [{"stage": "images", "reason": "task_failed", "record": p,  # their pages are in no shard
                    "message": "an image-text pairs task failed on this file (pairs/stats.json: errors)"}
                   for p in images_stats["failed_tasks"]]
    runstate.failpoint("driver:images")
    steps_s["images"] = lap()
    interleaved_stats = None
    if cfg.interleaved.enabled:  # OBELICS-style documents from the pages this run kept (scrubbed in the tasks)
        from crawlmix.interleaved.config import load_interleaved_job
        from crawlmix.interleaved.job import run as run_interleaved

        ijob = load_interleaved_job(resolve_config(cfg.interleaved.config),
                                    overrides={"images": {"fetch": {"enabled": cfg.interleaved.fetch}}})
        interleaved_stats = run_interleaved(ok_inputs, out_dir, ijob, ex, kept_from=out_dir,
                                            pii=cfg.pii if cfg.pii.enabled else None, overwrite=overwrite)
        failed += [{"stage": "interleaved", "reason": "task_failed", "record": p,
                    "message": "an interleaved-documents task failed on this file (interleaved/stats.json: errors)"}
                   for p in interleaved_stats["failed_tasks"]]
    steps_s["interleaved"] = lap()
    header.update(wall_s=round(time.perf_counter() - t0, 2), inputs=len(inputs))
    stats = results.stats(header)  # crawlmix.runtime.funnel.merge_stats of the results
    if dedup_stats is not None:
        stats["stages"]["dedup"] = {k: dedup_stats[k] for k in ("in", "out", "dropped")}
        stats["dedup"] = {k: v for k, v in dedup_stats.items() if k not in ("in", "out", "dropped")}
        stats["docs_out"] = dedup_stats["out"]
    if pii_stats is not None:
        stats["pii"] = pii_stats
    stats["steps_s"] = steps_s
    if interleaved_stats is not None:
        stats["interleaved"] = {k: interleaved_stats.get(k) for k in ("status", "documents", "images", "funnel",
                                                                      "output", "failed_tasks", "skipped")}
    if images_stats is not None:
        stats["images"] = {k: images_stats.get(k) for k in ("candidates", "successes", "funnel", "sources", "output",
                                                             "pii", "failed_tasks", "skipped")}
    if failed:
        failed = _scrubbed_failures(failed, cfg)
        counts = {o.index: o.result for o in ex.imap(count_records, [(s.path, s.start, s.end) for s in failed_spans],
                                                     desc="count")}
        stats["not_processed"] = {
            "files": len(bad_files), "tasks": len(failed_spans), "records": sum(v or 0 for v in counts.values()),
            "per_file": [{"task": s.name, "input": s.path, **({} if s.whole else {"range": [s.start, s.end]}),
                          "records": counts.get(i)} for i, s in enumerate(failed_spans)]}
    stats["errors"] = failed + stats["errors"]
    stats["error_count"] += len(failed)
    stats["failed_tasks"] = sorted({f["record"] for f in failed})
    stats["tasks"] = sorted(done + [s.name for s in failed_spans])
    return runstate.finish(out_dir, stats, stats["failed_tasks"])


def _scrubbed_failures(failed: list[dict], cfg: JobConfig) -> list[dict]:
    """Failure records quote exceptions, which may quote page content: scrubbed like every other output."""
    if not cfg.pii.enabled:
        return failed
    from crawlmix.pii.fields import field_scrubber_for

    return field_scrubber_for(cfg.pii.model_dump_json()).records(failed)


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
        skip = (stats["images"].get("skipped") or {}).get("reason")  # nothing to fetch: no page parsed
        lines.append(f"image-text pairs: none, skipped ({skip}) -> {stats['output']}/pairs/" if skip else
                     f"image-text pairs: {stats['images']['successes']} of {stats['images']['candidates']} "
                     f"candidate images -> {stats['output']}/pairs/")
    if "interleaved" in stats:
        il = stats["interleaved"]
        lines.append(f"interleaved documents: {il.get('documents')} with {il.get('images')} images "
                     f"-> {stats['output']}/interleaved/")
    lines += bad_input_lines(stats)
    if stats.get("failed_tasks"):
        np_ = stats.get("not_processed", {})
        lines += ["", f"FAILED: {len(stats['failed_tasks'])} task(s) failed after retries; run incomplete "
                      f"({np_.get('files', 0)} file(s), {np_.get('records', 0)} WARC records not processed):"]
        lines += [f"  {p}" for p in stats["failed_tasks"]]
    return "\n".join(lines)


def _inputs(a) -> list[str]:
    """The input patterns: --cc-dump's URLs, --input (each must match something: checked before any work,
    from the first page of its listing), or the bundled sample."""
    if a.cc_dump:
        return cc_dump_paths(a.cc_dump, a.cc_files)
    if a.input:
        for pat in a.input:
            next(iter_input_files([pat]))  # FileNotFoundError when it matches nothing
        return list(a.input)
    sample = sample_path()
    if not sample.exists():
        from crawlmix.samples.crawl_sample import write_sample

        write_sample(sample.parent)
    return sorted(str(p) for p in sample.parent.glob("*.warc.gz")) + \
        sorted(str(p) for p in sample.parent.glob("*.arc.gz"))


@exit_on_output_error
def main(argv=None) -> int:
    a = parse_args(argv)
    try:
        cfg = load_job(a.config)  # a bad config fails here, before any work
        use_storage_options(cfg)
        inputs = _inputs(a)
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.output:  # a folder (file:// URLs too) or an object-store URL
        out = a.output if storage.is_remote(a.output) else str(Path(storage.local(a.output)))
    else:
        out = str(project_dir() / "output" / cfg.name)
    try:
        stats = run(inputs, out, cfg, max(1, a.workers), overwrite=a.overwrite, progress=not a.no_progress)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except TaskError as e:  # a dedup task: the folder stays 'running' (readers refuse it); a rerun completes it
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        shutdown_ray()
    print(summary(stats))
    if stats["failed_tasks"]:  # everything else is written and marked: the same command redoes only these
        print(f"error: {len(stats['failed_tasks'])} task(s) failed after retries: {', '.join(stats['failed_tasks'])}"
              f"; the run is incomplete (readers refuse {out}); rerun the same command to redo them",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
