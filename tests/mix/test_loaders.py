"""Every shipped mixture's every stage, built from the bundled samples (sample/media at full scale, crawl outputs
shaped like the sample crawl's), read back by the loaders trainers use: Hugging Face `datasets`' webdataset
builder (one schema inferred from the first samples: the uniform layout is what makes mixed stages load),
webdataset, wids and Ray Data; the Parquet form by `datasets` and Ray Data; and a torch-free training-loop
smoke test with several loader worker processes. Every loader must see exactly the samples mix.lock.json
promises, source by source."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import random
import re
import socket
from collections import Counter
from pathlib import Path

import pytest

from crawlmix.mix.config import load_mixture
from crawlmix.mix.job import run
from crawlmix.mix.read import nested_members, sample_parts
from tests.conftest import ROOT
from tests.mix.mixtree import import_wids, loader_worker, write_tree

SHIPPED = ("smolvlm-vision", "smolvlm-video", "text-pretrain")
STAGES = [(m, st.name) for m in SHIPPED for st in load_mixture(ROOT / "mixtures" / f"{m}.yaml").stages]
IDS = [f"{m}/{s}" for m, s in STAGES]


@pytest.fixture(scope="module")
def shipped(tmp_path_factory) -> dict[tuple[str, str], Path]:
    """(mixture, stage) -> the stage's output folder, tars and Parquet form, from the shipped YAML as it is."""
    root = write_tree(tmp_path_factory.mktemp("bundled"), scale=1.0)
    out = tmp_path_factory.mktemp("shipped")
    dirs = {}
    for name in SHIPPED:
        mix = load_mixture(ROOT / "mixtures" / f"{name}.yaml")
        mix.output.formats = ["webdataset", "parquet"]
        run(mix, out / name, root, progress=False)
        dirs.update({(name, st.name): out / name / st.name for st in mix.stages})
    return dirs


