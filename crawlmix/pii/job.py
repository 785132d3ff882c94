"""PII scrubbing of Parquet files: curated Parquet in, the same rows with `text` scrubbed and a `pii` column out.

    python pipelines/pii.py --input 'out/curated/*.parquet' --output out_pii/ [--config pii.yaml] [--workers 4 | --ray]
    crawl_task(path, out_dir, job_cfg, staged, pii_json)  # the crawl's task: rows scrubbed before they are written

The scrubbing itself (candidate scan, windows, presidio) is crawlmix/pii/scrub.py, URLs and the other
columns crawlmix/pii/fields.py. Files are tasks of
crawlmix.runtime.executor: in this process, a process pool (--workers) or Ray (--ray: a local Ray, or
the cluster at RAY_ADDRESS). Every file is written atomically, then marked done in
OUTPUT/_tasks/pii/ with the PII config digest and the size and modification time of the files: a rerun
scrubs only what has no marker, was scrubbed under another config, or has changed since (an input
rewritten, an output removed). The output folder's stats.json carries the run state (running / finished,
crawlmix/runtime/runstate.py).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path

from crawlmix import __version__
from crawlmix.pii.config import PiiConfig, load_pii_config
from crawlmix.pii.scrub import Scrubber, scrubber_for
from crawlmix.pii.spans import PII_TYPE, PiiStats
from crawlmix.runtime import storage
from crawlmix.runtime.atomic import exit_on_output_error
from crawlmix.runtime.completion import Completion
from crawlmix.runtime.config import ConfigError
from crawlmix.runtime.executor import Executor, TaskError
from crawlmix.runtime.runstate import check_inputs, failpoint

MARKERS = "_tasks/pii"  # the PII step's completion markers, under the folder it writes


def out_name(path: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(path.split("://")[-1]).name)[:120]


def out_names(paths: list[str]) -> list[str]:
    """Output file names: the input's name, with a hash of its path when two inputs share a name."""
    names = [out_name(p) for p in paths]
    dup = {n for n in names if names.count(n) > 1}
    return [f"{Path(n).stem}-{hashlib.sha1(p.encode()).hexdigest()[:8]}{Path(n).suffix}" if n in dup else n
            for n, p in zip(names, paths)]


def file_state(path: str) -> list | None:
    """What tells one version of a file from another, for the markers: [size, mtime in ns] (a URL:
    fsspec's size and ETag or modification time); None when there is no such file."""
    try:
        if storage.is_remote(path):
            fs, p = storage.filesystem(path)
            fs.invalidate_cache(p)  # the object as it is now, not as an earlier listing saw it
            info = fs.info(p)
            return [info.get("size"), str(info.get("ETag") or info.get("LastModified") or info.get("mtime") or "")]
        st = os.stat(storage.local(path))
        return [st.st_size, st.st_mtime_ns]
    except FileNotFoundError:
        return None


# --------------------------------------------------------------------------------------------------
# One file


