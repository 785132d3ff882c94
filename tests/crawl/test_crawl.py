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


def _fake_result(rng, i: int, path: str) -> dict:
    """A task result as crawl tasks return it (random funnel, languages, bad-input records, PII counts)."""
    stages = {}
    n = rng.randint(0, 40)
    for s in ("read", "url_filter", "langid", "quality"):
        drops = {r: rng.randint(1, 3) for r in rng.sample(["a", "b", "c", "d", "e"], rng.randint(0, 3))}
        out = max(0, n - sum(drops.values()))
        stages[s] = {"in": n, "out": out, "dropped": drops}
        n = out
    langs = {lang: rng.randint(1, 4) for lang in rng.sample(["en", "de", "fr", "zh", "ru"], rng.randint(0, 3))}
    errors = [{"stage": "read", "reason": "bad", "record": f"{path}@{k}", "message": "x"} for k in range(rng.randint(0, 30))]
    return {"task": f"t{i:05d}", "input": path, "curated_rows": n, "removed_rows": rng.randint(0, 9),
            "error_count": len(errors), "errors": errors, "stages": stages, "languages": langs,
            "timings_s": {"read": rng.randint(0, 8) / 4, "quality": rng.randint(0, 8) / 4},
            "pii": {"text": {"docs": 2, "docs_scrubbed": 2, "docs_with_pii": 1, "skipped_language": 0, "chars": 10,
                             "chars_analyzed": 5, "windows": 1, "seconds": 0.25, "errors": {},
                             "replacements": {"EMAIL_ADDRESS": rng.randint(0, 2)}},
                    "fields": {"url": rng.randint(0, 1)}, "field_errors": {}}}


def test_driver_keeps_sums_and_gives_merge_stats_output():
    """crawlmix.crawl.results.Finished (a few hundred bytes a task) gives exactly merge_stats's stats.json of
    the full results, key order included, whatever order the tasks finish in; and their summed PII counts."""
    import random

    from crawlmix.crawl.results import Finished
    from crawlmix.pii.job import crawl_pii_stats
    from crawlmix.runtime.funnel import merge_stats

    rng = random.Random(3)
    results = [_fake_result(rng, i, f"/in/f{i // 3}.warc.gz") for i in range(400)]  # > 2 x 1000 bad-input records
    assert sum(len(r["errors"]) for r in results) > 3000
    header = {"job": "t", "inputs": 134}
    want = json.dumps(merge_stats(results, header))
    for seed in (0, 1):
        shuffled = results[:]
        random.Random(seed).shuffle(shuffled)
        got = Finished()
        for r in shuffled:
            got.add(json.loads(json.dumps(r)))  # (a copy, as a result arrives from a worker)
        assert json.dumps(got.stats(header)) == want
        assert sum(map(len, got.errors.values())) <= 2 * 1000 + 30  # only the records that can still be listed
        assert got.tasks() == sorted(r["task"] for r in results)
        assert crawl_pii_stats(got.pii_results(), []) == crawl_pii_stats(results, [])


def test_tasks_are_planned_as_they_are_submitted(tmp_path):
    """The crawl's plan is drawn by the executor as it has room: a task starts before the inputs are all
    listed, and at no point are more than the in-flight window planned ahead of the running tasks."""
    from crawlmix.crawl.job import plan
    from crawlmix.runtime.executor import Executor

    for i in range(3000):
        (tmp_path / f"seg{i:05d}.warc.gz").write_bytes(b"x")
    planned = [0]

    def counted():
        for t in plan([str(tmp_path / "*.warc.gz")], 256 << 20):
            planned[0] += 1
            yield t

    ahead = []

    def task(path, start, end):
        ahead.append(planned[0])
        return path

    ex = Executor("inline", 1, progress=False)
    names = [o.result for o in ex.imap(task, counted())]
    assert len(names) == 3000 and names == sorted(names)
    assert max(a - i for i, a in enumerate(ahead)) <= 1  # the task being run, and nothing queued beyond it
    threads = Executor("threads", 2, progress=False, max_in_flight=4)
    planned[0], ahead[:] = 0, []
    assert len(list(threads.imap(task, counted()))) == 3000
    assert max(a - i for i, a in enumerate(sorted(ahead))) <= 4 + 1


