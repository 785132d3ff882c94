"""`modality: interleaved` sources (OBELICS layout Parquet: aligned texts / images lists) in the mixer: exact
ratios, tokens = text tokens + per_image per image, documents kept in order in both layouts and in the
Parquet form, unusable rows skipped, counted and named."""

from __future__ import annotations

import json
import re
import tarfile
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import webdataset as wds

from crawlmix.mix.config import parse_mixture
from crawlmix.mix.job import main as mix_main
from crawlmix.mix.job import run, summary
from crawlmix.mix.read import sample_parts
from crawlmix.runtime.config import ConfigError
from crawlmix.samples.media_sample import interleaved_table

WS = re.compile(r"\w+|[^\w\s]+")  # builtin:whitespace


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    from crawlmix.samples.media_sample import write_media_sample

    root = tmp_path_factory.mktemp("ilroot")
    write_media_sample(root / "sample" / "media", seed=0, scale=0.5)
    return root


def _mix(layout="uniform", docs_path="sample/media/interleaved.parquet", budget=90, **docs):
    return {"name": "il", "seed": 5, "tokens": {"per_image": 50},
            "output": {"layout": layout, "formats": ["webdataset", "parquet"]},
            "stages": [{"name": "s", "budget": {"samples": budget}, "shards": {"max_samples": 17}, "sources": [
                {"name": "docs", "modality": "interleaved", "path": docs_path, "weight": 0.4, "max_epochs": 2, **docs},
                {"name": "book", "modality": "text", "path": "sample/media/textbook.jsonl", "weight": 0.35},
                {"name": "photos", "modality": "image", "path": "sample/media/photos.tar", "weight": 0.25,
                 "max_epochs": 2}]}]}


def _docs(path: Path) -> dict:
    return {r["id"]: r for r in pq.read_table(path).to_pylist()}


