"""Tuning over an object store (moto's S3 server on 127.0.0.1): the sweep, its base mixture, sources, eval targets
and outputs on s3:// give the local sweep's results; a command trainer still gets local files, and its metrics reach the run's folder."""

from __future__ import annotations

import csv
import io
import json
import sys

import pytest
import yaml

from crawlmix.runtime import storage
from crawlmix.tune.job import main, tune
from tests.conftest import ROOT
from tests.tune.task import make_task

HIDDEN = [0.45, 0.05, 0.3, 0.0, 0.15, 0.05]
FAST = {"search": {"sources": ["s0", "s2"], "prior": "uniform"},  # two searched weights: a quick fit
        "regression": {"model": "loglinear", "folds": 0, "starts": 1}}
TRAINER = ("import sys, json, os\n"
           f"sys.path.insert(0, {str(ROOT)!r})\n"
           "from crawlmix.tune.ngram import ByteNGram, join\n"
           "from crawlmix.tune.proxy import read_target, shard_texts\n"
           "a = sys.argv[1:]; shards = a[1:a.index('--eval')]; out = a[a.index('--out') + 1]\n"
           "assert all(os.path.isfile(s) for s in shards), shards  # local files, whatever the output\n"
           "ev = dict(x.split('=', 1) for x in a[a.index('--eval') + 1].split(','))\n"
           "assert all(os.path.isfile(p) for p in ev.values()), ev\n"
           "lm = ByteNGram(5).fit(join(shard_texts(shards)))\n"
           "print('trained on', len(shards), 'shard(s)')\n"
           "json.dump({'metrics': {k: lm.bits_per_byte(join(read_target(p))) for k, p in ev.items()}}, "
           "open(out + '/metrics.json', 'w'))\n")


@pytest.fixture
def task(s3_server, tmp_path, monkeypatch):
    """The six-source task (tests/tune/task.py), its sources and eval targets also under s3://BUCKET/root."""
    monkeypatch.setenv(storage.ENV_SCRATCH, str(tmp_path / "scratch"))
    root = tmp_path / "root"
    sweep = make_task(root, HIDDEN, count=1, extra=FAST)
    raw = yaml.safe_load(sweep.read_text())
    sweep.write_text(yaml.safe_dump({**raw, "base": "mixtures/six.yaml"}))  # beside the sweep's folder, as shipped
    bucket = s3_server.bucket("tune-" + tmp_path.name[-12:].lower().replace("_", "-"))
    fs = s3_server.fs()
    for p in [*sorted((root / "src").glob("*")), *sorted((root / "eval").glob("*")), *(root / "mixtures").glob("*")]:
        fs.put_file(str(p), f"{bucket[5:]}/root/{p.relative_to(root).as_posix()}")
    return root, sweep, bucket


def _report(text: str) -> dict:
    rep = json.loads(text)
    rep.pop("created")
    return rep


def test_sweep_over_s3_gives_the_local_results(s3_server, task, capsys):
    root, sweep, bucket = task
    local = tune(sweep, root / "out", root, progress=False)
    assert main(["--sweep", f"{bucket}/root/mixtures/six.sweep.yaml", "--output", f"{bucket}/out",
                 "--root", f"{bucket}/root", "--no-progress"]) == 0  # the sweep and its base mixture on S3 too
    assert f"wrote {bucket}/out/tuned.yaml" in capsys.readouterr().out
    for name in ("candidates.csv", "tuned.yaml"):
        assert storage.read_text(f"{bucket}/out/{name}") == (root / "out" / name).read_text(), name
    remote = _report(storage.read_text(f"{bucket}/out/report.json"))
    assert remote == _report((root / "out" / "report.json").read_text())
    assert len(remote["runs"]) == len(local["runs"]) == 6 and all(r["status"] == "ok" for r in remote["runs"])
    assert storage.isfile(f"{bucket}/out/runs/r000/mix/pretrain/shard-000000.tar")
    assert sorted(storage.name(p) for p in storage.ls(f"{bucket}/out/_tasks")) == [f"r{i:03d}.json" for i in range(6)]


def test_command_trainer_gets_local_files_and_its_metrics_are_uploaded(s3_server, task, tmp_path):
    root, sweep, bucket = task
    (tmp_path / "train.py").write_text(TRAINER)
    raw = yaml.safe_load(sweep.read_text())
    raw["proxy"].update(trainer="command", command=f"{sys.executable} {tmp_path / 'train.py'} --shards {{shards}} "
                                                   f"--eval {{eval}} --out {{out}}")
    sweep.write_text(yaml.safe_dump(raw))
    rep = tune(sweep, f"{bucket}/cmd", f"{bucket}/root", progress=False)
    rows = list(csv.DictReader(io.StringIO(storage.read_text(f"{bucket}/cmd/candidates.csv"))))
    assert [r["status"] for r in rep["runs"]] == ["ok"] * 6 and [r["status"] for r in rows] == ["ok"] * 6
    metrics = json.loads(storage.read_bytes(f"{bucket}/cmd/runs/r002/metrics.json"))
    assert metrics["metrics"]["target"] == pytest.approx(rep["runs"][2]["losses"]["target"], abs=1e-6)
    assert "trained on 1 shard(s)" in storage.read_text(f"{bucket}/cmd/runs/r002/trainer.log")
    assert not list((tmp_path / "scratch").glob("tune-runs/*"))  # the trainer's local copies are gone
