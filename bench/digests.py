"""Digests of every output crawlmix writes, for proving a refactor changed no byte.

    python bench/digests.py --work /tmp/digests --json before.json           # record
    python bench/digests.py --work /tmp/digests --json after.json --compare before.json

Runs the entry points as a user would (subprocesses, the repository's own pipelines/*.py):
the bundled sample crawl (default job), realpages.warc.gz with jobs/fineweb-en.yaml and
jobs/default.yaml (when ../shared/data is present) and every mixture under mixtures/ built from
that sample crawl and the bundled media sample. Inputs live under --work, so two checkouts (before
and after a change) read the same paths and write the same provenance. Digests cover curated/removed
Parquet, image-text pairs (tar, Parquet) and mix shards; files that hold timings or wall-clock dates
(stats.json, _tasks/, *_stats.json, mix.lock.json) are listed apart and not compared.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CRAWLMIX_SHARED", ROOT.parent / "shared" / "data"))
# files whose content carries timings, dates or run history: reported, not compared
VOLATILE = ("stats.json", "config.json", "mix.lock.json", "shardindex.json")


def _run(args: list[str], log) -> float:
    t = time.perf_counter()
    r = subprocess.run([sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log.write(f"$ {' '.join(args)}\n{r.stdout}\n")
    if r.returncode:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(args)}\n{r.stdout[-3000:]}")
    return time.perf_counter() - t


def _volatile(rel: str) -> bool:
    name = rel.rsplit("/", 1)[-1]
    staging = any(part.startswith("_") for part in rel.split("/")[:-1])  # _tasks/, _dedup/, ...
    return staging or name in VOLATILE or name.endswith("_stats.json") or name.endswith(".stats.json")


def digest_tree(folder: Path) -> dict[str, str]:
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            rel = p.relative_to(folder).as_posix()
            if not _volatile(rel):
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()[:16]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", required=True, help="scratch folder (inputs and outputs; emptied first)")
    ap.add_argument("--json", required=True, help="write the digests here")
    ap.add_argument("--compare", help="digests of an earlier run: report every difference, exit 1 on any")
    ap.add_argument("--inputs", help="folder of the generated sample crawl (default WORK/sample); give the same one "
                                     "to both runs: its path is recorded in the outputs' provenance")
    ap.add_argument("--no-realpages", action="store_true", help="skip the realpages runs (slow)")
    a = ap.parse_args(argv)
    work = Path(a.work).resolve()
    for sub in ("out", "root/output", "mix"):
        shutil.rmtree(work / sub, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    log = open(work / "log.txt", "w")
    timings = {}
    sample = Path(a.inputs).resolve() if a.inputs else work / "sample"
    if not (sample / "sample.warc.gz").exists():
        _run(["pipelines/make_sample.py", "--output", str(sample)], log)
    media = work / "root" / "sample" / "media"
    if not media.exists():
        _run(["pipelines/make_media_sample.py", "--output", str(media)], log)
    runs: dict[str, Path] = {}
    crawl = work / "root" / "output" / "sample-crawl"  # where the mixtures' `bundled: crawl` sources look
    timings["sample"] = _run(["pipelines/crawl.py", "--no-progress", "--workers", "2", "--output", str(crawl),
                              "--input", str(sample / "sample.warc.gz"), "--input", str(sample / "sample.arc.gz")], log)
    runs["sample"] = crawl
    rp = SHARED / "bench" / "realpages.warc.gz"
    if rp.exists() and not a.no_realpages:
        for job in ("fineweb-en", "default"):
            out = work / "out" / f"realpages-{job}"
            timings[f"realpages-{job}"] = _run(["pipelines/crawl.py", "--no-progress", "--workers", "2", "--input",
                                                str(rp), "--config", f"jobs/{job}.yaml", "--output", str(out)], log)
            runs[f"realpages-{job}"] = out
    for m in sorted((ROOT / "mixtures").glob("*.yaml")):
        if m.name.count(".") > 1:  # sweep files and the like, not mixtures
            continue
        out = work / "mix" / m.stem
        timings[f"mix-{m.stem}"] = _run(["pipelines/mix.py", "--no-progress", "--mixture", str(m), "--root",
                                         str(work / "root"), "--output", str(out)], log)
        runs[f"mix-{m.stem}"] = out
    result = {"runs": {k: digest_tree(v) for k, v in runs.items()}, "timings_s": {k: round(v, 1) for k, v in timings.items()}}
    Path(a.json).write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    for k, files in result["runs"].items():
        print(f"{k:<24} {len(files):>4} files  {timings[k]:6.1f} s")
    if not a.compare:
        return 0
    before = json.loads(Path(a.compare).read_text())["runs"]
    bad = 0
    for k in sorted(set(before) | set(result["runs"])):
        b, n = before.get(k, {}), result["runs"].get(k, {})
        diff = sorted(f for f in set(b) | set(n) if b.get(f) != n.get(f))
        same = sum(1 for f in b if b.get(f) == n.get(f))
        print(f"{k:<24} identical {same}/{len(b)}" + (f", differ: {diff[:8]}" if diff else ""))
        bad += len(diff)
    print("byte-identical" if not bad else f"{bad} file(s) differ")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
