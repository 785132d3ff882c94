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


GZIP_MAGIC_GARBAGE = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + bytes(range(256)) * 4  # a gzip header, no stream


@pytest.fixture
def not_gzip(tmp_path, sample_dir):
    """Bytes after a gzip magic that are not a gzip stream: a whole file of them, and after good records."""
    raw = (sample_dir / "sample.warc.gz").read_bytes()
    files = {"magic-only.warc.gz": GZIP_MAGIC_GARBAGE, "tail.warc.gz": raw + GZIP_MAGIC_GARBAGE,
             "arc-tail.arc.gz": (sample_dir / "sample.arc.gz").read_bytes() + GZIP_MAGIC_GARBAGE,
             "plain-tail.warc": gzip.decompress(raw) + GZIP_MAGIC_GARBAGE}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return tmp_path


def test_gzip_magic_without_a_gzip_stream_is_a_corrupt_file(not_gzip):
    pages, skipped = _read(not_gzip / "magic-only.warc.gz")
    assert pages == [] and [r for r, _, _ in skipped] == ["corrupt_file"]
    assert skipped[0][1].path.endswith("magic-only.warc.gz")
    for name, n in (("tail.warc.gz", 23), ("plain-tail.warc", 23), ("arc-tail.arc.gz", 2)):
        pages, skipped = _read(not_gzip / name)  # what comes before the break is read
        assert len(pages) == n and skipped[-1][0] == "corrupt_file" and name in str(skipped[-1][1]), (name, skipped)


def test_corrupt_gzip_is_a_removed_row_and_the_cli_goes_on(not_gzip, tmp_path_factory):
    import subprocess
    import sys

    from tests.conftest import ROOT

    out = tmp_path_factory.mktemp("out")
    r = curate_file(str(not_gzip / "magic-only.warc.gz"), out, load_job())
    assert r["stages"]["read"]["dropped"] == {"corrupt_file": 1} and r["removed_rows"] == 1
    assert r["errors"][0]["reason"] == "corrupt_file" and "magic-only.warc.gz" in r["errors"][0]["record"]
    for name in ("magic-only.warc.gz", "tail.warc.gz"):
        cli = subprocess.run([sys.executable, str(ROOT / "pipelines" / "read_warc.py"), str(not_gzip / name)],
                             capture_output=True, text=True, timeout=120)
        assert cli.returncode == 0 and "Traceback" not in cli.stderr, cli.stderr[-2000:]
        assert f"SKIP corrupt_file: {not_gzip / name}@" in cli.stdout


def _response(url: str, ctype: str, body: bytes, i: int) -> bytes:
    http = b"HTTP/1.1 200 OK\r\nContent-Type: " + ctype.encode() + b"\r\n\r\n" + body
    return gzip.compress(b"WARC/1.0\r\nWARC-Type: response\r\nWARC-Record-ID: <urn:uuid:0000000%d-1111-4000-8000-000000000000>\r\n"
                         b"WARC-Target-URI: %s\r\nContent-Type: application/http; msgtype=response\r\n"
                         b"Content-Length: %d\r\n\r\n" % (i, url.encode(), len(http)) + http + b"\r\n\r\n")


def test_documents_of_other_types_are_counted_assets_are_not(tmp_path, tmp_path_factory):
    recs = [("http://x.example/paper.pdf", "application/pdf", b"%PDF-1.4 ..."),
            ("http://x.example/notes.txt", "text/plain; charset=utf-8", b"plain words"),
            ("http://x.example/none", "", b"?"),
            ("http://x.example/logo.png", "image/png", b"\x89PNG..."),
            ("http://x.example/app.js", "application/javascript", b"var x;"),
            ("http://x.example/style.css", "text/css", b"p{}"),
            ("http://x.example/page", "text/html", b"<html><body><p>" + b"Some words on a page. " * 20 + b"</p></body></html>")]
    path = tmp_path / "mixed-types.warc.gz"
    path.write_bytes(b"".join(_response(u, c, b, i) for i, (u, c, b) in enumerate(recs)))
    pages, skipped = _read(path)
    assert [p.url for p in pages] == ["http://x.example/page"]
    assert [(r, ref.url) for r, ref, _ in skipped] == [("unsupported_mime", "http://x.example/paper.pdf"),
                                                        ("unsupported_mime", "http://x.example/notes.txt"),
                                                        ("unsupported_mime", "http://x.example/none")]
    assert "application/pdf is not in read.mime_types" in skipped[0][2]
    out = tmp_path_factory.mktemp("out")
    r = curate_file(str(path), out, load_job())
    assert r["stages"]["read"] == {"in": 4, "out": 1, "dropped": {"unsupported_mime": 3}}
    assert not any(e["reason"] == "unsupported_mime" for e in r["errors"])  # counted, not bad input
    import pyarrow.parquet as pq

    removed = pq.read_table(out / "removed" / f"{r['task']}.parquet").to_pylist()
    rows = {x["url"]: x for x in removed}
    pdf, txt = rows["http://x.example/paper.pdf"], rows["http://x.example/notes.txt"]
    assert pdf["stage"] == "read" and pdf["reason"] == "unsupported_mime" and pdf["offset"] == 0
    assert txt["reason"] == "unsupported_mime" and txt["offset"] > 0 and "text/plain" in txt["detail"]
    cfg = load_job()
    cfg.read.mime_types = ["text/html", "application/pdf"]  # listed: not a drop at read (HTML decode follows)
    skipped = []
    pages = list(iter_pages(str(path), lambda r, w, m, dropped=True: skipped.append(r),
                            mime_types=tuple(cfg.read.mime_types)))
    assert skipped.count("unsupported_mime") == 2 and len(pages) == 2
