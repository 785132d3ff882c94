"""Reading a mixed sample back (docs/loading.md): the nested .images.tar member of the uniform layout, and the
sample's parts in order whatever the loader (webdataset, wids, Hugging Face `datasets`, Ray Data).

The logic is a few lines of standard library (docs/loading.md has a copy a trainer can paste instead of
importing crawlmix; Pillow decodes the images).
"""

from __future__ import annotations

import io
import json
import tarfile

from crawlmix.mix.readers import IMAGE_EXTS, TEXT_EXTS


def nested_members(blob) -> list[tuple[str, bytes]]:
    """(name, bytes) of the members of a sample's .images.tar, in order ([] for the empty member of a sample
    without images). Names are position + source extension: 0.jpg, 1.png, ... (an interleaved document's
    text pieces are there too: 0.txt, 1.jpg, 2.txt)."""
    if hasattr(blob, "read"):  # wids hands out file-like members
        blob = blob.read()
    if not blob:
        return []
    with tarfile.open(fileobj=io.BytesIO(bytes(blob)), mode="r:") as tf:
        return [(m.name, tf.extractfile(m).read()) for m in tf if m.isfile()]


def _kind(name: str) -> str:
    ext = name.rsplit(".", 1)[-1].lower()
    return "text" if ext in TEXT_EXTS else "image" if ext in IMAGE_EXTS else "other"


def sample_parts(sample: dict) -> list[tuple[str, str | bytes]]:
    """A uniform-layout sample (a dict of members as any of the four loaders gives it, decoded or not) as
    its parts in order: ("text", str), ("image", encoded bytes) and ("other", bytes) for a source member
    that is neither (e.g. .mp4) -- for an interleaved document its own order; otherwise the images, then
    the text (as the sources store them: image, then caption)."""
    def get(name):
        for k in (name, "." + name):
            if k in sample:
                v = sample[k]
                return v.read() if hasattr(v, "read") else v
        return None

    text = get("txt")
    text = text.decode() if isinstance(text, (bytes, bytearray)) else (text or "")
    meta = get("json")
    if isinstance(meta, (bytes, bytearray, str)):
        meta = json.loads(meta)
    nested = nested_members(get("images.tar"))
    if (meta or {}).get("modality") == "interleaved" and nested:
        return [("text", b.decode()) if _kind(n) == "text" else (_kind(n), b) for n, b in nested]
    parts = [(_kind(n), b) for n, b in nested if _kind(n) != "text"]
    return parts + ([("text", text)] if text else [])
