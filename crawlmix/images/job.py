"""crawlmix image-text pairs: crawled HTML pages -> WebDataset shards in img2dataset's layout.

    python pipelines/images.py --input 'crawl/*.warc.gz' --output out/images
    python pipelines/images.py --input 'crawl/*.warc.gz' --output out/images --fetch --config jobs/images.yaml
    ray job submit --working-dir . -- python pipelines/images.py --ray --input ... --output ...

Three passes. (1) Index: the image records (and 3xx redirects) of every input WARC and of
``warc_lookup.extra_warcs`` are indexed by URL, one task per file. (2) Pages, one task per input
file: every <img> (with <picture>/<source> and the best srcset candidate) of every kept HTML page
becomes a candidate with its alt text, figcaption, title and surrounding text; URL, caption and
size filters run before any bytes are read; the bytes come from a captured record (any input
file) or, with --fetch, from HTTP; Pillow decodes, checks, resizes and re-encodes. Each task
writes OUTPUT/_staging/<task>.parquet and then a completion marker in OUTPUT/_tasks/ (a rerun does
only what is missing). (3) Shards: one pass over the staged rows in input order drops exact (sha256)
and perceptual-hash near duplicates across the whole run and writes {:05d}.tar (.jpg/.txt/.json),
{:05d}.parquet (a row per candidate image, failures with their reason) and {:05d}_stats.json.

Nothing to fetch costs nothing: when no input (or sibling) WARC holds a record an image could be read from
and fetching is off, no candidate of any page could become a pair, so no page is parsed: the tasks do not
run, the shards are empty and stats.json says so under ``skipped`` (with the pages not parsed).

--input and --output may be local paths or URLs (``s3://``, ``gs://``, ``file://``; crawlmix.runtime.storage):
each task stages its rows in its node's local scratch and uploads them under OUTPUT/_staging/, shards are
written in local scratch and uploaded whole (crawlmix.runtime.atomic), markers last.

Tasks run through one executor: in this process (--workers 1), in a local process pool, or on Ray
(--ray, or when RAY_ADDRESS is set).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

from crawlmix import __version__
from crawlmix.images.config import ImagesJob, load_images_job
from crawlmix.images.index import fetchable_records, index_file
from crawlmix.images.shards import write_shards
from crawlmix.images.task import STAGES, TASK_STAGES, images_task, kept_fingerprint, task_digest
from crawlmix.io.paths import resolve_inputs, task_name
from crawlmix.pii.config import PiiConfig, load_pii_config
from crawlmix.runtime import runstate, storage
from crawlmix.runtime.atomic import exit_on_output_error, write_text
from crawlmix.runtime.completion import Completion
from crawlmix.runtime.config import ConfigError
from crawlmix.runtime.executor import Executor, Outcome
from crawlmix.runtime.funnel import bad_input_lines


def _in_order(outcomes) -> list[Outcome]:
    """Every outcome, in input order (errors and results are collected the same whatever the backend)."""
    return sorted(outcomes, key=lambda o: o.index)


def _task_failed(stage: str, o: Outcome) -> dict:
    return {"stage": stage, "reason": "task_failed", "record": o.args[0], "message": o.message()}


SKIPPED = "no captured images and fetching off"


def location(path: str | Path) -> str:
    """An output or input location as a str: a URL as it is, a local path (or ``file://`` URL) as an OS path."""
    s = os.fspath(path)
    return s if storage.is_remote(s) else storage.local(s)


def _stale(done: Completion, out_dir: str, job: ImagesJob, path: str) -> bool:
    """Whether the task of ``path`` must run: no marker under this config, no staged rows, or staged from
    another version of its curated file (pages.kept_from: the text run kept other pages since)."""
    name = task_name(path)
    rec = done.get(name)
    if rec is None or not storage.exists(staged_path(out_dir, name)):
        return True
    try:
        return rec.get("kept_from") != kept_fingerprint(job, name)
    except FileNotFoundError:
        return True  # the task fails and says why


def nothing_to_fetch(per_file: list[dict] | None, fetch: bool) -> bool:
    """No indexed record an image could be read from (or no index) and fetching off: no candidate of any page
    can get bytes, so parsing pages for candidates would find nothing."""
    return not fetch and fetchable_records(per_file) == 0


def _skip(inputs: list[str], per_file: list[dict] | None, job: ImagesJob) -> tuple[dict, list, list]:
    """The pairs step when there is nothing to fetch: no page is parsed. (the ``skipped`` note with the pages
    it did not parse, failed inputs, error records). Pages are counted cheaply: the kept pages (curated
    files' row counts, pages.kept_from), else the 2xx HTML responses the index met."""
    from crawlmix.images.kept import kept_count

    n, failed, errors = 0, [], []
    if job.pages.kept_from:
        for p in inputs:
            try:
                n += kept_count(job.pages.kept_from, task_name(p))
            except Exception as e:  # noqa: BLE001 - no curated file: as a task would, the input fails
                failed.append(p)
                errors.append({"stage": "pages", "reason": "no_curated_file", "record": p,
                               "message": f"{type(e).__name__}: {e}"})
        counted = "pages the text run kept (pages.kept_from: curated row counts)"
    elif per_file is not None:
        wanted = set(inputs)  # (sibling WARCs are indexed, not read for pages)
        n = sum(f.get("html", 0) for f in per_file if f["path"] in wanted)
        counted = "2xx HTML responses of the inputs (counted by the index)"
    else:
        n, counted = None, "not counted (warc_lookup off: no file was read)"
    where = (f"{len(per_file)} indexed WARC file(s) hold no record an image could be read from"
             if per_file is not None else "warc_lookup is off")
    note = {"reason": SKIPPED, "pages": n, "pages_counted": counted,
            "detail": f"{where} and fetch.enabled is false: no candidate could get bytes, so no page was "
                      f"parsed for candidates (no candidate counts)"}
    return note, failed, errors


def staged_path(out_dir: str, name: str) -> str:
    """Where the task ``name`` stages its rows: OUTPUT/_staging/<task>.parquet."""
    return storage.join(out_dir, "_staging", f"{name}.parquet")


def run(inputs: list[str], out_dir: str | Path, job: ImagesJob, ex: Executor, overwrite: bool = False,
        pii: PiiConfig | None = None) -> dict:
    """Index, one task per input file (finished ones skipped), then the shards; returns stats.json.
    ``out_dir``: a local folder or a URL. ``pii``: scrub the rows (captions, alt, figcaption, surrounding
    text, URLs) before they are staged."""
    out_dir = location(out_dir)
    storage.makedirs(out_dir)
    prev = storage.join(out_dir, "stats.json")
    if not overwrite and storage.exists(prev):
        old = storage.read_json(prev)
        if old.get("config_hash") != job.digest():
            raise ConfigError(f"{out_dir} holds a run with another config ({old.get('config_hash')}); "
                              f"use a new --output or --overwrite")
    runstate.begin(out_dir, {"job": job.name, "crawlmix_version": __version__, "config_hash": job.digest(),
                             "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
    pii_json = pii.model_dump_json() if pii is not None else None
    done = Completion(out_dir, task_digest(job, pii_json))
    if overwrite:
        done.clear()
        storage.rmtree(storage.join(out_dir, "_staging"))
    write_text(storage.join(out_dir, "config.json"), json.dumps(job.model_dump(mode="json"), indent=2) + "\n")
    t0 = time.perf_counter()
    errors: list[dict] = []

    # 1. index the captured image records of every input (and sibling) WARC
    per_file = None
    index_failed = []
    if job.warc_lookup.enabled:
        extra = resolve_inputs(job.warc_lookup.extra_warcs) if job.warc_lookup.extra_warcs else []
        to_index = list(dict.fromkeys(inputs + extra))
        per_file = []
        for o in _in_order(ex.imap(index_file, [(p,) for p in to_index], desc="index")):
            if o.ok:
                per_file.append(o.result)
                errors += o.result["errors"]
            else:
                index_failed.append(o.args[0])
                errors.append(_task_failed("index", o))
    t_index = time.perf_counter() - t0
    n_indexed = sum(len(f["records"]) for f in per_file or [])

    # 2. one task per input file (finished tasks are skipped); the index reaches each worker once
    skipped = None
    failed = []
    if not index_failed and nothing_to_fetch(per_file, job.fetch.enabled):  # no page is parsed
        skipped, failed, errs = _skip(inputs, per_file, job)
        errors += errs
    todo = [] if skipped else [p for p in inputs if _stale(done, out_dir, job, p)]
    if index_failed:  # a task would stage "not captured" for the images of the unindexed file, and be done
        failed, todo = list(todo), []
        errors += [{"stage": "task", "reason": "not_run", "record": p, "message": "an index task failed"}
                   for p in failed]
    for o in _in_order(ex.imap(images_task, [(p, str(out_dir), job, pii_json) for p in todo], desc="images",
                               shared=(per_file,))):
        if not o.ok:
            failed.append(o.args[0])
            errors.append(_task_failed("task", o))
    task_stats = [] if skipped else [r for r in (done.get(task_name(p)) for p in inputs if p not in failed)
                                     if r is not None]
    t_tasks = time.perf_counter() - t0 - t_index

    # 3. dedup across the run + shards
    meta = {"crawlmix_version": __version__, "config_hash": job.digest(), "seed": str(job.seed)}
    if pii is not None:
        meta["pii_config_hash"] = pii.digest()
    sh = write_shards(out_dir, [] if skipped else [p for p in inputs if p not in failed], job, meta, ex.progress)
    side = Counter()
    if pii is not None:  # the driver's own records (index errors, failures) quote URLs and exceptions
        from crawlmix.pii.fields import field_scrubber_for
        from crawlmix.pii.spans import PiiStats

        st = PiiStats()
        errors = field_scrubber_for(pii_json).records(errors, st)
        side = st.replacements
    stats = merge(task_stats, sh, errors)
    if skipped:  # no stage ran: no funnel, no candidate count, the pages said as not parsed
        stats.update(pages={"not_parsed": skipped["pages"]}, candidates=None, funnel=[], skipped=skipped)
    if pii is not None:
        reps = sum((Counter(t["pii"]["replacements"]) for t in task_stats if t.get("pii")), side)
        stats["pii"] = {"config_hash": pii.digest(), "replacements": dict(sorted(reps.items())),
                        "replacements_total": sum(reps.values())}
    stats.update({"job": job.name, "crawlmix_version": __version__, "config_hash": job.digest(), "seed": job.seed,
                  "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "output": str(out_dir),
                  "inputs": len(inputs), "workers": ex.workers, "backend": ex.backend,
                  "failed_tasks": list(dict.fromkeys(index_failed + failed)),
                  "indexed_image_records": n_indexed,
                  "wall_s": round(time.perf_counter() - t0, 2),
                  "phase_s": {"index": round(t_index, 2), "images": round(t_tasks, 2),
                              "shards": round(time.perf_counter() - t0 - t_index - t_tasks, 2)}})
    stats = {k: stats[k] for k in sorted(stats, key=lambda k: (k not in _HEAD, _HEAD.index(k) if k in _HEAD else 0))}
    return runstate.finish(out_dir, stats, failed + index_failed, indent=1)


_HEAD = ["job", "crawlmix_version", "config_hash", "seed", "created", "output", "inputs", "workers", "backend",
         "wall_s", "phase_s", "pages", "candidates", "successes", "funnel", "reasons", "sources", "warc_matches"]


def merge(task_stats: list[dict], sh: dict, errors: list[dict]) -> dict:
    pages, reasons, sources, matches, timings = Counter(), Counter(), Counter(), Counter(), Counter()
    examples, fetch_n, fetch_s, candidates = [], 0, 0.0, 0
    for t in task_stats:
        pages.update(t["pages"])
        reasons.update(t["reasons"])
        sources.update(t["sources"])
        matches.update(t["warc_matches"])
        timings.update(t["timings"])
        errors = errors + t["errors"]
        examples += t["examples"][: max(0, 20 - len(examples))]
        fetch_n += t["fetch"]["requests"]
        fetch_s += t["fetch"]["seconds"]
        candidates += t["candidates"]
    reasons.update(sh["duplicates"])
    stages = {st: {"in": 0, "out": 0, "dropped": Counter()} for st in TASK_STAGES}
    for t in task_stats:  # the tasks' funnels (StageStats), summed
        for st, v in t["funnel"].items():
            stages[st]["in"] += v["in"]
            stages[st]["out"] += v["out"]
            stages[st]["dropped"].update(v["dropped"])
    n = stages[TASK_STAGES[-1]]["out"]  # then the run-wide dedup of the shard pass
    stages["dedup"] = {"in": n, "out": n - sum(sh["duplicates"].values()), "dropped": Counter(sh["duplicates"])}
    funnel = [{"stage": st, "in": stages[st]["in"], "out": stages[st]["out"],
               "dropped": dict(stages[st]["dropped"].most_common())} for st in STAGES]
    successes = sum(s["successes"] for s in sh["shards"])
    return {"pages": dict(pages), "candidates": candidates, "successes": successes, "funnel": funnel,
            "reasons": dict(reasons.most_common()), "sources": dict(sources), "warc_matches": dict(matches),
            "fetch": {"requests": fetch_n, "mean_s": round(fetch_s / fetch_n, 4) if fetch_n else None},
            "shards": sh["shards"], "timings_s": {k: round(v, 3) for k, v in timings.items()},
            "error_count": len(errors), "errors": errors[:1000], "image_error_examples": examples}


def summary(stats: dict) -> str:
    p = stats["pages"]
    lines = [f"crawlmix {stats['crawlmix_version']}  job={stats['job']}  config={stats['config_hash']}  "
             f"files={stats['inputs']}  wall={stats['wall_s']}s",
             f"output: {stats['output']}/{{00000..}}.tar  .parquet  _stats.json  stats.json", ""]
    sk = stats.get("skipped")
    if sk:
        n = "uncounted" if sk["pages"] is None else sk["pages"]
        lines += [f"skipped: {sk['reason']}: {n} page(s) not parsed for candidates ({sk['pages_counted']})",
                  f"  {sk['detail']}"]
    else:
        lines += [f"pages read {p.get('read', 0)}, with images {p.get('with_images', 0)}, "
                  f"repeated {p.get('repeated', 0)}, no <img> {p.get('no_images', 0)}, "
                  f"URL-filtered {sum(v for k, v in p.items() if k.startswith('url_filter'))}, "
                  f"language {p.get('language', 0)}", "",
                  f"{'stage':<12}{'in':>8}{'out':>8}  dropped (top reasons)"]
    for f in stats["funnel"]:
        top = ", ".join(f"{r}={n}" for r, n in list(f["dropped"].items())[:4])
        lines.append(f"{f['stage']:<12}{f['in']:>8}{f['out']:>8}  {top}")
    src = ", ".join(f"{k}={v}" for k, v in stats["sources"].items()) or "-"
    cands = "-" if stats["candidates"] is None else stats["candidates"]
    lines += ["", f"candidates {cands}  ->  image-text pairs {stats['successes']} "
                  f"in {len(stats['shards'])} shard(s)  (bytes from: {src})"]
    lines += bad_input_lines(stats)
    return "\n".join(lines)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="images.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("--input", action="append", required=True, metavar="PATH_OR_GLOB",
                    help="WARC file, glob or fsspec URL; repeatable")
    ap.add_argument("--output", required=True, metavar="DIR", help="output folder (shards, stats.json)")
    ap.add_argument("--config", metavar="YAML", help="images job config (default: jobs/images.yaml)")
    ap.add_argument("--fetch", action="store_true",
                    help="download images no input WARC captured (network; sets fetch.enabled)")
    ap.add_argument("--pii", nargs="?", const="", default=None, metavar="YAML",
                    help="scrub PII from captions, alt / figcaption / surrounding text and URLs before a row is "
                         "written (the default PII config, or a pii YAML / job YAML with a `pii:` section)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="parallel tasks (default: all cores, %(default)s here)")
    ap.add_argument("--ray", action="store_true", help="run tasks on Ray (also when RAY_ADDRESS is set)")
    ap.add_argument("--overwrite", action="store_true", help="redo finished tasks")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    return ap.parse_args(argv)


@exit_on_output_error
def main(argv=None) -> int:
    a = parse_args(argv)
    try:
        job = load_images_job(a.config, {"fetch": {"enabled": True}} if a.fetch else None)
        pii = load_pii_config(a.pii or None) if a.pii is not None else None
        inputs = resolve_inputs(a.input)
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ex = Executor.auto(max(1, a.workers), not a.no_progress, ray=True if a.ray else None)  # also Ray with RAY_ADDRESS
    if ex.backend == "processes" and len(inputs) <= 1:  # one input file: no pool to start
        ex = Executor("inline", 1, ex.progress)
    try:
        stats = run(inputs, a.output, job, ex, a.overwrite, pii)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary(stats))
    if stats["failed_tasks"]:  # the others are staged and marked: a rerun does only these
        print(f"error: {len(stats['failed_tasks'])} task(s) failed: {', '.join(stats['failed_tasks'])}; "
              f"their pages are in no shard; rerun the same command to redo them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
