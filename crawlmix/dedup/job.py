"""Exact and MinHash-LSH near-duplicate removal over curated Parquet, in stages that scale out.

    python pipelines/dedup.py --input OUTPUT_DIR_OR_PARQUET_GLOB [--input ...] --output DIR [--config jobs/X.yaml]
    python pipelines/dedup.py --input 's3://bucket/run/curated/*.parquet' --output s3://bucket/dedup1

Inputs and output may be URLs (crawlmix.runtime.storage): every intermediate (_dedup/sig, _dedup/edges)
lives under the output, so tasks on any node read what tasks on other nodes wrote.

Stages (1, 2 and 4 are tasks on the executor: inline, a process pool or Ray; 3 runs in the driver, which
holds only what it needs):
1. signatures  one task per input file (crawlmix.dedup.signatures): normalise (lowercase, numbers -> 0,
               punctuation and whitespace folded, accents stripped, as datatrove's simplify_text), shingle
               word n-grams (CJK, Thai, ... scripts by character), MinHash seeded from datasketch's
               permutations, all numpy over the text's codepoints. Written to _dedup/sig/<file>.parquet: one
               column per LSH band hash, the full signature, a content hash (of the normalised token
               sequence) and a URL hash. A marker in _dedup/sig/_tasks/ (input digest, config, code) lets a
               rerun skip the files whose signatures it would write again unchanged; a crawl's tasks sign
               their own staged rows as they finish (sign_staged), so after a crawl this step only
               finds markers.
2. candidates  per band (crawlmix.dedup.clusters): that band's column from every signature file, sorted;
               an edge from each bucket member to the bucket's first member. Exact content / URL hashes are
               two more "bands". A task takes several bands while they fit its memory bound (~40 bytes per
               document and band) and the workers stay busy; at scale, one band per task.
3. clusters    MinHash edges are verified on the full signatures (estimated Jaccard >= threshold), then
               connected components over the documents that have a candidate edge only.
4. apply       one task per input file writes the survivors to curated/ and the rest to removed/
               (stage=dedup, reason=exact|minhash, duplicate_of=<kept id>).

Kept document of a cluster: earliest crawl date, then longest text, then first in input order.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa

from crawlmix import __version__
from crawlmix.dedup import signatures
from crawlmix.dedup.clusters import candidate_task, cluster, column_groups
from crawlmix.dedup.config import DedupConfig
from crawlmix.dedup.files import read_table, stem
from crawlmix.dedup.signatures import signature_task
from crawlmix.runtime import runstate, storage
from crawlmix.runtime.atomic import exit_on_output_error, write_table
from crawlmix.runtime.config import ConfigError, read_yaml_mapping, validate
from crawlmix.runtime.executor import Executor, TaskError
from crawlmix.runtime.runstate import check_inputs
from crawlmix.runtime.resources import resolve_config, shipped
from crawlmix.text.schema import REMOVED_SCHEMA


# ---------------------------------------------------------------- stage 4: apply

def apply_task(src: str, dst: str, removed_path: str, drop_rows: list[int], keep_ids: list[str],
               reasons: list[str]) -> dict:
    """src's survivors to dst; its drop_rows to removed_path, each with its keeper's id and the reason."""
    t = read_table(src)
    mask = np.ones(t.num_rows, dtype=bool)
    mask[drop_rows] = False
    kept = t.filter(pa.array(mask))
    write_table(dst, kept, compression="zstd")
    gone = t.take(pa.array(drop_rows, type=pa.int64())).to_pylist() if drop_rows else []
    rows = [{"id": r["id"], "url": r["url"], "stage": "dedup", "reason": why, "detail": f"duplicate of {k}",
             "source": r.get("source", src), "offset": r.get("offset", -1), "language": r.get("language", ""),
             "language_score": r.get("language_score"), "cc_languages": r.get("cc_languages", ""),
             "duplicate_of": k} for r, k, why in zip(gone, keep_ids, reasons)]
    schema = REMOVED_SCHEMA  # rows from PII-scrubbed input are scrubbed: say so, as the task's removed/ rows do
    if b"pii_config_hash" in (t.schema.metadata or {}):
        schema = schema.with_metadata({b"pii_config_hash": t.schema.metadata[b"pii_config_hash"]})
    write_table(removed_path, pa.Table.from_pylist(rows, schema=schema), compression="zstd")
    return {"src": src, "in": t.num_rows, "out": kept.num_rows}


# ---------------------------------------------------------------- driver

def signature_args(src: str, out_dir: str | Path, name: str, cfg_json: str) -> tuple:
    """signature_task's arguments for the input ``src`` named ``name`` in a dedup writing to ``out_dir``:
    its signature file and marker folder. The crawl's tasks sign their staged rows with the same arguments
    as they finish, so dedup's own signature step then only finds their markers."""
    sig = storage.join(out_dir, "_dedup", "sig")
    return src, storage.join(sig, f"{name}.parquet"), cfg_json, sig