def scrub_file(path: str, out_dir: str, cfg_json: str, batch_rows: int = 256, progress: bool = False,
               name: str | None = None, input_label: str | None = None) -> dict:
    """One curated Parquet file -> OUT/curated/<name> with scrubbed `text`, a `pii` column and the PII of
    its `url` column (crawlmix/pii/fields.py) replaced."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm import tqdm

    from crawlmix.io.paths import open_binary
    from crawlmix.runtime.atomic import ParquetSink

    cfg = PiiConfig.model_validate_json(cfg_json)
    scrubber = scrubber_for(cfg_json)
    st = PiiStats()
    dest = storage.join(out_dir, "curated", name or out_name(path))
    sink = None
    try:
        with open_binary(path) as fh:
            pf = pq.ParquetFile(fh)
            schema = pf.schema_arrow
            if "text" not in schema.names:
                raise ValueError(f"{path}: no `text` column")
            if "pii" in schema.names:
                schema = schema.remove(schema.get_field_index("pii"))
            meta = dict(schema.metadata or {})
            meta.update({b"pii_config_hash": cfg.digest().encode(), b"pii_seed": str(cfg.seed).encode(),
                         b"pii_crawlmix_version": __version__.encode(), b"pii_input": (input_label or path).encode()})
            schema = schema.append(pa.field("pii", PII_TYPE)).with_metadata(meta)
            sink = ParquetSink(dest, schema)  # the file appears on close(), complete
            with tqdm(total=pf.metadata.num_rows, desc=out_name(path)[:30], unit="doc", disable=not progress) as bar:
                for batch in pf.iter_batches(batch_size=batch_rows):
                    table = pa.Table.from_batches([batch])
                    if "pii" in table.column_names:
                        table = table.drop_columns(["pii"])
                    sink.add_table(_scrub_url_column(scrubber.scrub_table(table, st), cfg_json, st).cast(schema))
                    bar.update(table.num_rows)
        sink.close()  # published after the input is closed: in place, the input is the file it replaces
    except BaseException:
        if sink is not None:
            sink.abort()
        raise
    return {"input": path, "output": str(dest), **st.to_dict()}


def _scrub_url_column(table, cfg_json: str, st: PiiStats):
    """The `url` column's PII (e-mails, phone query values, ...: crawlmix/pii/fields.py), when there is one."""
    if "url" not in table.column_names:
        return table
    import pyarrow as pa

    from crawlmix.pii.fields import field_scrubber_for

    urls = field_scrubber_for(cfg_json).urls(table.column("url").to_pylist(), st)
    return table.set_column(table.column_names.index("url"), table.schema.field("url"), pa.array(urls, pa.string()))


# --------------------------------------------------------------------------------------------------
# The crawl's PII: inside each crawl task, before anything is written


def crawl_task(path: str, out_dir: str, cfg, staged: bool, pii_json: str, start: int = 0,
               end: int | None = None) -> dict:
    """One crawl task with PII scrubbing (crawlmix.text.curate.FileCurator writing through PiiSink): its
    curated rows (`text` + `pii` spans, `url`, `id`) and removed rows (`id`, `url`, `detail`) are scrubbed
    before they are written, and so are the error records of its stats, which go to the task's marker
    (OUTPUT/_tasks/<task>.json, keyed on the whole job config, PII section included). No raw row ever
    reaches the disk, under a final name or a temporary one. Returns the marker's record, whose ``pii``
    holds the task's counts: ``text`` (PiiStats of every document that reached the end of the text stages)
    and ``fields`` (replacements in the other columns and in the error records). ``start`` / ``end``: one
    byte range of a split file (crawlmix.io.paths.Span)."""
    from functools import partial

    from crawlmix.io.paths import Span
    from crawlmix.pii.fields import PiiSink, field_scrubber_for
    from crawlmix.text.curate import FileCurator

    done = Completion(out_dir, cfg.digest())
    name = Span(path, start, end).name
    rec = done.get(name)
    if rec is not None:
        return rec
    pii = PiiConfig.model_validate_json(pii_json)
    fc = FileCurator(path, out_dir, cfg, staged, partial(PiiSink, pii=pii), start, end)
    res = fc.run()
    side = PiiStats()
    res["errors"] = field_scrubber_for(pii_json).records(res["errors"], side)
    fields = side.replacements + fc.curated.field_stats.replacements + fc.removed.field_stats.replacements
    errors = side.errors + fc.curated.field_stats.errors + fc.removed.field_stats.errors
    res["pii"] = {"text": fc.curated.text_stats.to_dict(), "fields": dict(sorted(fields.items())),
                  "field_errors": dict(sorted(errors.items()))}
    return done.mark(name, res)


