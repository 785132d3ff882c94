"""Mixer sample layouts: a source's parts (crawlmix/mix/readers.py) -> the members its samples get in a shard
(used by crawlmix/mix/sources.py; the shard writer in write.py only copies the pieces laid out here).

layout 'uniform' (the default): every sample of a stage has the same members, whatever its source, so a
reader that infers one schema from the first samples (Hugging Face `datasets`' webdataset builder) reads
the whole stage:

    KEY.txt          the sample's text: its text parts joined ("\\n"; "\\n\\n" between an interleaved
                     document's pieces); empty when it has none
    KEY.images.tar   only in stages where some sample has a non-text part: the sample's images (video frames,
                     image sets, an interleaved document's images) in order as a tar of members 0.jpg, 1.png, ...
                     (each the source member's bytes, named by position and the source extension); an
                     interleaved document's text pieces are in it too, in document order (0.txt, 1.jpg, 2.txt);
                     0 bytes when the sample has nothing to put there
    KEY.json         the one .json schema (crawlmix/mix/members.py)

layout 'source': every part is a member as it was in the source (img2dataset style: .jpg, .0.jpg ... .7.jpg,
.txt); an interleaved document's parts are .0.txt, .1.jpg, ... . Members are copied byte for byte, runs that
lie back to back in the source tar in one piece.

A member is a size and pieces: (offset in the member, buffer, offset in the buffer, size); what no piece
covers is zero (tar padding, the end of a nested tar). Buffers are the source's (tars or in-memory blobs)
plus its framing buffer (the separators); a nested tar member's header is a piece the writer makes itself
(buffer NESTED_HEADER: its name from nested_names, its size in p_aux), like the shard's own headers. The
uniform layout is computed with NumPy over all parts at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from crawlmix.mix.readers import TEXT

if TYPE_CHECKING:
    from crawlmix.mix.sources import Source

UNIFORM_EXTS = ["txt", "images.tar"]
SEPARATORS = b"\n\n"  # the framing buffer: a separator piece is its first 1 ("\n") or 2 ("\n\n") bytes
NESTED_HEADER = -2  # p_buf of a nested tar member's header piece: p_off names it (nested_names), p_aux its size


def _pad(n):
    return (n + 511) // 512 * 512


def lay_out(src: Source, with_images: bool) -> None:
    """Fill the source's output member arrays (m_*, p_*), its output extensions and framing buffer."""
    if src.layout == "source":
        _source_layout(src)
    else:
        _uniform_layout(src, with_images)


def _source_layout(src: Source) -> None:
    n = len(src.q_ext)
    src.out_exts, src.nested_names, src.extra = list(src.exts), [], b""
    src.m_start, src.m_ext, src.m_size = src.q_start, src.q_ext, src.q_size
    src.p_start = np.arange(n + 1, dtype=np.int64)
    src.p_dst, src.p_aux = np.zeros(n, np.int64), np.zeros(n, np.int64)
    src.p_buf, src.p_off, src.p_size, src.p_cont = src.q_buf, src.q_off, src.q_size, src.q_cont


def _ranks(samp: np.ndarray, n: int):
    """Per element of a sample-sorted selection: its rank in its sample; and the count per sample."""
    count = np.bincount(samp, minlength=n)
    first = np.cumsum(count) - count
    return np.arange(len(samp)) - first[samp], count


def _within(samp: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Per element: the sum of the sizes of the elements before it in the same sample."""
    cum = np.cumsum(sizes) - sizes
    rank, _ = _ranks(samp, int(samp.max()) + 1 if len(samp) else 0)
    return cum - cum[np.arange(len(samp)) - rank]


def _uniform_layout(src: Source, with_images: bool) -> None:
    """Vectorised over all parts: a .txt member of the text parts joined by separators, and (with_images) an
    .images.tar member of the other parts (all of them for interleaved documents) as nested tar members."""
    fb = len(src.base_buffers())  # the framing buffer's number
    n = len(src.q_start) - 1
    samp = np.repeat(np.arange(n), np.diff(src.q_start))
    is_text = src.q_kind == TEXT
    per = 2 if with_images else 1
    pieces = []  # (member, dst, buf, off, size, aux)
    # .txt: the text parts, a separator between two
    sep = 2 if src.cfg.modality == "interleaved" else 1
    T = np.flatnonzero(is_text)
    ts, tsz = samp[T], src.q_size[T]
    rank, tcount = _ranks(ts, n)
    tdst = _within(ts, tsz) + sep * rank
    txt_size = np.bincount(ts, weights=tsz, minlength=n).astype(np.int64) + sep * np.maximum(tcount - 1, 0)
    pieces.append((per * ts, tdst, src.q_buf[T], src.q_off[T], tsz, np.zeros(len(T), np.int64)))
    r = rank > 0
    pieces.append((per * ts[r], tdst[r] - sep, np.full(int(r.sum()), fb), np.zeros(int(r.sum()), np.int64),
                   np.full(int(r.sum()), sep), np.zeros(int(r.sum()), np.int64)))
    sizes = [txt_size]
    names: list[str] = []
    if with_images:  # .images.tar: a header and the bytes of each nested member, then the end-of-archive blocks
        E = np.arange(len(samp)) if src.cfg.modality == "interleaved" else np.flatnonzero(~is_text)
        es, esz = samp[E], src.q_size[E]
        rank, ecount = _ranks(es, n)
        blk = 512 + _pad(esz)
        pos = _within(es, blk)
        last_ext = [e.rsplit(".", 1)[-1] for e in src.exts]  # a nested member is named position.extension
        kinds = sorted(set(last_ext))
        L = max(1, len(kinds))
        lid = np.asarray([kinds.index(e) for e in last_ext] or [0], np.int64)
        uniq, name_id = np.unique(rank * L + lid[src.q_ext[E]], return_inverse=True)
        names = [f"{c // L}.{kinds[c % L]}" for c in uniq.tolist()]
        member = per * es + 1
        pieces.append((member, pos, np.full(len(E), NESTED_HEADER), name_id.astype(np.int64),
                       np.full(len(E), 512), esz))
        d = esz > 0
        pieces.append((member[d], pos[d] + 512, src.q_buf[E][d], src.q_off[E][d], esz[d],
                       np.zeros(int(d.sum()), np.int64)))
        img_size = np.bincount(es, weights=blk, minlength=n).astype(np.int64) + 1024 * (ecount > 0)
        sizes.append(img_size)
    cat = [np.concatenate([p[i] for p in pieces]).astype(np.int64) for i in range(6)]
    order = np.lexsort((cat[1], cat[0]))
    member, src.p_dst, buf, src.p_off, src.p_size, src.p_aux = (c[order] for c in cat)
    src.p_buf = buf.astype(np.int32)
    src.p_cont = np.zeros(len(order), bool)
    M = per * n
    src.p_start = np.zeros(M + 1, np.int64)
    np.cumsum(np.bincount(member, minlength=M), out=src.p_start[1:])
    src.out_exts = UNIFORM_EXTS[:per]
    src.nested_names = names
    src.extra = SEPARATORS
    src.m_start = np.arange(0, M + 1, per, dtype=np.int64)
    src.m_ext = np.tile(np.arange(per, dtype=np.int32), n)
    src.m_size = np.stack(sizes, 1).reshape(-1) if n else np.zeros(0, np.int64)


def has_media(src: Source) -> bool:
    """Whether a sample of the source has a part that goes into .images.tar (uniform layout)."""
    return bool(len(src.q_kind) and ((src.q_kind != TEXT).any() or src.cfg.modality == "interleaved"))
