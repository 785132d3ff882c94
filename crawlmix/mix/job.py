"""crawlmix mixer: mixture YAML + curated sources -> sharded WebDataset mixes at exact ratios.

    python pipelines/mix.py --mixture mixtures/smolvlm-video.yaml --output output/mix
    python pipelines/mix.py --mixture mixtures/text-pretrain.yaml --output out/ --dry-run
    python pipelines/mix.py --mixture mixtures/smolvlm-vision.yaml --output out/ --ray --workers 8
    ray job submit --working-dir . -- python pipelines/mix.py --mixture mixtures/X.yaml --output DIR --ray

Writes OUTPUT/<stage>/shard-000000.tar ... (one sample = members sharing a dot-free key; in the default
uniform layout every sample has .txt, .json with source, modality, id, url, language and provenance, and,
in stages with images, .images.tar: see crawlmix/mix/layout.py), optionally each shard's Parquet form
(shard-000000.parquet, crawlmix/mix/parquet_out.py), a shard-NNNNNN.stats.json per shard
(samples, bytes, tokens, per-source / per-modality counts, md5), a wids shardindex.json and the
resolved plan mix.lock.json per stage. Every shard holds each source's share of its samples to within
one sample; the same mixture + inputs give byte-identical shards. Every source is read, checked and
planned before the first shard is written.

--mixture, --root, --output and source paths may be URLs (s3://, gs://): remote sources are fetched once per
node into local scratch (crawlmix/mix/fetch.py), every output is uploaded whole, its marker last
(docs/mix.md, "On an object store").

A shard is finished when its completion marker (OUTPUT/<stage>/_tasks/shard-NNNNNN.json, written after
the tar and its stats) holds the stage's hash and the shard's plan hash, and its tar has the recorded size;
a rerun writes only the other shards, --overwrite clears the markers.

This module runs the job (the entry point): shards are written through the one executor
(crawlmix/runtime/executor.py): threads side by side by default (--threads), forked processes with
--workers, Ray tasks with --ray. Reading and indexing the sources is in crawlmix/mix/sources.py and
readers.py (tar headers in tar_index.py, token counts in tokens.py, the output .json in members.py),
planning in plan.py, writing one shard in write.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from crawlmix import __version__
from crawlmix.mix.config import MixtureConfig, load_mixture
from crawlmix.mix.fetch import location
from crawlmix.mix.plan import StagePlan, lock_record, prepare, sample_common
from crawlmix.mix.sources import MixError, Source
from crawlmix.mix.write import parquet_name, stats_name, write_shard
from crawlmix.runtime import storage
from crawlmix.runtime.atomic import TMP_SUFFIX, exit_on_output_error, write_json
from crawlmix.runtime.completion import Completion
from crawlmix.runtime.config import ConfigError
from crawlmix.runtime.executor import Executor, TaskError
from crawlmix.runtime.resources import project_dir, resolve_config
from crawlmix.runtime.runstate import failpoint

# Shards written side by side in one process: filling a chunk holds the GIL, but md5 and the file write do
# not, so a second thread keeps the second core busy (--workers forks processes instead).
WRITE_THREADS = 2


# ---------------------------------------------------------------------------------------------- writing a stage
def shard_executor(todo: int, use_ray: bool, workers: int, threads: int, progress: bool) -> Executor:
    """The executor for `todo` shards: Ray tasks, forked processes (--workers), threads side by side
    (--threads), or this thread for one shard."""
    if use_ray:
        return Executor("ray", workers, progress)
    if workers > 1 and todo > 1:  # forked workers see the driver's sources in memory; nothing is pickled
        start = "fork" if hasattr(os, "fork") else "spawn"
        return Executor("processes", min(workers, todo), progress, max_in_flight=2 * workers, start_method=start)
    if threads > 1 and todo > 1:
        return Executor("threads", threads, progress, max_in_flight=2 * threads)
    return Executor("inline", 1, progress)


def write_task(stage_dir: str, name: str, sp, common: dict, digest: str, formats: list[str],
               sources: list[Source], options: dict | None = None) -> dict:
    """One shard (an executor task; the sources and the mixture's storage options are the executor's shared
    values, sent once per worker: a Ray task on another node reaches the output URL with them)."""
    if options:
        storage.configure(options)
    return write_shard(stage_dir, name, sp, sources, common, digest, formats)


def marker_name(shard: str) -> str:
    return shard[:-4]  # the pattern ends in .tar


def stage_files(stage_dir: Path | str) -> dict[str, int]:
    """{name: size} of the files directly in a stage folder (a local folder, or a URL: one listing, the sizes
    come with it; nothing when it does not exist)."""
    if not storage.is_remote(stage_dir):
        return {storage.name(p): os.path.getsize(p) for p in storage.ls(stage_dir)}
    fs, p = storage.filesystem(stage_dir)
    fs.invalidate_cache(p)
    try:
        entries = fs.ls(p, detail=True)
    except FileNotFoundError:
        return {}
    return {e["name"].rstrip("/").rsplit("/", 1)[-1]: int(e.get("size") or 0) for e in entries
            if e.get("type") == "file"}


def finished_shard(done: Completion, stage_dir: Path | str, name: str, digest: str, formats: list[str],
                   present: dict[str, int] | None = None) -> dict | None:
    """The stats of a shard finished under this plan in every requested format, else None: its marker holds
    the stage hash and the shard's plan hash, and its tar / Parquet file and stats file are there (at their
    recorded sizes; ``present``: the folder's stage_files(), listed once for every shard)."""
    rec = done.get(marker_name(name))
    if rec is None or rec.get("plan") != digest or not set(formats) <= set(rec.get("formats") or ["webdataset"]):
        return None
    present = stage_files(stage_dir) if present is None else present
    files = [(name, rec.get("bytes"))] if "webdataset" in formats else []
    if "parquet" in formats:
        files.append((parquet_name(name), (rec.get("parquet") or {}).get("bytes")))
    if not (all(present.get(f) == size for f, size in files) and stats_name(name) in present):
        return None
    rec.pop("config_hash", None)
    return rec


