"""The reader handles real Common Crawl files and every kind of bad input without crashing."""

from __future__ import annotations

import gzip

import pytest

from crawlmix.crawl.config import load_job
from crawlmix.text.curate import curate_file
from crawlmix.io.warc import iter_pages
from tests.conftest import shared


def _read(path):
    skipped = []
    pages = list(iter_pages(str(path), lambda r, w, m, dropped=True: skipped.append((r, w, m))))
    return pages, skipped


def test_cc_segment_charsets_and_metadata():
    pages, skipped = _read(shared("warc/cc-main-2020-34-sample.warc.gz"))
    assert len(pages) == 16 and skipped == []
    assert {"gbk", "cp1251", "utf-8", "cp1252"} <= {p.charset for p in pages}
    assert all(p.cc_languages for p in pages)  # cld2 labels from the metadata records
    ru = next(p for p in pages if p.url == "http://01spb.ru/company/")
    assert "Санкт-Петербург" in ru.html or "компании" in ru.html.lower()
    zh = [p for p in pages if p.charset == "gbk"]
    assert all("\ufffd" not in p.html[:5000] for p in zh)


def test_wet_and_wat():
    pages, _ = _read(shared("warc/cc-main-2024-22-whirlwind.warc.wet.gz"))
    assert len(pages) == 1 and pages[0].text and "Escopete" in pages[0].text
    pages, _ = _read(shared("warc/cc-main-2024-22-whirlwind.warc.wat.gz"))
    assert pages == []  # WAT holds metadata only


def test_truncated_gzip_is_named():
    path = shared("warc/truncated.warc.gz")
    pages, skipped = _read(path)
    assert pages == []
    assert [r for r, _, _ in skipped] == ["truncated_record"]
    ref = skipped[0][1]
    assert ref.path == str(path) and "houstonpress.com" in ref.url and ref.offset == 0
    assert str(ref) == f"{path}@{ref.offset} ({ref.url})"


def _records(sample_dir):
    return gzip.open(sample_dir / "sample.warc.gz").read()


@pytest.fixture
def bad_inputs(tmp_path, sample_dir):
    raw = (sample_dir / "sample.warc.gz").read_bytes()
    files = {
        "zero.warc.gz": b"",
        "garbage.warc.gz": bytes(range(256)) * 40,
        "garbage.warc": b"this is not a warc file at all\n" * 100,
        "cut.warc.gz": raw[: len(raw) // 2],  # cut mid-stream: the first half of the records survive
        "v017.warc.gz": gzip.compress(_records(sample_dir).replace(b"WARC/1.0", b"WARC/0.17")),
    }
    big = b"<html><body>" + b"<p>big page text. </p>" * (50 * 1024 * 1024 // 22) + b"</body></html>"
    nested = b"<html><body>" + b"<div>" * 20000 + b"deep text here. " * 100 + b"</div>" * 20000 + b"</body></html>"
    undecodable = b"<html><head><meta charset='x-no-such-charset'></head><body>" + bytes(range(128, 256)) * 200 + b"</body></html>"
    recs = b""
    for i, (url, body) in enumerate([("http://big.example/", big), ("http://nested.example/", nested),
                                     ("http://binary.example/", undecodable)]):
        http = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n" + body
        recs += gzip.compress(b"WARC/1.0\r\nWARC-Type: response\r\nWARC-Record-ID: <urn:uuid:0000000%d-0000-4000-8000-000000000000>\r\n"
                              b"WARC-Target-URI: %s\r\nContent-Type: application/http; msgtype=response\r\n"
                              b"Content-Length: %d\r\n\r\n" % (i, url.encode(), len(http)) + http + b"\r\n\r\n")
    files["odd-pages.warc.gz"] = recs
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return tmp_path


def test_bad_files_never_crash(bad_inputs):
    out = {}
    for f in sorted(bad_inputs.iterdir()):
        out[f.name] = _read(f)
    assert out["zero.warc.gz"][0] == [] and out["zero.warc.gz"][1][0][0] == "no_records"
    for name in ("garbage.warc.gz", "garbage.warc"):
        pages, skipped = out[name]
        assert pages == [] and skipped[0][0] == "corrupt_file" and skipped[0][1].path.endswith(name)
    pages, skipped = out["cut.warc.gz"]
    assert 5 < len(pages) < 23 and skipped and skipped[-1][0] in ("truncated_record", "corrupt_file", "bad_http")
    assert "cut.warc.gz@" in str(skipped[-1][1])  # the file and the record offset are named
    assert skipped[-1][1].offset is not None
    pages, _ = out["v017.warc.gz"]
    assert len(pages) == 23  # WARC/0.17 records read like 1.0


def test_bad_records_are_counted_and_named_in_stats(bad_inputs, tmp_path_factory):
    cfg = load_job()
    cfg.read.max_record_bytes = 10_000_000
    out = tmp_path_factory.mktemp("out")
    r = curate_file(str(bad_inputs / "odd-pages.warc.gz"), out, cfg)
    reasons = {e["reason"]: e for e in r["errors"]}
    assert "record_too_large" in reasons and "big.example" in reasons["record_too_large"]["record"]
    fallback = reasons["charset_fallback"]
    assert "binary.example" in fallback["record"] and "x-no-such-charset" in fallback["message"]
    assert str(bad_inputs / "odd-pages.warc.gz") in fallback["record"]
    # the deeply nested page went through extraction (kept or dropped with a reason, never lost)
    assert r["stages"]["read"]["in"] == 3 and r["stages"]["read"]["out"] == 2
    assert r["curated_rows"] + r["removed_rows"] == 3


def test_arc_file(sample_dir):
    pages, skipped = _read(sample_dir / "sample.arc.gz")
    assert len(pages) == 2 and skipped == []
    assert pages[0].charset == "cp1252" and "Wochenmarkt" in pages[0].html
