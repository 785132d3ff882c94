"""crawlmix interleaved documents: crawled HTML pages -> OBELICS-style image-text documents (Parquet + WebDataset).

    python pipelines/interleaved.py --input 'crawl/*.warc.gz' --output out/
    python pipelines/interleaved.py --input ... --output out/ --fetch --config jobs/interleaved.yaml --pii
    ray job submit --working-dir . -- python pipelines/interleaved.py --ray --input ... --output ...

Every kept HTML page becomes one document: its text blocks (headings, paragraphs, list items, captions) and
its images in reading order, site furniture left out (navigation, ads, icons, spacers, tracking pixels,
logos repeated across pages). Image bytes come from the WARCs' captured image records or, with --fetch, from
HTTP (X-Robots-Tag noai / noimageai honoured); Pillow decodes, filters (size, aspect), resizes; sha256 +
pHash dedup within and across documents. Document rules: minimum words and images, maximum images, language,
the text job's quality rules. Output under OUTPUT/interleaved/: <task>.parquet (id, url, language, texts,
images: aligned lists, + provenance), removed/<task>.parquet (every dropped page with stage and reason),
{:05d}.tar WebDataset shards (KEY.json, KEY.0.jpg, KEY.1.jpg, ...), stats.json (the funnels).

Three passes, all on the one executor: (1) index the image records of every input WARC, (2) one task per
input file (crawlmix.interleaved.task; finished tasks leave OUTPUT/interleaved/_tasks/<task>.json and are
skipped on rerun), (3) the run-wide dedup and the output files (crawlmix.interleaved.output).

When no input (or sibling) WARC holds a record an image could be read from and fetching is off, no image can
be kept: the image side is skipped (pages are not parsed for image candidates; the documents are the same,
text only), or, with ``documents.min_images`` > 0, the whole step (no document could pass); stats.json says
so under ``skipped``. --input, --output and --kept-from may be local paths or URLs (``s3://``, ...).
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
from crawlmix.images.index import index_file
from crawlmix.images.job import SKIPPED, location, nothing_to_fetch
from crawlmix.images.kept import ids_state, kept_count
from crawlmix.interleaved.config import InterleavedJob, load_interleaved_job
from crawlmix.interleaved.media import IMAGE_TASK_STAGES
from crawlmix.interleaved.output import digest, write_outputs
from crawlmix.interleaved.schema import FOLDER, STAGING, staging_paths
from crawlmix.interleaved.task import DOC_TASK_STAGES, interleaved_task
from crawlmix.io.paths import resolve_inputs, task_name
from crawlmix.runtime import runstate, storage
from crawlmix.runtime.atomic import exit_on_output_error, write_json
from crawlmix.runtime.completion import Completion
from crawlmix.runtime.config import ConfigError
from crawlmix.runtime.executor import Executor
from crawlmix.runtime.funnel import bad_input_lines


def _skip_note(inputs: list[str], per_file: list[dict] | None, kept_from: str | None, what: str) -> tuple[dict, dict]:
    """Why a part of the step did not run and how many pages it concerned (counted cheaply: the kept pages'
    row counts, else the 2xx HTML responses the index met); and {input: why} for inputs without a curated file."""
    n, counted, missing = None, "not counted (warc_lookup off: no file was read)", {}
    if kept_from:
        n, counted = 0, "pages the text run kept (curated row counts)"
        for p in inputs:
            try:
                n += kept_count(kept_from, task_name(p))
            except Exception as e:  # noqa: BLE001 - no curated file: its text task failed
                missing[p] = f"{type(e).__name__}: {e}"
    elif per_file is not None:
        wanted = set(inputs)  # (sibling WARCs are indexed, not read for pages)
        n = sum(f.get("html", 0) for f in per_file if f["path"] in wanted)
        counted = "2xx HTML responses of the inputs (counted by the index)"
    where = (f"{len(per_file)} indexed WARC file(s) hold no record an image could be read from"
             if per_file is not None else "warc_lookup is off")
    return {"reason": SKIPPED, "pages": n, "pages_counted": counted,
            "detail": f"{where} and images.fetch.enabled is false: {what}"}, missing


def run(inputs: list[str], out_dir: str | Path, job: InterleavedJob, ex: Executor, kept_from: str | None = None,
        pii=None, overwrite: bool = False) -> dict:
    """Index, one task per input file (finished ones skipped), then the run-wide pass; returns stats.json.

    ``kept_from``: a crawl's output folder; only pages its curated/<task>.parquet holds become documents.
    ``pii``: a crawlmix.pii.config.PiiConfig; when given (and enabled), every text block, page URL and image
    URL is scrubbed before anything is written."""
    t0 = time.perf_counter()
    root = storage.join(location(out_dir), FOLDER)
    kept_from = location(kept_from) if kept_from else kept_from
    storage.makedirs(root)
    pii_json = pii.model_dump_json() if pii is not None and getattr(pii, "enabled", True) else None
    run_hash = digest(job.digest(), pii.digest() if pii_json else "no-pii")
    prev = storage.join(root, "stats.json")
    if not overwrite and storage.exists(prev):
        try:
            old = storage.read_json(prev).get("config_hash")
        except (ValueError, AttributeError):
            old = "unreadable stats.json"
        if old != run_hash:
            raise ConfigError(f"{root} holds a run with another config ({old}); use a new output or overwrite")
    created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    runstate.begin(root, {"job": job.name, "crawlmix_version": __version__, "config_hash": run_hash,
                          "created": created})  # readers refuse the folder until the run has finished
    done = Completion(root, run_hash)
    if overwrite:
        done.clear()
        storage.rmtree(storage.join(root, STAGING))
    write_json(storage.join(root, "config.json"), {"interleaved": job.model_dump(mode="json"), "kept_from": kept_from,
                                                   "pii": json.loads(pii_json) if pii_json else None})
    errors: list[dict] = []

    # 1. the captured image records of every input (and sibling) WARC
    per_file, index_failed = None, False
    if job.images.warc_lookup.enabled:
        extra = job.images.warc_lookup.extra_warcs
        to_index = list(dict.fromkeys(inputs + (resolve_inputs(extra) if extra else [])))
        per_file = []
        for o in sorted(ex.imap(index_file, [(p,) for p in to_index], desc="index"), key=lambda o: o.index):
            if o.ok:
                per_file.append(o.result)
                errors += o.result["errors"]
            else:
                index_failed = True
                errors.append({"stage": "index", "reason": "task_failed", "record": o.args[0], "message": o.message()})
    t_index = time.perf_counter() - t0
    # nothing to fetch: no image can be kept; the pages are not parsed for image candidates
    images_off = not index_failed and nothing_to_fetch(per_file, job.images.fetch.enabled)
    skipped, failed = None, []
    if images_off:
        what = ("no page was parsed for image candidates; documents are text only (no image counts)"
                if not job.documents.min_images else
                f"documents.min_images is {job.documents.min_images}: no document could pass, so no page was read")
        skipped, missing = _skip_note(inputs, per_file, kept_from, what)
        skipped["part"] = "images" if not job.documents.min_images else "all"
        per_file = None  # nothing in it a task could use
        if job.documents.min_images:  # as a task would, an input without its curated file fails
            failed = list(missing)
            errors += [{"stage": "pages", "reason": "no_curated_file", "record": p, "message": m}
                       for p, m in missing.items()]

    # 2. one task per input file; a finished one is skipped unless what the text run kept has changed
    names = {p: task_name(p) for p in inputs}
    whole_skip = skipped is not None and skipped["part"] == "all"
    kept = {p: None if whole_skip else ids_state(kept_from, names[p]) for p in inputs}

    def finished(p: str) -> bool:
        rec = done.get(names[p])
        return rec is not None and rec.get("kept") == kept[p] and bool(rec.get("images_off")) == images_off \
            and all(storage.exists(f) for f in staging_paths(root, names[p]))

    todo = [] if whole_skip else [p for p in inputs if not finished(p)]
    tasks = [(p, root, job, run_hash, pii_json, kept_from, kept[p], images_off) for p in todo]
    for o in sorted(ex.imap(interleaved_task, tasks, desc="interleaved", shared=(per_file,)), key=lambda o: o.index):
        if not o.ok:
            failed.append(o.args[0])
            errors.append({"stage": "task", "reason": "task_failed", "record": o.args[0], "message": o.message()})
    ok = [] if whole_skip else [p for p in inputs if p not in failed]
    task_stats = [r for r in (done.get(names[p]) for p in ok) if r is not None]
    t_tasks = time.perf_counter() - t0 - t_index

    # 3. run-wide dedup + output files
    meta = {"crawlmix_version": __version__, "config_hash": run_hash, "seed": str(job.seed)}
    out = write_outputs(root, [names[p] for p in ok], job, meta, ex.progress)
    if pii_json:  # run-level records quote file names and task errors; the tasks scrubbed their own
        from crawlmix.pii.fields import field_scrubber_for

        errors = field_scrubber_for(pii_json).records(errors)
    stats = merge(task_stats, out, errors)
    if skipped is not None:  # the parts that did not run have no funnel (no fake counts)
        stats["funnel"]["images"] = []
        if whole_skip:
            stats["funnel"]["documents"] = []
        if not whole_skip:  # the <img> elements of the pages that reached the image stage, not looked at
            skipped["images_seen"] = sum(t.get("images_seen", 0) for t in task_stats)
        stats["skipped"] = skipped
    stats = {"job": job.name, "crawlmix_version": __version__, "config_hash": run_hash, "seed": job.seed,
             "created": created, "output": str(root),
             "inputs": len(inputs), "workers": ex.workers, "backend": ex.backend, "failed_tasks": failed,
             "pii": stats.pop("pii") if pii_json else None, "kept_from": kept_from,
             "wall_s": round(time.perf_counter() - t0, 2),
             "phase_s": {"index": round(t_index, 2), "tasks": round(t_tasks, 2),
                         "output": round(time.perf_counter() - t0 - t_index - t_tasks, 2)}, **stats}
    return runstate.finish(root, stats, failed, indent=1)


def _funnel(stages: list[str], parts: list[dict]) -> dict:
    out = {s: {"in": 0, "out": 0, "dropped": Counter()} for s in stages}
    for f in parts:
        for s, v in f.items():
            out[s]["in"] += v["in"]
            out[s]["out"] += v["out"]
            out[s]["dropped"].update(v["dropped"])
    return out


def _rows(funnel: dict) -> list[dict]:
    return [{"stage": s, "in": v["in"], "out": v["out"], "dropped": dict(Counter(v["dropped"]).most_common())}
            for s, v in funnel.items()]


def merge(task_stats: list[dict], out: dict, errors: list[dict]) -> dict:
    docs = _funnel(DOC_TASK_STAGES, [t["funnel"] for t in task_stats])
    docs["dedup"] = {"in": out["in"], "out": out["out"], "dropped": Counter(out["dropped"])}
    imgs = _funnel(IMAGE_TASK_STAGES, [t["images"]["funnel"] for t in task_stats])
    n = imgs[IMAGE_TASK_STAGES[-1]]["out"]
    img_drops = Counter(out["image_dedup"])
    lost = n - out["images"] - sum(img_drops.values())  # images of documents this pass dropped
    if lost:
        img_drops["document_dropped"] = lost
    imgs["dedup"] = {"in": n, "out": out["images"], "dropped": img_drops}
    sums = {k: Counter() for k in ("languages", "blocks_dropped", "sources", "warc_matches", "timings")}
    pii, examples, fetch_n, fetch_s = None, [], 0, 0.0
    for t in task_stats:
        for k in ("languages", "blocks_dropped", "timings"):
            sums[k].update(t[k])
        for k in ("sources", "warc_matches"):
            sums[k].update(t["images"][k])
        errors = errors + t["errors"]
        examples += t["images"]["examples"][: max(0, 20 - len(examples))]
        fetch_n += t["images"]["fetch"]["requests"]
        fetch_s += t["images"]["fetch"]["seconds"]
        if t.get("pii"):
            pii = _add_pii(pii, t["pii"])
    return {"documents": out["out"], "images": out["images"],
            "funnel": {"documents": _rows(docs), "images": _rows(imgs)},
            "languages": dict(sums["languages"].most_common()), "blocks_dropped": dict(sums["blocks_dropped"]),
            "sources": dict(sums["sources"]), "warc_matches": dict(sums["warc_matches"]),
            "fetch": {"requests": fetch_n, "mean_s": round(fetch_s / fetch_n, 4) if fetch_n else None},
            "shards": out["shards"], "pii": pii, "error_count": len(errors), "errors": errors[:1000],
            "image_error_examples": examples, "timings_s": {k: round(v, 3) for k, v in sums["timings"].items()}}


def _add_pii(acc: dict | None, part: dict) -> dict:
    from crawlmix.pii.spans import PiiStats

    s = PiiStats.from_dict(part)
    if acc is not None:
        s.add(PiiStats.from_dict(acc))
    return s.to_dict()


def summary(stats: dict) -> str:
    lines = [f"crawlmix {stats['crawlmix_version']}  job={stats['job']}  config={stats['config_hash']}  "
             f"files={stats['inputs']}  wall={stats['wall_s']}s",
             f"output: {stats['output']}/<task>.parquet  removed/  {{00000..}}.tar  stats.json"]
    sk = stats.get("skipped")
    if sk:
        n = "uncounted" if sk["pages"] is None else sk["pages"]
        lines += ["", f"skipped ({'the image side' if sk['part'] == 'images' else 'the whole step'}): "
                      f"{sk['reason']}; {n} page(s) ({sk['pages_counted']})", f"  {sk['detail']}"]
    for what in ("documents", "images"):
        lines += ["", f"{what:<16}{'in':>8}{'out':>8}  dropped (top reasons)"]
        for f in stats["funnel"][what]:
            top = ", ".join(f"{r}={n}" for r, n in list(f["dropped"].items())[:4])
            lines.append(f"  {f['stage']:<14}{f['in']:>8}{f['out']:>8}  {top}")
    src = ", ".join(f"{k}={v}" for k, v in stats["sources"].items()) or "-"
    langs = ", ".join(f"{k}={v}" for k, v in list(stats["languages"].items())[:8]) or "-"
    lines += ["", f"documents {stats['documents']} with {stats['images']} images in {len(stats['shards'])} "
                  f"shard(s)  (image bytes from: {src}; languages: {langs})"]
    if stats.get("pii"):
        reps = stats["pii"].get("replacements", {})
        lines.append("pii replacements: " + (", ".join(f"{k}={v}" for k, v in reps.items()) or "none"))
    lines += bad_input_lines(stats)
    return "\n".join(lines)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="interleaved.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("--input", action="append", required=True, metavar="PATH_OR_GLOB",
                    help="WARC file, glob or fsspec URL; repeatable")
    ap.add_argument("--output", required=True, metavar="DIR", help="output folder (writes DIR/interleaved/)")
    ap.add_argument("--config", metavar="YAML", help="interleaved job config (default: jobs/interleaved.yaml)")
    ap.add_argument("--fetch", action="store_true",
                    help="download images no input WARC captured (network; sets images.fetch.enabled)")
    ap.add_argument("--kept-from", metavar="CRAWL_OUTPUT",
                    help="a crawl's output folder: only the pages its curated/ holds become documents")
    ap.add_argument("--pii", nargs="?", const="", metavar="YAML",
                    help="scrub PII from texts and URLs (a PII config YAML, or a job YAML's pii: section; "
                         "no value: the defaults)")
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
        job = load_interleaved_job(a.config, {"images": {"fetch": {"enabled": True}}} if a.fetch else None)
        pii = None
        if a.pii is not None:
            from crawlmix.pii.config import load_pii_config

            pii = load_pii_config(a.pii or None)
        inputs = resolve_inputs(a.input)
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ex = Executor.auto(max(1, a.workers), not a.no_progress, ray=True if a.ray else None)
    if ex.backend == "processes" and len(inputs) <= 1:  # one input file: no pool to start
        ex = Executor("inline", 1, ex.progress)
    try:
        stats = run(inputs, a.output, job, ex, kept_from=a.kept_from, pii=pii, overwrite=a.overwrite)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary(stats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
