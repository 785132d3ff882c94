"""The Parquet form of a mixed shard (output.formats: [..., parquet]; used by crawlmix/mix/write.py): the same
samples in the same order as the shard's tar, one row each, shaped like Hugging Face's own VLM datasets,
read by `datasets`, Ray Data, DuckDB and Polars (docs/loading.md):

    key        the sample's key in the tar (its number in the stage)
    source, modality, id, url, language: string ("" where unknown), epoch, tokens: int64
    texts      list<string>                              aligned with images, OBELICS style: position k
    images     list<struct<bytes: binary, path: string>>  holds a text piece or an image (the other null),
                                                         in the sample's order (an image-text pair: [image,
                                                         caption]; a video: its frames, then its caption)
    meta       the source's own metadata, a JSON string
    provenance struct<crawlmix_version, file, index, input<config_hash, crawlmix_version, seed>,
               mixture, mixture_hash, seed>

`images` items are Hugging Face `datasets` Image storage (bytes + path); where every image-like part of
the stage is an image, the schema metadata declares the column List(Image()), so `datasets` decodes the
images to PIL. Non-image media (e.g. .mp4 members of a tar source) are in `images` too, by their bytes,
named by extension. Written with fixed options (zstd, one row group per shard): the same samples give the
same file.
"""

from __future__ import annotations

import json

import pyarrow as pa

from crawlmix.mix.members import _ENCODE, INPUT_KEYS, JSON_HEAD, loads
from crawlmix.mix.readers import OTHER, TEXT
from crawlmix.runtime.atomic import atomic_path, output_error

_STR = pa.string()
IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", _STR)])
PROVENANCE_TYPE = pa.struct([("crawlmix_version", _STR), ("file", _STR), ("index", _STR),
                             ("input", pa.struct([(k, _STR) for k in INPUT_KEYS])), ("mixture", _STR),
                             ("mixture_hash", _STR), ("seed", pa.int64())])
SCHEMA = pa.schema([("key", _STR), ("source", _STR), ("modality", _STR), ("id", _STR), ("url", _STR),
                    ("language", _STR), ("epoch", pa.int64()), ("tokens", pa.int64()),
                    ("texts", pa.list_(_STR)), ("images", pa.list_(IMAGE_TYPE)), ("meta", _STR),
                    ("provenance", PROVENANCE_TYPE)])
HF_IMAGES = json.dumps({"info": {"features": {"images": {"feature": {"_type": "Image"}, "_type": "List"}}}})


def _s(v) -> str:
    return "" if v is None else v if type(v) is str else str(v)


def _record(raw: bytes) -> dict:
    """A sample's .json (either layout) in the uniform shape."""
    d, exact = loads(raw)
    meta = d.get("meta")
    prov = d.get("provenance") or {}
    inp = prov.get("input") or {}
    return {"source": _s(d.get("source")), "modality": _s(d.get("modality")), "id": _s(d.get("id")),
            "url": _s(d.get("url")), "language": _s(d.get("language")), "epoch": int(d.get("epoch", 0)),
            "meta": meta if type(meta) is str else _ENCODE(meta if meta is not None else {}),
            "provenance": {"crawlmix_version": _s(prov.get("crawlmix_version")), "file": _s(prov.get("file")),
                           "index": _s(prov.get("index")), "input": {k: _s(inp.get(k)) for k in INPUT_KEYS},
                           "mixture": _s(prov.get("mixture")), "mixture_hash": _s(prov.get("mixture_hash")),
                           "seed": int(prov.get("seed") or 0)}}


def shard_table(sp, sources: list, key_digits: int) -> pa.Table:
    """The shard's samples as one table (SCHEMA), in the tar's order."""
    cols: dict[str, list] = {f.name: [] for f in SCHEMA}
    bufs = {}
    for i, (s, idx, ep) in enumerate(zip(sp.src.tolist(), sp.idx.tolist(), sp.epoch.tolist())):
        src = sources[s]
        if s not in bufs:
            bufs[s] = [memoryview(b) for b in src.base_buffers()]
        key = str(sp.start + i).zfill(key_digits)
        rec = _record(JSON_HEAD + b"%d" % ep + bytes(src.json_rest[src.j_start[idx]:src.j_start[idx + 1]]))
        texts, images = [], []
        for q in range(int(src.q_start[idx]), int(src.q_start[idx + 1])):
            o, n = int(src.q_off[q]), int(src.q_size[q])
            data = bufs[s][int(src.q_buf[q])][o:o + n]
            if src.q_kind[q] == TEXT:
                texts.append(str(data, "utf-8", "replace"))
                images.append(None)
            else:
                texts.append(None)
                ext = src.exts[src.q_ext[q]].rsplit(".", 1)[-1]
                images.append({"bytes": bytes(data), "path": f"{key}.{len(texts) - 1}.{ext}"})
        cols["key"].append(key)
        for k, v in rec.items():
            cols[k].append(v)
        cols["tokens"].append(int(src.tokens[idx]))
        cols["texts"].append(texts)
        cols["images"].append(images)
    return pa.table(cols, schema=SCHEMA)


def write_shard_parquet(path, sp, sources: list, key_digits: int) -> tuple[int, str]:
    """Write the shard's Parquet form to ``path`` (a local path or a URL), atomically; (bytes, md5), taken
    from the file before it is published (nothing is read back from the store)."""
    import hashlib

    import pyarrow.parquet as pq

    table = shard_table(sp, sources, key_digits)
    if not any(len(s.q_kind) and (s.q_kind == OTHER).any() for s in sources):  # every image-like part is an image
        table = table.replace_schema_metadata({"huggingface": HF_IMAGES})
    with atomic_path(path) as tmp:
        try:
            pq.write_table(table, tmp, compression="zstd", row_group_size=max(1, table.num_rows))
        except OSError as e:
            raise output_error(e, path, tmp) from e
        with open(tmp, "rb") as f:
            md5 = hashlib.file_digest(f, "md5").hexdigest()
        size = tmp.stat().st_size
    return size, md5
