"""Mixture tuning (crawlmix/tune, pipelines/tune_mix.py): a constructed task with a known answer, honest
candidates.csv, resume, determinism, bad inputs, the shipped video sweep, the weight tolerance."""

from __future__ import annotations

import csv
import json
import sys

import numpy as np
import pytest
import yaml

from crawlmix.mix.config import load_mixture, parse_mixture
from crawlmix.runtime.config import ConfigError
from crawlmix.tune.job import TuneError, main, tune
from crawlmix.tune.ngram import join
from crawlmix.tune.proxy import build_mix, ngram_losses, read_target, shard_texts
from tests.conftest import ROOT
from tests.tune.task import HAND, language_texts, make_task, test_loss as task_loss

HIDDEN = [0.45, 0.05, 0.3, 0.0, 0.15, 0.05]
NAMES = [f"s{i}" for i in range(6)]


@pytest.fixture(scope="module")
def solved(tmp_path_factory):
    root = tmp_path_factory.mktemp("six")
    sweep = make_task(root, HIDDEN, seed=0, count=12)
    rep = tune(sweep, root / "out", root, progress=False)
    return root, sweep, rep


def test_tuned_mix_matches_the_hidden_blend_on_the_test_split(solved):
    if language_texts()[1] != "lid":
        pytest.skip("the accuracy check needs real sentences (../shared/data/lid/*.txt); without them the "
                    "synthetic languages still run every other tuning test end to end")
    root, _, rep = solved
    got = {k: task_loss(root, w) for k, w in (("tuned", rep["tuned"]["weights"]), ("hidden", dict(zip(NAMES, HIDDEN))),
                                              ("uniform", {n: 1 / 6 for n in NAMES}), ("hand", dict(zip(NAMES, HAND))))}
    assert abs(got["tuned"] - got["hidden"]) < 0.05, got
    assert got["tuned"] < got["uniform"] - 0.1 and got["tuned"] < got["hand"] - 0.1, got
    assert rep["regression"]["heldout"]["target"]["spearman"] > 0.7
    assert len(rep["runs"]) == 2 + 12 + 3 and rep["proxy"]["text_only"] is True
    w = rep["tuned"]["weights"]
    assert abs(sum(w.values()) - 1) < 1e-9 and max(w, key=w.get) == "s0"


def test_report_shape_and_tuned_yaml_loads(solved):
    root, _, rep = solved
    out = root / "out"
    r = json.loads((out / "report.json").read_text())
    assert list(r) == ["kind", "name", "sweep_hash", "base", "stage", "sources", "targets", "proxy", "runs",
                       "regression", "tuned", "baselines", "created"]
    assert r["kind"] == "crawlmix-tuning" and r["sources"] == NAMES and r["targets"] == ["target"]
    assert set(r["runs"][0]) == {"id", "kind", "seed", "weights", "losses", "predicted", "status", "error"}
    assert {x["kind"] for x in r["runs"]} == {"base", "uniform", "candidate", "confirm-tuned", "confirm-base",
                                              "confirm-uniform"}
    assert set(r["tuned"]["confirmed"]["target"]) >= {"mean", "std"}
    mix = load_mixture(out / "tuned.yaml")
    assert mix.tuning["sweep_hash"] == r["sweep_hash"]
    plain = parse_mixture({k: v for k, v in yaml.safe_load((out / "tuned.yaml").read_text()).items() if k != "tuning"})
    assert plain.digest() != mix.digest()  # the tuning block enters the mixture hash


def test_candidates_csv_is_honest(solved):
    root, _, rep = solved
    rows = list(csv.DictReader((root / "out" / "candidates.csv").open()))
    assert len(rows) == len(rep["runs"]) and all(r["status"] == "ok" for r in rows)
    row = rows[5]
    weights = {n: float(row[n]) for n in NAMES}
    base = load_mixture(root / "mixtures" / "six.yaml").model_dump(mode="json")
    shards = build_mix(base, "pretrain", weights, int(row["seed"]), 6000, root / "again", root)
    loss = ngram_losses(shard_texts(shards), {"t": join(read_target(root / "eval" / "target.jsonl"))}, 5)["t"]
    assert loss == pytest.approx(float(row["loss_target"]), abs=1e-6)