def test_task_writes_to_a_url_as_to_a_folder(sample_dir, tmp_path, monkeypatch):
    """A crawl task (PII on, staged for dedup, one byte range of the WARC) with its output folder behind an
    fsspec URL (memory://, as s3:// on a cluster) publishes the same bytes as into a local folder, its
    marker last, and nothing stays in the node's scratch."""
    from crawlmix.crawl.config import load_job
    from crawlmix.crawl.job import crawl_task
    from crawlmix.runtime import storage

    monkeypatch.setenv("CRAWLMIX_SCRATCH", str(tmp_path / "scratch"))
    cfg = load_job(None)
    warc = str(sample_dir / "sample.warc.gz")
    base = "memory://crawl-task-url-test"
    storage.rmtree(base)
    here = crawl_task(warc, 12000, 24000, str(tmp_path / "local"), cfg, True)
    there = crawl_task(warc, 12000, 24000, base, cfg, True)
    assert "@000000012000-000000024000" in there["task"] and there["curated_rows"] > 0
    assert {k: v for k, v in there.items() if k != "timings_s"} == {k: v for k, v in here.items() if k != "timings_s"}
    for folder in ("_prededup", "removed"):
        name = f"{there['task']}.parquet"
        assert storage.read_bytes(storage.join(base, folder, name)) == (tmp_path / "local" / folder / name).read_bytes()
    assert storage.read_json(storage.join(base, "_tasks", f"{there['task']}.json"))["task"] == there["task"]
    assert crawl_task(warc, 12000, 24000, base, cfg, True) == json.loads(json.dumps(there))  # the marker: not redone
    assert not [p for p in (tmp_path / "scratch").rglob("*") if p.is_file()]
    storage.rmtree(base)


def test_storage_options_are_checked_kept_out_of_the_hash_and_redacted(tmp_path):
    from crawlmix.crawl.config import load_job
    from crawlmix.runtime.config import ConfigError

    bad = tmp_path / "bad.yaml"
    bad.write_text("storage_options:\n  s3: http://x\n")
    with pytest.raises(ConfigError, match=r"storage_options: .*s3:// protocol must be a mapping"):
        load_job(bad)
    good = tmp_path / "good.yaml"
    good.write_text("storage_options:\n  s3: {endpoint_url: 'http://127.0.0.1:9', key: AK, secret: SK,"
                    " client_kwargs: {aws_session_token: T}}\n")
    cfg = load_job(good)
    (tmp_path / "plain.yaml").write_text("{}\n")
    assert cfg.digest() == load_job(tmp_path / "plain.yaml").digest()  # where the data is, not what is done
    shown = cfg.public_dump()["storage_options"]["s3"]
    assert shown == {"endpoint_url": "http://127.0.0.1:9", "key": "***", "secret": "***",
                     "client_kwargs": {"aws_session_token": "***"}}


def test_crawl_task_signs_its_staged_rows_for_dedup(sample_dir, tmp_path, monkeypatch):
    """With dedup on, a crawl task also writes dedup's signature of the rows it staged (in parallel with the
    other tasks, not in a round after the crawl): the same table dedup's signature step computes from the
    staged file, whose marker that step then finds. A failure to sign does not fail the crawl task."""
    import pyarrow.parquet as pq

    from crawlmix.crawl.config import load_job
    from crawlmix.crawl.job import crawl_task
    from crawlmix.dedup import signatures
    from crawlmix.dedup.job import signature_args

    cfg = load_job(None)
    assert cfg.dedup.enabled
    warc, out, cfg_json = str(sample_dir / "sample.warc.gz"), tmp_path / "out", cfg.dedup.model_dump_json()
    name = crawl_task(warc, 0, None, str(out), cfg, True)["task"]
    staged = str(out / "_prededup" / f"{name}.parquet")
    assert (out / "_dedup" / "sig" / f"{name}.parquet").exists()
    fresh = signatures.signature_task(*signature_args(staged, str(tmp_path / "fresh"), name, cfg_json))
    assert fresh["resumed"] is False and fresh["rows"] > 0
    assert pq.read_table(out / "_dedup" / "sig" / f"{name}.parquet").equals(
        pq.read_table(tmp_path / "fresh" / "_dedup" / "sig" / f"{name}.parquet"))
    assert signatures.signature_task(*signature_args(staged, str(out), name, cfg_json))["resumed"] is True

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(signatures, "signature_task", broken)
    other = crawl_task(warc, 12000, 24000, str(out), cfg, True)  # signing failed: the task did not
    assert other["curated_rows"] >= 0 and (out / "_tasks" / f"{other['task']}.json").exists()
    assert not (out / "_dedup" / "sig" / f"{other['task']}.parquet").exists()  # left to dedup's own step
