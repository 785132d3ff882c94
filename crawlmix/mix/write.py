"""Mixer shard writing: a shard plan + indexed sources -> one deterministic WebDataset tar and/or its Parquet
form (crawlmix/mix/parquet_out.py); run by crawlmix/mix/job.py through the executor, one task per shard.

Everything about a shard is known from the index before a byte is written: every member's name, size and
place in the tar, and the pieces of bytes each member is made of (ShardLayout, NumPy arrays; the members
and pieces come from the layout, crawlmix/mix/layout.py). A chunk of the tar (CHUNK bytes) is filled in one
go: zeros, then every piece (runs of pieces that lie back to back in their source tar in one copy from the
memory-mapped file, their source headers then overwritten; nested tar headers from the layout's framing
buffer; .json members from the source's prebuilt JSON), then all USTAR headers of the chunk at once with
NumPy. Each chunk is then md5-hashed and written;
hashlib and file writes release the GIL, so shards written side by side by threads (mix.py --threads)
keep a second core busy. The tar and then its stats file are published atomically
(crawlmix/runtime/atomic.py).
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np

from crawlmix import __version__
from crawlmix.io.tar import TAR_BASE_SUM as _TAR_BASE_SUM
from crawlmix.io.tar import TAR_TEMPLATE as _TAR_TEMPLATE
from crawlmix.io.tar import ZEROS as _ZEROS
from crawlmix.io.tar import tar_header
from crawlmix.mix.layout import NESTED_HEADER
from crawlmix.mix.members import JSON_HEAD
from crawlmix.mix.sources import Source, digits, tar_member_bytes
from crawlmix.mix.tar_index import CHK_SHIFT
from crawlmix.runtime import storage
from crawlmix.runtime.atomic import atomic_path, write_json

KEY_DIGITS = 10  # sample keys: the sample's number in the stage, zero-padded
CHUNK = 4 << 20  # bytes per write (and md5 update); a larger member is written from its source directly
_TEMPLATE_ROW = np.frombuffer(bytes(_TAR_TEMPLATE), np.uint8)
_KEY_POW = 10 ** np.arange(KEY_DIGITS - 1, -1, -1, dtype=np.int64)
_SIZE_SHIFT = 3 * np.arange(10, -1, -1, dtype=np.int64)


def key_digits(keys: np.ndarray) -> np.ndarray:
    """The zero-padded decimal digits of each key: (n, KEY_DIGITS) uint8."""
    return (keys[:, None] // _KEY_POW % 10 + 48).astype(np.uint8)


def put_headers(out: np.ndarray, kd: np.ndarray, ext_table: np.ndarray, ext_ids: np.ndarray,
                sizes: np.ndarray) -> None:
    """The fields of tar_header(f"{key}.{ext}", size) that differ from the template, for many members at
    once, into the rows of out ((n, >= 160) uint8 holding the template): kd are the keys' digits
    (key_digits), ext_table each extension's bytes zero-padded. The checksum is the template's plus the
    name's and the size field's bytes, so only those are summed."""
    sd = (sizes[:, None] >> _SIZE_SHIFT & 7).astype(np.uint8) + np.uint8(48)
    ext_sum = ext_table.sum(1, dtype=np.int64)
    chk = _TAR_BASE_SUM + 46 + kd.sum(1, dtype=np.int64) + ext_sum[ext_ids] + sd.sum(1, dtype=np.int64)
    w = ext_table.shape[1]
    out[:, :KEY_DIGITS] = kd
    out[:, KEY_DIGITS] = 46  # '.'
    out[:, KEY_DIGITS + 1:KEY_DIGITS + 1 + w] = ext_table[ext_ids]
    out[:, 124:135] = sd
    out[:, 148:154] = (chk[:, None] >> CHK_SHIFT & 7) + 48
    out[:, 154] = 0  # then the template's space


def put_nested_headers(out: np.ndarray, table: np.ndarray, name_ids: np.ndarray, sizes: np.ndarray) -> None:
    """tar_header(name, size) of nested tar members, many at once, into rows of out holding the template:
    names from table (each name's bytes, zero-padded)."""
    sd = (sizes[:, None] >> _SIZE_SHIFT & 7).astype(np.uint8) + np.uint8(48)
    chk = _TAR_BASE_SUM + table.sum(1, dtype=np.int64)[name_ids] + sd.sum(1, dtype=np.int64)
    out[:, :table.shape[1]] = table[name_ids]
    out[:, 124:135] = sd
    out[:, 148:154] = (chk[:, None] >> CHK_SHIFT & 7) + 48
    out[:, 154] = 0


# ---------------------------------------------------------------------------------------------- layout
class ShardLayout:
    """Every member of a shard in tar order, and every piece of bytes to copy into it, as arrays.

    Per sample: its source's output members (crawlmix/mix/layout.py), then its .json. Members: source,
    extension, size, place, and for a .json its epoch and prefix length. Pieces (what a member's bytes are
    made of; what no piece covers is zero): view, offset in the view, size, place in the shard, and whether
    it is copied in one run with the previous piece. Built with NumPy from the plan."""

    def __init__(self, sp, sources: list[Source]):
        S = len(sp.src)
        if S and sp.start + S > 10 ** KEY_DIGITS:
            raise ValueError(f"sample keys past {KEY_DIGITS} digits (a stage of more than 10^{KEY_DIGITS} samples)")
        exts: dict[str, int] = {"json": 0}
        cnt = np.zeros(S, np.int64)
        per_src = []
        for s in np.unique(sp.src).tolist():
            src = sources[s]
            where = np.flatnonzero(sp.src == s)
            idx = sp.idx[where]
            c = src.m_start[idx + 1] - src.m_start[idx]
            cnt[where] = c
            gext = np.asarray([exts.setdefault(e, len(exts)) for e in src.out_exts] or [0], np.int32)
            per_src.append((s, src, where, idx, c, gext))
        k = cnt + 1
        first = np.cumsum(k) - k  # member number of each sample's first member
        M = int(k.sum())
        self.sample = np.repeat(np.arange(S), k)  # member -> its sample in the shard
        self.key_digits = key_digits(sp.start + np.arange(S, dtype=np.int64))  # per sample
        self.src = np.empty(M, np.int32)
        self.ext = np.empty(M, np.int32)
        self.size = np.empty(M, np.int64)
        self.is_json = np.zeros(M, bool)
        self.epoch = np.zeros(M, np.int64)  # of a .json member
        self.head = np.zeros(M, np.int64)  # .json: length of JSON_HEAD + epoch digits
        members = []  # per source: (its member numbers, their shard member numbers)
        for s, src, where, idx, c, gext in per_src:
            tot = int(c.sum())
            if tot:
                rep = np.repeat(np.arange(len(idx)), c)
                within = np.arange(tot) - np.repeat(np.cumsum(c) - c, c)
                mem = src.m_start[idx][rep] + within
                dest = first[where][rep] + within
                self.src[dest] = s
                self.ext[dest] = gext[src.m_ext[mem]]
                self.size[dest] = src.m_size[mem]
                members.append((False, src, s, mem, dest))
            jd = first[where] + c
            head = len(JSON_HEAD) + digits(sp.epoch[where])
            self.src[jd] = s
            self.ext[jd] = 0
            self.is_json[jd] = True
            self.size[jd] = src.j_start[idx + 1] - src.j_start[idx] + head
            self.epoch[jd] = sp.epoch[where]
            self.head[jd] = head
            members.append((True, src, s, idx, jd))  # the .json pieces: sample numbers instead of member numbers
        self.blk = tar_member_bytes(self.size)
        self.end = np.cumsum(self.blk)  # byte after each member
        self.pos = self.end - self.blk
        self.nbytes = int(self.end[-1] if M else 0) + 1024
        self._pieces(members)
        enc = {i: e.encode() for e, i in exts.items()}
        table = np.zeros((len(exts), max(map(len, enc.values()))), np.uint8)
        for i, b in enc.items():
            table[i, :len(b)] = np.frombuffer(b, np.uint8)
        self.ext_table = table

    def _pieces(self, members) -> None:
        """The pieces of every member, in shard order (sorted by place). A nested tar header piece keeps view
        NESTED_HEADER, its name (an index into nested_names) as offset and its member's size as aux."""
        view_keys: dict[tuple[int, int], int] = {}
        names: dict[str, int] = {}
        parts = []
        for is_json, src, s, mem, dest in members:
            data = self.pos[dest] + 512
            if is_json:
                v = view_keys.setdefault((s, -1), len(view_keys))
                parts.append((np.full(len(mem), v, np.int32), src.j_start[mem], self.size[dest] - self.head[dest],
                              data + self.head[dest], np.zeros(len(mem), bool), np.zeros(len(mem), np.int64)))
                continue
            pc = src.p_start[mem + 1] - src.p_start[mem]
            tot = int(pc.sum())
            if not tot:
                continue
            pid = np.repeat(src.p_start[mem], pc) + np.arange(tot) - np.repeat(np.cumsum(pc) - pc, pc)
            bufs, offs = src.p_buf[pid], src.p_off[pid]
            views = np.full(tot, NESTED_HEADER, np.int32)
            real = bufs != NESTED_HEADER
            if real.any():
                ub = np.unique(bufs[real])
                vmap = np.full(int(ub.max()) + 1, -1, np.int32)
                for b in ub.tolist():
                    vmap[b] = view_keys.setdefault((s, b), len(view_keys))
                views[real] = vmap[bufs[real]]
            if not real.all():
                gid = np.asarray([names.setdefault(nm, len(names)) for nm in src.nested_names], np.int64)
                offs = np.where(real, offs, gid[np.where(real, 0, offs)])
            parts.append((views, offs, src.p_size[pid], np.repeat(data, pc) + src.p_dst[pid], src.p_cont[pid],
                          src.p_aux[pid]))
        cat = [np.concatenate([p[i] for p in parts]) if parts else np.zeros(0, np.int64) for i in range(6)]
        order = np.argsort(cat[3], kind="stable")
        self.p_view, self.p_off, self.p_size, self.p_dst, self.p_cont, self.p_aux = (c[order] for c in cat)
        self.p_view = self.p_view.astype(np.int32)
        self.p_cont = self.p_cont.astype(bool)
        self.p_cont[1:] &= self.p_view[1:] == self.p_view[:-1]
        if len(self.p_cont):
            self.p_cont[0] = False
        # pieces of members [0, m): the first piece at or after member m's header
        self.p_first = np.searchsorted(self.p_dst, np.append(self.pos, self.nbytes))
        self.view_keys = sorted(view_keys, key=view_keys.get)
        self.nested_names = sorted(names, key=names.get)
        enc = [nm.encode() for nm in self.nested_names]
        self.nested_table = np.zeros((len(enc), max(map(len, enc), default=1)), np.uint8)
        for i, b in enumerate(enc):
            self.nested_table[i, :len(b)] = np.frombuffer(b, np.uint8)

    def headers(self, a: int, b: int) -> np.ndarray:
        h = np.empty((b - a, 512), np.uint8)
        h[:] = _TEMPLATE_ROW
        put_headers(h, self.key_digits[self.sample[a:b]], self.ext_table, self.ext[a:b], self.size[a:b])
        return h

    def views(self, sources: list[Source]) -> list[memoryview]:
        out = []
        for s, b in self.view_keys:
            out.append(memoryview(sources[s].json_rest if b < 0 else sources[s].buffers()[b]))
        return out


# ---------------------------------------------------------------------------------------------- writing
class _Sink:
    """md5-hashes and writes chunks in order, in the calling thread (hashlib and file writes release the
    GIL, so shards written side by side by threads overlap). The chunk buffer is the thread's own, reused."""

    _local = threading.local()

    def __init__(self, f):
        buf = getattr(_Sink._local, "buffer", None)
        if buf is None:
            buf = _Sink._local.buffer = memoryview(bytearray(CHUNK))
        self.buffer = buf
        self.f = f
        self.md5 = hashlib.md5()
        self.bytes = 0

    def write(self, *views) -> None:
        for v in views:
            self.md5.update(v)
            done = 0
            while done < len(v):
                done += self.f.write(v[done:])
            self.bytes += len(v)


def _fill(buf: memoryview, lay: ShardLayout, a: int, b: int, views: list[memoryview]) -> int:
    """Members a..b of the layout into buf: zeros, the bytes of each run of pieces that lie back to back in
    their source (one copy), then every header and .json epoch prefix on top. Returns the bytes used."""
    base = int(lay.pos[a])
    used = int(lay.end[b - 1]) - base
    arr = np.frombuffer(buf, np.uint8, used)
    arr[:] = 0
    pa, pb = int(lay.p_first[a]), int(lay.p_first[b])
    if pb > pa:
        cont = lay.p_cont[pa:pb].copy()
        cont[0] = False
        first = np.flatnonzero(~cont)  # runs of pieces copied in one piece
        last = np.append(first[1:], pb - pa) - 1
        f, l_ = first + pa, last + pa
        dst = lay.p_dst[f] - base
        src = lay.p_off[f]
        n = lay.p_off[l_] + lay.p_size[l_] - src
        for p, v, o, k in zip(dst.tolist(), lay.p_view[f].tolist(), src.tolist(), n.tolist()):
            if v >= 0:
                buf[p:p + k] = views[v][o:o + k]
    blocks = arr.reshape(-1, 512)
    h = np.flatnonzero(lay.p_view[pa:pb] == NESTED_HEADER) + pa
    if len(h):  # nested tar headers
        rows = (lay.p_dst[h] - base) // 512
        hdr = np.empty((len(h), 160), np.uint8)
        hdr[:] = _TEMPLATE_ROW[:160]
        put_nested_headers(hdr, lay.nested_table, lay.p_off[h], lay.p_aux[h])
        blocks[rows] = _TEMPLATE_ROW
        blocks[rows, :160] = hdr
    rows = (lay.pos[a:b] - base) // 512  # header blocks: template, then the fields that differ
    blocks[rows] = _TEMPLATE_ROW
    hdr = np.empty((b - a, 160), np.uint8)  # name, size and checksum fields (the first 160 bytes)
    hdr[:] = _TEMPLATE_ROW[:160]
    put_headers(hdr, lay.key_digits[lay.sample[a:b]], lay.ext_table, lay.ext[a:b], lay.size[a:b])
    blocks[rows, :160] = hdr
    j = np.flatnonzero(lay.is_json[a:b]) + a
    if len(j):
        p = lay.pos[j] - base + 512
        arr[p[:, None] + np.arange(len(JSON_HEAD))] = np.frombuffer(JSON_HEAD, np.uint8)
        ep, nd = lay.epoch[j], lay.head[j] - len(JSON_HEAD)
        for k in range(int(nd.max())):
            sel = nd > k
            arr[p[sel] + len(JSON_HEAD) + k] = ep[sel] // 10 ** (nd[sel] - 1 - k) % 10 + 48
    return used


def _big_member(lay: ShardLayout, a: int, views: list[memoryview]) -> list:
    """The bytes of one member larger than a chunk, as parts: its header, its pieces and the zeros between."""
    parts = [lay.headers(a, a + 1).tobytes()]
    start, cur = int(lay.pos[a]) + 512, 0
    if lay.is_json[a]:
        parts.append(JSON_HEAD + b"%d" % int(lay.epoch[a]))
        cur = int(lay.head[a])
    for p in range(int(lay.p_first[a]), int(lay.p_first[a + 1])):
        d, v, o, n = int(lay.p_dst[p]) - start, int(lay.p_view[p]), int(lay.p_off[p]), int(lay.p_size[p])
        if d > cur:
            parts.append(bytes(d - cur))
        parts.append(views[v][o:o + n] if v >= 0 else tar_header(lay.nested_names[o], int(lay.p_aux[p])))
        cur = d + n
    parts.append(bytes(int(lay.blk[a]) - 512 - cur))
    return parts


def write_shard(stage_dir: str, name: str, sp, sources: list[Source], common: dict, digest: str,
                formats=("webdataset",)) -> dict:
    """Write one shard atomically in each of the formats (its tar, its Parquet form), then its stats json;
    returns the stats."""
    path = _at(stage_dir, name)  # a local path or a URL: published whole either way (crawlmix.runtime.atomic)
    lay = ShardLayout(sp, sources)
    if lay.nbytes != sp.nbytes:  # the planner sized shards from the index; both must agree exactly
        raise RuntimeError(f"{path}: laid out {lay.nbytes} bytes, planned {sp.nbytes}")
    tar = _write_tar(path, lay, sp, sources) if "webdataset" in formats else None
    pq_stats = None
    if "parquet" in formats:
        from crawlmix.mix.parquet_out import write_shard_parquet  # pyarrow only when Parquet is written

        nbytes, md5 = write_shard_parquet(_at(stage_dir, parquet_name(name)), sp, sources, KEY_DIGITS)
        pq_stats = {"file": parquet_name(name), "bytes": nbytes, "md5": md5}
    per_src, mods = {}, {}
    src_bytes = np.bincount(lay.src, weights=lay.blk, minlength=len(sources))
    for s in sorted(np.unique(sp.src).tolist(), key=lambda i: sources[i].name):
        src = sources[s]
        m = sp.src == s
        n = int(m.sum())
        per_src[src.name] = {"samples": n, "bytes": int(src_bytes[s]), "tokens": int(src.tokens[sp.idx[m]].sum())}
        mods[src.cfg.modality] = mods.get(src.cfg.modality, 0) + n
    stats = {"shard": name, "samples": len(sp.src), "bytes": tar[0] if tar else None, "tokens": sp.tokens,
             "first_key": str(sp.start).zfill(KEY_DIGITS), "last_key": str(sp.start + len(sp.src) - 1).zfill(KEY_DIGITS),
             "sources": per_src, "modalities": dict(sorted(mods.items())),
             "md5": tar[1] if tar else None, "plan": digest, "mixture_hash": common["mixture_hash"],
             "crawlmix_version": __version__, "formats": list(formats)}
    if pq_stats:
        stats["parquet"] = pq_stats
    write_json(_at(stage_dir, stats_name(name)), stats)
    return stats


def _at(stage_dir, name: str) -> Path | str:
    """The file ``name`` in a stage folder: a Path in a local folder, a URL under a URL."""
    return storage.join(stage_dir, name) if storage.is_remote(stage_dir) else Path(stage_dir) / name


def _write_tar(path: Path | str, lay: ShardLayout, sp, sources: list[Source]) -> tuple[int, str]:
    """The shard's tar, published atomically; (bytes, md5)."""
    views = lay.views(sources)
    with atomic_path(path) as tmp, open(tmp, "wb", buffering=0) as f:
        sink = _Sink(f)
        buf = sink.buffer
        a, M = 0, len(lay.size)
        while a < M:
            b = int(np.searchsorted(lay.end, lay.pos[a] + CHUNK, "right"))
            if b > a:  # members a..b fit in a chunk
                sink.write(buf[:_fill(buf, lay, a, b, views)])
                a = b
                continue
            sink.write(*_big_member(lay, a, views))  # one member larger than a chunk
            a += 1
        sink.write(_ZEROS)
        if sink.bytes != sp.nbytes:
            raise RuntimeError(f"{path}: wrote {sink.bytes} bytes, planned {sp.nbytes}")
    return sink.bytes, sink.md5.hexdigest()


def parquet_name(shard: str) -> str:
    """The Parquet form of a shard beside its tar: shard-000000.parquet."""
    return shard[:-4] + ".parquet"


def stats_name(shard: str) -> str:
    return shard[:-4] + ".stats.json"
