"""Mixer readers: a source's files (Parquet from a crawl, JSONL, WebDataset tars) -> its per-sample parts
(used by Source.build_index in crawlmix/mix/sources.py; interleaved documents are read by
crawlmix/mix/interleaved_source.py).

A sample's parts are its payload in order, each a kind (text, image, other), the extension it had in the
source and where its bytes are (a buffer of the source, an offset, a size); crawlmix/mix/layout.py turns
them into the output members. Parquet and JSONL give one text part per sample, their texts concatenated
into one UTF-8 blob. Tars are memory-mapped and indexed from their headers alone
(crawlmix/mix/tar_index.py); member bytes are never decoded, only each sample's .json (its metadata) and
.txt members (token counts). Every sample's output .json is built here once, from a per-file template
(crawlmix/mix/members.py).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from crawlmix.mix.members import JsonTemplate, loads
from crawlmix.mix.tar_index import TarScan

if TYPE_CHECKING:
    from crawlmix.mix.sources import Source

IMAGE_EXTS = {"jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "ppm", "pgm", "avif"}
TEXT_EXTS = {"txt", "text"}
TEXT, IMAGE, OTHER = 0, 1, 2  # part kinds


def kind_of(ext: str) -> int:
    """A part's kind from its (last) extension."""
    last = ext.rsplit(".", 1)[-1].lower()
    return TEXT if last in TEXT_EXTS else IMAGE if last in IMAGE_EXTS else OTHER
MAX_EXT_BYTES = 89  # output member names are "<10-digit key>.<ext>" in the 100-byte USTAR name field


def read_parquet(src: Source):
    """(table, provenance metadata) of each Parquet file of the source: the text column and the crawl's
    columns that go into the output .json."""
    import pyarrow.parquet as pq

    tf = src.cfg.text_field
    for i, f in enumerate(src.files):
        try:
            pf = pq.ParquetFile(src.local_path(i))  # a remote file: its copy in local scratch
        except Exception as e:  # noqa: BLE001
            raise src.error(f"cannot read Parquet {f}: {e}") from None
        names = pf.schema_arrow.names
        if tf not in names:
            raise src.error(f"{f} has no column {tf!r} (columns: {', '.join(names[:12])})")
        cols = [c for c in names if c in (tf, "id", "url", "language", "language_score", "date", "source",
                                          "offset", "charset", "cc_languages", "extractor")]
        md = pf.schema_arrow.metadata or {}
        meta = {k.decode(): md[k].decode() for k in (b"config_hash", b"seed", b"crawlmix_version") if k in md}
        yield pf.read(columns=cols), meta


def read_jsonl(src: Source, f: str, local: str | None = None):
    """[(line number, object, exact)] of a JSONL file (exact: see loads()), read from ``local`` when given
    (a remote file's copy in local scratch)."""
    rows = []
    opener = gzip.open if f.endswith(".gz") else open
    tf = src.cfg.text_field
    try:
        with opener(local or f, "rb") as fh:
            for ln, line in enumerate(fh, 1):
                line = line[:-1] if line.endswith(b"\n") else line
                if not line.strip():
                    continue
                try:
                    obj, exact = loads(line)
                except json.JSONDecodeError as e:
                    raise src.error(f"{f}:{ln}: not valid JSON ({e.msg})") from None
                except UnicodeDecodeError as e:
                    raise src.error(f"cannot read {f}: {e}") from None
                if type(obj) is not dict or not isinstance(obj.get(tf), str):
                    raise src.error(f"{f}:{ln}: no string field {tf!r}")
                rows.append((ln, obj, exact))
    except (OSError, EOFError) as e:
        raise src.error(f"cannot read {f}: {e}") from None
    return rows


def _template(src: Source, common: dict, fi: int) -> JsonTemplate:
    meta = src.file_meta[fi] if src.file_meta else None
    return JsonTemplate(src.name, src.cfg.modality, common, src.rel_files[fi], meta, src.layout)


