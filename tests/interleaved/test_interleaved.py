"""Interleaved documents (issue 16, part 1) on generated pages: reading order, captions beside their figures,
furniture left out, every failed image counted with its reason, document rules -> removed/, PII, reruns, the
Parquet schema and the WebDataset shards. Real data (Mona Lisa, archive.org, the bundled sample) is in
test_real_pages.py, the walk alone in test_walk.py."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.conftest import ROOT
from tests.interleaved.pages import (EXPECTED_IMAGES, FIG_BRIDGE, FIG_MILL, INLINE, PROSE, S,
                                     article_warc, encode, job, picture, write_warc)

from crawlmix.interleaved.config import load_interleaved_job
from crawlmix.interleaved.job import run
from crawlmix.interleaved.schema import OUTPUT_SCHEMA
from crawlmix.runtime.config import ConfigError


def docs_of(out: Path) -> list[dict]:
    return [r for f in sorted((out / "interleaved").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def removed_of(out: Path) -> list[dict]:
    return [r for f in sorted((out / "interleaved" / "removed").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def funnel(stats: dict, what: str) -> dict:
    return {f["stage"]: f for f in stats["funnel"][what]}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    d = tmp_path_factory.mktemp("synthetic")
    warc = article_warc(d / "a.warc.gz")
    stats = run([warc], d / "out", job(), INLINE)
    return d / "out", stats, warc


# ----------------------------------------------------------------------------------------------
# config and entry point

def test_shipped_job_loads_and_bad_fields_are_named(tmp_path):
    j = load_interleaved_job()
    assert j.documents.max_images == 30 and j.images.process.resize_only_if_bigger
    bad = tmp_path / "bad.yaml"
    bad.write_text("documents:\n  min_wordz: 3\nimages:\n  filters:\n    min_side: -1\n")
    with pytest.raises(ConfigError) as e:
        load_interleaved_job(bad)
    assert "documents.min_wordz: unknown key" in str(e.value) and "images.filters.min_side" in str(e.value)
    bad.write_text("documents: {min_images: 5, max_images: 2}\n")
    with pytest.raises(ConfigError, match="min_images is larger"):
        load_interleaved_job(bad)


def test_entry_point_has_help():
    r = subprocess.run([sys.executable, str(ROOT / "pipelines" / "interleaved.py"), "--help"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--kept-from" in r.stdout and "--fetch" in r.stdout and "OBELICS" in r.stdout


# ----------------------------------------------------------------------------------------------
# one synthetic article: order, captions, furniture, reasons

def test_figures_in_reading_order_with_captions_and_no_furniture(synthetic):
    out, stats, _ = synthetic
    (doc,) = docs_of(out)
    kinds = ["text" if t is not None else "image" for t in doc["texts"]]
    assert kinds == ["text", "image", "text", "image", "text"]
    urls = [im["url"] for im in doc["images"] if im is not None]
    assert urls == [f"{S}/img/bridge.jpg", f"{S}/img/mill.png"]
    t = doc["texts"]
    assert t[0].startswith("The old stone bridge\n\n" + PROSE[0][:40])
    assert t[2].startswith(FIG_BRIDGE + "\n\n" + PROSE[1][:40])  # the caption right after its figure
    assert t[4].startswith(FIG_MILL + "\n\n")  # the figcaption came before the <img>: moved after it
    assert PROSE[2] in t[2] and PROSE[3] in t[4]
    everything = "\n".join(x for x in t if x)
    for junk in ("Home", "News", "About us", "Share this", "hidden text", "Copyright", "Related link", "script.jpg"):
        assert junk not in everything, junk


def test_every_failed_image_is_counted_with_its_reason(synthetic):
    out, stats, _ = synthetic
    f = funnel(stats, "images")
    counted = {}
    for row in stats["funnel"]["images"]:
        for reason, n in row["dropped"].items():
            counted[reason] = counted.get(reason, 0) + n
    want: dict = {}
    for reason in EXPECTED_IMAGES.values():
        if reason:
            want[reason] = want.get(reason, 0) + 1
    assert counted == want
    assert f["dom"]["in"] == len(EXPECTED_IMAGES) and f["dedup"]["out"] == 2 == stats["images"]
    assert f["decode"]["dropped"] == {"decode_error": 1} and f["download"]["dropped"] == {"not_captured": 1}
    assert f["filter"]["dropped"] == {"too_small": 1, "aspect_ratio": 1}
    assert f["size_hint"]["dropped"] == {"too_small": 1}
    for a, b in zip(stats["funnel"]["images"], stats["funnel"]["images"][1:]):
        assert a["out"] == b["in"] and a["in"] - a["out"] == sum(a["dropped"].values())
    assert stats["blocks_dropped"]["link_list"] >= 1
    assert stats["sources"] == {"warc": 2}  # kept images by where their bytes came from


def test_parquet_schema_and_aligned_lists(synthetic):
    out, stats, _ = synthetic
    (f,) = list((out / "interleaved").glob("*.parquet"))
    schema = pq.read_schema(f)
    assert schema.remove_metadata() == OUTPUT_SCHEMA  # exactly the layout the mixer reads
    assert schema.metadata[b"config_hash"].decode() == stats["config_hash"]
    for doc in pq.read_table(f).to_pylist():
        assert len(doc["texts"]) == len(doc["images"]) > 0
        for t, im in zip(doc["texts"], doc["images"]):
            assert (t is None) != (im is None)
            if im is not None:
                with Image.open(io.BytesIO(im["bytes"])) as img:
                    assert img.size == (im["width"], im["height"]) and img.format == "JPEG"
        assert doc["config_hash"] == stats["config_hash"] and doc["crawlmix_version"]
        assert doc["source"].endswith("a.warc.gz") and doc["offset"] >= 0 and doc["language"] == "en"


def test_webdataset_shard_matches_the_parquet(synthetic):
    import webdataset as wds

    out, stats, _ = synthetic
    (doc,) = docs_of(out)
    (shard,) = sorted((out / "interleaved").glob("*.tar"))
    (sample,) = list(wds.WebDataset(str(shard), shardshuffle=False))
    meta = json.loads(sample["json"])
    assert meta["texts"] == doc["texts"] and meta["id"] == doc["id"]
    images = [im for im in doc["images"] if im is not None]
    members = [m for m in meta["images"] if m is not None]
    assert [m["member"] for m in members] == ["0.jpg", "1.jpg"]
    for k, (m, im) in enumerate(zip(members, images)):
        assert sample[f"{k}.jpg"] == im["bytes"] and m["url"] == im["url"] and m["width"] == im["width"]
    assert members[0]["caption"] == FIG_BRIDGE and len(members[0]["sha256"]) == 64
    assert stats["shards"][0]["documents"] == 1 and stats["shards"][0]["images"] == 2


def test_rerun_skips_finished_tasks_and_is_identical(synthetic, tmp_path, monkeypatch):
    out, stats, warc = synthetic
    marker = next((out / "interleaved" / "_tasks").glob("*.json"))
    before = {p.name: p.read_bytes() for p in (out / "interleaved").glob("*.*") if p.suffix in (".parquet", ".tar")}
    import crawlmix.interleaved.task as task_mod

    def boom(*a, **k):
        raise AssertionError("a finished task ran again")

    monkeypatch.setattr(task_mod.FileDocuments, "run", boom)
    mtime = marker.stat().st_mtime_ns
    again = run([warc], out, job(), INLINE)
    assert marker.stat().st_mtime_ns == mtime and again["failed_tasks"] == []
    assert {p.name: p.read_bytes() for p in (out / "interleaved").glob("*.*") if p.suffix in (".parquet", ".tar")} == before
    monkeypatch.undo()
    # another config is refused without overwrite; with it, everything is redone to the same bytes
    with pytest.raises(ConfigError, match="another config"):
        run([warc], out, job(documents={"min_words": 5}), INLINE)
    fresh = run([warc], tmp_path / "fresh", job(), INLINE)
    got = {p.name: p.read_bytes() for p in (tmp_path / "fresh" / "interleaved").glob("*.*")
           if p.suffix in (".parquet", ".tar")}
    assert got == before and fresh["config_hash"] == stats["config_hash"]


# ----------------------------------------------------------------------------------------------
# document rules -> removed/

def test_document_rules_record_removed_pages_with_reasons(tmp_path):
    short = "<html><body><h1>Hi</h1><p>Too short to be a document.</p></body></html>"
    french = ("<html><body>" + "".join(
        f"<p>Le vieux pont de pierre fut construit au quatorzième siècle par les moines de l'abbaye voisine. "
        f"Il traverse la rivière à son point le plus étroit, numéro {i}.</p>" for i in range(6)) + "</body></html>")
    text_only = "<html><body>" + "".join(f"<p>{p}</p>" for p in PROSE) + "</body></html>"
    many = "<html><body>" + "".join(f"<p>{p}</p><img src='/i{i}.jpg'>" for i, p in enumerate(PROSE)) + "</body></html>"
    imgs = [(f"{S}/i{i}.jpg", encode(picture(20 + i)), "image/jpeg") for i in range(4)]
    warc = write_warc(tmp_path / "r.warc.gz", [(f"{S}/short", short), (f"{S}/fr", french), (f"{S}/text", text_only),
                                               (f"{S}/many", many), (f"{S}/text", text_only)], imgs)
    stats = run([warc], tmp_path / "out", job(documents={"min_images": 1, "max_images": 3, "languages": ["en"]}),
                INLINE)
    rows = {r["url"]: (r["stage"], r["reason"]) for r in removed_of(tmp_path / "out")}
    assert rows == {f"{S}/short": ("text", "too_few_words"), f"{S}/fr": ("language", "language"),
                    f"{S}/text": ("pages", "repeated"), f"{S}/many": ("images", "too_many_images")}
    # the first copy of /text is dropped too (no image), the repeat is a re-crawl
    reasons = [(r["stage"], r["reason"]) for r in removed_of(tmp_path / "out")]
    assert reasons.count(("images", "too_few_images")) == 1 and len(reasons) == 5
    f = funnel(stats, "documents")
    assert f["read"]["in"] == 5 and stats["documents"] == 0 and f["images"]["dropped"] == {
        "too_few_images": 1, "too_many_images": 1}
    fr = next(r for r in removed_of(tmp_path / "out") if r["url"] == f"{S}/fr")
    assert fr["language"] == "fr" and fr["language_score"] > 0.5


def test_cross_document_dedup_and_repeated_furniture(tmp_path):
    logo = encode(picture(40, (240, 120)), "PNG")
    photo = picture(41)
    pages, imgs = [], [(f"{S}/logo.png", logo, "image/png"), (f"{S}/photo.jpg", encode(photo), "image/jpeg"),
                       (f"{S}/photo-small.jpg", encode(photo.resize((300, 225)), quality=70), "image/jpeg")]
    for i in range(3):
        extra = {0: "<img src='/photo.jpg'>", 1: "<img src='/photo.jpg'>", 2: "<img src='/photo-small.jpg'>"}[i]
        body = "".join(f"<p>{p}</p>" for p in PROSE[i:] + PROSE[:i])
        pages.append((f"{S}/p{i}", f"<html><body><img src='/logo.png'>{body}{extra}</body></html>"))
    warc = write_warc(tmp_path / "d.warc.gz", pages, imgs)
    stats = run([warc], tmp_path / "out", job(dedup={"furniture_min_documents": 3}), INLINE)
    docs = docs_of(tmp_path / "out")
    assert [[im["url"] for im in d["images"] if im] for d in docs] == [[f"{S}/photo.jpg"], [], []]
    assert funnel(stats, "images")["dedup"]["dropped"] == {"repeated_furniture": 3, "duplicate_sha256": 1,
                                                          "near_duplicate": 1}
    assert all(len(d["texts"]) == len(d["images"]) for d in docs) and docs[1]["texts"][0].count(PROSE[1][:30]) == 1


def test_pii_is_scrubbed_before_anything_is_written(tmp_path):
    from crawlmix.pii.config import PiiConfig

    secret, phone = "jane.doe.secret@example.com", "+1 415 555 0132"
    body = "".join(f"<p>{p}</p>" for p in PROSE) + f"<p>Write to {secret} or call {phone} for a tour.</p>"
    page = f"<html><body>{body}<img src='/img/{secret}/x.jpg'></body></html>"
    warc = write_warc(tmp_path / "p.warc.gz", [(f"{S}/contact?mail={secret}", page), ("http://x.test/s", "<p>x</p>")],
                      [(f"{S}/img/{secret}/x.jpg", encode(picture(50)), "image/jpeg")])
    stats = run([warc], tmp_path / "out", job(), INLINE, pii=PiiConfig())
    (doc,) = docs_of(tmp_path / "out")
    assert "<EMAIL_ADDRESS>" in doc["texts"][0] and "<PHONE_NUMBER>" in doc["texts"][0]
    assert "<EMAIL_ADDRESS>" in unquote(doc["url"]) and "<EMAIL_ADDRESS>" in unquote(doc["images"][1]["url"])
    assert doc["url"].startswith(f"{S}/contact?mail=")  # the URL keeps its shape (crawlmix.pii.fields)
    assert stats["pii"]["replacements"]["EMAIL_ADDRESS"] >= 3
    for p in (tmp_path / "out").rglob("*"):
        if p.is_file():
            data = p.read_bytes() if p.suffix != ".parquet" else json.dumps(
                pq.read_table(p).drop_columns([c for c in ("images",) if c in pq.read_schema(p).names]).to_pylist(),
                default=str).encode()
            assert secret.encode() not in data and b"555 0132" not in data, p


def test_kept_from_limits_pages_to_the_text_runs(tmp_path):
    import pyarrow as pa

    from crawlmix.io.paths import task_name
    from crawlmix.io.warc import iter_pages

    pages = [(f"{S}/k{i}", "<html><body>" + "".join(f"<p>{p}</p>" for p in PROSE) + f"<p>Page {i}.</p></body></html>")
             for i in range(3)]
    warc = write_warc(tmp_path / "k.warc.gz", pages)
    ids = [p.id for p in iter_pages(warc, lambda *a, **k: None)]
    crawl = tmp_path / "crawl"
    (crawl / "curated").mkdir(parents=True)
    pq.write_table(pa.table({"id": [ids[0], ids[2]]}), crawl / "curated" / f"{task_name(warc)}.parquet")
    stats = run([warc], crawl, job(), INLINE, kept_from=str(crawl))
    assert [d["url"] for d in docs_of(crawl)] == [f"{S}/k0", f"{S}/k2"]
    assert funnel(stats, "documents")["pages"]["dropped"] == {"not_kept": 1}
    # the text run keeps another set: the task is done again
    pq.write_table(pa.table({"id": [ids[1]]}), crawl / "curated" / f"{task_name(warc)}.parquet")
    run([warc], crawl, job(), INLINE, kept_from=str(crawl))
    assert [d["url"] for d in docs_of(crawl)] == [f"{S}/k1"]


def test_broken_input_is_counted_not_raised(tmp_path):
    good = article_warc(tmp_path / "good.warc.gz")
    broken = tmp_path / "broken.warc.gz"
    data = Path(good).read_bytes()
    broken.write_bytes(data[: len(data) // 2] + b"garbage" * 50)
    junk = tmp_path / "junk.warc.gz"
    junk.write_bytes(b"not a warc at all")
    stats = run([good, str(broken), str(junk)], tmp_path / "out", job(), INLINE)
    assert stats["failed_tasks"] == [] and stats["documents"] >= 1
    named = {e["record"].split("@")[0] for e in stats["errors"] if e["stage"] == "read"}
    assert named == {str(broken), str(junk)}  # each bad file named by the page reader (+ the image index)
    assert {e["reason"] for e in stats["errors"]} <= {"corrupt_file", "truncated_record", "no_records"}


def test_fetch_honours_x_robots_tag(tmp_path):
    from bench.images import ImageServer

    files = {"ok.jpg": (encode(picture(60)), "image/jpeg"), "no.jpg": (encode(picture(61)), "image/jpeg")}
    with ImageServer(files) as srv:
        body = "".join(f"<p>{p}</p>" for p in PROSE)
        page = (f"<html><body>{body}<img src='{srv.url('/img/ok.jpg')}'>"
                f"<img src='{srv.url('/robots/noimageai/no.jpg')}'><img src='{srv.url('/status/404')}'></body></html>")
        warc = write_warc(tmp_path / "f.warc.gz", [(f"{S}/fetched", page)])
        stats = run([warc], tmp_path / "out", job(images={"fetch": {"enabled": True, "retries": 0}}), INLINE)
    (doc,) = docs_of(tmp_path / "out")
    assert [im["url"] for im in doc["images"] if im] == [srv.url("/img/ok.jpg")]
    assert funnel(stats, "images")["download"]["dropped"] == {"x_robots_tag": 1, "http_404": 1}
    assert stats["sources"] == {"fetch": 1} and stats["fetch"]["requests"] == 3


def test_process_pool_gives_the_same_output(tmp_path, synthetic):
    from crawlmix.runtime.executor import Executor

    out, stats, warc = synthetic
    other = article_warc(tmp_path / "b.warc.gz", url=f"{S}/bridge-copy")
    pool = run([warc, other], tmp_path / "pool", job(),  # tasks and their arguments pickled to the workers
               Executor("processes", 2, progress=False, start_method="fork"))
    assert pool["failed_tasks"] == [] and pool["documents"] == 2
    docs = docs_of(tmp_path / "pool")
    assert docs[0]["texts"] == docs_of(out)[0]["texts"]
    assert sum(im is not None for im in docs[1]["images"]) == 0  # its two images were kept by the first page
    assert funnel(pool, "images")["dedup"]["dropped"] == {"duplicate_sha256": 2}