def crawl_pii_stats(results: list[dict], curated: list[str]) -> dict:
    """stats.json's ``pii`` for a crawl, from the tasks' markers and the final curated files alone, so it is
    the same whatever the run's history (tasks redone or not): ``replacements`` counts every replaced region
    in the outputs (the kept documents' text, from their `pii` spans, plus the url / id / detail columns
    and error records), ``docs`` / ``docs_with_pii`` are kept documents, ``scanned`` what the tasks scrubbed
    (every document before dedup: characters, the share presidio read, time)."""
    import pyarrow.parquet as pq

    from crawlmix.pii.fields import span_counts

    scanned, fields, errors = PiiStats(), Counter(), Counter()
    for r in results:
        p = r.get("pii") or {}
        if p:
            scanned.add(PiiStats.from_dict(p["text"]))
            fields.update(p["fields"])
            errors.update(p.get("field_errors", {}))
    docs = with_pii = 0
    types: Counter = Counter()
    for f in curated:
        with storage.open(f, "rb") as fh:  # a path or a URL
            col = pq.read_table(fh, columns=["pii"]).column("pii")
        n, t = span_counts(col)
        docs += len(col)
        with_pii += n
        types.update(t)
    reps = types + fields
    return {"docs": docs, "docs_with_pii": with_pii, "replacements": dict(sorted(reps.items())),
            "replacements_total": sum(reps.values()), "fields": dict(sorted(fields.items())),
            "errors": dict(sorted((scanned.errors + errors).items())), "scanned": scanned.to_dict()}


def merge_pii_stats(parts: list[dict]) -> dict:
    """Sum per-file PII stats (the crawl and pipelines/pii.py both report the total)."""
    tot = PiiStats()
    for p in parts:
        tot.add(PiiStats.from_dict(p))
    return tot.to_dict()


# --------------------------------------------------------------------------------------------------
# Many files: pipelines/pii.py


def scrub_task(path: str, out_dir: str, cfg_json: str, name: str, progress: bool = False) -> dict:
    """run()'s task: one input file -> OUT/curated/<name>, then its marker."""
    before = file_state(path)
    part = scrub_file(path, out_dir, cfg_json, progress=progress, name=name)
    Completion(out_dir, PiiConfig.model_validate_json(cfg_json).digest(), folder=MARKERS).mark(
        name, {"input": path, "input_file": before, "output_file": file_state(part["output"]), "stats": part})
    failpoint(f"pii:marked:{name}")  # tests: killed once this file is marked (inline: the driver)
    return part


def finished(done: Completion, path: str, name: str, dest: str | Path) -> dict | None:
    """The recorded stats of OUT/curated/<name> when it was scrubbed under this config from `path` as
    that input is now, and is itself still as it was written; else None (scrub it)."""
    rec = done.get(name)
    if rec is None or rec.get("input") != path or rec.get("output_file") != file_state(str(dest)):
        return None
    if storage.is_remote(path) or storage.is_remote(dest):  # the input is the output: the same URL
        in_place = path == str(dest)
    else:
        in_place = Path(storage.local(path)).resolve() == Path(storage.local(dest)).resolve()
    return rec.get("stats") if in_place or rec.get("input_file") == file_state(path) else None


