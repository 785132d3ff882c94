"""Mixer reader for `modality: interleaved` sources: web documents in the OBELICS layout, one Parquet row per
document (used by Source.build_index in crawlmix/mix/sources.py):

    id: string, url: string, language: string,
    texts: list<string>, images: list<struct<url: string, bytes: binary, width: int32, height: int32>>
    (+ provenance columns source, offset, crawlmix_version, config_hash)

`texts` and `images` are aligned: position k holds a text piece or an image, exactly one of them non-null.
A document becomes one sample whose parts are its positions in order (text pieces from one UTF-8 blob,
images from another); its tokens are its text's plus `per_image` per image. A row that breaks the layout
(lists of different lengths, a position with both or neither, an image without bytes or of an unknown
format, no positions) is skipped, counted and named (file, row, id, reason) in the lock and the summary;
the rest of the file is mixed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from crawlmix.mix.members import JsonTemplate
from crawlmix.mix.readers import IMAGE, IMAGE_EXTS, TEXT, Blob

if TYPE_CHECKING:
    from crawlmix.mix.sources import Source

MAX_BAD_LISTED = 20  # bad rows named per source (all are counted)
_MAGIC = ((b"\xff\xd8\xff", "jpg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"GIF87a", "gif"), (b"GIF89a", "gif"),
          (b"BM", "bmp"), (b"II*\x00", "tif"), (b"MM\x00*", "tif"))


def image_ext(data: bytes, url: str | None = None) -> str | None:
    """The file extension of an encoded image, from its first bytes (else from its URL); None if unknown."""
    for magic, ext in _MAGIC:
        if data.startswith(magic):
            return ext
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[4:12] in (b"ftypavif", b"ftypavis"):
        return "avif"
    last = (url or "").rsplit("/", 1)[-1].rsplit(".", 1)
    return last[1].lower() if len(last) == 2 and last[1].lower() in IMAGE_EXTS else None


def _problem(texts, images) -> str | None:
    """Why a row breaks the OBELICS layout, or None."""
    if texts is None or images is None:
        return f"{'texts' if texts is None else 'images'} is null"
    if len(texts) != len(images):
        return f"texts has {len(texts)} positions but images has {len(images)}"
    if not texts:
        return "no text and no image"
    for k, (t, im) in enumerate(zip(texts, images)):
        if (t is None) == (im is None):
            return f"position {k} holds {'both a text and an image' if t is not None else 'neither text nor image'}"
        if im is not None:
            data = im.get("bytes")
            if not data:
                return f"the image at position {k} has no bytes"
            if image_ext(data, im.get("url")) is None:
                return f"the image at position {k} is not a known image format ({bytes(data[:8])!r}...)"
    return None


def _read(src: Source, f: str, local: str | None = None):
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(local or f)  # local: a remote file's copy in local scratch
    except Exception as e:  # noqa: BLE001
        raise src.error(f"cannot read Parquet {f}: {e}") from None
    names = pf.schema_arrow.names
    missing = [c for c in ("texts", "images") if c not in names]
    if missing:
        raise src.error(f"{f} is not an interleaved (OBELICS layout) file: no column {', '.join(missing)} "
                        f"(columns: {', '.join(names[:12])})")
    cols = [c for c in names if c in ("id", "url", "language", "texts", "images", "source", "offset",
                                      "crawlmix_version", "config_hash")]
    try:
        table = pf.read(columns=cols)
    except Exception as e:  # noqa: BLE001
        raise src.error(f"cannot read Parquet {f}: {e}") from None
    md = pf.schema_arrow.metadata or {}
    meta = {k.decode(): md[k].decode() for k in (b"config_hash", b"seed", b"crawlmix_version") if k in md}
    data = {c: table.column(c).to_pylist() for c in table.column_names}
    if not meta:  # provenance columns, when one value holds for the whole file
        for c in ("config_hash", "crawlmix_version"):
            vals = set(data.get(c) or [])
            if len(vals) == 1 and None not in vals:
                meta[c] = str(vals.pop())
    return table.num_rows, data, meta


def index_interleaved(src: Source, common: dict):
    """OBELICS-layout Parquet: one sample per valid document, parts = its positions. Fills the source's
    part arrays; returns (file per sample, output .json rests, texts, images per sample)."""
    langs = set(src.cfg.languages) if src.cfg.languages else None
    file_of, rests, texts, img_counts = [], Blob(), [], []
    text_blob, image_blob = bytearray(), bytearray()
    exts: dict[str, int] = {}
    q_count, q_ext, q_kind, q_buf, q_off, q_size = [], [], [], [], [], []
    src.file_meta = []
    src.bad, src.bad_rows = [], 0
    for fi, f in enumerate(src.files):
        n, data, fmeta = _read(src, f, src.local_path(fi))
        src.file_meta.append(fmeta or None)
        tpl = JsonTemplate(src.name, src.cfg.modality, common, src.rel_files[fi], fmeta or None, src.layout)
        none = [None] * n
        ids, urls, lang = data.get("id", none), data.get("url", none), data.get("language", none)
        warc, woff = data.get("source", none), data.get("offset", none)
        fname = Path(f).name
        for row in range(n):
            tx, im = data["texts"][row], data["images"][row]
            why = _problem(tx, im)
            if why is not None:
                src.bad_rows += 1
                if len(src.bad) < MAX_BAD_LISTED:
                    src.bad.append(f"{src.rel_files[fi]} row {row} (id {ids[row]!r}): {why}")
                continue
            if langs is not None and lang[row] not in langs:
                continue
            pieces, image_urls, sizes = [], [], []
            for k, (t, img) in enumerate(zip(tx, im)):
                if t is not None:
                    b = t.encode()
                    e, kind, buf, off = f"{k}.txt", TEXT, 0, len(text_blob)
                    text_blob += b
                    pieces.append(t)
                else:
                    b = img["bytes"]
                    e, kind, buf, off = f"{k}.{image_ext(b, img.get('url'))}", IMAGE, 1, len(image_blob)
                    image_blob += b
                    image_urls.append(img.get("url"))
                    sizes.append([img.get("width"), img.get("height")])
                q_ext.append(exts.setdefault(e, len(exts)))
                q_kind.append(kind)
                q_buf.append(buf)
                q_off.append(off)
                q_size.append(len(b))
            q_count.append(len(tx))
            meta = {"image_urls": image_urls, "image_sizes": sizes}
            if warc[row] is not None:
                meta["warc"], meta["warc_offset"] = warc[row], woff[row]
            file_of.append(fi)
            texts.append("\n\n".join(pieces))
            img_counts.append(len(image_urls))
            rests.add(tpl.rest(ids[row] or f"{fname}:{row}", urls[row], lang[row], row, meta, True, len(image_urls)))
    src.blobs = [text_blob, image_blob]
    src.exts = list(exts)
    src.q_start = np.zeros(len(q_count) + 1, np.int64)
    np.cumsum(np.asarray(q_count, np.int64), out=src.q_start[1:])
    src.q_ext = np.asarray(q_ext, np.int32)
    src.q_kind = np.asarray(q_kind, np.int8)
    src.q_buf = np.asarray(q_buf, np.int32)
    src.q_off = np.asarray(q_off, np.int64)
    src.q_size = np.asarray(q_size, np.int64)
    src.q_cont = np.zeros(len(q_size), bool)
    if not any(src.file_meta):
        src.file_meta = [None] * len(src.files)
    return file_of, rests, texts, np.asarray(img_counts, np.int64)
