"""PII scrubbing of Parquet files: curated Parquet in, the same rows with `text` scrubbed and a `pii` column out.

    python pipelines/pii.py --input 'out/curated/*.parquet' --output out_pii/ [--config pii.yaml] [--workers 4 | --ray]
    scrub_crawl_task(curated, [removed, ...], cfg_json)   # the crawl's PII step: one task's files, in place

The scrubbing itself (candidate scan, windows, presidio) is crawlmix/pii/scrub.py. Files are tasks of
crawlmix.runtime.executor: in this process, a process pool (--workers) or Ray (--ray: a local Ray, or
the cluster at RAY_ADDRESS). Every file is written atomically, then marked done in
OUTPUT/_tasks/pii/ with the PII config digest and the size and modification time of the files: a rerun
scrubs only what has no marker, was scrubbed under another config, or has changed since (an input
rewritten, an output removed, a crawl's curated file that dedup wrote again).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
import time
from pathlib import Path

from crawlmix import __version__
from crawlmix.io.paths import is_url
from crawlmix.pii.config import PiiConfig, load_pii_config
from crawlmix.pii.scrub import Scrubber, scrubber_for
from crawlmix.pii.spans import PII_TYPE, PiiStats
from crawlmix.runtime.completion import Completion
from crawlmix.runtime.config import ConfigError
from crawlmix.runtime.executor import Executor, TaskError

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
        if is_url(path):
            import fsspec

            fs, p = fsspec.core.url_to_fs(path)
            info = fs.info(p)
            return [info.get("size"), str(info.get("ETag") or info.get("LastModified") or info.get("mtime") or "")]
        st = os.stat(path)
        return [st.st_size, st.st_mtime_ns]
    except FileNotFoundError:
        return None


# --------------------------------------------------------------------------------------------------
# One file


def scrub_file(path: str, out_dir: str, cfg_json: str, batch_rows: int = 256, progress: bool = False,
               name: str | None = None, input_label: str | None = None) -> dict:
    """One curated Parquet file -> OUT/curated/<name> with scrubbed `text` and a `pii` column."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm import tqdm

    from crawlmix.io.paths import open_binary
    from crawlmix.runtime.atomic import ParquetSink

    cfg = PiiConfig.model_validate_json(cfg_json)
    scrubber = scrubber_for(cfg_json)
    st = PiiStats()
    dest = Path(out_dir) / "curated" / (name or out_name(path))
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
                    sink.add_table(scrubber.scrub_table(table, st).cast(schema))
                    bar.update(table.num_rows)
        sink.close()  # published after the input is closed: in place, the input is the file it replaces
    except BaseException:
        if sink is not None:
            sink.abort()
        raise
    return {"input": path, "output": str(dest), **st.to_dict()}


def scrub_removed_file(path: str, cfg_json: str) -> dict:
    """A removed-records file in place: its url and detail columns scrubbed, this config's hash added."""
    import pyarrow.parquet as pq

    from crawlmix.runtime.atomic import write_table

    digest = PiiConfig.model_validate_json(cfg_json).digest()
    meta = pq.read_schema(path).metadata or {}
    st = PiiStats()
    table = scrubber_for(cfg_json).scrub_table(pq.read_table(path), st, text_column=None, also=["url", "detail"])
    write_table(path, table.replace_schema_metadata({**meta, b"pii_config_hash": digest.encode()}))
    return {"input": path, **st.to_dict()}


# --------------------------------------------------------------------------------------------------
# The crawl's PII step


def scrub_crawl_task(curated: str, removed: list[str], cfg_json: str) -> dict | None:
    """The PII step of the crawl for one task: its curated file in place (text + `pii` column) and the
    url/detail columns of its removed files, each marked done in <crawl output>/_tasks/pii/ once written.

    A file whose marker describes it as it is now is left alone (its recorded stats count again). A
    rewritten file (dedup writes curated/ again on every run) no longer matches its marker and is
    scrubbed again. Scrubbing in place must never run twice on one file (the `pii` spans would then
    describe scrubbed text, fakes would be faked again), so a file without a current marker that
    already carries this config's `pii_config_hash` (published, then a crash before its marker) is
    only marked. Returns the summed stats of the task's files, or None when there were none."""
    import pyarrow.parquet as pq

    digest = PiiConfig.model_validate_json(cfg_json).digest()
    root = Path(curated).parent.parent  # the crawl's output folder
    done = Completion(root, digest, folder=MARKERS)
    parts = []
    for path in [curated, *removed]:
        name = f"{Path(path).parent.name}/{Path(path).name}"  # curated/<task>.parquet, removed/<task>...parquet
        rec = done.get(name)
        if rec is not None and rec.get("file") == file_state(path):
            parts.append(rec.get("stats"))
            continue
        if (pq.read_schema(path).metadata or {}).get(b"pii_config_hash") == digest.encode():
            done.mark(name, {"file": file_state(path), "stats": None})  # scrubbed already: never twice
            continue
        if path == curated:  # in place, labelled without the run's own path
            part = scrub_file(path, str(root), cfg_json, name=Path(path).name, input_label=name)
        else:
            part = scrub_removed_file(path, cfg_json)
        done.mark(name, {"file": file_state(path), "stats": part})
        parts.append(part)
    parts = [p for p in parts if p]
    return merge_pii_stats(parts) if parts else None


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
    return part


def finished(done: Completion, path: str, name: str, dest: Path) -> dict | None:
    """The recorded stats of OUT/curated/<name> when it was scrubbed under this config from `path` as
    that input is now, and is itself still as it was written; else None (scrub it)."""
    rec = done.get(name)
    if rec is None or rec.get("input") != path or rec.get("output_file") != file_state(str(dest)):
        return None
    in_place = not is_url(path) and Path(path).resolve() == dest.resolve()  # the input is the output
    return rec.get("stats") if in_place or rec.get("input_file") == file_state(path) else None


def run(inputs: list[str], out_dir: Path, cfg: PiiConfig, workers: int = 1, progress: bool = True,
        ray: bool | None = None, overwrite: bool = False) -> dict:
    """Scrub every input into OUT/curated/; files finished before (markers) are not scrubbed again.
    ray: True runs the files on Ray, None on Ray only when one is running or RAY_ADDRESS is set."""
    import datetime as dt

    from crawlmix.runtime.atomic import write_json

    t0 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg_json = cfg.model_dump_json()
    scrub = Scrubber(cfg)  # fail early (and say what NER does) before any work
    done = Completion(out_dir, cfg.digest(), folder=MARKERS)
    if overwrite:
        done.clear()
    parts, todo = [], []
    for p, n in zip(inputs, out_names(inputs)):
        rec = finished(done, p, n, out_dir / "curated" / n)
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
    write_json(out_dir / "stats.json", stats)
    write_json(out_dir / "config.json", {"pii": cfg.model_dump(mode="json")})
    return stats


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
    ap.add_argument("--output", required=True, metavar="DIR")
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
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        stats = run(inputs, Path(a.output), cfg, max(1, a.workers), progress=not a.no_progress,
                    ray=True if a.ray else None, overwrite=a.overwrite)
    except TaskError as e:  # every other file was scrubbed and marked: a rerun does only the failed ones
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(summary(stats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