def run(inputs: list[str], out_dir: str | Path, cfg: PiiConfig, workers: int = 1, progress: bool = True,
        ray: bool | None = None, overwrite: bool = False) -> dict:
    """Scrub every input into OUT/curated/; files finished before (markers) are not scrubbed again.
    ray: True runs the files on Ray, None on Ray only when one is running or RAY_ADDRESS is set."""
    import datetime as dt

    from crawlmix.runtime import runstate
    from crawlmix.runtime.atomic import write_json

    t0 = time.perf_counter()
    storage.makedirs(out_dir)
    cfg_json = cfg.model_dump_json()
    scrub = Scrubber(cfg)  # fail early (and say what NER does) before any work
    runstate.begin(out_dir, {"stage": "pii", "crawlmix_version": __version__, "config_hash": cfg.digest(),
                             "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
    done = Completion(out_dir, cfg.digest(), folder=MARKERS)
    if overwrite:
        done.clear()
    parts, todo = [], []
    for p, n in zip(inputs, out_names(inputs)):
        rec = finished(done, p, n, storage.join(out_dir, "curated", n))
        if rec is not None:
            parts.append(rec)
        else:
            todo.append((p, n))
    ex = Executor.auto(max(1, min(workers, len(todo))), progress, ray=ray)
    per_doc = progress and ex.backend == "inline"  # a bar per file only where files run one at a time
    if todo:
        parts += ex.map(scrub_task, [(p, str(out_dir), cfg_json, n, per_doc) for p, n in todo], desc="pii")
    stats = {"stage": "pii", "crawlmix_version": __version__, "config_hash": cfg.digest(), "seed": cfg.seed,
             "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "output": str(out_dir),
             "inputs": len(inputs), "workers": workers, "backend": ex.backend, "scrubbed": len(todo),
             "resumed": len(inputs) - len(todo), "wall_s": round(time.perf_counter() - t0, 2),
             **scrub.describe(), "pii": merge_pii_stats(parts), "files": sorted(parts, key=lambda x: x["input"])}
    write_json(storage.join(out_dir, "config.json"), {"pii": cfg.model_dump(mode="json")})
    return runstate.finish(out_dir, stats)


def _inside(path: str, folder: str) -> bool:
    """Is ``path`` inside ``folder`` (scrubbing a folder in place: its own state is this run's)?"""
    if storage.is_remote(path) or storage.is_remote(folder):
        return str(path).startswith(str(folder).rstrip("/") + "/")
    return Path(storage.local(folder)).resolve() in Path(storage.local(path)).resolve().parents


def summary(stats: dict) -> str:
    p = stats["pii"]
    lines = [f"crawlmix {stats['crawlmix_version']}  pii  config={stats['config_hash']}  seed={stats['seed']}  "
             f"files={stats['inputs']} (scrubbed {stats['scrubbed']}, done before {stats['resumed']})  "
             f"backend={stats['backend']}  wall={stats['wall_s']}s",
             f"output: {stats['output']}/curated/*.parquet  stats.json",
             f"docs {p['docs']}  scrubbed {p['docs_scrubbed']}  with PII {p['docs_with_pii']}  "
             f"(presidio read {100 * p['analyzed_frac']:.1f}% of {p['chars']} chars)",
             "replacements: " + (", ".join(f"{k}={v}" for k, v in p["replacements"].items()) or "none"),
             f"NER: {stats['ner']}"]
    if p["errors"]:
        lines.append("errors: " + ", ".join(f"{k}={v}" for k, v in p["errors"].items()))
    return "\n".join(lines)


@exit_on_output_error
def main(argv=None) -> int:
    import argparse

    from crawlmix.io.paths import resolve_inputs

    ap = argparse.ArgumentParser(prog="pii.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Writes OUTPUT/curated/<file>.parquet (scrubbed `text` + `pii` spans of the "
                                        "original text), OUTPUT/stats.json (replacements per entity type) and a "
                                        "marker per file in OUTPUT/_tasks/pii/ (a rerun skips finished files).")
    ap.add_argument("--input", action="append", required=True, metavar="PARQUET_GLOB",
                    help="curated Parquet file(s) with a `text` column; repeatable")
    ap.add_argument("--output", required=True, metavar="DIR", help="a folder or a URL (s3://bucket/prefix)")
    ap.add_argument("--config", metavar="YAML", help="pii config, or a job YAML with a `pii:` section")
    ap.add_argument("--workers", type=int, default=1,
                    help="files at a time, one presidio engine each (default 1); with --ray, the CPUs of a local Ray")
    ap.add_argument("--ray", action="store_true",
                    help="run the files as Ray tasks: on the cluster at RAY_ADDRESS, else on a local Ray "
                         "(a set RAY_ADDRESS means Ray even without this flag)")
    ap.add_argument("--overwrite", action="store_true", help="scrub every file again (ignore completion markers)")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        cfg = load_pii_config(a.config)
        inputs = resolve_inputs(a.input)
        check_inputs([p for p in inputs if not _inside(p, a.output)], "pii input")
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        stats = run(inputs, a.output, cfg, max(1, a.workers), progress=not a.no_progress,
                    ray=True if a.ray else None, overwrite=a.overwrite)
    except TaskError as e:  # every other file was scrubbed and marked: a rerun does only the failed ones
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(summary(stats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
