"""The interleaved step on an object store (issue 13) and when it has nothing to fetch: output, input and the
text run's curated files (kept_from) on ``s3://`` (moto's S3 server on 127.0.0.1, tests/cluster/conftest.py)
give the same documents as the local run; a text run split into byte-range tasks (curated/NAME@START-END.parquet)
gives the same documents as one unsplit; with no image to read and fetching off, no page is parsed for image
candidates and the documents are the same as when every image is tried and fails."""

from __future__ import annotations

import io
import json
import os
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import crawlmix.images.captions as captions
import crawlmix.interleaved.job as il_job
from crawlmix.interleaved.job import run
from crawlmix.io.paths import Span
from crawlmix.io.warc import iter_pages
from crawlmix.runtime import storage
from crawlmix.runtime.atomic import write_table
from tests.interleaved.pages import INLINE, PROSE, S, article, article_warc, job, write_warc


@pytest.fixture(scope="module")
def warc(tmp_path_factory) -> tuple[str, list[str]]:
    """The synthetic article (captured images, furniture) and two more pages sharing its pictures."""
    d = tmp_path_factory.mktemp("il")
    extra = [(f"{S}/copy", article("A copy of the bridge page")), (f"{S}/text", "<p>" + "</p><p>".join(PROSE) + "</p>")]
    path = article_warc(d / "a.warc.gz", extra_pages=extra)
    return path, [p.id for p in iter_pages(path, lambda *a, **k: None)]


def _tree(root: str) -> dict[str, bytes]:
    """Every file under OUTPUT/interleaved (a folder or a URL) by relative path; stats, config and markers left
    out (they carry times and paths)."""
    out = {}
    for p in storage.iglob(storage.join(root, "interleaved", "**")):
        rel = p[len(root):].lstrip("/")
        if not rel.endswith(("/stats.json", "/config.json")) and "/_tasks/" not in rel:
            out[rel] = storage.read_bytes(p)
    return out


def _documents(files: dict[str, bytes], names: dict[str, str]) -> list:
    """Documents and drops (Parquet rows in file order) and the shards' members, the input's name (local path
    or URL) replaced in ``source``."""
    def norm(row):
        return {k: names.get(v, v) if k == "source" else v for k, v in row.items()}

    out = []
    for rel in sorted(files, key=lambda r: (r.count("/"), r.endswith(".tar"))):  # task names differ: order only
        if rel.startswith("interleaved/_staging/"):
            continue
        if rel.endswith(".parquet"):
            out.append([norm(r) for r in pq.read_table(io.BytesIO(files[rel])).to_pylist()])
        elif rel.endswith(".tar"):
            with tarfile.open(fileobj=io.BytesIO(files[rel])) as tar:
                for m in tar.getmembers():
                    data = tar.extractfile(m).read()
                    out.append((m.name, norm(json.loads(data)) if m.name.endswith(".json") else data))
    return out


def _curated(folder: str, path: str, ids: list[str], split: bool = False) -> None:
    parts = [(Span(path, 0, 2048), ids[:1]), (Span(path, 2048, 8192), ids[1:])] if split else [(Span(path), ids)]
    for span, part in parts:
        write_table(storage.join(folder, "curated", f"{span.name}.parquet"), pa.table({"id": part}))


def test_output_on_s3_gives_the_same_bytes_as_local(s3_server, warc, tmp_path, monkeypatch):
    path, _ = warc
    monkeypatch.setenv("CRAWLMIX_SCRATCH", str(tmp_path / "scratch"))
    local = run([path], tmp_path / "local", job(), INLINE)
    out = s3_server.bucket("il-out") + "/run"
    remote = run([path], out, job(), INLINE)
    assert remote["status"] == "finished" and remote["documents"] == local["documents"] == 3
    assert remote["images"] == local["images"] == 2 and remote["funnel"] == local["funnel"]
    want = _tree(str(tmp_path / "local"))
    assert len(want) == 5 and _tree(out) == want  # documents, drops, shard, both staged files: byte for byte
    assert os.listdir(tmp_path / "scratch" / "staging") == []
    again = run([path], out, job(), INLINE)  # markers found on S3: no task runs
    assert again["phase_s"]["tasks"] < 1.0 and _tree(out) == want


def test_input_output_and_kept_from_on_s3_split_in_parts(s3_server, warc, tmp_path):
    path, ids = warc
    base = s3_server.bucket("il-all")
    s3_server.fs().put(path, "il-all/in/a.warc.gz")
    url = f"{base}/in/a.warc.gz"
    kept = [ids[0], ids[2]]
    _curated(str(tmp_path / "crawl"), path, kept)
    _curated(f"{base}/crawl", url, kept, split=True)
    local = run([path], tmp_path / "crawl", job(), INLINE, kept_from=str(tmp_path / "crawl"))
    remote = run([url], f"{base}/crawl", job(), INLINE, kept_from=f"{base}/crawl")
    assert remote["documents"] == local["documents"] == 2 and remote["funnel"] == local["funnel"]
    assert {r["stage"]: r for r in remote["funnel"]["documents"]}["pages"]["dropped"] == {"not_kept": 1}
    got = _documents(_tree(f"{base}/crawl"), {url: path})
    assert got == _documents(_tree(str(tmp_path / "crawl")), {}) and len(got) >= 4


