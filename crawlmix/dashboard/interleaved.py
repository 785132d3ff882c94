"""A crawl run's interleaved documents for the dashboard (OUTPUT/interleaved/, crawlmix.interleaved): the
document and image funnels from its stats.json, and the documents themselves, paged, each as its text
pieces and images in reading order (images inlined as data: URIs; they are already resized by the job)."""

from __future__ import annotations

import base64
import json
from pathlib import Path


from crawlmix.dashboard.common import files
from crawlmix.dashboard.remote import parquet_file
from crawlmix.runtime import runstate

FOLDER = "interleaved"
DOCS_PER_PAGE = 3
MAX_TEXT = 3000  # characters of one text piece sent to the page
MAX_IMAGES = 40  # images of one document sent to the page
_MIME = {b"\xff\xd8\xff": "image/jpeg", b"\x89PNG": "image/png", b"RIFF": "image/webp", b"GIF8": "image/gif"}


def _mime(data: bytes) -> str:
    return next((m for magic, m in _MIME.items() if data.startswith(magic)), "application/octet-stream")


def view(run: Path, page: int = 0) -> dict:
    """{"present": False} when the run has no interleaved output; else its funnels and one page of documents."""
    d = run / FOLDER
    stats_file = d / "stats.json"
    if not stats_file.exists():
        return {"present": False}
    empty = {"present": True, "docs": [], "total": 0, "page": page, "page_size": DOCS_PER_PAGE}
    why = runstate.why_not_finished(d, allow_incomplete=True)  # a running / interrupted run is half written
    if why:
        return {**empty, "problem": why}
    try:
        stats = json.loads(stats_file.read_text())
    except ValueError:
        return {**empty, "problem": "stats.json is not valid JSON"}
    out = {"present": True, "documents": stats.get("documents"), "images": stats.get("images"),
           "funnel": stats.get("funnel", {}), "languages": stats.get("languages", {}),
           "blocks_dropped": stats.get("blocks_dropped", {}), "shards": stats.get("shards", []),
           "config_hash": stats.get("config_hash"), "page": page, "page_size": DOCS_PER_PAGE}
    out.update(_documents(d, page))
    return out


def _documents(d: Path, page: int) -> dict:
    start, seen, docs = max(0, page) * DOCS_PER_PAGE, 0, []
    for f in files(d):
        pf = parquet_file(f)  # a local file, or one under an s3:// root (remote.py)
        n = pf.metadata.num_rows
        lo, hi = max(0, start - seen), min(n, start + DOCS_PER_PAGE - seen)
        if lo < hi:
            cols = [c for c in ("id", "url", "language", "texts", "images") if c in pf.schema_arrow.names]
            t = pf.read(columns=cols).slice(lo, hi - lo)
            docs += [_document(r, f.name) for r in t.to_pylist()]
        seen += n
    return {"docs": docs, "total": seen}


def _document(row: dict, file: str) -> dict:
    items, n_img = [], 0
    for text, im in zip(row.get("texts") or [], row.get("images") or []):
        if im is None:
            t = text or ""
            items.append({"type": "text", "text": t[:MAX_TEXT], "cut": max(0, len(t) - MAX_TEXT)})
        elif n_img < MAX_IMAGES:
            n_img += 1
            data = im.get("bytes") or b""
            items.append({"type": "image", "url": im.get("url"), "width": im.get("width"), "height": im.get("height"),
                          "src": f"data:{_mime(data)};base64,{base64.b64encode(data).decode()}"})
        else:
            items.append({"type": "image", "url": im.get("url"), "width": im.get("width"), "height": im.get("height"),
                          "src": None})
    return {"id": row.get("id"), "url": row.get("url"), "language": row.get("language"), "file": file,
            "items": items}
