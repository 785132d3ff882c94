"""The mixer on an object store (moto's S3 server on 127.0.0.1, tests/cluster/conftest.py): sources read from
and shards written to s3:// give the local run's bytes; source files are fetched once into local scratch,
again only when the object changed; a writer on another node fetches its own copy and refuses changed bytes;
unfinished crawl folders are refused on S3 as on a disk; storage_options in the mixture reach the store."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import pytest
import yaml

from crawlmix.mix import fetch
from crawlmix.mix.config import parse_mixture
from crawlmix.mix.job import main as mix_main
from crawlmix.mix.job import run
from crawlmix.mix.plan import prepare
from crawlmix.mix.sources import MixError
from crawlmix.runtime import storage
from tests.mix.mixtree import write_tree


def mixture(**extra) -> dict:
    """Every reader: tars (one by a brace pattern), a crawl folder's curated Parquet, JSONL, interleaved Parquet;
    both output formats."""
    return {"name": "s3mix", "seed": 5, "output": {"formats": ["webdataset", "parquet"]}, **extra, "stages": [{
        "name": "s1", "budget": {"samples": 120}, "shards": {"max_samples": 25},
        "sources": [
            {"name": "img", "modality": "image", "path": "sample/media/photos.tar", "weight": 0.3, "max_epochs": 4},
            {"name": "docs", "modality": "image", "path": "sample/media/{charts,ocr}.tar", "weight": 0.15,
             "max_epochs": 4},
            {"name": "web", "modality": "text", "path": "output/sample-crawl", "weight": 0.2, "max_epochs": 3},
            {"name": "book", "modality": "text", "path": "sample/media/textbook.jsonl", "weight": 0.2, "max_epochs": 4},
            {"name": "pages", "modality": "interleaved", "path": "sample/media/interleaved.parquet", "weight": 0.15,
             "max_epochs": 4}]}]}


def upload(s3, tree: Path, prefix: str) -> None:
    fs = s3.fs()
    for p in sorted(tree.rglob("*")):
        if p.is_file():
            fs.put_file(str(p), f"{prefix}/{p.relative_to(tree).as_posix()}")
    fs.invalidate_cache()


def local_digests(d: Path) -> dict[str, str]:
    return {p.relative_to(d).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


def s3_digests(s3, prefix: str) -> dict[str, str]:
    fs = s3.fs()
    fs.invalidate_cache()
    return {k[len(prefix) + 1:]: hashlib.sha256(fs.cat_file(k)).hexdigest() for k in sorted(fs.find(prefix))}


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return write_tree(tmp_path_factory.mktemp("s3mixroot"), scale=0.3)


@pytest.fixture(scope="module")
def local_run(tree, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("s3mix-local")
    run(parse_mixture(mixture()), out, tree, progress=False)
    return out


@pytest.fixture
def downloads(monkeypatch, tmp_path) -> list:
    """Every download from the store, in a fresh scratch folder (this node's)."""
    monkeypatch.setenv(storage.ENV_SCRATCH, str(tmp_path / "scratch"))
    got, real = [], storage.download
    monkeypatch.setattr(storage, "download", lambda src, dest: (got.append(src), real(src, dest))[1])
    return got


def test_s3_sources_and_output_give_the_local_shards(s3_server, tree, local_run, downloads, tmp_path):
    data = s3_server.bucket("mix-src") + "/data"
    upload(s3_server, tree, "mix-src/data")
    out = s3_server.bucket("mix-out") + "/run"
    res = run(parse_mixture(mixture()), out, data, progress=False, workers=2)  # forked writers upload
    assert res[0]["written"] == 5 and res[0]["out"] == f"{out}/s1"
    want = local_digests(local_run)
    assert {k for k in want if k.endswith(".tar")} == {f"s1/shard-{i:06d}.tar" for i in range(5)}
    assert s3_digests(s3_server, "mix-out/run") == want  # shards, Parquet, stats, lock, index, markers
    fetched = sorted(downloads)
    assert len(fetched) == len(set(fetched)) == 7 and all(u.startswith(data + "/") for u in fetched)
    lock = json.loads(storage.read_bytes(f"{out}/s1/mix.lock.json"))
    assert lock["sources"]["web"]["files"][0]["path"] == "output/sample-crawl/curated/a.parquet"

    again = run(parse_mixture(mixture()), out, data, progress=False)  # finished: nothing written, nothing fetched
    assert (again[0]["written"], again[0]["skipped"], len(downloads)) == (0, 5, 7)
    storage.remove(f"{out}/s1/_tasks/shard-000003.json")  # interrupted before this marker
    again = run(parse_mixture(mixture()), out, data, progress=False)
    assert (again[0]["written"], again[0]["skipped"]) == (1, 4)
    assert s3_digests(s3_server, "mix-out/run") == want


def test_a_writer_on_another_node_fetches_its_own_copy_and_refuses_changed_bytes(s3_server, tree, downloads,
                                                                                   tmp_path, monkeypatch):
    data = s3_server.bucket("mix-node") + "/data"
    upload(s3_server, tree, "mix-node/data")
    plans, _ = prepare(parse_mixture(mixture()), data, progress=False)
    shipped = pickle.dumps(plans[0].sources)  # what a Ray task receives: the index, no file maps
    monkeypatch.setenv(storage.ENV_SCRATCH, str(tmp_path / "node2"))  # another node: its own, empty scratch
    img = next(s for s in pickle.loads(shipped) if s.name == "img")
    assert bytes(img.base_buffers()[0]) == (tree / "sample/media/photos.tar").read_bytes()
    assert len(list((tmp_path / "node2" / fetch.SCRATCH).glob("*/photos.tar"))) == 1

    s3_server.fs().pipe_file("mix-node/data/sample/media/photos.tar", (tree / "sample/media/charts.tar").read_bytes())
    monkeypatch.setenv(storage.ENV_SCRATCH, str(tmp_path / "node3"))
    img = next(s for s in pickle.loads(shipped) if s.name == "img")
    with pytest.raises(fetch.SourceChanged, match="photos.tar changed since the mix was planned"):
        img.base_buffers()
    assert not list((tmp_path / "node3").rglob("photos.tar*"))  # nothing half-fetched is kept

    monkeypatch.setenv(storage.ENV_SCRATCH, str(tmp_path / "scratch"))  # the driver again: a changed object is
    n = len(downloads)  # fetched again (its new version), the unchanged ones are not
    plans2, _ = prepare(parse_mixture(mixture()), data, progress=False)
    assert downloads[n:] == [f"{data}/sample/media/photos.tar"]
    assert plans2[0].stage_hash != plans[0].stage_hash


def test_unfinished_crawl_folder_on_s3_is_refused(s3_server, tree):
    data = s3_server.bucket("mix-running") + "/data"
    upload(s3_server, tree, "mix-running/data")
    s3_server.fs().pipe_file("mix-running/data/output/sample-crawl/stats.json",
                             json.dumps({"status": "running", "created": "2026-01-01"}).encode())
    with pytest.raises(MixError, match=r"source 'web': the run writing s3://mix-running/data/output/sample-crawl "
                                       r"has not finished"):
        prepare(parse_mixture(mixture()), data, progress=False)


def test_cli_with_storage_options_in_the_mixture(s3_server, tree, local_run, downloads, tmp_path, monkeypatch,
                                                 capsys):
    """No endpoint or credentials in the environment: the mixture's storage_options reach the store (and do
    not change the mixture hash: the shards are the local run's)."""
    data = s3_server.bucket("mix-opts") + "/data"
    upload(s3_server, tree, "mix-opts/data")
    for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(k, raising=False)
    opts = {"s3": {"endpoint_url": s3_server.endpoint, "key": "testing", "secret": "testing"}}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(mixture(storage_options=opts)))
    assert mix_main(["--mixture", str(tmp_path / "m.yaml"), "--root", data, "--output", "s3://mix-opts/out",
                     "--no-progress", "--threads", "1"]) == 0
    assert "-> s3://mix-opts/out/s1/" in capsys.readouterr().out
    assert s3_digests(s3_server, "mix-opts/out") == local_digests(local_run)
    storage.configure(None)