def index_texts(src: Source, common: dict):
    """Parquet / JSONL: one text part per sample, its bytes in one UTF-8 blob. Fills the source's part
    arrays; returns (file per sample, output .json rests, texts, images per sample) for Source.build_index."""
    langs = set(src.cfg.languages) if src.cfg.languages else None
    file_of, rests, texts = [], Blob(), []
    src.file_meta = []
    if src.fmt == "parquet":
        import pyarrow as pa

        tf = src.cfg.text_field
        meta_cols = ("date", "language_score", "charset", "cc_languages", "extractor")
        is_text = (pa.types.is_string, pa.types.is_large_string, getattr(pa.types, "is_string_view", None))
        for fi, (table, fmeta) in enumerate(read_parquet(src)):
            src.file_meta.append(fmeta)
            tpl = _template(src, common, fi)
            n = table.num_rows
            col = table.column(tf)
            if not any(t(col.type) for t in is_text if t) or col.null_count:
                raise src.error(f"{src.files[fi]}: column {tf!r} must hold text in every row "
                                f"({col.type}, {col.null_count} null)")
            cols = {c: table.column(c).to_pylist() for c in table.column_names}
            none = [None] * n
            text, ids, urls, lang = cols[tf], cols.get("id", none), cols.get("url", none), cols.get("language", none)
            mcols = [(k, cols[k]) for k in meta_cols if k in cols]
            warc, woff = cols.get("source"), cols.get("offset", none)
            fname = Path(src.files[fi]).name
            for row in range(n):
                if langs is not None and lang[row] not in langs:
                    continue
                meta = {k: v[row] for k, v in mcols if v[row] is not None}
                if warc is not None and warc[row] is not None:
                    meta["warc"] = warc[row]
                    meta["warc_offset"] = woff[row]
                file_of.append(fi)
                texts.append(text[row])
                rests.add(tpl.rest(ids[row] or f"{fname}:{row}", urls[row], lang[row], row, meta))
    else:
        tf = src.cfg.text_field
        skip = (tf, "id", "url", "language")
        for fi, f in enumerate(src.files):
            src.file_meta.append(None)
            tpl = _template(src, common, fi)
            fname = Path(f).name
            for ln, obj, exact in read_jsonl(src, f, src.local_path(fi)):
                lang = obj.get("language")
                if langs is not None and lang not in langs:
                    continue
                meta = {k: v for k, v in obj.items() if k not in skip}
                file_of.append(fi)
                texts.append(obj[tf])
                rests.add(tpl.rest(obj.get("id") or f"{fname}:{ln}", obj.get("url"), lang, ln, meta, exact))
    if not any(src.file_meta):
        src.file_meta = [None] * len(src.files)
    blob = Blob()
    try:
        for t in texts:
            blob.add(t.encode())
    except UnicodeEncodeError as e:
        raise src.error(f"a text is not valid Unicode ({e})") from None
    n = len(texts)
    sizes = np.asarray(blob.lens, np.int64)
    src.blobs = [blob.data]
    src.exts = ["txt"]
    src.q_start = np.arange(n + 1, dtype=np.int64)
    src.q_ext = np.zeros(n, np.int32)
    src.q_kind = np.full(n, TEXT, np.int8)
    src.q_buf = np.zeros(n, np.int32)
    src.q_size = sizes
    src.q_off = np.cumsum(sizes) - sizes
    src.q_cont = np.zeros(n, bool)
    return file_of, rests, texts, np.zeros(n, np.int64)