def write_stage(mix: MixtureConfig, plan: StagePlan, lock: dict, stage_dir: Path | str, common: dict,
                overwrite: bool, progress: bool, use_ray: bool, workers: int, threads: int) -> dict:
    """Write every unfinished shard of a planned stage, then its shard index; returns the stage summary.
    ``stage_dir`` is a local folder or a URL (every file is then uploaded whole, its marker last)."""
    ts = time.perf_counter()
    done = Completion(stage_dir, plan.stage_hash)
    if overwrite:
        done.clear()
        for f in stage_files(stage_dir):
            if f.endswith((".tar", ".parquet", ".stats.json", TMP_SUFFIX)) or f in ("mix.lock.json", "shardindex.json"):
                storage.remove(storage.join(stage_dir, f))
    storage.makedirs(stage_dir)
    present = stage_files(stage_dir)
    for f in [f for f in present if f.endswith(TMP_SUFFIX)]:  # left by an interrupted run (local folders only)
        storage.remove(storage.join(stage_dir, f))
        del present[f]
    write_json(storage.join(stage_dir, "mix.lock.json"), lock)
    names = [plan.stage.shards.pattern.format(index=i) for i in range(plan.shards)]
    stats_by_index: dict[int, dict] = {}
    for i, name in enumerate(names):
        st = finished_shard(done, stage_dir, name, plan.shard_digests[i], mix.output.formats, present)
        if st is not None:
            stats_by_index[i] = st
    skipped = len(stats_by_index)
    todo = plan.shards - skipped
    failed = []
    if todo:
        ex = shard_executor(todo, use_ray, workers, threads, progress)
        tasks = ((str(stage_dir), names[sp.index], sp, common, plan.shard_digests[sp.index], mix.output.formats)
                 for sp in plan.planner(mix.seed).shards(plan.samples) if sp.index not in stats_by_index)
        for o in ex.imap(write_task, tasks, desc=f"mix {plan.stage.name}", total=todo,
                         shared=(plan.sources, mix.storage_options)):
            if not o.ok:
                failed.append(o)
                continue
            done.mark(marker_name(o.args[1]), o.result)  # last: after the tar and its stats are published
            stats_by_index[o.args[2].index] = o.result
            failpoint(f"driver:mix:{marker_name(o.args[1])}")  # tests: the driver killed once this shard is marked
    if failed:
        first = failed[0]
        raise TaskError(f"{len(failed)} shard(s) of stage {plan.stage.name!r} failed (a rerun writes only "
                        f"those); first: {first.args[1]}: {first.message()}") from first.error
    if "webdataset" in mix.output.formats:
        shardlist = [{"url": s["shard"], "nsamples": s["samples"], "filesize": s["bytes"], "md5sum": s["md5"]}
                     for _, s in sorted(stats_by_index.items())]
        write_json(storage.join(stage_dir, "shardindex.json"), {
            "__kind__": "wids-shard-index-v1", "wids_version": 1, "name": f"{mix.name}/{plan.stage.name}",
            "shardlist": shardlist})
    realised: dict[str, int] = {}
    for s in stats_by_index.values():
        for k, v in s["sources"].items():
            realised[k] = realised.get(k, 0) + v["samples"]
    return {"lock": lock, "written": todo, "skipped": skipped, "realised": realised,
            "wall_s": round(time.perf_counter() - ts, 3),
            "bytes": sum((s["bytes"] or 0) + (s.get("parquet") or {}).get("bytes", 0) for s in stats_by_index.values()),
            "out": str(stage_dir)}