def test_split_curated_parts_give_the_same_documents_as_unsplit(warc, tmp_path):
    path, ids = warc
    _curated(str(tmp_path / "whole"), path, ids[1:])
    _curated(str(tmp_path / "split"), path, ids[1:], split=True)
    a = run([path], tmp_path / "whole", job(), INLINE, kept_from=str(tmp_path / "whole"))
    b = run([path], tmp_path / "split", job(), INLINE, kept_from=str(tmp_path / "split"))
    assert a["documents"] == b["documents"] == 2 and a["funnel"] == b["funnel"]
    assert _tree(str(tmp_path / "whole")) == _tree(str(tmp_path / "split"))
    # the same ids, split otherwise: the finished task stays done; other ids: it is redone
    _curated(str(tmp_path / "split"), path, ids[1:], split=False)
    assert run([path], tmp_path / "split", job(), INLINE, kept_from=str(tmp_path / "split"))["phase_s"]["tasks"] < 1


# ----------------------------------------------------------------------------------------------
# nothing to fetch

GALLERY = ("<table><tr><td><img src='/g1.jpg'></td><td><img src='/g2.jpg'></td></tr>"
           "<tr><td><a href='/a1'>First</a> <a href='/b1'>picture</a></td><td><a href='/a2'>Second one</a></td></tr>"
           "</table>")
FIGURE = ("<figure><img src='/duchamp.jpg'><figcaption><a href='/w/LHOOQ'>L.H.O.O.Q.</a> by "
          "<a href='/w/Duchamp'>Marcel Duchamp</a></figcaption></figure>")
LINKS = "<p><a href='/x'>Related link one</a> <a href='/y'>Related two</a></p>"


@pytest.fixture
def uncaptured(tmp_path) -> str:
    """Pages with images, none captured: link-heavy captions (a figure's, a gallery table's) that the walk keeps
    only because they are captions, and a link list that is none."""
    body = "".join(f"<p>{p}</p>" for p in PROSE)
    pages = [(f"{S}/fig", f"<html><body>{body}{FIGURE}{LINKS}</body></html>"),
             (f"{S}/gallery", f"<html><body>{body}{GALLERY}{LINKS}</body></html>"),
             (f"{S}/plain", f"<html><body>{body}{LINKS}</body></html>")]
    return write_warc(tmp_path / "u.warc.gz", pages)


def test_no_image_to_read_skips_the_image_side_same_documents(uncaptured, tmp_path, monkeypatch):
    monkeypatch.setattr(il_job, "nothing_to_fetch", lambda *a: False)  # the reference: every image tried
    tried = run([uncaptured], tmp_path / "tried", job(), INLINE)
    assert {r["stage"]: r for r in tried["funnel"]["images"]}["download"]["dropped"] == {"not_captured": 3}
    monkeypatch.undo()

    def no_candidates(*a, **k):
        raise AssertionError("a page was parsed for image candidates")

    monkeypatch.setattr(captions, "page_images", no_candidates)
    off = run([uncaptured], tmp_path / "off", job(), INLINE)
    assert off["failed_tasks"] == [] and off["documents"] == tried["documents"] == 3
    assert _tree(str(tmp_path / "off")) == _tree(str(tmp_path / "tried"))  # the same documents, drops, staging
    docs = [d for f in sorted((tmp_path / "off" / "interleaved").glob("*.parquet")) for d in pq.read_table(f).to_pylist()]
    texts = "\n".join(t for d in docs for t in d["texts"] if t)
    assert "L.H.O.O.Q. by Marcel Duchamp" in texts and "First picture" in texts  # captions kept as text
    assert "Related link one" not in texts  # a link list that is no caption: dropped
    sk = off["skipped"]
    assert sk["reason"] == "no captured images and fetching off" and sk["part"] == "images"
    assert sk["pages"] == 3 and sk["images_seen"] == 3 and off["funnel"]["images"] == []
    assert off["funnel"]["documents"] == tried["funnel"]["documents"]
    assert "skipped (the image side)" in il_job.summary(off)


def test_min_images_with_nothing_to_fetch_skips_the_step(uncaptured, tmp_path, monkeypatch):
    def no_task(*a, **k):
        raise AssertionError("a task ran although no document could keep an image")

    monkeypatch.setattr(il_job, "interleaved_task", no_task)
    stats = run([uncaptured], tmp_path / "out", job(documents={"min_images": 1}), INLINE)
    assert stats["status"] == "finished" and stats["failed_tasks"] == [] and stats["documents"] == 0
    assert stats["skipped"]["part"] == "all" and stats["skipped"]["pages"] == 3
    assert stats["funnel"] == {"documents": [], "images": []}
    assert not list((tmp_path / "out" / "interleaved").glob("*.parquet"))


def test_page_captions_answer_as_the_candidates_captions():
    """On the real Mona Lisa article (captions in figures, caption classes, galleries): ``PageCaptions`` says
    ``in`` exactly for the captions ``page_images`` finds, for every text the page holds."""
    from resiliparse.parse.html import HTMLTree

    from crawlmix.interleaved.walk import Block, walk
    from tests.conftest import shared

    warc = str(shared("warc/wikipedia-mona-lisa-images.warc.gz"))
    page = next(p for p in iter_pages(warc, lambda *a, **k: None) if p.url.endswith("/wiki/Mona_Lisa"))
    ij = job().images_job()
    want = frozenset(c.figcaption for c in captions.page_images(page.html, page.url, ij) if c.figcaption)
    tree = HTMLTree.parse(page.html)
    pc = captions.PageCaptions(tree, ij.pages.max_images_per_page)
    texts = {" ".join(b.text.split()) for b in walk(page.html, job().dom).items if isinstance(b, Block)} | set(want)
    assert len(want) >= 8 and len(texts) > 50
    assert {t for t in texts if t in pc} == {t for t in texts if t in want}
