"""Stages that find nothing cost nothing (issue 13): when no input or sibling WARC holds a record an image could
be read from and fetching is off, the pairs step parses no page; stats.json says so, with the pages it did not
parse, and gives no made-up candidate counts. Anything that could give an image bytes runs the step as before."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import crawlmix.images.job as images_job
from crawlmix.images.config import ImagesJob
from crawlmix.images.index import fetchable_records, index_file
from crawlmix.io.paths import task_name
from crawlmix.io.warc import iter_pages
from tests.interleaved.pages import INLINE, encode, picture, write_warc

CAP = "A photograph of the old stone bridge over the river"


def _job(**over) -> ImagesJob:
    return ImagesJob.model_validate({"url_filter": {"use_ut1_lists": False}, **over})


@pytest.fixture
def pages_only(tmp_path) -> str:
    """Three HTML pages with captioned <img>, a PDF and a redirect captured, no image record."""
    pages = [(f"http://site.test/p{i}", f'<html><body><img src="http://img.test/{i}.jpg" alt="{CAP} {i}">'
                                        f'<img src="http://img.test/r.jpg" alt="{CAP}, moved"></body></html>')
             for i in range(3)]
    path = write_warc(tmp_path / "pages.warc.gz", pages, [("http://img.test/doc.pdf", b"%PDF-1.4", "application/pdf")])
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    with open(path, "ab") as f:  # a captured 301 to an image nobody captured
        w = WARCWriter(f, gzip=True)
        hh = StatusAndHeaders("301 Moved", [("Location", "http://img.test/gone.jpg")], protocol="HTTP/1.1")
        w.write_record(w.create_warc_record("http://img.test/r.jpg", "response", payload=None, http_headers=hh))
    return path


def _no_task(*a, **k):
    raise AssertionError("a pairs task ran although nothing could be fetched")


def test_no_captured_image_and_no_fetch_parses_no_page(pages_only, tmp_path, monkeypatch):
    idx = index_file(pages_only)
    assert len(idx["records"]) == 2 and fetchable_records([idx]) == 0 and idx["html"] == 3
    monkeypatch.setattr(images_job, "images_task", _no_task)  # would fail the run's tasks if called
    stats = images_job.run([pages_only], tmp_path / "out", _job(), INLINE)
    sk = stats["skipped"]
    assert stats["status"] == "finished" and stats["failed_tasks"] == []
    assert sk["reason"] == "no captured images and fetching off" and sk["pages"] == 3
    assert "2xx HTML responses" in sk["pages_counted"] and "fetch.enabled is false" in sk["detail"]
    assert stats["candidates"] is None and stats["funnel"] == [] and stats["successes"] == 0
    assert stats["pages"] == {"not_parsed": 3} and stats["indexed_image_records"] == 2
    # the layout stays: one empty shard, no staged rows
    assert pq.read_table(tmp_path / "out" / "00000.parquet").num_rows == 0
    assert (tmp_path / "out" / "00000.tar").stat().st_size > 0 and not (tmp_path / "out" / "_staging").exists()
    assert "skipped: no captured images and fetching off: 3 page(s) not parsed" in images_job.summary(stats)


def test_pages_counted_from_the_text_runs_curated_file(pages_only, tmp_path, monkeypatch):
    ids = [p.id for p in iter_pages(pages_only, lambda *a, **k: None)]
    (tmp_path / "crawl" / "curated").mkdir(parents=True)
    pq.write_table(pa.table({"id": ids[:2]}), tmp_path / "crawl" / "curated" / f"{task_name(pages_only)}.parquet")
    monkeypatch.setattr(images_job, "images_task", _no_task)
    stats = images_job.run([pages_only], tmp_path / "out", _job(pages={"kept_from": str(tmp_path / "crawl")}), INLINE)
    assert stats["skipped"]["pages"] == 2 and "kept" in stats["skipped"]["pages_counted"]
    # an input whose text task left no curated file fails, as its task would
    other = write_warc(tmp_path / "other.warc.gz", [("http://site.test/x", "<p>x</p>")])
    stats = images_job.run([pages_only, other], tmp_path / "out2", _job(pages={"kept_from": str(tmp_path / "crawl")}),
                           INLINE)
    assert stats["status"] == "incomplete" and stats["failed_tasks"] == [other]
    assert [e["reason"] for e in stats["errors"]] == ["no_curated_file"]


@pytest.mark.parametrize("how", ["sibling", "fetch"])
def test_anything_that_can_give_bytes_runs_the_step(pages_only, tmp_path, how):
    """A sibling WARC with one image record, or fetching on: the pages are parsed, every candidate counted."""
    over = {}
    if how == "sibling":
        sib = write_warc(tmp_path / "sib.warc.gz", [], [("http://img.test/0.jpg", encode(picture(1)), "image/jpeg")])
        over["warc_lookup"] = {"extra_warcs": [sib]}
    else:  # a closed port on 127.0.0.1: every fetch fails at once, nothing leaves the machine
        page = f'<html><body><img src="http://127.0.0.1:9/a.jpg" alt="{CAP}"></body></html>'
        pages_only = write_warc(tmp_path / "f.warc.gz", [("http://site.test/f", page)])
        over["fetch"] = {"enabled": True, "retries": 0, "timeout_s": 2, "connect_timeout_s": 1}
    stats = images_job.run([pages_only], tmp_path / "out", _job(**over), INLINE)
    assert "skipped" not in stats and stats["candidates"] == (6 if how == "sibling" else 1)
    assert stats["funnel"][0]["in"] == stats["candidates"]
    assert stats["successes"] == (1 if how == "sibling" else 0)
