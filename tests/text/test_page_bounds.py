"""Every page has a time and size bound: a page nested too deep, with too many elements, or whose extraction runs
over extract.timeout_s is dropped with a reason, and the file goes on (resiliparse's main-content extraction costs
about elements x depth: a page 40,000 tags deep took 31 s, 100,000 deep over 400 s)."""

from __future__ import annotations

import gzip
import threading
import time

import pyarrow.parquet as pq
import pytest

from crawlmix.runtime.config import ConfigError, validate
from crawlmix.text.config import MAX_DEPTH, TextJob
from crawlmix.text.curate import curate_file, load_text_job
from crawlmix.text.extract import (ExtractTimeout, PageBoundError, bounded_text, over_bounds, parse_html,
                                   time_limit)
from tests.conftest import shared


def nested(depth: int, text: str = "deep text here. " * 40) -> str:
    """A page whose innermost <div> is ``depth`` elements deep, <html> counted (html > body > div...)."""
    n = depth - 2
    return "<html><body>" + "<div>" * n + text + "</div>" * n + "</body></html>"


def _response(url: str, html: str, i: int, ctype: str = "text/html") -> bytes:
    body = html.encode()
    http = b"HTTP/1.1 200 OK\r\nContent-Type: " + ctype.encode() + b"\r\n\r\n" + body
    return gzip.compress(b"WARC/1.0\r\nWARC-Type: response\r\nWARC-Record-ID: <urn:uuid:deadbeef-0000-4000-8000-%012d>\r\n"
                         b"WARC-Target-URI: %s\r\nContent-Type: application/http; msgtype=response\r\n"
                         b"Content-Length: %d\r\n\r\n" % (i, url.encode(), len(http)) + http + b"\r\n\r\n")


def test_depth_bound_is_exact():
    assert over_bounds(parse_html(nested(MAX_DEPTH))) is None
    reason, detail = over_bounds(parse_html(nested(MAX_DEPTH + 1)))
    assert reason == "too_deep" and str(MAX_DEPTH) in detail
    assert over_bounds(parse_html(nested(41)), max_depth=40)[0] == "too_deep"
    assert over_bounds(parse_html(nested(40)), max_depth=40) is None
    # unclosed inline tags nest too (lexbor builds the tree a browser builds)
    assert over_bounds(parse_html("<html><body>" + "<span>x " * 300), max_depth=256)[0] == "too_deep"
    # many elements side by side are not deep
    flat = "<html><body>" + "<p>a short paragraph</p>" * 5000 + "</body></html>"
    assert over_bounds(parse_html(flat)) is None
    assert over_bounds(parse_html(flat), max_elements=4000)[0] == "too_many_elements"


def test_a_100k_deep_page_costs_a_fraction_of_a_second():
    html = nested(100_000)
    t = time.perf_counter()
    with pytest.raises(PageBoundError) as e:
        bounded_text(html)
    assert e.value.reason == "too_deep"
    assert time.perf_counter() - t < 5  # measured 0.1-0.2 s; unbounded, the extraction ran for > 400 s
    text, engine = bounded_text(nested(200))  # under the bound: extracted as before
    assert engine == "resiliparse" and "deep text here." in text


@pytest.fixture(scope="module")
def deep_warc(sample_dir, tmp_path_factory):
    """The bundled sample with two pages 100,000 tags deep, one of 150,000 side-by-side elements, and one just
    under the depth bound appended."""
    d = tmp_path_factory.mktemp("deep")
    raw = (sample_dir / "sample.warc.gz").read_bytes()
    extra = [("http://deep1.example/", nested(100_000)), ("http://deep2.example/", nested(100_000, "Ein Text. " * 50)),
             ("http://wide.example/", "<html><body>" + "<p>x</p>" * 150_000 + "</body></html>"),
             ("http://fine.example/", nested(MAX_DEPTH, "A page nested deep but inside the bound, with some words. " * 30))]
    (d / "mixed.warc.gz").write_bytes(raw + b"".join(_response(u, h, i) for i, (u, h) in enumerate(extra)))
    return d / "mixed.warc.gz"


