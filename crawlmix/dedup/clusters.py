"""Dedup stages 2 and 3: LSH candidate pairs per band, then verified pairs -> connected components -> keepers.

candidates  one task per band: reads that band's column from every signature file, sorts it, and emits an
            edge from each bucket member to the bucket's first member. Exact content / URL hashes are two
            more "bands". Memory per task: 12 bytes per document.
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

def candidate_task(sig_paths: list[str], offsets: list[int], column: str, edge_path: str) -> int:
    """Edges (doc, first doc of its bucket) for one band (or the exact / url column)."""
    keys, idx = [], []
    for p, off in zip(sig_paths, offsets):
        cols = [column] if column in ("exact", "url") else [column, "has_sig"]
        t = read_table(p, columns=cols)  # one column of a signature file (a URL: only its bytes are read)
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
    with atomic_open(edge_path) as f:  # a file object: np.save would add ".npy" to a path
        np.save(f, edges)
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
        with parquet_file(p) as pf:
            for batch in pf.iter_batches(batch_size=8192, columns=columns):
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