# ---------------------------------------------------------------------------------------------- the job
def run(mix: MixtureConfig, out: Path | str, root: Path | str = Path("."), stages=None, overwrite=False,
        progress=True, use_ray=False, workers=1, dry_run=False, threads: int = WRITE_THREADS) -> list[dict]:
    """Build the mixture's stages into ``out``; ``out`` and ``root`` (where relative source paths resolve)
    are local folders or URLs (``s3://bucket/prefix``), reached with the mixture's storage_options."""
    t0 = time.perf_counter()
    storage.configure(mix.storage_options)  # None: the environment's (CRAWLMIX_STORAGE_OPTIONS, AWS_*)
    out, root = location(out), location(root)
    plans, tokens = prepare(mix, root, stages, progress)
    common = sample_common(mix)
    staged = []
    for plan in plans:  # every stage is checked before any is written
        lock = lock_record(mix, plan, dict(common, tokenizer=tokens.spec))
        stage_dir = storage.join(out, plan.stage.name) if isinstance(out, str) else out / plan.stage.name
        old = storage.join(stage_dir, "mix.lock.json")
        if not dry_run and not overwrite and storage.exists(old):
            prev = json.loads(storage.read_bytes(old))
            if prev.get("stage_hash") != plan.stage_hash or prev.get("shard_plans") != plan.shard_digests:
                raise MixError(f"{stage_dir} holds a mix of another mixture or other inputs (stage hash "
                               f"{prev.get('stage_hash')} != {plan.stage_hash}); use a new --output or --overwrite")
        staged.append((plan, lock, stage_dir))
    summaries = []
    for plan, lock, stage_dir in staged:
        if dry_run:
            summaries.append({"lock": lock, "written": 0, "skipped": 0, "wall_s": 0.0, "dry_run": True})
        else:
            summaries.append(write_stage(mix, plan, lock, stage_dir, common, overwrite, progress, use_ray,
                                         workers, threads))
    for s in summaries:
        s["total_wall_s"] = round(time.perf_counter() - t0, 3)
    return summaries


