"""Dedup benchmark: precision/recall on real near-duplicates, signature speed vs datatrove, index memory.

1. Runs `pipelines/crawl.py --config jobs/dedup-bench.yaml` (extraction + dedup only) on
   ../shared/data/bench/neardup.warc.gz (400 real pages + 393 variants) and scores the removed
   documents against neardup_truth.json: precision over removed docs, recall over variants, per kind.
2. Times MinHash signatures on the same extracted texts (all of them), crawlmix vs datatrove's
   MinhashDedupSignature (get_shingles + get_signature), one core each, in one run.
3. Measures the peak memory the candidate + cluster stages allocate per document, on 200,000
   synthetic signatures (tracemalloc sees numpy and Arrow buffers).

    python bench/dedup.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "bench"


def score(out: Path, truth: dict) -> None:
    import pyarrow.parquet as pq

    variants = truth["variants"]
    # URLs as dedup saw them: later stages (PII scrubbing) may rewrite url in curated/ and removed/,
    # e.g. an article number in a path read as a phone number, which would no longer match the truth file
    url_of = dict(zip(*pq.read_table(out / "_prededup", columns=["id", "url"]).to_pydict().values()))
    cur = [{"id": i, "url": url_of[i]} for i in pq.read_table(out / "curated", columns=["id"]).column("id").to_pylist()]
    rem = [dict(r, url=url_of.get(r["id"], r["url"])) for r in pq.read_table(out / "removed").to_pylist()
           if r["stage"] == "dedup"]
    group = {}  # url -> original url (its truth cluster)
    for v, o in variants.items():
        group[v], group[o] = o, o
    kept_of = {r["url"]: url_of.get(r["duplicate_of"]) for r in rem}  # removed url -> kept url
    tp = sum(1 for u, k in kept_of.items() if u in group and group.get(k) == group[u])
    precision = tp / len(kept_of) if kept_of else 1.0
    clusters = defaultdict(set)
    for r in cur:
        clusters[r["url"]].add(r["url"])
    for u, k in kept_of.items():
        clusters[k].add(u)
    cluster_of = {u: k for k, members in clusters.items() for u in members}
    by_kind, hit = Counter(), Counter()
    for v, o in variants.items():
        kind = v.split("://", 1)[1].split(".", 1)[0].split("-")[-1]  # mirrorN-{light,boiler,exact}
        by_kind[kind] += 1
        if v in cluster_of and cluster_of.get(v) == cluster_of.get(o):
            hit[kind] += 1
    recall = sum(hit.values()) / sum(by_kind.values())
    print(f"near-dup quality on {len(variants)} variants of {truth['originals']} pages "
          f"({len(kept_of)} docs removed as duplicates):")
    print(f"  precision {precision:.3f}   recall {recall:.3f}   (targets >= 0.99 / >= 0.95)")
    for kind in sorted(by_kind):
        print(f"  recall[{kind}] {hit[kind] / by_kind[kind]:.3f}  ({hit[kind]}/{by_kind[kind]})")


def signature_speed(texts: list[str], passes: int = 3) -> None:
    """Both on every text, one core, this process: datatrove once (~10 ms/doc), crawlmix `passes` times
    (its rate is the mean over all passes). Per-process setup (tables, tokenizer load) is timed apart."""
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature

    from crawlmix.dedup.config import DedupConfig
    from crawlmix.dedup.signatures import MinHasher

    t0 = time.perf_counter()
    mh = MinHasher(DedupConfig(bands=14, rows=8))  # datatrove's default 14 x 8 = 112 hashes
    mh.signature("warm up")
    c_setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    dt = MinhashDedupSignature(output_folder=tempfile.mkdtemp(), config=MinhashConfig())
    dt.get_signature(dt.get_shingles("warm up text for the tokenizer here"))
    d_setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    for t in texts:
        dt.get_signature(dt.get_shingles(t))
    d_rate = len(texts) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for _ in range(passes):
        for t in texts:
            mh.signature(t)
    c_rate = passes * len(texts) / (time.perf_counter() - t0)
    print(f"signatures (112 hashes, 5-grams) on the same {len(texts)} docs, one core: crawlmix {c_rate:.0f} docs/s "
          f"(mean of {passes} passes), datatrove {d_rate:.1f} docs/s: {c_rate / d_rate:.0f}x  "
          f"[one-off setup per process, not counted: crawlmix {c_setup * 1e3:.0f} ms, "
          f"datatrove {d_setup * 1e3:.0f} ms]")


def index_memory(n: int = 200_000, dup_share: float = 0.05) -> None:
    """Peak memory of the candidate and cluster stages on n synthetic signatures (dup_share duplicated)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from crawlmix.dedup.config import DedupConfig
    from crawlmix.dedup.clusters import candidate_task, cluster

    cfg = DedupConfig()
    bands, rows = cfg.lsh_params()
    rng = np.random.default_rng(0)
    sig = rng.integers(0, 2**32, size=(n, bands * rows), dtype=np.uint32)
    dups = rng.choice(n, size=int(n * dup_share), replace=False)
    sig[dups] = sig[(dups + 1) % n]  # duplicated documents share their neighbour's signature
    band = rng.integers(0, 2**63, size=(n, bands), dtype=np.uint64)
    band[dups] = band[(dups + 1) % n]
    with tempfile.TemporaryDirectory() as d:
        files, offsets = [], []
        for f, lo in enumerate(range(0, n, n // 8)):  # 8 signature files, as 8 crawl tasks would write
            hi = min(n, lo + n // 8)
            cols = {"row": np.arange(hi - lo), "id": [f"d{i}" for i in range(lo, hi)], "date": ["2024"] * (hi - lo),
                    "length": np.full(hi - lo, 1000), "exact": rng.integers(0, 2**63, hi - lo, dtype=np.uint64),
                    "url": rng.integers(0, 2**63, hi - lo, dtype=np.uint64), "has_sig": np.ones(hi - lo, bool),
                    "sig": pa.FixedSizeBinaryArray.from_buffers(pa.binary(4 * bands * rows), hi - lo,
                                                                [None, pa.py_buffer(sig[lo:hi].tobytes())])}
            for j in range(bands):
                cols[f"band_{j}"] = band[lo:hi, j]
            files.append(f"{d}/sig{f}.parquet")
            offsets.append(lo)
            pq.write_table(pa.table(cols), files[-1])
        del sig, band, cols
        parent = pa.default_memory_pool()
        pool = pa.proxy_memory_pool(parent)  # separate statistics for the measured stages
        pa.set_memory_pool(pool)
        base_arrow = 0
        tracemalloc.start()
        edge_files = []
        for c in [f"band_{j}" for j in range(bands)] + ["exact", "url"]:
            p = f"{d}/{c}.npy"
            candidate_task(files, offsets, [c], [p])  # one band per task, as at scale
            edge_files.append((c, p))
        _, peak_candidates = tracemalloc.get_traced_memory()
        arrow_candidates = pool.max_memory() - base_arrow
        tracemalloc.reset_peak()
        res = cluster(files, offsets + [n], edge_files, cfg, bands * rows)
        _, peak_cluster = tracemalloc.get_traced_memory()
        arrow_all = pool.max_memory() - base_arrow
        tracemalloc.stop()
        pa.set_memory_pool(parent)
    print(f"index memory on {n:,} synthetic signatures ({dup_share:.0%} duplicated, {len(res['removed']):,} removed):"
          f" candidate stage peak {peak_candidates / n:.0f} B/doc numpy + {arrow_candidates / n:.0f} B/doc Arrow "
          f"(one band column at a time); cluster stage peak {peak_cluster / n:.0f} B/doc numpy, Arrow peak over "
          f"both stages {arrow_all / n:.0f} B/doc (target <= 200 B/doc)")


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(DATA))
    a = ap.parse_args(argv)
    warc, truth_path = Path(a.data) / "neardup.warc.gz", Path(a.data) / "neardup_truth.json"
    if not warc.exists():
        print(f"{warc} not found (needs ../shared/data)", file=sys.stderr)
        return 2
    truth = json.loads(truth_path.read_text())
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "out"
        subprocess.run([sys.executable, str(ROOT / "pipelines" / "crawl.py"), "--input", str(warc), "--output", str(out),
                        "--config", str(ROOT / "jobs" / "dedup-bench.yaml"), "--no-progress"], check=True,
                       stdout=subprocess.DEVNULL)
        score(out, truth)
        import pyarrow.parquet as pq

        texts = pq.read_table(out / "_prededup", columns=["text"]).column("text").to_pylist()
        signature_speed(texts)
    index_memory()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