def test_resume_reruns_only_missing_runs_and_is_byte_identical(solved):
    root, sweep, _ = solved
    out = root / "out"
    tuned, cands = (out / "tuned.yaml").read_bytes(), (out / "candidates.csv").read_bytes()
    marks = sorted((out / "_tasks").glob("*.json"))
    before = {p.name: p.stat().st_mtime_ns for p in marks}
    for name in ("r003.json", "r010.json"):
        (out / "_tasks" / name).unlink()
    tune(sweep, out, root, progress=False)
    after = {p.name: p.stat().st_mtime_ns for p in sorted((out / "_tasks").glob("*.json"))}
    assert set(after) == set(before)
    assert {k for k in after if after[k] != before[k]} == {"r003.json", "r010.json"}
    assert (out / "tuned.yaml").read_bytes() == tuned and (out / "candidates.csv").read_bytes() == cands


@pytest.mark.slow
def test_ray_and_process_backends_give_the_same_outputs(solved):
    """One proxy run = one executor task: on Ray (a local one) and in 2 worker processes, the same
    candidates.csv and tuned.yaml as the in-process run (fresh output folders, nothing resumed)."""
    root, sweep, _ = solved
    want = [(root / "out" / f).read_bytes() for f in ("candidates.csv", "tuned.yaml")]
    for kw, name in (({"use_ray": True, "workers": 2}, "out-ray"), ({"workers": 2}, "out-procs")):
        tune(sweep, root / name, root, progress=False, **kw)
        got = [(root / name / f).read_bytes() for f in ("candidates.csv", "tuned.yaml")]
        assert got == want, name


# ------------------------------------------------------------------------------------------ bad input
def _edit_sweep(path, **over):
    raw = yaml.safe_load(path.read_text())
    for k, v in over.items():
        raw[k] = {**raw.get(k, {}), **v} if isinstance(v, dict) else v
    path.write_text(yaml.safe_dump(raw))
    return path


def test_unknown_source_and_infeasible_bounds_are_named(tmp_path):
    sweep = make_task(tmp_path, HIDDEN, count=2)
    _edit_sweep(sweep, search={"sources": ["s0", "nope"]})
    with pytest.raises(ConfigError, match=r"search\.sources\.nope: unknown source 'nope'"):
        tune(sweep, tmp_path / "o", tmp_path, progress=False)
    _edit_sweep(sweep, search={"sources": None, "bounds": {n: [0.0, 0.1] for n in NAMES}})
    with pytest.raises(ConfigError, match=r"search\.bounds: no feasible mixture"):
        tune(sweep, tmp_path / "o", tmp_path, progress=False)
    _edit_sweep(sweep, search={"bounds": {}}, candidates={"count": "many"})
    with pytest.raises(ConfigError, match=r"candidates\.count"):
        tune(sweep, tmp_path / "o", tmp_path, progress=False)


@pytest.mark.parametrize("script, match", [
    ("import sys; print('boom'); sys.exit(3)", r"RunFailed: trainer exited with status 3: boom"),
    ("print('no metrics')", r"RunFailed: trainer exited 0 but wrote no .*metrics\.json"),
])
def test_command_trainer_failures_are_recorded_and_stop_the_sweep(tmp_path, script, match, capsys):
    sweep = make_task(tmp_path, HIDDEN, count=1)
    (tmp_path / "train.py").write_text(script)
    _edit_sweep(sweep, proxy={"trainer": "command", "max_failures": 1,
                              "command": f"{sys.executable} {tmp_path / 'train.py'} --shards {{shards}} "
                                         f"--eval {{eval}} --out {{out}}"})
    with pytest.raises(TuneError, match=r"3 proxy run\(s\) failed, more than proxy\.max_failures=1; first: r000: "
                                        + match):
        tune(sweep, tmp_path / "o", tmp_path, progress=False)
    assert not list((tmp_path / "o" / "_tasks").glob("*.json")) if (tmp_path / "o" / "_tasks").exists() else True