@pytest.fixture(scope="module")
def hf_datasets(tmp_path_factory):
    """`datasets`, offline, its cache in a temporary folder."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import datasets

    datasets.disable_progress_bars()
    return datasets, tmp_path_factory.mktemp("hf-cache")


def _lock(d: Path) -> dict:
    return json.loads((d / "mix.lock.json").read_text())


def _expected(d: Path) -> Counter:
    return Counter({k: v["samples"] for k, v in _lock(d)["sources"].items()})


def _tars(d: Path) -> list[str]:
    return [str(p) for p in sorted(d.glob("shard-*.tar"))]


def _parquets(d: Path) -> list[str]:
    return [str(p) for p in sorted(d.glob("shard-*.parquet"))]


def test_shipped_stages_cover_every_modality(shipped):
    mods = Counter(m for d in shipped.values() for m in _lock(d)["modalities"])
    assert set(mods) == {"text", "image", "multi-image", "video", "interleaved"}
    vision = _lock(shipped["smolvlm-vision", "vision"])
    assert vision["sources"]["web-docs"]["modality"] == "interleaved" and vision["max_shard_deviation"] < 1
    assert vision["sources"]["web-docs"]["samples"] == 30  # 5% of 600, exactly
    assert _lock(shipped["text-pretrain", "pretrain"])["members"] == ["json", "txt"]  # text-only: no image member


@pytest.mark.parametrize("mixture, stage", STAGES, ids=IDS)
def test_hf_datasets_webdataset_builder(shipped, hf_datasets, mixture, stage):
    """datasets.load_dataset("webdataset", data_files=...) with nothing else: every sample, every member."""
    from PIL import Image

    datasets, cache = hf_datasets
    d = shipped[mixture, stage]
    ds = datasets.load_dataset("webdataset", data_files={"train": _tars(d)}, split="train", cache_dir=str(cache))
    lock = _lock(d)
    assert len(ds) == lock["samples"]
    assert set(ds.column_names) == {"__key__", "__url__"} | set(lock["members"])
    assert Counter(j["source"] for j in ds["json"]) == _expected(d)
    assert [k for k in ds["__key__"]] == [f"{i:010d}" for i in range(lock["samples"])]
    checked = Counter()
    for row in ds:
        meta = row["json"]
        assert isinstance(json.loads(meta["meta"]), dict)
        nested = nested_members(row.get("images.tar"))
        assert meta["images"] == sum(not n.endswith(".txt") for n, _ in nested)
        if nested and checked[meta["modality"]] < 3:  # the images are the images
            name, data = next(x for x in nested if not x[0].endswith(".txt"))
            assert Image.open(io.BytesIO(data)).format in ("JPEG", "PNG"), name
            checked[meta["modality"]] += 1
        assert row["txt"] or meta["images"]


def test_source_layout_is_what_the_hf_builder_refuses(shipped, hf_datasets, tmp_path):
    """Why the uniform layout is the default: with the sources' own members (.jpg / .0.jpg ... .7.jpg /
    .txt only) the builder fails on a mixed stage, as the issue reported."""
    datasets, cache = hf_datasets
    bundled = [p for p in next(iter(shipped.values())).parents[2].iterdir() if p.name.startswith("bundled")][0]
    mix = load_mixture(ROOT / "mixtures" / "smolvlm-video.yaml")
    mix.output.layout = "source"
    run(mix, tmp_path / "src", bundled, progress=False)
    with pytest.raises(Exception) as e:
        datasets.load_dataset("webdataset", data_files={"train": _tars(tmp_path / "src" / "video")}, split="train",
                              cache_dir=str(tmp_path / "hf"))
    assert "don't share the same prefix or the same types" in f"{e.value} {e.value.__cause__}"


@pytest.mark.parametrize("mixture, stage", STAGES, ids=IDS)
def test_webdataset_and_wids(shipped, mixture, stage):
    import webdataset as wds

    d = shipped[mixture, stage]
    lock = _lock(d)
    got, images = Counter(), 0
    for s in wds.WebDataset(_tars(d), shardshuffle=False).decode("pil"):
        got[s["json"]["source"]] += 1
        parts = sample_parts(s)
        images += sum(k == "image" for k, _ in parts)
        assert s["json"]["images"] == sum(k == "image" for k, _ in parts)
    assert got == _expected(d)
    assert images == sum(_image_count(d, src) for src in lock["sources"])
    wids = import_wids()
    ds = wids.ShardListDataset(str(d / "shardindex.json"), cache_dir=str(d.parent / "_wids_cache"))
    assert len(ds) == lock["samples"]
    got = Counter()
    for i in range(len(ds)):
        s = ds[i]
        meta = s[".json"]
        meta = json.loads(meta.read()) if hasattr(meta, "read") else meta
        got[meta["source"]] += 1
        assert s["__key__"] == f"{i:010d}"
    assert got == _expected(d)


def _image_count(d: Path, source: str) -> int:
    """Images of a source's samples in the stage, from the shard stats' Parquet twins (counted there)."""
    import pyarrow.parquet as pq

    n = 0
    for p in _parquets(d):
        t = pq.read_table(p, columns=["source", "images"]).to_pylist()
        n += sum(sum(x is not None for x in r["images"]) for r in t if r["source"] == source)
    return n


@pytest.mark.parametrize("mixture, stage", STAGES, ids=IDS)
def test_parquet_form_with_datasets(shipped, hf_datasets, mixture, stage):
    """The Parquet form: the tar's samples in the tar's order, texts / images aligned, images decoded as
    PIL by `datasets` (List(Image()) in the schema metadata)."""
    import webdataset as wds
    from PIL import Image

    datasets, cache = hf_datasets
    d = shipped[mixture, stage]
    ds = datasets.load_dataset("parquet", data_files={"train": _parquets(d)}, split="train", cache_dir=str(cache))
    lock = _lock(d)
    assert len(ds) == lock["samples"] and Counter(ds["source"]) == _expected(d)
    assert sum(ds["tokens"]) == lock["tokens"]
    assert isinstance(ds.features["images"], datasets.List) and isinstance(ds.features["images"].feature,
                                                                           datasets.Image)
    tars = {s["__key__"]: s for s in wds.WebDataset(_tars(d), shardshuffle=False).decode()}
    for row in ds:
        s = tars[row["key"]]
        assert row["source"] == s["json"]["source"] and row["meta"] == s["json"]["meta"]
        assert row["provenance"] == s["json"]["provenance"] and row["epoch"] == s["json"]["epoch"]
        assert len(row["texts"]) == len(row["images"]) and row["texts"]
        assert all((t is None) != (im is None) for t, im in zip(row["texts"], row["images"]))
        texts = [t for t in row["texts"] if t is not None]
        assert ("\n\n" if row["modality"] == "interleaved" else "\n").join(texts) == s["txt"]
        imgs = [im for im in row["images"] if im is not None]
        assert len(imgs) == s["json"]["images"]
        for im, (_, data) in zip(imgs, [x for x in nested_members(s.get("images.tar")) if not x[0].endswith(".txt")]):
            assert im.size == Image.open(io.BytesIO(data)).size


def test_parquet_form_is_deterministic(shipped, tmp_path):
    root = next(iter(shipped.values())).parents[2]
    bundled = [p for p in root.iterdir() if p.name.startswith("bundled")][0]
    mix = load_mixture(ROOT / "mixtures" / "smolvlm-vision.yaml")
    run(mix, tmp_path / "again", bundled, progress=False)
    a, b = shipped["smolvlm-vision", "vision"], tmp_path / "again" / "vision"
    names = sorted(p.name for p in a.glob("shard-*"))
    assert names == sorted(p.name for p in b.glob("shard-*")) and any(n.endswith(".parquet") for n in names)
    assert all((a / n).read_bytes() == (b / n).read_bytes() for n in names)


def test_training_loop_smoke_with_loader_workers(shipped):
    """Two loader worker processes (spawned, no torch): each reads its share of the shuffled shards through
    webdataset's pipeline, shuffles samples in a buffer, decodes every image and batches. Together they
    see every sample exactly once, and per source exactly what mix.lock.json says."""
    seed = 11
    stage_urls = {}
    for (m, st), d in shipped.items():
        urls = _tars(d)
        random.Random(seed).shuffle(urls)
        stage_urls[f"{m}/{st}"] = urls
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=loader_worker, args=(stage_urls, w, 2, seed, q)) for w in range(2)]
    for p in procs:
        p.start()
    try:
        results = dict(q.get(timeout=300) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=60)
    assert all(p.exitcode == 0 for p in procs)
    for (m, st), d in shipped.items():
        per = [results[w][f"{m}/{st}"] for w in range(2)]
        keys = [k for r in per for k in r["keys"]]
        assert sorted(keys) == [f"{i:010d}" for i in range(_lock(d)["samples"])]  # each sample once
        assert sum((Counter(r["sources"]) for r in per), Counter()) == _expected(d)
        if len(_tars(d)) > 1:
            assert all(r["keys"] for r in per)  # both workers got shards
        assert any(r["keys"] != sorted(r["keys"]) for r in per)  # shuffled
        assert sum(r["images"] for r in per) == sum(_image_count(d, s) for s in _lock(d)["sources"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ray_data_reads_every_stage_and_parquet_form(shipped):
    """ray.data.read_webdataset over every stage's shards and ray.data.read_parquet over its Parquet form, on
    a local Ray with one CPU (reused if a test before started one; a local ray.init runs without token
    auth, as crawlmix's own local Ray does)."""
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False,
                 _node_ip_address="127.0.0.1", _metrics_export_port=_free_port())
    try:
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        for (m, st), d in shipped.items():
            rows = ray.data.read_webdataset(_tars(d)).take_all()
            assert Counter(r["json"]["source"] for r in rows) == _expected(d), (m, st)
            assert {r["__key__"] for r in rows} == {f"{i:010d}" for i in range(_lock(d)["samples"])}
            media = [r for r in rows if r["json"]["images"]]
            assert all(nested_members(r["images.tar"]) for r in media)
            pq_ds = ray.data.read_parquet(_parquets(d))
            assert pq_ds.count() == _lock(d)["samples"]
            counts = pq_ds.groupby("source").count().take_all()
            assert Counter({r["source"]: r["count()"] for r in counts}) == _expected(d), (m, st)
            assert re.search(r"images: list<.*struct<bytes: binary, path: string>", str(pq_ds.schema().base_schema))
    finally:
        if started:
            ray.shutdown()
