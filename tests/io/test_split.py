"""A large gzipped WARC/ARC splits into byte-range tasks at record boundaries; the split run's pages and rows
are the unsplit run's, in order (same offsets, same removed/ rows), and task names carry the range."""

from __future__ import annotations

import gzip
import io
import os
import zlib

import pyarrow.parquet as pq
import pytest

from crawlmix.io.paths import Span, member_range, member_start, spans, task_name
from crawlmix.io.warc import iter_pages
from tests.conftest import shared


def _read(path, start=0, end=None):
    """Everything the reader yields and reports for one span, comparable across runs."""
    reports = []
    pages = [(p.id, p.url, p.offset, p.date, p.cc_languages, p.charset, p.html, p.text)
             for p in iter_pages(str(path), lambda r, reason, msg, dropped=True: reports.append(
                 (str(r), reason, msg, dropped)), start=start, end=end)]
    return pages, reports


def _split_read(path, parts):
    pages, reports = [], []
    for s in parts:
        p, r = _read(path, s.start, s.end)
        pages += p
        reports += r
    return pages, reports


def _member_starts(data: bytes) -> list[int]:
    """Where each gzip member of a file starts (walked with zlib, the slow way the splitter avoids)."""
    out, pos = [], 0
    while pos < len(data):
        out.append(pos)
        d = zlib.decompressobj(31)
        d.decompress(data[pos:])
        if not d.eof:
            break
        pos = len(data) - len(d.unused_data)
    return out


def _every_record(path) -> list[Span]:
    """One span per gzip member: every record boundary of the file is a task boundary."""
    starts = _member_starts(open(path, "rb").read())
    ends = starts[1:] + [os.path.getsize(path)]
    return [Span(str(path), a, b) for a, b in zip(starts, ends)]


