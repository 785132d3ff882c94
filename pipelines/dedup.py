"""Exact and MinHash-LSH near-duplicate removal over curated Parquet, in stages that scale out.

    python pipelines/dedup.py --input OUTPUT_DIR_OR_PARQUET_GLOB [--input ...] --output DIR [--config jobs/X.yaml]

Stages (each a set of Ray tasks; the driver holds only what the cluster step needs):
1. signatures  one task per input file: normalise (lowercase, digits -> 0, punctuation and whitespace
               folded, accents stripped, as datatrove's simplify_text), shingle word n-grams (CJK, Thai,
               ... scripts by character), MinHash with datasketch's permutations, vectorised in numpy.
               Written to _dedup/sig/<file>.parquet: one column per LSH band hash, the full signature,
               a content hash and a URL hash.
2. candidates  one task per band: reads that band's column from every signature file, sorts it, and
               emits an edge from each bucket member to the bucket's first member. Exact content / URL
               hashes are two more "bands". Memory per task: 12 bytes per document.
3. clusters    MinHash edges are verified on the full signatures (estimated Jaccard >= threshold), then
               connected components over the documents that have a candidate edge only.
4. apply       one task per input file writes the survivors to curated/ and the rest to removed/
               (stage=dedup, reason=exact|minhash, duplicate_of=<kept id>).

Kept document of a cluster: earliest crawl date, then longest text, then first in input order.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys
import unicodedata
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import regex
import xxhash

from pipelines import __version__
from pipelines.config import DedupConfig, JobConfig, load_job
from pipelines.write import REMOVED_SCHEMA, write_json

_NUM = re.compile(r"\d+(?:[.,،٫⎖⎗⎘]\d+)?")  # stdlib \d is Unicode Nd, as datatrove's \p{Nd}
_MARKS = regex.compile(r"\p{Mn}+")
# Scripts written without spaces (Han, kana, Thai, Lao, Khmer, Myanmar, Tibetan) are shingled by character;
# elsewhere words are runs of letters / digits / marks, and punctuation and whitespace fold into separators.
_CHARS = ("\u0e00-\u0eff\u0f00-\u0fff\u1000-\u109f\u1780-\u17ff\u2e80-\u2fdf\u3005-\u3007\u3021-\u3029"
          "\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003134f")
_TOKENS = re.compile(rf"[{_CHARS}]|[^\W_{_CHARS}]+")
_CHUNK = 4096  # shingles per vectorised block: bounds memory on 10 MB documents


def normalize(text: str) -> str:
    """datatrove's simplify_text: lowercase, numbers -> 0, punctuation -> space, whitespace folded,
    diacritics stripped (used for the exact-duplicate hash)."""
    text = " ".join(_TOKENS.findall(_NUM.sub("0", text.lower())))
    return _strip_marks(text) if not text.isascii() else text


def _strip_marks(token: str) -> str:
    return unicodedata.normalize("NFC", _MARKS.sub("", unicodedata.normalize("NFD", token)))


def tokens(text: str) -> list[str]:
    """Word tokens after lowercasing and number folding; CJK, Thai, ... one per character."""
    return _TOKENS.findall(_NUM.sub("0", text.lower()))


def _splitmix(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


class MinHasher:
    """Vectorised MinHash over hashed word n-grams, with datasketch's permutation parameters."""

    def __init__(self, cfg: DedupConfig):
        from datasketch import MinHash

        self.cfg = cfg
        self.bands, self.rows = cfg.lsh_params()
        self.num_perm = self.bands * self.rows
        perm = MinHash(num_perm=self.num_perm, seed=cfg.seed).permutations
        # datasketch's seeded parameters, spread to 64 bits for multiply-shift hashing of 64-bit shingles:
        # h = (a*x + b mod 2**64) >> 32 with a odd (datasketch's own (a*x+b) mod p needs 32-bit x)
        with np.errstate(over="ignore"):
            a, b = perm[0].astype(np.uint64), perm[1].astype(np.uint64)
            self.a = _splitmix(a ^ (b << np.uint64(32))) | np.uint64(1)
            self.b = _splitmix(b + np.uint64(0x9E3779B97F4A7C15))
        self._words: dict[str, int] = {}
        self._mix = np.array([(0x9E3779B97F4A7C15 * (k + 1)) & ((1 << 64) - 1) | 1 for k in range(cfg.n_grams)],
                             dtype=np.uint64)

    def _word_ids(self, toks: list[str]) -> np.ndarray:
        """63-bit hash per token of its accent-stripped form, memoised per worker."""
        cache = self._words
        ids = list(map(cache.get, toks))
        if None in ids:
            if len(cache) > 2_000_000:
                cache.clear()
            for i, t in enumerate(toks):
                if ids[i] is None:
                    ids[i] = cache[t] = xxhash.xxh64_intdigest(
                        (t if t.isascii() else _strip_marks(t)).encode("utf-8", "surrogatepass")) >> 1
        return np.array(ids, dtype=np.int64).view(np.uint64)  # 63-bit values take numpy's fast int path

    def shingles(self, text: str) -> np.ndarray:
        """Distinct 64-bit hashes of the word n-grams (a doc shorter than n is one shingle)."""
        toks = tokens(text)
        if not toks:
            return np.zeros(0, dtype=np.uint64)
        w = self._word_ids(toks)
        n = min(self.cfg.n_grams, len(w))
        m = len(w) - n + 1
        with np.errstate(over="ignore"):
            h = w[:m] * self._mix[0]
            for k in range(1, n):  # position-weighted sum of word hashes: an n-gram hash, vectorised
                h += w[k:k + m] * self._mix[k]
            h ^= h >> np.uint64(31)
            h *= np.uint64(0xFF51AFD7ED558CCD)
        return np.unique(h)

    def signature(self, text: str) -> np.ndarray | None:
        sh = self.shingles(text)
        if not len(sh):
            return None
        sig = np.full(self.num_perm, np.iinfo(np.uint64).max, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for i in range(0, len(sh), _CHUNK):
                phv = sh[i:i + _CHUNK, None] * self.a
                phv += self.b
                np.minimum(sig, phv.min(axis=0), out=sig)
        return (sig >> np.uint64(32)).astype(np.uint32)  # the top half of each minimum is stored

    def band_hashes(self, sigs: np.ndarray) -> np.ndarray:
        """(docs, bands) uint64: one hash per band of `rows` signature values."""
        v = sigs.reshape(len(sigs), self.bands, self.rows).astype(np.uint64)
        h = np.zeros(v.shape[:2], dtype=np.uint64)
        with np.errstate(over="ignore"):
            for r in range(self.rows):
                h = (h ^ v[:, :, r]) * np.uint64(0x100000001B3) + np.uint64(r + 1)
                h ^= h >> np.uint64(29)
        return h


def _norm_url(url: str) -> str:
    u = (url or "").strip().split("#", 1)[0]
    scheme, sep, rest = u.partition("://")
    host, slash, path = rest.partition("/")
    return f"{scheme.lower()}{sep}{host.lower()}{slash}{path}".rstrip("/")


# ---------------------------------------------------------------- stage 1: signatures

def signature_task(src: str, sig_path: str, cfg_json: str) -> dict:
    cfg = DedupConfig.model_validate_json(cfg_json)
    mh = MinHasher(cfg)
    t = pq.read_table(src, columns=["id", "url", "date", "text"])
    texts = t.column("text").to_pylist()
    n = len(texts)
    sigs = np.zeros((n, mh.num_perm), dtype=np.uint32)
    has_sig = np.zeros(n, dtype=bool)
    exact = np.zeros(n, dtype=np.uint64)
    for i, text in enumerate(texts):
        text = text or ""
        exact[i] = xxhash.xxh3_64_intdigest(normalize(text).encode("utf-8", "surrogatepass"))
        s = mh.signature(text) if cfg.minhash else None
        if s is not None:
            sigs[i], has_sig[i] = s, True
    urls = np.fromiter((xxhash.xxh3_64_intdigest(_norm_url(u).encode()) for u in t.column("url").to_pylist()),
                       dtype=np.uint64, count=n)
    bands = mh.band_hashes(sigs)
    cols = {"row": pa.array(np.arange(n, dtype=np.int64)), "id": t.column("id"), "date": t.column("date"),
            "length": pa.array(np.fromiter(map(len, (x or "" for x in texts)), dtype=np.int64, count=n)),
            "exact": pa.array(exact), "url": pa.array(urls), "has_sig": pa.array(has_sig),
            "sig": pa.FixedSizeBinaryArray.from_buffers(pa.binary(4 * mh.num_perm), n,
                                                         [None, pa.py_buffer(sigs.tobytes())])}
    for j in range(mh.bands):
        cols[f"band_{j}"] = pa.array(bands[:, j])
    tmp = sig_path + ".tmp"
    pq.write_table(pa.table(cols), tmp, compression="zstd")
    os.replace(tmp, sig_path)
    return {"src": src, "rows": n}


# ---------------------------------------------------------------- stage 2: candidates

def candidate_task(sig_paths: list[str], offsets: list[int], column: str, edge_path: str) -> int:
    """Edges (doc, first doc of its bucket) for one band (or the exact / url column)."""
    keys, idx = [], []
    for p, off in zip(sig_paths, offsets):
        cols = [column] if column in ("exact", "url") else [column, "has_sig"]
        t = pq.read_table(p, columns=cols)
        k = t.column(column).to_numpy()
        i = np.arange(off, off + len(k), dtype=np.int64)
        if column not in ("exact", "url"):
            ok = t.column("has_sig").to_numpy(zero_copy_only=False)
            k, i = k[ok], i[ok]
        keys.append(k)
        idx.append(i)
    k = np.concatenate(keys) if keys else np.zeros(0, np.uint64)
    i = np.concatenate(idx) if idx else np.zeros(0, np.int64)
    order = np.lexsort((i, k))
    k, i = k[order], i[order]
    first = np.ones(len(k), dtype=bool)
    first[1:] = k[1:] != k[:-1]
    head = i[np.maximum.accumulate(np.where(first, np.arange(len(k)), 0))]
    edges = np.stack([i[~first], head[~first]], axis=1) if len(k) else np.zeros((0, 2), np.int64)
    np.save(edge_path, edges)
    return len(edges)


# ---------------------------------------------------------------- stage 3: clusters

def _components(edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(nodes, component label per node) over the documents that appear in edges."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    nodes, inv = np.unique(edges, return_inverse=True)
    inv = inv.reshape(-1, 2)
    g = coo_matrix((np.ones(len(inv), dtype=np.int8), (inv[:, 0], inv[:, 1])), shape=(len(nodes), len(nodes)))
    _, labels = connected_components(g, directed=False)
    return nodes, labels


def _load_meta(sig_paths, bounds, wanted: np.ndarray, columns):
    """Columns of the wanted global rows only (sorted), streaming each signature file in batches."""
    out = {c: [] for c in columns}
    for f, p in enumerate(sig_paths):
        lo, hi = np.searchsorted(wanted, [bounds[f], bounds[f + 1]])
        if lo == hi:
            continue
        local = wanted[lo:hi] - bounds[f]
        start = 0
        for batch in pq.ParquetFile(p).iter_batches(batch_size=8192, columns=columns):
            a, b = np.searchsorted(local, [start, start + batch.num_rows])
            if a < b:
                picked = batch.take(pa.array(local[a:b] - start))
                for c in columns:
                    out[c].append(picked.column(c))
            start += batch.num_rows
    return {c: pa.chunked_array(v, type=v[0].type).combine_chunks() if v else None for c, v in out.items()}


def cluster(sig_paths, bounds, edge_files, cfg: DedupConfig, num_perm: int) -> dict:
    """Returns {global row: (kept global row, reason)} for every removed document, and cluster stats."""
    exact_edges, lsh_edges = [], []
    for name, path in edge_files:
        (exact_edges if name in ("exact", "url") else lsh_edges).append(np.load(path))
    ex = np.concatenate(exact_edges) if exact_edges else np.zeros((0, 2), np.int64)
    ls = np.unique(np.concatenate(lsh_edges), axis=0) if lsh_edges else np.zeros((0, 2), np.int64)
    n_candidates = len(ls)
    if len(ls) and cfg.verify:
        nodes = np.unique(ls)
        sig = _load_meta(sig_paths, bounds, nodes, ["sig"])["sig"]
        mat = np.frombuffer(sig.buffers()[1], dtype=np.uint32).reshape(len(nodes), num_perm)
        a, b = np.searchsorted(nodes, ls[:, 0]), np.searchsorted(nodes, ls[:, 1])
        sim = np.empty(len(ls))
        for s in range(0, len(ls), 65536):
            sim[s:s + 65536] = (mat[a[s:s + 65536]] == mat[b[s:s + 65536]]).mean(axis=1)
        ls = ls[sim >= cfg.threshold]
    edges = np.concatenate([ex, ls]) if len(ex) or len(ls) else np.zeros((0, 2), np.int64)
    if not len(edges):
        return {"removed": {}, "clusters": 0, "sizes": {}, "candidates": n_candidates, "verified": 0}
    nodes, labels = _components(edges)
    meta = _load_meta(sig_paths, bounds, nodes, ["id", "date", "length", "exact", "url"])
    dates = [d or "9999" for d in meta["date"].to_pylist()]
    length = meta["length"].to_numpy()
    exact, url = meta["exact"].to_numpy(), meta["url"].to_numpy()
    # keeper: earliest date, then longest text, then first in input order (nodes are sorted by global row)
    date_rank = np.unique(np.array(dates), return_inverse=True)[1]
    order = np.lexsort((nodes, -length, date_rank, labels))
    lab_sorted = labels[order]
    is_first = np.ones(len(order), dtype=bool)
    is_first[1:] = lab_sorted[1:] != lab_sorted[:-1]
    keeper_pos = order[np.maximum.accumulate(np.where(is_first, np.arange(len(order)), 0))]
    removed = {}
    for pos, kpos in zip(order[~is_first].tolist(), keeper_pos[~is_first].tolist()):
        same = exact[pos] == exact[kpos] or url[pos] == url[kpos]
        removed[int(nodes[pos])] = (int(nodes[kpos]), "exact" if same else "minhash")
    sizes = Counter(Counter(labels.tolist()).values())
    return {"removed": removed, "clusters": int(labels.max()) + 1, "sizes": dict(sorted(sizes.items())),
            "candidates": n_candidates, "verified": len(ls), "ids": meta["id"].to_pylist(), "nodes": nodes}


# ---------------------------------------------------------------- stage 4: apply

def apply_task(src: str, dst: str, removed_path: str, drop_rows: list[int], keep_ids: list[str],
               reasons: list[str]) -> dict:
    t = pq.read_table(src)
    mask = np.ones(t.num_rows, dtype=bool)
    mask[drop_rows] = False
    kept = t.filter(pa.array(mask))
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    tmp = dst + ".tmp"
    pq.write_table(kept, tmp, compression="zstd")
    os.replace(tmp, dst)
    gone = t.take(pa.array(drop_rows, type=pa.int64())).to_pylist() if drop_rows else []
    rows = [{"id": r["id"], "url": r["url"], "stage": "dedup", "reason": why, "detail": f"duplicate of {k}",
             "source": r.get("source", src), "offset": r.get("offset", -1), "language": r.get("language", ""),
             "language_score": r.get("language_score"), "cc_languages": r.get("cc_languages", ""),
             "duplicate_of": k} for r, k, why in zip(gone, keep_ids, reasons)]
    Path(removed_path).parent.mkdir(parents=True, exist_ok=True)
    tmp = removed_path + ".tmp"
    pq.write_table(pa.Table.from_pylist(rows, schema=REMOVED_SCHEMA), tmp, compression="zstd")
    os.replace(tmp, removed_path)
    return {"src": src, "in": t.num_rows, "out": kept.num_rows}


# ---------------------------------------------------------------- driver

def run_dedup(inputs: list[str], out_dir: Path, cfg: DedupConfig, workers: int = 1, progress: bool = True,
              names: list[str] | None = None) -> dict:
    """Deduplicate curated Parquet files together; writes out_dir/curated, out_dir/removed, returns stats."""
    from pipelines.parallel import parallel_map

    out_dir = Path(out_dir)
    work = out_dir / "_dedup"
    for d in ("sig", "edges"):
        (work / d).mkdir(parents=True, exist_ok=True)
    names = names or [Path(p).stem for p in inputs]
    sig_paths = [str(work / "sig" / f"{n}.parquet") for n in names]
    cfg_json = cfg.model_dump_json()
    res = parallel_map(signature_task, [(s, d, cfg_json) for s, d in zip(inputs, sig_paths)], workers,
                       "dedup: signatures", progress)
    counts = [r["rows"] for r in res]
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int).tolist() if counts else []
    bands, rows = cfg.lsh_params()
    columns = ([f"band_{j}" for j in range(bands)] if cfg.minhash else []) + (["exact", "url"] if cfg.exact else [])
    edge_files = [(c, str(work / "edges" / f"{c}.npy")) for c in columns]
    parallel_map(candidate_task, [(sig_paths, offsets, c, p) for c, p in edge_files], workers,
                 "dedup: candidates", progress)
    bounds = offsets + [sum(counts)]
    cl = cluster(sig_paths, bounds, edge_files, cfg, bands * rows)
    removed = cl["removed"]
    id_of = dict(zip(cl.get("nodes", np.zeros(0)).tolist(), cl.get("ids", [])))
    tasks = []
    per_file = {}
    for f, (src, name) in enumerate(zip(inputs, names)):
        drop = sorted(g for g in removed if bounds[f] <= g < bounds[f + 1])
        tasks.append((src, str(out_dir / "curated" / f"{name}.parquet"), str(out_dir / "removed" / f"{name}.dedup.parquet"),
                      [g - bounds[f] for g in drop], [id_of[removed[g][0]] for g in drop], [removed[g][1] for g in drop]))
        per_file[name] = {"docs": counts[f], "duplicates": len(drop),
                          "duplicate_rate": round(len(drop) / counts[f], 4) if counts[f] else 0.0}
    parallel_map(apply_task, tasks, workers, "dedup: apply", progress)
    reasons = Counter(why for _, why in removed.values())
    n = sum(counts)
    return {"in": n, "out": n - len(removed), "dropped": dict(sorted(reasons.items())),
            "clusters": cl["clusters"], "cluster_sizes": {str(k): v for k, v in cl["sizes"].items()},
            "candidate_pairs": cl["candidates"], "verified_pairs": cl["verified"], "bands": bands, "rows": rows,
            "threshold": cfg.threshold, "n_grams": cfg.n_grams, "per_file": per_file}


def _expand(inputs: list[str]) -> list[str]:
    files = []
    for p in inputs:
        if Path(p).is_dir():
            sub = Path(p) / "curated"
            files += sorted(glob.glob(str((sub if sub.is_dir() else Path(p)) / "*.parquet")))
        else:
            files += sorted(glob.glob(p))
    if not files:
        raise FileNotFoundError(f"no Parquet files in {inputs}")
    return list(dict.fromkeys(files))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="dedup.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("--input", action="append", required=True, metavar="DIR_OR_PARQUET_GLOB",
                    help="a crawl output folder (its curated/*.parquet) or a Parquet glob; repeat to dedup runs together")
    ap.add_argument("--output", required=True, metavar="DIR")
    ap.add_argument("--config", help="job YAML whose `dedup:` section to use (default jobs/default.yaml)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    from pipelines.config import ConfigError

    try:
        job: JobConfig = load_job(a.config)
        files = _expand(a.input)
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cfg = job.dedup.model_copy(update={"enabled": True})
    names = [f"{i:05d}-{Path(f).stem}" for i, f in enumerate(files)]
    out = Path(a.output)
    stats = run_dedup(files, out, cfg, max(1, a.workers), not a.no_progress, names)
    stats = {"crawlmix_version": __version__, "config_hash": job.digest(), "seed": cfg.seed,
             "inputs": files, "dedup": stats}
    write_json(out / "stats.json", stats)
    d = stats["dedup"]
    print(f"dedup: {d['in']} docs -> {d['out']} kept; removed {d['dropped']}; {d['clusters']} clusters; "
          f"bands={d['bands']}x{d['rows']} threshold={d['threshold']}\noutput: {out}/curated, {out}/removed, "
          f"{out}/stats.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