def summary(res: dict) -> str:
    lk = res["lock"]
    lines = [f"stage {lk['stage']} ({lk['mixture']}, mixture {lk['mixture_hash']}, seed {lk['seed']}): "
             f"{lk['samples']:,} samples, {lk['tokens']:,} tokens ({lk['tokenizer']}), "
             f"{lk['bytes'] / 1e6:.2f} MB in {lk['shards']} shard(s) {lk['shard_pattern']}"]
    b = lk["budget"]
    if b.get("tokens"):
        lines.append(f"token budget {b['tokens']:,}: realised {lk['tokens']:,}")
    if res.get("dry_run"):
        lines.append("dry run: nothing written")
    else:
        mbps = res["bytes"] / 1e6 / res["wall_s"] if res["wall_s"] else 0.0
        lines.append(f"wrote {res['written']} shard(s), kept {res['skipped']} finished, {res['wall_s']}s "
                     f"({mbps:.1f} MB/s) -> {res['out']}/")
    lines.append(f"layout {lk['layout']}: every sample has {' '.join('.' + m for m in lk['members'])}"
                 if lk["layout"] == "uniform" else f"layout source: members {' '.join('.' + m for m in lk['members'])}")
    lines.append(f"formats: {', '.join(lk['formats'])}")
    realised = res.get("realised") or {k: v["samples"] for k, v in lk["sources"].items()}
    n = lk["samples"]
    lines += ["", f"{'source':<18}{'modality':<13}{'target':>9}{'realised':>10}{'samples':>9}{'epochs':>8}"
                  f"{'tokens':>11}"]
    for k, v in lk["sources"].items():
        lines.append(f"{k:<18}{v['modality']:<13}{v['target_share'] * 100:>8.2f}%{realised.get(k, 0) / n * 100:>9.2f}%"
                     f"{realised.get(k, 0):>9}{v['epochs_used']:>8.2f}{v['tokens']:>11,}")
    lines += ["", f"{'modality':<31}{'target':>9}{'realised':>10}{'samples':>9}"]
    for k, v in lk["modalities"].items():
        r = sum(realised.get(s, 0) for s, sv in lk["sources"].items() if sv["modality"] == k)
        lines.append(f"{k:<31}{v['target_share'] * 100:>8.2f}%{r / n * 100:>9.2f}%{r:>9}")
    lines.append(f"\nworst shard deviation from the weights: {lk['max_shard_deviation']:.3f} samples (limit 1)")
    for k, v in lk["sources"].items():
        if v.get("bad_rows"):
            lines.append(f"bad input: source {k!r}: {v['bad_rows']} row(s) skipped, e.g. {v['bad_examples'][0]}")
    return "\n".join(lines)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="mix.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="See docs/mix.md for the mixture YAML reference.")
    ap.add_argument("--mixture", required=True, metavar="YAML",
                    help="mixture file or URL (e.g. mixtures/smolvlm-video.yaml)")
    ap.add_argument("--output", metavar="DIR", help="output folder or URL (s3://bucket/prefix, gs://...; default: "
                                                    "output/mix/<mixture name>)")
    ap.add_argument("--root", metavar="DIR", default=".",
                    help="relative source paths resolve against this folder or URL (s3://bucket/data; default: the "
                         "current directory)")
    ap.add_argument("--stage", action="append", metavar="NAME", help="build only this stage (repeatable)")
    ap.add_argument("--dry-run", action="store_true", help="validate, read and plan; print the plan; write nothing")
    ap.add_argument("--overwrite", action="store_true",
                    help="delete the stage's shards and completion markers and rebuild them")
    ap.add_argument("--ray", action="store_true", help="write shards as Ray tasks (a local Ray, or the cluster at RAY_ADDRESS)")
    ap.add_argument("--workers", type=int, default=None,
                    help="shard writers: forked processes (default 1), or Ray workers with --ray (default: all "
                         f"cores, {os.cpu_count()} here); the output does not depend on it")
    ap.add_argument("--threads", type=int, default=WRITE_THREADS, metavar="N",
                    help=f"without --workers / --ray: shards written side by side by threads (default "
                         f"{WRITE_THREADS}; md5 and file writes run outside the GIL); the output does not depend on it")
    ap.add_argument("--parquet", action="store_true",
                    help="also write each shard's Parquet form (shard-NNNNNN.parquet; as output.formats: "
                         "[webdataset, parquet] in the mixture)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    return ap.parse_args(argv)


@exit_on_output_error
def main(argv=None) -> int:
    a = parse_args(argv)
    try:
        mix = load_mixture(a.mixture if storage.is_url(a.mixture) else resolve_config(a.mixture))
        if a.parquet and "parquet" not in mix.output.formats:
            mix.output.formats = [*mix.output.formats, "parquet"]
        out = a.output or project_dir() / "output" / "mix" / mix.name
        res = run(mix, out, a.root, stages=a.stage, overwrite=a.overwrite, progress=not a.no_progress,
                  use_ray=a.ray, dry_run=a.dry_run, threads=max(1, a.threads),
                  workers=max(1, a.workers or ((os.cpu_count() or 1) if a.ray else 1)))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except TaskError as e:  # finished shards are kept and marked; a rerun writes only the failed ones
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"crawlmix {__version__} mix {mix.name}  mixture={mix.digest()}  seed={mix.seed}")
    for r in res:
        print()
        print(summary(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