def test_plan_names_and_whole_files(tmp_path, sample_dir):
    warc = str(sample_dir / "sample.warc.gz")
    size = os.path.getsize(warc)
    parts = spans(warc, 4000)
    assert len(parts) == -(-size // 4000) and parts[0].start == 0 and parts[-1].end == size
    assert all(a.end == b.start for a, b in zip(parts, parts[1:]))
    names = [p.name for p in parts]
    assert names == sorted(names)  # zero-padded: name order is file order (dedup sorts tasks by name)
    assert names[1] == f"{task_name(warc)}@000000004000-000000008000"
    assert spans(warc, size) == [Span(warc)] and Span(warc).name == task_name(warc)  # not split: names as before
    assert spans(warc, 0) == [Span(warc)]  # 0: never split
    plain = tmp_path / "x.warc"
    plain.write_bytes(gzip.decompress(open(warc, "rb").read()))
    assert spans(str(plain), 100) == [Span(str(plain))]  # not gzip per record: one task


@pytest.mark.parametrize("name", ["sample.warc.gz", "sample.arc.gz"])
def test_every_record_boundary_gives_the_same_pages(sample_dir, name):
    path = sample_dir / name
    whole = _read(path)
    parts = _every_record(path)
    assert len(parts) >= 3 and whole[0]
    assert _split_read(path, parts) == whole
    assert _split_read(path, spans(str(path), 300)) == whole  # nominal ranges, moved to boundaries by the reader


@pytest.mark.parametrize("name", ["cc-main-2024-22-whirlwind.warc.gz", "cc-main-2020-34-sample.warc.gz",
                                  "truncated.warc.gz"])
def test_real_crawl_files_split_at_every_record(name):
    """Common Crawl's request / response / metadata triples: a span ending between a response and its
    metadata record still gives the page its cld2 languages; a truncated last record is reported once."""
    path = shared(f"warc/{name}")
    whole = _read(path)
    assert _split_read(path, _every_record(path)) == whole
    if name.startswith("cc-main-2024"):
        assert whole[0][0][4]  # (that file's page has cc_languages from its metadata record)


def _record(uri: str, body: bytes) -> bytes:
    http = b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + body
    head = (f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Target-URI: {uri}\r\nWARC-Date: 2024-01-01T00:00:00Z\r\n"
            f"WARC-Record-ID: <urn:uuid:{abs(hash(uri)):032x}>\r\nContent-Type: application/http; msgtype=response"
            f"\r\nContent-Length: {len(http)}\r\n\r\n").encode()
    return head + http + b"\r\n\r\n"


def test_a_gzip_magic_inside_a_record_is_not_a_boundary(tmp_path):
    """A record whose payload holds a gzipped WARC record, stored uncompressed (level 0, as deflate does with
    incompressible data): its magic number and member look like a boundary, but the splitter must not cut
    there (the member after it is no record)."""
    inner = gzip.compress(_record("http://inner.example/", b"<html><body><p>inner page</p></body></html>"))
    payload = b"<html><body><p>" + os.urandom(3000).hex().encode() + b"</p><!--" + inner + b"--></body></html>"
    recs = [gzip.compress(_record("http://a.example/", b"<html><body><p>first</p></body></html>")),
            gzip.compress(_record("http://b.example/", payload), compresslevel=0),
            gzip.compress(_record("http://c.example/", b"<html><body><p>third</p></body></html>"))]
    path = tmp_path / "tricky.warc.gz"
    path.write_bytes(b"".join(recs))
    data = path.read_bytes()
    fake = data.index(inner)
    assert recs[0] and fake > len(recs[0])  # the inner member sits raw inside the second record
    with open(path, "rb") as f:
        assert member_start(f, len(recs[0]) + 1) == len(recs[0]) + len(recs[1])  # skips the fake one
        assert member_start(f, fake) == len(recs[0]) + len(recs[1])
        assert member_range(f, len(recs[0]) + 1, fake + 10) is None  # no record starts in there
    whole = _read(path)
    assert [p[1] for p in whole[0]] == ["http://a.example/", "http://b.example/", "http://c.example/"]
    for step in (100, 1000, 4000):
        assert _split_read(path, spans(str(path), step)) == whole


def test_member_start_in_a_file_object():
    data = b"".join(gzip.compress(_record(f"http://x{i}.example/", b"<p>x</p>" * i)) for i in range(1, 6))
    starts = _member_starts(data)
    f = io.BytesIO(data)
    assert [member_start(f, p) for p in (0, 1, starts[2], starts[2] + 1, len(data) - 1)] == \
        [0, starts[1], starts[2], starts[3], None]


def _curate(path, out, cfg, parts):
    from crawlmix.text.curate import run_task

    results = [run_task(str(path), str(out), cfg, False, s.start, s.end) for s in parts]
    rows = {}
    for folder in ("curated", "removed"):
        tables = [pq.read_table(out / folder / f"{s.name}.parquet") for s in parts]
        rows[folder] = [r for t in tables for r in t.to_pylist()]
    return results, rows


def _cfg():
    from crawlmix.text.curate import load_text_job

    return load_text_job(None)


def test_split_curation_gives_the_unsplit_rows(tmp_path, sample_dir):
    cfg = _cfg()
    path = sample_dir / "sample.warc.gz"
    _, whole = _curate(path, tmp_path / "whole", cfg, [Span(str(path))])
    parts = spans(str(path), 3000)
    results, split = _curate(path, tmp_path / "split", cfg, parts)
    assert whole["curated"] and whole["removed"]
    assert split == whole  # same rows, same order, same offsets, same removed/ records
    assert [r["task"] for r in results] == [s.name for s in parts]
    assert results[1]["range"] == [3000, 6000] and "@" in results[1]["task"]
    again, _ = _curate(path, tmp_path / "split", cfg, parts)  # every span has its marker: nothing is redone
    assert again == results


@pytest.mark.slow
def test_split_curation_on_real_pages(tmp_path):
    """realpages.warc.gz: its first 4 MB as one task, and as three tasks (the whole 35 MB file twice would take
    ~45 s here); the reader is checked over the whole file at 1 MB spans."""
    path = shared("bench/realpages.warc.gz")
    whole_read = _read(path)
    assert _split_read(path, spans(str(path), 1 << 20)) == whole_read and len(whole_read[0]) > 1000
    cfg = _cfg()
    mb = 1 << 20
    _, whole = _curate(path, tmp_path / "whole", cfg, [Span(str(path), 0, 4 * mb)])
    cuts = [0, 1_500_000, 3_000_000, 4 * mb]
    _, split = _curate(path, tmp_path / "split", cfg, [Span(str(path), a, b) for a, b in zip(cuts, cuts[1:])])
    assert len(whole["curated"]) > 100 and split == whole