def sign_staged(src: str, out_dir: str, name: str, cfg_json: str) -> None:
    """What a crawl task calls as it finishes (crawlmix.crawl.job.crawl_task): the signature of the rows it
    staged, computed in parallel with the other crawl tasks and without a later round reading them back;
    run_dedup's signature step then finds the marker. Best effort: should it fail, that step computes it
    again and reports any error (the crawl task's own outputs and marker are written and stay valid)."""
    try:
        signatures.signature_task(*signature_args(src, out_dir, name, cfg_json))
    except Exception:  # noqa: BLE001 - see the docstring
        pass


def run_dedup(inputs: list[str], out_dir: str | Path, cfg: DedupConfig, ex: Executor | None = None,
              names: list[str] | None = None) -> dict:
    """Deduplicate curated Parquet files together; writes out_dir/curated, out_dir/removed, returns stats.
    ``out_dir`` and ``inputs`` may be URLs (s3://...)."""
    ex = ex or Executor()
    work = storage.join(out_dir, "_dedup")
    for d in ("sig", "edges"):
        storage.makedirs(storage.join(work, d))  # (a URL: nothing to make)
    names = names or [stem(p) for p in inputs]
    if len(set(names)) != len(names):  # one signature file, marker and output per name
        dup = next(n for n, k in Counter(names).items() if k > 1)
        raise ValueError(f"dedup: two inputs would share the name {dup!r}; pass distinct names")
    cfg_json = cfg.model_dump_json()
    todo = [signature_args(src, out_dir, n, cfg_json) for src, n in zip(inputs, names)]
    sig_paths = [t[1] for t in todo]
    res = ex.map(signature_task, todo, desc="dedup: signatures")  # (a file signed already: only its marker read)
    runstate.failpoint("driver:dedup:signatures")  # tests: the driver killed mid-dedup (signatures written, no edges)
    counts = [r["rows"] for r in res]
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int).tolist() if counts else []
    # (bands, rows) as the tasks computed them: the driver need not import datasketch (0.3 s) for them
    bands, rows = res[0]["lsh"] if res else cfg.lsh_params()
    columns = ([f"band_{j}" for j in range(bands)] if cfg.minhash else []) + (["exact", "url"] if cfg.exact else [])
    edge_files = [(c, storage.join(work, "edges", f"{c}.npy")) for c in columns]
    groups = column_groups(columns, sum(counts), ex.workers)
    ex.map(candidate_task, [(sig_paths, offsets, g, [storage.join(work, "edges", f"{c}.npy") for c in g])
                            for g in groups], desc="dedup: candidates")
    bounds = offsets + [sum(counts)]
    cl = cluster(sig_paths, bounds, edge_files, cfg, bands * rows)
    removed = cl["removed"]
    id_of = dict(zip(cl.get("nodes", np.zeros(0)).tolist(), cl.get("ids", [])))
    tasks = []
    per_file = {}
    for f, (src, name) in enumerate(zip(inputs, names)):
        drop = sorted(g for g in removed if bounds[f] <= g < bounds[f + 1])
        tasks.append((src, storage.join(out_dir, "curated", f"{name}.parquet"),
                      storage.join(out_dir, "removed", f"{name}.dedup.parquet"),
                      [g - bounds[f] for g in drop], [id_of[removed[g][0]] for g in drop], [removed[g][1] for g in drop]))
        per_file[name] = {"docs": counts[f], "duplicates": len(drop),
                          "duplicate_rate": round(len(drop) / counts[f], 4) if counts[f] else 0.0}
    ex.map(apply_task, tasks, desc="dedup: apply")
    reasons = Counter(why for _, why in removed.values())
    n = sum(counts)
    return {"in": n, "out": n - len(removed), "dropped": dict(sorted(reasons.items())),
            "clusters": cl["clusters"], "cluster_sizes": {str(k): v for k, v in cl["sizes"].items()},
            "candidate_pairs": cl["candidates"], "verified_pairs": cl["verified"], "bands": bands, "rows": rows,
            "threshold": cfg.threshold, "n_grams": cfg.n_grams, "per_file": per_file}