@pytest.mark.parametrize("job", ["default", "extract-only"])  # with and without the language probe
def test_deep_pages_are_dropped_and_the_file_goes_on(job, deep_warc, sample_dir, tmp_path):
    cfg = load_text_job(f"jobs/{job}.yaml")
    t = time.perf_counter()
    mixed = curate_file(str(deep_warc), tmp_path / "mixed", cfg)
    elapsed = time.perf_counter() - t
    alone = curate_file(str(sample_dir / "sample.warc.gz"), tmp_path / "alone", cfg)
    assert elapsed < 60  # seconds (the model and lists load inside); unbounded: hours
    ex = mixed["stages"]["extract"]
    assert ex["dropped"].get("too_deep") == 2 and ex["dropped"].get("too_many_elements") == 1
    assert mixed["timings_s"]["extract"] + mixed["timings_s"].get("langid_prefilter", 0) < 10
    removed = pq.read_table(tmp_path / "mixed" / "removed" / f"{mixed['task']}.parquet").to_pylist()
    bounded = {r["url"]: r for r in removed if r["reason"] in ("too_deep", "too_many_elements")}
    assert set(bounded) == {"http://deep1.example/", "http://deep2.example/", "http://wide.example/"}
    assert all(r["stage"] == "extract" and r["offset"] > 0 and "extract.max_" in r["detail"] for r in bounded.values())
    named = {e["record"].split("(")[-1].rstrip(")") for e in mixed["errors"] if e["reason"] == "too_deep"}
    assert named == {"http://deep1.example/", "http://deep2.example/"}
    # every ordinary page: the same decision as without the deep pages beside it
    def decisions(out, name):
        cur = pq.read_table(out / "curated" / f"{name}.parquet", columns=["url", "text"]).to_pylist()
        rem = pq.read_table(out / "removed" / f"{name}.parquet", columns=["url", "stage", "reason"]).to_pylist()
        return {r["url"]: ("kept", r["text"]) for r in cur} | {r["url"]: (r["stage"], r["reason"]) for r in rem}
    got, want = decisions(tmp_path / "mixed", mixed["task"]), decisions(tmp_path / "alone", alone["task"])
    assert {u: v for u, v in got.items() if u in want} == want
    assert "http://fine.example/" in got and got["http://fine.example/"][0] != "extract"


def test_bounds_are_configurable_and_validated(deep_warc, tmp_path):
    for bad in ({"max_depth": 0}, {"max_elements": -1}, {"timeout_s": -1}, {"max_depth": "deep"}):
        with pytest.raises(ConfigError) as e:
            validate(TextJob, {"extract": bad}, "job.yaml", "job config")
        assert f"extract.{next(iter(bad))}" in str(e.value)
    cfg = validate(TextJob, {"extract": {"max_depth": 5000, "max_elements": 10_000_000},
                             "langid": {"label_only": True}}, "job.yaml", "job config")
    assert cfg.extract.max_depth == 5000


def test_timeout_interrupts_python_level_extraction(monkeypatch, sample_dir, tmp_path):
    import crawlmix.text.extract as extract

    def stuck(*a, **k):  # stands in for an extraction that never ends (Python-level: interruptible)
        time.sleep(60)

    monkeypatch.setattr(extract, "main_text", stuck)
    cfg = load_text_job("jobs/extract-only.yaml")
    cfg.extract.timeout_s = 0.1
    t = time.perf_counter()
    r = curate_file(str(sample_dir / "sample.warc.gz"), tmp_path, cfg)
    n = r["stages"]["extract"]["in"]
    assert n > 10 and r["stages"]["extract"]["dropped"] == {"extract_timeout": n}
    assert time.perf_counter() - t < 0.1 * n + 30  # each page stopped at the limit, not after 60 s
    removed = pq.read_table(tmp_path / "removed" / f"{r['task']}.parquet").to_pylist()
    assert sum(r["reason"] == "extract_timeout" and "timeout_s 0.1" in r["detail"] for r in removed) == n


def test_time_limit_outside_the_main_thread_and_around_other_timers():
    out = {}

    def work():  # a thread gets no SIGALRM: the limit is checked when the block ends
        try:
            with time_limit(0.05):
                time.sleep(0.2)
        except ExtractTimeout as e:
            out["e"] = e

    th = threading.Thread(target=work)
    th.start()
    th.join()
    assert "timeout_s 0.05" in str(out["e"])
    with time_limit(5):  # a block that ends in time leaves no timer behind
        pass
    import signal

    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    rung = []
    old = signal.signal(signal.SIGALRM, lambda *a: rung.append(1))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.5)  # someone else's timer survives a time_limit inside it
        with time_limit(0.1):
            pass
        time.sleep(0.8)
        assert rung == [1]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_image_pages_use_the_same_bound():
    from crawlmix.images.captions import page_images
    from crawlmix.images.config import ImagesJob

    job = ImagesJob()
    with pytest.raises(PageBoundError) as e:
        page_images(nested(100_000, "<img src='/a.jpg' alt='deep'>"), "http://deep.example/", job)
    assert e.value.reason == "too_deep"
    cands = page_images(nested(50, "<img src='/a.jpg' alt='fine'>"), "http://ok.example/", job)
    assert [c.urls for c in cands] == [["http://ok.example/a.jpg"]]


@pytest.mark.slow
def test_no_real_page_is_over_a_bound():
    from crawlmix.io.warc import iter_pages

    pages = [p for p in iter_pages(str(shared("bench/realpages.warc.gz")), lambda *a, **k: None) if p.text is None]
    assert len(pages) == 1171
    assert [p.url for p in pages if over_bounds(parse_html(p.html))] == []
    assert sum(over_bounds(parse_html(p.html), max_depth=40) is not None for p in pages) == 4  # depths up to 51
