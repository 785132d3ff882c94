"""Benchmark: how the crawl job scales with workers (pipelines/crawl.py, 1 worker vs 2).

The input is real pages: ../shared/data/bench/realpages.warc.gz (1,171 pages) written --copies times
over (default 32: 37,472 pages, 1.1 GB) into --files WARC files (default 32); smaller inputs measure the
fixed costs more than the scaling (``--copies 4 --files 8``: 4,684 pages; docs/scale.md has three sizes). Each
copy's records get their own record id and a ``copy=K`` query value on the target URI; the bytes of every
page are unchanged, so every copy costs the crawl step the same work and dedup removes the copies as exact
duplicates (the dedup, PII and pairs steps then see a run whose pages are 1/copies unique).

Each worker count runs the whole job in a fresh process (Ray start-up included) --repeat times, the
counts alternating; the fastest round counts. Printed per worker count: whole-job wall time, the time
of each step (stats.json ``steps_s``), crawl-step throughput in pages/s, and the ratios 2 workers / 1.
The "serial part" is what does not run as parallel per-file tasks: start-up, dedup's cluster step,
and the driver's own work between steps.

    python bench/scaling.py [--input realpages.warc.gz] [--files 32] [--copies 32] [--config jobs/fineweb-en.yaml]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_INPUT = ROOT.parent / "shared" / "data" / "bench" / "realpages.warc.gz"
URI = re.compile(rb"^(WARC-Target-URI:\s*)(\S+)", re.M)
RID = re.compile(rb"^(WARC-Record-ID:\s*)<urn:uuid:([0-9a-fA-F-]+)>", re.M)
HEAD_END = b"\r\n\r\n"


def members(path: Path):
    """The decompressed gzip members of a WARC file, in order (one record each)."""
    data = path.read_bytes()
    while data:
        d = zlib.decompressobj(31)
        out = d.decompress(data)
        yield out + d.flush()
        data = d.unused_data


def tagged(record: bytes, copy: int) -> bytes:
    """The record with ``copy=K`` on its target URI and a record id of its own (WARC headers only)."""
    end = record.find(HEAD_END)
    head, body = record[:end], record[end:]

    def uri(m):
        u = m.group(2)
        return m.group(1) + u + (b"&" if b"?" in u else b"?") + b"copy=%d" % copy

    def rid(m):
        new = uuid.UUID(bytes=hashlib.sha256(m.group(2) + b"/%d" % copy).digest()[:16])
        return m.group(1) + b"<urn:uuid:" + str(new).encode() + b">"

    return RID.sub(rid, URI.sub(uri, head, count=1), count=1) + body


def build_corpus(src: Path, out: Path, files: int, copies: int) -> tuple[list[str], int]:
    """``files`` WARC files holding ``copies`` tagged copies of every record of ``src``; returns (paths, pages)."""
    records = list(members(src))
    groups, pages = [], 0
    for k in range(copies):
        for r in records:
            groups.append(tagged(r, k))
            pages += b"WARC-Type: response" in r[:400]
    paths = []
    per = -(-len(groups) // files)
    for i in range(files):
        p = out / f"part-{i:02d}.warc.gz"
        with open(p, "wb") as f:
            for r in groups[i * per:(i + 1) * per]:
                f.write(gzip.compress(r, 6, mtime=0))
        paths.append(str(p))
    return paths, pages


def run_job(inputs_glob: str, out: Path, config: str, workers: int) -> dict:
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token")}
    env.pop("RAY_ADDRESS", None)  # a local Ray per run: start-up is part of the job
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, str(ROOT / "pipelines" / "crawl.py"), "--input", inputs_glob, "--output",
                        str(out), "--config", config, "--workers", str(workers), "--no-progress"],
                       env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"crawl.py --workers {workers} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    stats = json.loads((out / "stats.json").read_text())
    sizes = {d.name: sum(f.stat().st_size for f in d.rglob("*") if f.is_file()) for d in out.iterdir() if d.is_dir()}
    cpu = dict(stats.get("timings_s", {}))  # seconds summed over the crawl tasks, by text stage
    for step in ("pairs", "interleaved"):
        sub = out / step / "stats.json"
        if sub.exists():
            cpu[f"{step} (all)"] = json.loads(sub.read_text()).get("timings_s", {}).get("total", 0.0)
    return {"process_s": wall, "job_s": stats["wall_s"], "steps_s": stats.get("steps_s", {}),
            "docs_in": stats["docs_in"], "docs_out": stats["docs_out"], "bytes": sizes, "task_s": cpu}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--input", default=str(DEFAULT_INPUT), help="a WARC file of real pages (default %(default)s)")
    ap.add_argument("--files", type=int, default=32, help="input files to write (default %(default)s)")
    ap.add_argument("--copies", type=int, default=32, help="copies of the input (default %(default)s)")
    ap.add_argument("--config", default=str(ROOT / "jobs" / "fineweb-en.yaml"), help="job YAML")
    ap.add_argument("--workers", default="1,2", help="worker counts to compare (default %(default)s)")
    ap.add_argument("--repeat", type=int, default=2, help="rounds per worker count; the fastest counts")
    a = ap.parse_args(argv)
    src = Path(a.input)
    if not src.exists():
        print(f"input {src} not found (the benchmark needs ../shared/data)", file=sys.stderr)
        return 2
    counts = [int(w) for w in a.workers.split(",")]
    with tempfile.TemporaryDirectory(prefix="crawlmix-scaling-") as d:
        d = Path(d)
        (d / "in").mkdir()
        paths, pages = build_corpus(src, d / "in", a.files, a.copies)
        size = sum(os.path.getsize(p) for p in paths)
        print(f"input: {pages} pages ({a.copies} copies of {src.name}) in {len(paths)} files, "
              f"{size / 1e6:.1f} MB; job {Path(a.config).name}; {os.cpu_count()} cores here")
        best: dict[int, dict] = {}
        for rnd in range(a.repeat):
            for w in counts:
                r = run_job(str(d / "in" / "*.warc.gz"), d / f"out-{w}-{rnd}", a.config, w)
                if w not in best or r["process_s"] < best[w]["process_s"]:
                    best[w] = r
                print(f"  round {rnd + 1}, {w} worker(s): {r['process_s']:.1f} s", flush=True)
    steps = sorted({k for r in best.values() for k in r["steps_s"]}, key=lambda k: list(
        best[counts[0]]["steps_s"]).index(k) if k in best[counts[0]]["steps_s"] else 99)
    print(f"\n{'workers':>8}{'process s':>11}{'job s':>8}" + "".join(f"{s + ' s':>14}" for s in steps)
          + f"{'crawl pages/s':>15}{'serial s':>10}")
    for w in counts:
        r = best[w]
        crawl = r["steps_s"].get("crawl")
        rate = f"{pages / crawl:>15.1f}" if crawl else f"{'-':>15}"
        serial = r["process_s"] - (crawl or 0)
        print(f"{w:>8}{r['process_s']:>11.1f}{r['job_s']:>8.1f}" + "".join(
            f"{r['steps_s'].get(s, 0):>14.1f}" for s in steps) + rate + f"{serial:>10.1f}")
    if len(counts) >= 2:
        one, two = best[counts[0]], best[counts[1]]
        print(f"\nwhole job {counts[1]} vs {counts[0]} worker(s): {one['process_s'] / two['process_s']:.2f}x")
        if one["steps_s"].get("crawl") and two["steps_s"].get("crawl"):
            print(f"crawl step: {one['steps_s']['crawl'] / two['steps_s']['crawl']:.2f}x")
    one = best[counts[0]]
    print(f"\nper page, {counts[0]} worker(s) (task time summed over tasks / {pages} pages read), ms: " + ", ".join(
        f"{k}={1000 * v / pages:.2f}" for k, v in one["task_s"].items()))
    print("bytes written per page read, by folder: " + ", ".join(
        f"{k}={v / pages:.0f}" for k, v in sorted(one["bytes"].items())) + f" (input {size / pages:.0f})")
    print(f"docs in {best[counts[0]]['docs_in']}, kept {best[counts[0]]['docs_out']} (same for every worker count: "
          f"{len({(r['docs_in'], r['docs_out']) for r in best.values()}) == 1})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