def _expand(inputs: list[str]) -> list[str]:
    files = []
    for p in inputs:  # a folder, a glob or a file; each a path or a URL
        if not any(c in p for c in "*?[") and storage.isdir(p):
            sub = storage.join(p, "curated")
            files += storage.iglob(storage.join(sub if storage.isdir(sub) else p, "*.parquet"))
        else:
            files += storage.iglob(p)
    if not files:
        raise FileNotFoundError(f"no Parquet files in {inputs}")
    check_inputs(files, "dedup input")  # only finished runs' outputs (crawlmix.runtime.runstate)
    return list(dict.fromkeys(files))


def load_config(path: str | Path) -> DedupConfig:
    """The ``dedup:`` section of a job YAML (the defaults where it has none), as the crawl reads it: the
    job's top-level ``seed`` is not the dedup seed. A YAML of dedup keys alone is read as the section."""
    raw = read_yaml_mapping(path, "job")
    if "dedup" in raw or any(isinstance(v, dict) for v in raw.values()):  # a job: its sections are mappings
        return validate(DedupConfig, raw.get("dedup") or {}, str(path), "dedup config", prefix="dedup.")
    return validate(DedupConfig, raw, str(path), "dedup config")


@exit_on_output_error
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="dedup.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("--input", action="append", required=True, metavar="DIR_OR_PARQUET_GLOB",
                    help="a crawl output folder (its curated/*.parquet) or a Parquet glob; repeat to dedup runs together")
    ap.add_argument("--output", required=True, metavar="DIR", help="a folder or a URL (s3://bucket/prefix)")
    ap.add_argument("--config", help="job YAML whose `dedup:` section to use (default jobs/default.yaml)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--ray", action="store_true", help="run the tasks on Ray (a local Ray, or RAY_ADDRESS)")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    try:
        cfg = load_config(resolve_config(a.config) if a.config else shipped("jobs/default.yaml"))
        files = _expand(a.input)
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cfg = cfg.model_copy(update={"enabled": True})
    names = [f"{i:05d}-{stem(f)}" for i, f in enumerate(files)]
    out = a.output
    head = {"crawlmix_version": __version__, "config_hash": cfg.digest(), "seed": cfg.seed, "inputs": files}
    runstate.begin(out, head)  # readers refuse the folder until the run has finished
    try:
        stats = run_dedup(files, out, cfg, Executor.auto(a.workers, not a.no_progress, ray=a.ray or None), names)
    except TaskError as e:  # the folder stays 'running': nothing in it is final
        print(f"error: {e}", file=sys.stderr)
        return 1
    stats = runstate.finish(out, {**head, "dedup": stats})
    d = stats["dedup"]
    print(f"dedup: {d['in']} docs -> {d['out']} kept; removed {d['dropped']}; {d['clusters']} clusters; "
          f"bands={d['bands']}x{d['rows']} threshold={d['threshold']}\noutput: {out}/curated, {out}/removed, "
          f"{out}/stats.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
