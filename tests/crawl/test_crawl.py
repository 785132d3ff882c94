"""End to end on a real local Ray: the bundled sample and the real Common Crawl segment."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import ROOT, shared

CRAWL = str(ROOT / "pipelines" / "crawl.py")


def crawl(*args, timeout=600):
    r = subprocess.run([sys.executable, CRAWL, "--no-progress", *args], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


@pytest.fixture(scope="module")
def sample_run(sample_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("crawl")
    stdout = crawl("--input", str(sample_dir / "*.warc.gz"), "--input", str(sample_dir / "*.arc.gz"),
                   "--output", str(out), "--workers", "2")
    return out, stdout


def _rows(out, kind):
    return pq.read_table(out / kind).to_pylist()


def test_outputs_and_summary(sample_run):
    out, stdout = sample_run
    stats = json.loads((out / "stats.json").read_text())
    assert "curated/*.parquet" in stdout and "quality" in stdout and str(out) in stdout
    curated, removed = _rows(out, "curated"), _rows(out, "removed")
    assert stats["docs_out"] == len(curated) > 0
    # every document read is either curated or removed, and the funnel adds up
    assert stats["docs_in"] == len(curated) + len(removed)
    prev = None
    for name, s in stats["stages"].items():
        assert s["in"] - s["out"] == sum(s["dropped"].values()), name
        if prev is not None:
            assert s["in"] == prev, name
        prev = s["out"]
    by_stage = {}
    for r in removed:
        by_stage.setdefault(r["stage"], 0)
        by_stage[r["stage"]] += 1
    assert by_stage == {k: sum(v["dropped"].values()) for k, v in stats["stages"].items() if v["dropped"]}
    for col in ("id", "url", "text", "language", "language_score", "words", "dup_5_gram_char_frac", "stop_words"):
        assert col in curated[0]
    meta = pq.read_schema(next((out / "curated").glob("*.parquet"))).metadata
    assert meta[b"config_hash"].decode() == stats["config_hash"] and b"crawlmix_version" in meta


def test_sample_expectations(sample_run, manifest):
    out, _ = sample_run
    curated = {r["url"]: r for r in _rows(out, "curated")}
    removed = {r["url"]: r for r in _rows(out, "removed")}
    for page in manifest:
        url, expect = page["url"], page["expect"]
        if expect == "keep":
            assert url in curated, (url, page["note"], removed.get(url))
        elif expect == "drop":
            assert url in removed, (url, page["note"])
        elif expect.startswith("drop:"):
            assert url in removed and removed[url]["stage"] == expect[5:], (url, page["note"], removed.get(url))
    langs = {r["language"] for r in curated.values()}
    assert {"en", "de", "fr", "es", "ru", "zh", "nl", "it"} <= langs
    charsets = {r["charset"] for r in curated.values()}
    assert {"utf-8", "cp1251", "gbk", "cp1252"} <= charsets
    zh = next(r for r in curated.values() if r["language"] == "zh")
    assert "集市" in zh["text"]
    assert removed["http://www.pornhub.com/view/12345"]["reason"] == "domain"
    assert removed["https://blocked-example.test/page"]["reason"] == "domain"  # the job's own list


def test_rerun_skips_and_is_identical(sample_run, sample_dir):
    out, _ = sample_run
    before = {p.relative_to(out): p.read_bytes() for p in out.glob("*/*.parquet")}
    marks = {p: p.stat().st_mtime_ns for p in (out / "_tasks").glob("*.json")}
    crawl("--input", str(sample_dir / "*.warc.gz"), "--input", str(sample_dir / "*.arc.gz"), "--output", str(out))
    assert {p: p.stat().st_mtime_ns for p in (out / "_tasks").glob("*.json")} == marks  # nothing redone
    fresh = out.parent / (out.name + "-again")
    crawl("--input", str(sample_dir / "*.warc.gz"), "--input", str(sample_dir / "*.arc.gz"), "--output", str(fresh),
          "--workers", "1")
    after = {p.relative_to(fresh): p.read_bytes() for p in fresh.glob("*/*.parquet")}
    assert before == after  # same input + config => byte-identical output


def test_bad_file_does_not_stop_the_job(tmp_path, sample_dir):
    (tmp_path / "empty.warc.gz").write_bytes(b"")
    (tmp_path / "junk.warc.gz").write_bytes(b"\x00garbage" * 100)
    out = tmp_path / "out"
    stdout = crawl("--input", str(tmp_path / "*.warc.gz"), "--input", str(sample_dir / "sample.warc.gz"),
                   "--output", str(out))
    stats = json.loads((out / "stats.json").read_text())
    assert stats["docs_out"] > 5
    reasons = {(e["reason"], Path(e["record"].split("@")[0]).name) for e in stats["errors"]}
    assert ("no_records", "empty.warc.gz") in reasons and ("corrupt_file", "junk.warc.gz") in reasons
    assert "bad input" in stdout


@pytest.mark.slow
def test_cc_segment_languages_agree_with_cld2(tmp_path):
    out = tmp_path / "cc"
    crawl("--input", str(shared("warc/cc-main-2020-34-sample.warc.gz")), "--output", str(out))
    assert (out / "stats.json").exists() and list((out / "curated").glob("*.parquet"))
    rows = [r for r in _rows(out, "curated") + _rows(out, "removed") if r.get("language") and r["cc_languages"]]
    assert len(rows) >= 12
    # cld2 lists the languages it found, largest share first
    agree = [r for r in rows if r["language"] == r["cc_languages"].split(",")[0]]
    assert len(agree) == len(rows), [(r["url"], r["language"], r["cc_languages"]) for r in rows if r not in agree]
