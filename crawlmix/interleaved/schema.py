"""The Parquet schemas of the interleaved job: its output (OBELICS layout, read by the mixer as
``modality: interleaved``: do not change it), what its tasks stage, and where the files lie.

Output row = one document: ``texts`` and ``images`` are aligned lists, each position holding exactly one of
a text (``texts[i]`` set, ``images[i]`` null) or an image (``images[i]`` set, ``texts[i]`` null).
"""

from __future__ import annotations

import pyarrow as pa

from crawlmix.runtime import storage

FOLDER = "interleaved"  # OUTPUT/interleaved/ in a crawl's output, or under pipelines/interleaved.py --output
STAGING = "_staging"
REMOVED = "removed"

IMAGE_TYPE = pa.struct([("url", pa.string()), ("bytes", pa.binary()), ("width", pa.int32()),
                        ("height", pa.int32())])
OUTPUT_SCHEMA = pa.schema([
    ("id", pa.string()), ("url", pa.string()), ("language", pa.string()),
    ("texts", pa.list_(pa.string())), ("images", pa.list_(IMAGE_TYPE)),
    ("source", pa.string()), ("offset", pa.int64()), ("crawlmix_version", pa.string()), ("config_hash", pa.string()),
])

# staged: the output's fields plus what the run-wide pass and the WebDataset .json need
STAGED_IMAGE_TYPE = pa.struct([
    ("url", pa.string()), ("bytes", pa.binary()), ("width", pa.int32()), ("height", pa.int32()),
    ("original_width", pa.int32()), ("original_height", pa.int32()), ("sha256", pa.string()), ("phash", pa.string()),
    ("ext", pa.string()), ("caption", pa.string()), ("alt", pa.string()), ("origin", pa.string()),
])
STAGE_SCHEMA = pa.schema([
    ("id", pa.string()), ("url", pa.string()), ("language", pa.string()), ("language_score", pa.float64()),
    ("date", pa.string()), ("source", pa.string()), ("offset", pa.int64()),
    ("texts", pa.list_(pa.string())), ("images", pa.list_(STAGED_IMAGE_TYPE)),
    ("shas", pa.list_(pa.string())),  # sha256 of each image, read alone by the furniture count
])


def staging_paths(root: str, task: str) -> tuple[str, str]:
    """(kept documents, dropped documents) a task stages under OUTPUT/interleaved/_staging/ (a path or a URL)."""
    return storage.join(root, STAGING, f"{task}.parquet"), storage.join(root, STAGING, f"{task}.removed.parquet")