def test_tokenizer_json_behind_a_url(s3_server, tmp_path, downloads):
    """tokens.tokenizer relative to an s3:// --root (a folder holding tokenizer.json) counts as the local file."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from crawlmix.mix.config import TokenConfig
    from crawlmix.mix.tokens import TokenCounter
    from crawlmix.runtime.config import ConfigError
    from tests.mix.mixtree import texts

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts(20, 0), trainers.WordLevelTrainer(special_tokens=["[UNK]"]))
    tok.save(str(tmp_path / "tokenizer.json"))
    data = s3_server.bucket("mix-tok") + "/data"
    s3_server.fs().put_file(str(tmp_path / "tokenizer.json"), "mix-tok/data/tok/tokenizer.json")
    remote = TokenCounter(TokenConfig(tokenizer="tok"), data)
    local = TokenCounter(TokenConfig(tokenizer=str(tmp_path / "tokenizer.json")))
    sample = texts(30, 1) + ["unknown words here", ""]
    assert remote.spec == f"{data}/tok/tokenizer.json" and downloads == [remote.spec]
    assert remote.count(sample).tolist() == local.count(sample).tolist() and remote.count(sample).sum() > 300
    with pytest.raises(ConfigError, match=r"no tokenizer\.json at s3://mix-tok/data/nope/tokenizer\.json"):
        TokenCounter(TokenConfig(tokenizer="nope"), data)