def test_command_trainer_that_works(tmp_path):
    """A user trainer (here: the builtin n-gram behind the command interface) gives the builtin's losses."""
    sweep = make_task(tmp_path, HIDDEN, count=3)
    (tmp_path / "train.py").write_text(
        "import sys, json, tarfile\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from crawlmix.tune.ngram import ByteNGram, join\nfrom crawlmix.tune.proxy import read_target\n"
        "a = sys.argv[1:]; i = a.index('--eval'); shards = a[1:a.index('--eval')]; out = a[a.index('--out') + 1]\n"
        "from crawlmix.tune.proxy import shard_texts\nfrom pathlib import Path\n"
        "lm = ByteNGram(5).fit(join(shard_texts([Path(s) for s in shards])))\n"
        "ev = dict(x.split('=', 1) for x in a[i + 1].split(','))\n"
        "m = {k: lm.bits_per_byte(join(read_target(p))) for k, p in ev.items()}\n"
        "json.dump({'metrics': m, 'lower_is_better': True}, open(out + '/metrics.json', 'w'))\n")
    _edit_sweep(sweep, proxy={"trainer": "command", "command": f"{sys.executable} {tmp_path / 'train.py'} "
                                                              f"--shards {{shards}} --eval {{eval}} --out {{out}}"})
    rep = tune(sweep, tmp_path / "o", tmp_path, progress=False)
    assert all(r["status"] == "ok" for r in rep["runs"]) and rep["proxy"]["text_only"] is False
    builtin = tune(_edit_sweep(sweep, proxy={"trainer": "builtin:ngram", "command": None}), tmp_path / "b", tmp_path,
                   progress=False)
    assert [r["losses"]["target"] for r in rep["runs"][:5]] == pytest.approx(
        [r["losses"]["target"] for r in builtin["runs"][:5]], abs=1e-5)


# ------------------------------------------------------------------------------------------ shipped sweeps
@pytest.mark.parametrize("name", ["text-pretrain", "smolvlm-video"])
def test_shipped_sweeps_validate(name):
    from crawlmix.tune.config import load_sweep

    sweep, mix, stage = load_sweep(ROOT / "mixtures" / f"{name}.sweep.yaml")
    assert sweep.proxy.trainer == "builtin:ngram" and sweep.candidates.count > 0 and stage.name == sweep.stage


def test_video_sweep_runs_end_to_end_text_only(tmp_path, capsys):
    rc = main(["--sweep", str(ROOT / "mixtures" / "smolvlm-video.sweep.yaml"), "--output", str(tmp_path / "o"),
               "--root", str(tmp_path), "--count", "3", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "proxy: text-only" in out
    rep = json.loads((tmp_path / "o" / "report.json").read_text())
    assert rep["proxy"]["text_only"] and rep["stage"] == "video" and len(rep["runs"]) == 5 + 3 * 2
    assert load_mixture(tmp_path / "o" / "tuned.yaml").tuning["proxy"]["text_only"] is True


def test_help(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--sweep" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------ weight tolerance
def _six(w):
    return {"name": "t", "stages": [{"name": "s", "budget": {"samples": 10}, "sources": [
        {"name": f"a{i}", "modality": "text", "path": "x.jsonl", "weight": x} for i, x in enumerate(w)]}]}


def test_six_weights_written_with_six_decimals_load():
    parse_mixture(_six([0.166667] * 6))


def test_a_sum_of_1_01_is_refused_with_the_exact_sum():
    w = [0.2, 0.2, 0.2, 0.2, 0.21]
    with pytest.raises(ConfigError, match=r"weights sum to " + repr(float(np.sum(w))).replace(".", r"\.")):
        parse_mixture(_six(w))