def index_tars(src: Source, common: dict):
    """WebDataset tars: members grouped by key (webdataset's rule: the path up to the first dot of the
    file name), payload members in tar order, the sample's .json read for its metadata. Fills the source's
    member arrays; returns (file per sample, output .json rests, texts, images per sample)."""
    from tarfile import ReadError

    langs = set(src.cfg.languages) if src.cfg.languages else None
    src.file_meta = [None] * len(src.files)
    maps = src.base_buffers()
    ext_id: dict = {}
    file_of, rests, texts, img_counts = [], Blob(), [], []
    counts, m_ext, m_buf, m_off, m_size, m_cont = [], [], [], [], [], []
    for fi, f in enumerate(src.files):
        mm = maps[fi]
        try:
            scan = TarScan(mm)
        except ReadError as e:
            raise src.error(f"corrupt tar {f}: {e}") from None
        if not len(scan):
            continue
        if scan.bad is not None:
            raise src.error(f"corrupt tar {f}: member {scan.name(scan.bad)} has no extension "
                            f"(not a WebDataset tar)")
        for e in scan.exts:
            ext_id.setdefault(e, len(ext_id))
        flags = np.zeros((3, len(ext_id)), bool)  # json, text, image per extension
        for e, i in ext_id.items():
            flags[:, i] = (e == "json", kind_of(e) == TEXT, kind_of(e) == IMAGE)
        M = len(scan)
        ids = np.asarray([ext_id[e] for e in scan.exts], np.int32)[scan.ext_of]
        offs, sizes, starts = scan.offs, scan.sizes, scan.starts
        G = len(starts)
        grp = np.repeat(np.arange(G), np.diff(np.append(starts, M)))
        is_json, is_text, is_img = flags[:, ids]
        metas: list = [{}] * G
        exact = [True] * G
        offs_l, sizes_l, grp_l = offs.tolist(), sizes.tolist(), grp.tolist()
        for m in np.flatnonzero(is_json).tolist():
            o, g = offs_l[m], grp_l[m]
            try:
                metas[g], exact[g] = loads(mm[o:o + sizes_l[m]])
            except ValueError as e:
                raise src.error(f"corrupt tar {f}: {scan.key(m)}.json is not valid JSON ({e})") from None
        txt: dict = {}
        for m in np.flatnonzero(is_text).tolist():
            o = offs_l[m]
            txt.setdefault(grp_l[m], []).append(mm[o:o + sizes_l[m]].decode("utf-8", "replace"))
        npay = np.add.reduceat((~is_json).astype(np.int64), starts)
        nimg = np.add.reduceat(is_img.astype(np.int64), starts)
        keep = npay > 0  # nothing but metadata: webdataset would yield an empty sample
        if langs is not None:
            keep &= [(m.get("language") if isinstance(m, dict) else None) in langs for m in metas]
        tpl = _template(src, common, fi)
        kept = np.flatnonzero(keep)
        for g, key in zip(kept.tolist(), scan.keys(starts[kept])):
            meta = metas[g]
            if not isinstance(meta, dict):
                meta = {"value": meta}
            rests.add(tpl.rest(meta.get("id") or meta.get("key") or key, meta.get("url"),
                               meta.get("language"), key, meta, exact[g], int(nimg[g])))
            t = txt.get(g)
            texts.append("\n".join(t) if t else "")
        file_of += [fi] * int(keep.sum())
        img_counts.append(nimg[keep])
        counts.append(npay[keep])
        mk = ~is_json & keep[grp]
        e_, o_, s_, g_ = ids[mk], offs[mk], sizes[mk], grp[mk]
        long = [e for e, i in ext_id.items() if len(e.encode()) > MAX_EXT_BYTES and (e_ == i).any()]
        if long:
            raise src.error(f"{f}: member extension {long[0]!r} is longer than {MAX_EXT_BYTES} bytes "
                            f"(no room in a tar header)")
        m_ext.append(e_)
        m_buf.append(np.full(len(e_), fi, np.int32))
        m_off.append(o_)
        m_size.append(s_)
        m_cont.append(_contiguous(mm, g_, o_, s_))
    cat = (lambda xs, t: np.concatenate(xs).astype(t) if xs else np.zeros(0, t))
    src.exts = list(ext_id)
    n = cat(counts, np.int64)
    src.q_start = np.zeros(len(n) + 1, np.int64)
    np.cumsum(n, out=src.q_start[1:])
    src.q_ext, src.q_buf = cat(m_ext, np.int32), cat(m_buf, np.int32)
    src.q_kind = np.asarray([kind_of(e) for e in src.exts] or [0], np.int8)[src.q_ext]
    src.q_off, src.q_size, src.q_cont = cat(m_off, np.int64), cat(m_size, np.int64), cat(m_cont, bool)
    return file_of, rests, texts, cat(img_counts, np.int64)


class Blob:
    """Byte strings appended into one buffer (no list of pieces plus a joined copy), with their lengths."""

    def __init__(self):
        self.data = bytearray()
        self.lens: list[int] = []

    def add(self, b: bytes) -> None:
        self.data += b
        self.lens.append(len(b))


def _contiguous(mm, grp: np.ndarray, off: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Per member: it directly follows the previous member of the same sample in the tar (one header
    block after that member's zero padding). A writer copies such runs in one piece, then writes its own
    headers over the source's."""
    n = len(off)
    cont = np.zeros(n, bool)
    if n < 2:
        return cont
    end = off + (size + 511) // 512 * 512
    cont[1:] = (grp[1:] == grp[:-1]) & (off[1:] == end[:-1] + 512)
    rem = size % 512
    check = np.flatnonzero(cont[1:] & (rem[:-1] > 0))  # members whose padding a run would copy
    if len(check):
        blocks = np.frombuffer(mm, np.uint8, len(mm) // 512 * 512).reshape(-1, 512)
        word = np.arange(64)
        for a in range(0, len(check), 2048):
            c = check[a:a + 2048]
            tail = blocks[(off[c] + size[c]) // 512].view("<u8")  # the block holding the end, as 64 words
            w, r = rem[c] // 8, rem[c] % 8  # padding starts at byte r of word w
            dirty = ((tail != 0) & (word > w[:, None])).any(1)
            dirty |= (tail[np.arange(len(c)), w] >> (8 * r).astype(np.uint64)) != 0
            cont[c[dirty] + 1] = False
    return cont
