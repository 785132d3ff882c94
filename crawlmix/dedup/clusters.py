"""Dedup stages 2 and 3: LSH candidate pairs per band, then verified pairs -> connected components -> keepers.

candidates  per band: that band's column from every signature file, sorted; an edge from each bucket member
            to the bucket's first member. Exact content / URL hashes are two more "bands". A task takes one
            band or several (column_groups: no more tasks than workers need, each within a memory bound;
            ~40 bytes per document and band).
clusters    MinHash edges are verified on the full signatures (estimated Jaccard >= threshold), then
            connected components over the documents that have a candidate edge only. Kept document of a
            cluster: earliest crawl date, then longest text, then first in input order.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa

from crawlmix.dedup.config import DedupConfig
from crawlmix.dedup.files import parquet_file, read_table
from crawlmix.runtime import storage
from crawlmix.runtime.atomic import atomic_open


# ---------------------------------------------------------------- stage 2: candidates

def candidate_task(sig_paths: list[str], offsets: list[int], columns: list[str], edge_paths: list[str]) -> int:
    """Edges (doc, first doc of its bucket) for each of ``columns`` (bands, or the exact / url column),
    one edge file each; every signature file is read once, for all the columns."""
    keys: dict[str, list] = {c: [] for c in columns}
    idx: dict[str, list] = {c: [] for c in columns}
    wanted = list(dict.fromkeys(columns + (["has_sig"] if any(c not in ("exact", "url") for c in columns) else [])))
    for p, off in zip(sig_paths, offsets):
        t = read_table(p, columns=wanted)  # these columns of a signature file (a URL: only their bytes are read)
        i = np.arange(off, off + t.num_rows, dtype=np.int64)
        ok = t.column("has_sig").to_numpy(zero_copy_only=False) if "has_sig" in wanted else None
        for c in columns:
            k = t.column(c).to_numpy()
            keys[c].append(k if c in ("exact", "url") else k[ok])
            idx[c].append(i if c in ("exact", "url") else i[ok])
    total = 0
    for c, path in zip(columns, edge_paths):
        edges = _bucket_edges(np.concatenate(keys.pop(c)) if sig_paths else np.zeros(0, np.uint64),
                              np.concatenate(idx.pop(c)) if sig_paths else np.zeros(0, np.int64))
        with atomic_open(path) as f:  # a file object: np.save would add ".npy" to a path
            np.save(f, edges)
        total += len(edges)
    return total


def _bucket_edges(k: np.ndarray, i: np.ndarray) -> np.ndarray:
    """An edge from each document to the first document (by row) of its bucket (same key)."""
    order = np.lexsort((i, k))
    k, i = k[order], i[order]
    first = np.ones(len(k), dtype=bool)
    first[1:] = k[1:] != k[:-1]
    head = i[np.maximum.accumulate(np.where(first, np.arange(len(k)), 0))]
    return np.stack([i[~first], head[~first]], axis=1) if len(k) else np.zeros((0, 2), np.int64)


def column_groups(columns: list[str], docs: int, workers: int, task_bytes: int = 1 << 30) -> list[list[str]]:
    """The candidate tasks' columns: as few tasks as keep every worker busy, and each task within
    ``task_bytes`` (~40 bytes per document and column: keys, row numbers and the sort). Fewer tasks read
    each signature file fewer times; at scale each task gets one column (band) as before."""
    per_task = max(1, task_bytes // max(1, 40 * docs))
    n = max(min(len(columns), workers), -(-len(columns) // per_task))
    return [g for g in (columns[j::n] for j in range(n)) if g]


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
        with parquet_file(p) as pf:
            for batch in pf.iter_batches(batch_size=8192, columns=columns):
                a, b = np.searchsorted(local, [start, start + batch.num_rows])
                if a < b:
                    picked = batch.take(pa.array(local[a:b] - start))
                    for c in columns:
                        out[c].append(picked.column(c))
                start += batch.num_rows
    return {c: pa.concat_arrays(v) if v else None for c, v in out.items()}


def cluster(sig_paths, bounds, edge_files, cfg: DedupConfig, num_perm: int) -> dict:
    """Returns {global row: (kept global row, reason)} for every removed document, and cluster stats."""
    exact_edges, lsh_edges = [], []
    for name, path in edge_files:
        with storage.temp_copy(path) as f:  # (a URL: downloaded to this node's scratch, then removed)
            (exact_edges if name in ("exact", "url") else lsh_edges).append(np.load(f))
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