def test_interleaved_source_exact_ratios_tokens_and_order(media, tmp_path):
    res = run(parse_mixture(_mix()), tmp_path, media, progress=False)
    lock = res[0]["lock"]
    docs = _docs(media / "sample" / "media" / "interleaved.parquet")
    weights = {"docs": 0.4, "book": 0.35, "photos": 0.25}
    shards = sorted((tmp_path / "s").glob("shard-*.tar"))
    assert len(shards) == 6  # 90 / 17
    drawn = Counter()
    for p in shards:
        got = Counter()
        for s in wds.WebDataset(str(p), shardshuffle=False).decode():
            meta = s["json"]
            got[meta["source"]] += 1
            if meta["source"] != "docs":
                continue
            doc = docs[meta["id"]]
            drawn[meta["id"]] += 1
            assert meta["modality"] == "interleaved" and meta["url"] == doc["url"] and meta["language"] == "en"
            want = [("text", t) if t is not None else ("image", im["bytes"]) for t, im in zip(doc["texts"], doc["images"])]
            assert sample_parts(s) == want  # the document, in its order, the image bytes as they were
            assert s["txt"] == "\n\n".join(t for t in doc["texts"] if t is not None)
            assert meta["images"] == sum(im is not None for im in doc["images"])
            assert json.loads(meta["meta"])["warc_offset"] == doc["offset"]
            assert meta["provenance"]["input"]["config_hash"] == "media-sample-0"
        n = sum(got.values())
        for name, w in weights.items():
            assert abs(got[name] - w * n) < 1, (p.name, name, got[name], w * n)
    assert lock["sources"]["docs"]["samples"] == sum(drawn.values()) == 36 and lock["max_shard_deviation"] < 1

    def tokens(doc):  # text tokens + per_image for every image
        text = "\n\n".join(t for t in doc["texts"] if t is not None)
        return len(WS.findall(text)) + 50 * sum(im is not None for im in doc["images"])

    assert lock["sources"]["docs"]["tokens"] == sum(tokens(docs[i]) * k for i, k in drawn.items())
    rows = [r for p in sorted((tmp_path / "s").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    assert len(rows) == 90
    for r in rows:
        if r["source"] == "docs":  # the Parquet form keeps the OBELICS alignment of the source
            doc = docs[r["id"]]
            assert r["texts"] == doc["texts"] and r["tokens"] == tokens(doc)
            assert [im and im["bytes"] for im in r["images"]] == [im and im["bytes"] for im in doc["images"]]


def test_source_layout_names_parts_by_position(media, tmp_path):
    run(parse_mixture(_mix(layout="source", budget=20)), tmp_path, media, progress=False)
    docs = _docs(media / "sample" / "media" / "interleaved.parquet")
    with tarfile.open(tmp_path / "s" / "shard-000000.tar") as tf:
        samples: dict = {}
        for m in tf:
            key, ext = m.name.split(".", 1)
            samples.setdefault(key, {})[ext] = tf.extractfile(m).read()
    seen = 0
    for members in samples.values():
        meta = json.loads(members.pop("json"))
        if meta["source"] != "docs":
            continue
        seen += 1
        doc = docs[meta["id"]]
        want = {f"{k}.txt": t.encode() for k, t in enumerate(doc["texts"]) if t is not None}
        want |= {f"{k}.{'jpg' if im['url'].endswith('jpg') else 'png'}": im["bytes"]
                 for k, im in enumerate(doc["images"]) if im is not None}
        assert members == want
    assert seen == 7  # 0.4 x 17


def _bad_file(media: Path, path: Path) -> None:
    """Three good documents from the sample, then six that break the layout."""
    t = pq.read_table(media / "sample" / "media" / "interleaved.parquet").slice(0, 3).to_pylist()
    img = next(im for im in t[0]["images"] if im is not None)
    bad = [
        dict(t[0], id="misaligned", texts=["a", None], images=[None, img, None]),
        dict(t[0], id="both", texts=["a", "b"], images=[None, img]),
        dict(t[0], id="neither", texts=["a", None], images=[None, None]),
        dict(t[0], id="no-bytes", texts=["a", None], images=[None, dict(img, bytes=b"")]),
        dict(t[0], id="not-an-image", texts=["a", None], images=[None, dict(img, bytes=b"hello", url="x")]),
        dict(t[0], id="empty", texts=[], images=[]),
    ]
    rows = [{k: v for k, v in r.items() if k not in ("crawlmix_version", "config_hash")} for r in t + bad]
    pq.write_table(interleaved_table(rows, "bad-file"), path)


def test_bad_rows_are_skipped_counted_and_named(media, tmp_path, capsys):
    _bad_file(media, tmp_path / "docs.parquet")
    raw = _mix(docs_path=str(tmp_path / "docs.parquet"), budget=20)
    raw["stages"][0]["sources"][0]["max_epochs"] = 3  # 8 draws of 3 good documents
    res = run(parse_mixture(raw), tmp_path / "out", media, progress=False)
    src = res[0]["lock"]["sources"]["docs"]
    assert src["available"] == 3 and src["bad_rows"] == 6 and src["samples"] == 8
    ex = src["bad_examples"]
    assert len(ex) == 6 and all("docs.parquet row " in e for e in ex)
    assert ex[0].endswith("row 3 (id 'misaligned'): texts has 2 positions but images has 3")
    assert "row 4 (id 'both'): position 1 holds both a text and an image" in ex[1]
    assert "row 5 (id 'neither'): position 1 holds neither text nor image" in ex[2]
    assert "row 6 (id 'no-bytes'): the image at position 1 has no bytes" in ex[3]
    assert "row 7 (id 'not-an-image'): the image at position 1 is not a known image format" in ex[4]
    assert "row 8 (id 'empty'): no text and no image" in ex[5]
    assert "bad input: source 'docs': 6 row(s) skipped, e.g. " in summary(res[0])
    ids = {s["json"]["id"] for p in sorted((tmp_path / "out" / "s").glob("*.tar"))
           for s in wds.WebDataset(str(p), shardshuffle=False).decode() if s["json"]["source"] == "docs"}
    assert ids == {r["id"] for r in pq.read_table(tmp_path / "docs.parquet").slice(0, 3).to_pylist()}
    p = tmp_path / "m.yaml"
    p.write_text(json.dumps(raw))
    assert mix_main(["--mixture", str(p), "--output", str(tmp_path / "cli"), "--root", str(media), "--no-progress"]) == 0
    assert "6 row(s) skipped" in capsys.readouterr().out


def test_interleaved_source_errors(media, tmp_path):
    raw = _mix(docs_path="sample/media/video.tar")
    with pytest.raises(ConfigError, match=r"source 'docs': modality interleaved reads Parquet .* not webdataset"):
        run(parse_mixture(raw), tmp_path / "o", media, progress=False)
    pq.write_table(pq.read_table(media / "sample" / "media" / "interleaved.parquet").drop_columns(["images"]),
                   tmp_path / "noimg.parquet")
    raw = _mix(docs_path=str(tmp_path / "noimg.parquet"))
    with pytest.raises(ConfigError, match=r"noimg\.parquet is not an interleaved \(OBELICS layout\) file: no column images"):
        run(parse_mixture(raw), tmp_path / "o", media, progress=False)
    assert not (tmp_path / "o").exists()


def test_reads_the_interleaved_jobs_output_folder(media, tmp_path):
    """The bundled documents have the interleaved job's output schema, and a crawl output folder given as an
    interleaved source means its interleaved/*.parquet (not the WebDataset copies beside them)."""
    schema = pytest.importorskip("crawlmix.interleaved.schema")
    src = media / "sample" / "media" / "interleaved.parquet"
    assert pq.read_schema(src).remove_metadata() == schema.OUTPUT_SCHEMA
    crawl = tmp_path / "crawl-out"
    (crawl / "interleaved").mkdir(parents=True)
    (crawl / "interleaved" / "t0.parquet").write_bytes(src.read_bytes())
    (crawl / "interleaved" / "00000.tar").write_bytes((media / "sample" / "media" / "photos.tar").read_bytes())
    res = run(parse_mixture(_mix(docs_path=str(crawl), budget=20)), tmp_path / "o", media, progress=False)
    assert [f["path"] for f in res[0]["lock"]["sources"]["docs"]["files"]] == [str(crawl / "interleaved" / "t0.parquet")]


def test_parquet_only_output_and_resume(media, tmp_path):
    """output.formats: [parquet]: no tars and no wids index, the same rows as beside the tars; a rerun keeps
    every finished shard."""
    raw = _mix(budget=40)
    both = run(parse_mixture(raw), tmp_path / "both", media, progress=False)
    raw["output"]["formats"] = ["parquet"]
    res = run(parse_mixture(raw), tmp_path / "pq", media, progress=False)
    d = tmp_path / "pq" / "s"
    assert not list(d.glob("*.tar")) and not (d / "shardindex.json").exists()
    assert res[0]["lock"]["shard_plans"] == both[0]["lock"]["shard_plans"]
    for p in sorted(d.glob("*.parquet")):
        assert pq.read_table(p).equals(pq.read_table(tmp_path / "both" / "s" / p.name))
    again = run(parse_mixture(raw), tmp_path / "pq", media, progress=False)
    assert again[0]["written"] == 0 and again[0]["skipped"] == res[0]["written"] == 3
