"""Mixer shard writing: a shard plan + indexed sources -> one deterministic WebDataset tar (run by
crawlmix/mix/job.py through the executor, one task per shard).

Everything about a shard is known from the index before a byte is written: every member's name, size and
place in the tar (ShardLayout, NumPy arrays). A chunk of the tar (CHUNK bytes) is filled in one go:
payload members that lie back to back in their source tar are copied in one piece from the memory-mapped
file (their source headers are then overwritten), .json members from the source's prebuilt JSON, and all
USTAR headers of the chunk are written at once with NumPy. Each chunk is then md5-hashed and written;
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
from crawlmix.mix.members import JSON_HEAD
from crawlmix.mix.sources import Source, digits, tar_member_bytes
from crawlmix.mix.tar_index import CHK_SHIFT
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


# ---------------------------------------------------------------------------------------------- layout
class ShardLayout:
    """Every member of a shard in tar order, as arrays: source, extension, where its bytes are, size, place.

    Per sample: its source's payload members, then its .json (buf -1). Built with NumPy from the plan."""

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
            gext = np.asarray([exts.setdefault(e, len(exts)) for e in src.exts] or [0], np.int32)
            per_src.append((s, src, where, idx, c, gext))
        k = cnt + 1
        first = np.cumsum(k) - k  # member number of each sample's first member
        M = int(k.sum())
        self.sample = np.repeat(np.arange(S), k)  # member -> its sample in the shard
        self.key_digits = key_digits(sp.start + np.arange(S, dtype=np.int64))  # per sample
        self.src = np.empty(M, np.int32)
        self.ext = np.empty(M, np.int32)
        self.buf = np.empty(M, np.int32)  # buffer of the source; -1: the sample's .json
        self.off = np.empty(M, np.int64)  # offset in the buffer (for a .json: in the source's json_rest)
        self.size = np.empty(M, np.int64)
        self.cont = np.zeros(M, bool)  # directly follows the previous member in the same buffer
        self.epoch = np.zeros(M, np.int64)  # of a .json member
        self.head = np.zeros(M, np.int64)  # .json: length of JSON_HEAD + epoch digits
        for s, src, where, idx, c, gext in per_src:
            tot = int(c.sum())
            if tot:
                rep = np.repeat(np.arange(len(idx)), c)
                within = np.arange(tot) - np.repeat(np.cumsum(c) - c, c)
                mem = src.m_start[idx][rep] + within
                dest = first[where][rep] + within
                self.src[dest] = s
                self.ext[dest] = gext[src.m_ext[mem]]
                self.buf[dest] = src.m_buf[mem]
                self.off[dest] = src.m_off[mem]
                self.size[dest] = src.m_size[mem]
                self.cont[dest] = src.m_cont[mem]
            jd = first[where] + c
            ep = sp.epoch[where]
            head = len(JSON_HEAD) + digits(ep)
            self.src[jd] = s
            self.ext[jd] = 0
            self.buf[jd] = -1
            self.off[jd] = src.j_start[idx]
            self.size[jd] = src.j_start[idx + 1] - src.j_start[idx] + head
            self.epoch[jd] = ep
            self.head[jd] = head
        self.blk = tar_member_bytes(self.size)
        self.end = np.cumsum(self.blk)  # byte after each member
        self.pos = self.end - self.blk
        self.nbytes = int(self.end[-1] if M else 0) + 1024
        enc = {i: e.encode() for e, i in exts.items()}
        table = np.zeros((len(exts), max(map(len, enc.values()))), np.uint8)
        for i, b in enc.items():
            table[i, :len(b)] = np.frombuffer(b, np.uint8)
        self.ext_table = table
        # one buffer list per shard: view number per member (a source's tar / text blob, or its json_rest)
        pair = self.src.astype(np.int64) * (1 << 32) + (self.buf.astype(np.int64) + 1)
        uniq, self.view = np.unique(pair, return_inverse=True)
        self.view_keys = [(int(u >> 32), int(u & 0xFFFFFFFF) - 1) for u in uniq]

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
    """Members a..b of the layout into buf: zeros, the bytes of each run of members that are contiguous
    in their source (one copy), then every header and .json epoch prefix on top. Returns the bytes used."""
    base = int(lay.pos[a])
    used = int(lay.end[b - 1]) - base
    arr = np.frombuffer(buf, np.uint8, used)
    arr[:] = 0
    cont = lay.cont[a:b].copy()
    cont[0] = False
    first = np.flatnonzero(~cont)  # runs of members copied in one piece
    last = np.append(first[1:], b - a) - 1
    f, l_ = first + a, last + a
    head = lay.head[f]
    dst = lay.pos[f] - base + 512 + head
    src = lay.off[f]
    n = lay.off[l_] + lay.size[l_] - src
    n = np.where(lay.buf[f] < 0, lay.size[f] - head, n)
    for p, v, o, k in zip(dst.tolist(), lay.view[f].tolist(), src.tolist(), n.tolist()):
        buf[p:p + k] = views[v][o:o + k]
    rows = (lay.pos[a:b] - base) // 512  # header blocks: template, then the fields that differ
    blocks = arr.reshape(-1, 512)
    blocks[rows] = _TEMPLATE_ROW
    hdr = np.empty((b - a, 160), np.uint8)  # name, size and checksum fields (the first 160 bytes)
    hdr[:] = _TEMPLATE_ROW[:160]
    put_headers(hdr, lay.key_digits[lay.sample[a:b]], lay.ext_table, lay.ext[a:b], lay.size[a:b])
    blocks[rows, :160] = hdr
    j = np.flatnonzero(lay.buf[a:b] < 0) + a
    if len(j):
        p = lay.pos[j] - base + 512
        arr[p[:, None] + np.arange(len(JSON_HEAD))] = np.frombuffer(JSON_HEAD, np.uint8)
        ep, nd = lay.epoch[j], lay.head[j] - len(JSON_HEAD)
        for k in range(int(nd.max())):
            sel = nd > k
            arr[p[sel] + len(JSON_HEAD) + k] = ep[sel] // 10 ** (nd[sel] - 1 - k) % 10 + 48
    return used


