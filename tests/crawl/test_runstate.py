"""Run states (crawlmix.runtime.runstate): which folders a reader may trust."""

from __future__ import annotations

import json

import pytest

from crawlmix.runtime import runstate
from crawlmix.runtime.runstate import RunNotFinished, check_inputs


def _run(tmp_path, name="run"):
    d = tmp_path / name
    for sub in ("curated", "pairs", "_prededup"):
        (d / sub).mkdir(parents=True)
        (d / sub / "a.parquet").write_bytes(b"x")
    return d


def test_running_then_finished_then_incomplete(tmp_path):
    d = _run(tmp_path)
    files = [d / "curated" / "a.parquet", d / "pairs" / "a.parquet"]
    runstate.begin(d, {"job": "t", "created": "2024-01-01T00:00:00+00:00"})
    assert runstate.read_state(d)[0] == "running"
    for f in files + [d, d / "curated"]:
        with pytest.raises(RunNotFinished, match="has not finished .*since 2024-01-01.*rerun"):
            check_inputs([f], "source 'web'")
    runstate.finish(d, {"job": "t", "docs": 3})
    assert json.loads((d / "stats.json").read_text()) == {"status": "finished", "job": "t", "docs": 3}
    check_inputs(files + [d])
    runstate.finish(d, {"job": "t", "failed_tasks": ["/in/b.warc.gz"]}, ["/in/b.warc.gz"])
    with pytest.raises(RunNotFinished, match=r"incomplete: 1 task\(s\) failed \(/in/b.warc.gz\)"):
        check_inputs(files)
    check_inputs(files, allow_incomplete=True)  # the dashboard shows what an incomplete run wrote


def test_internal_folders_and_other_folders(tmp_path):
    d = _run(tmp_path)
    runstate.finish(d, {"job": "t"})
    with pytest.raises(RunNotFinished, match="internal folder"):
        check_inputs([d / "_prededup" / "a.parquet"])
    plain = tmp_path / "plain"  # no stats.json: not a run, read as it is
    plain.mkdir()
    (plain / "x.parquet").write_bytes(b"x")
    check_inputs([plain / "x.parquet", plain / "missing-*.parquet"])
    nested = d / "copies" / "curated"  # a folder inside a run that is none of its outputs
    nested.mkdir(parents=True)
    runstate.begin(d, {"job": "t"})
    check_inputs([nested])


def test_stats_without_status_are_not_trusted(tmp_path):
    d = _run(tmp_path)
    (d / "stats.json").write_text(json.dumps({"stages": {}, "docs_out": 3}))
    assert runstate.read_state(d)[0] == "unknown"
    with pytest.raises(RunNotFinished, match="no run state"):
        check_inputs([d / "curated" / "a.parquet"])
    (d / "stats.json").write_text("{not json")
    with pytest.raises(RunNotFinished):
        check_inputs([d / "curated"])