def write_shard(stage_dir: str, name: str, sp, sources: list[Source], common: dict, digest: str) -> dict:
    """Write one shard atomically, then its stats json; returns the stats."""
    stage_dir = Path(stage_dir)
    path = stage_dir / name
    lay = ShardLayout(sp, sources)
    if lay.nbytes != sp.nbytes:  # the planner sized shards from the index; both must agree exactly
        raise RuntimeError(f"{path}: laid out {lay.nbytes} bytes, planned {sp.nbytes}")
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
            # one member larger than a chunk: its header, its bytes from the source, its padding
            v, o, n, h = int(lay.view[a]), int(lay.off[a]), int(lay.size[a]), int(lay.head[a])
            parts = [lay.headers(a, a + 1).tobytes()]
            if h:
                parts.append(JSON_HEAD + b"%d" % int(lay.epoch[a]))
            parts += [views[v][o:o + n - h], _ZEROS[:int(lay.blk[a]) - 512 - n]]
            sink.write(*parts)
            a += 1
        sink.write(_ZEROS)
        if sink.bytes != sp.nbytes:
            raise RuntimeError(f"{path}: wrote {sink.bytes} bytes, planned {sp.nbytes}")
    per_src, mods = {}, {}
    src_bytes = np.bincount(lay.src, weights=lay.blk, minlength=len(sources))
    for s in sorted(np.unique(sp.src).tolist(), key=lambda i: sources[i].name):
        src = sources[s]
        m = sp.src == s
        n = int(m.sum())
        per_src[src.name] = {"samples": n, "bytes": int(src_bytes[s]), "tokens": int(src.tokens[sp.idx[m]].sum())}
        mods[src.cfg.modality] = mods.get(src.cfg.modality, 0) + n
    stats = {"shard": name, "samples": len(sp.src), "bytes": sink.bytes, "tokens": sp.tokens,
             "first_key": str(sp.start).zfill(KEY_DIGITS), "last_key": str(sp.start + len(sp.src) - 1).zfill(KEY_DIGITS),
             "sources": per_src, "modalities": dict(sorted(mods.items())),
             "md5": sink.md5.hexdigest(), "plan": digest, "mixture_hash": common["mixture_hash"],
             "crawlmix_version": __version__}
    write_json(stage_dir / stats_name(name), stats)
    return stats


def stats_name(shard: str) -> str:
    return shard[:-4] + ".stats.json"
