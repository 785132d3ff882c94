"""The image-text pairs step on an object store (issue 13): input, output and the text run's curated files
(pages.kept_from) on ``s3://`` (moto's S3 server on 127.0.0.1, tests/cluster/conftest.py) give the same pairs
as the local run; a text run split into byte-range tasks (curated/NAME@START-END.parquet) gives the same pairs
as one unsplit. Small generated WARCs with captured images: no fetch, nothing leaves 127.0.0.1."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crawlmix.images.config import ImagesJob
from crawlmix.images.job import run
from crawlmix.io.paths import Span, task_name
from crawlmix.io.warc import iter_pages
from crawlmix.runtime import storage
from tests.interleaved.pages import INLINE, encode, picture, write_warc

CAP = "A photograph of the old stone bridge over the river"
PATH_FIELDS = ("input", "warc_file")  # the rows name the input file: local path or URL


def _job(**over) -> ImagesJob:
    cfg = {"url_filter": {"use_ut1_lists": False}, "shards": {"samples_per_shard": 2}}
    return ImagesJob.model_validate({**cfg, **over})


@pytest.fixture(scope="module")
def warc(tmp_path_factory) -> tuple[str, list[str]]:
    """Three pages, five captured images (one copied, so the run-wide dedup has work), one not captured."""
    d = tmp_path_factory.mktemp("pairs")
    pages, images = [], []
    for i in range(3):
        tags = "".join(f'<img src="http://img.test/{i}-{k}.jpg" alt="{CAP}, view {i}.{k}">' for k in range(2))
        pages.append((f"http://site.test/p{i}", f"<html><body><p>Page {i}.</p>{tags}</body></html>"))
        images += [(f"http://img.test/{i}-{k}.jpg", encode(picture(10 * i + k)), "image/jpeg") for k in range(2)]
    images[5] = (images[5][0], images[0][1], "image/jpeg")  # the same bytes as 0-0: a duplicate
    images.pop(3)  # 1-1 not captured
    path = write_warc(d / "pages.warc.gz", pages, images)
    return path, [p.id for p in iter_pages(path, lambda *a, **k: None)]


def _tree(root: str) -> dict[str, bytes]:
    """Every file under a local folder or a URL, by relative path (stats.json, config.json, markers left out:
    they carry times and paths)."""
    out = {}
    for p in storage.iglob(storage.join(root, "**")):
        rel = p[len(root):].lstrip("/")
        if rel not in ("stats.json", "config.json") and not rel.startswith("_tasks/"):
            out[rel] = storage.read_bytes(p)
    return out


def _pairs(files: dict[str, bytes], names: dict[str, str]) -> list:
    """The shards' content with the input's name (local path or URL) replaced: tar members in order (the
    .json parsed), and the Parquet rows."""
    def norm(row: dict) -> dict:
        return {k: names.get(v, v) if k in PATH_FIELDS else v for k, v in row.items()}

    out = []
    for rel in sorted(files):
        if rel.endswith(".tar"):
            with tarfile.open(fileobj=io.BytesIO(files[rel])) as tar:
                for m in tar.getmembers():
                    data = tar.extractfile(m).read()
                    out.append((rel, m.name, norm(json.loads(data)) if m.name.endswith(".json") else data))
        elif rel.endswith(".parquet") and "/" not in rel:
            out.append((rel, [norm(r) for r in pq.read_table(io.BytesIO(files[rel])).to_pylist()]))
    return out


def _curated(folder: str, path: str, ids: list[str], split: int | None = None) -> None:
    """A text run's curated file(s) of input ``path``, locally or on S3: whole (curated/NAME.parquet), or the
    ids in two byte-range parts (curated/NAME@START-END.parquet, named as the crawl names its span tasks)."""
    from crawlmix.runtime.atomic import write_table

    parts = [(Span(path), ids)] if split is None else [(Span(path, 0, 4096), ids[:split]),
                                                       (Span(path, 4096, 9000), ids[split:])]
    for span, part in parts:
        write_table(storage.join(folder, "curated", f"{span.name}.parquet"), pa.table({"id": part}))


def test_output_on_s3_gives_the_same_bytes_as_local(s3_server, warc, tmp_path, monkeypatch):
    path, _ = warc
    monkeypatch.setenv("CRAWLMIX_SCRATCH", str(tmp_path / "scratch"))  # this node's scratch, this test's alone
    local = run([path], tmp_path / "local", _job(), INLINE)
    out = s3_server.bucket("pairs-out") + "/run/pairs"
    remote = run([path], out, _job(), INLINE)
    assert local["successes"] == remote["successes"] == 4 and remote["status"] == "finished"
    assert remote["funnel"] == local["funnel"] and remote["output"] == out
    want = _tree(str(tmp_path / "local"))
    assert sorted(want) == ["00000.parquet", "00000.tar", "00000_stats.json", "00001.parquet", "00001.tar",
                            "00001_stats.json", f"_staging/{task_name(path)}.parquet"]
    assert _tree(out) == want  # shards, their Parquet and stats, the staged rows: byte for byte
    assert storage.read_json(out + "/stats.json")["status"] == "finished"
    assert os.listdir(tmp_path / "scratch" / "staging") == []  # used, and every upload's local copy removed
    # a rerun finds the markers on S3: no task runs, the shards come out the same
    again = run([path], out, _job(), INLINE)
    assert again["phase_s"]["images"] < 1.0 and _tree(out) == want


def test_input_output_and_kept_from_on_s3_split_in_parts(s3_server, warc, tmp_path):
    """The text run kept two of the three pages and wrote them as two byte-range parts on S3; the WARC is on
    S3 too: the same pairs as the local run whose text run wrote one curated file."""
    path, ids = warc
    base = s3_server.bucket("pairs-all")
    s3_server.fs().put(path, "pairs-all/in/pages.warc.gz")
    url = f"{base}/in/pages.warc.gz"
    kept = [ids[0], ids[2]]
    _curated(str(tmp_path / "crawl"), path, kept)
    _curated(f"{base}/crawl", url, kept, split=1)
    local = run([path], tmp_path / "local", _job(pages={"kept_from": str(tmp_path / "crawl")}), INLINE)
    remote = run([url], f"{base}/crawl/pairs", _job(pages={"kept_from": f"{base}/crawl"}), INLINE)
    assert remote["pages"]["not_kept"] == local["pages"]["not_kept"] == 1 and remote["successes"] == 3
    assert remote["funnel"] == local["funnel"] and remote["config_hash"] == local["config_hash"]
    got = _pairs(_tree(f"{base}/crawl/pairs"), {url: path})
    assert got == _pairs(_tree(str(tmp_path / "local")), {}) and len(got) > 6
    # another part written since (the text run kept another page): the task is staged again
    _curated(f"{base}/crawl", url, [ids[0], ids[1]], split=1)
    again = run([url], f"{base}/crawl/pairs", _job(pages={"kept_from": f"{base}/crawl"}), INLINE)
    pairs = [r[2] for r in _pairs(_tree(f"{base}/crawl/pairs"), {}) if len(r) == 3 and r[1].endswith(".json")]
    assert again["phase_s"]["images"] > 0 and again["successes"] == 3
    assert sorted(r["page_url"] for r in pairs) == ["http://site.test/p0"] * 2 + ["http://site.test/p1"]


def test_split_curated_parts_give_the_same_pairs_as_unsplit(warc, tmp_path):
    """Locally: curated/NAME.parquet vs the same ids in NAME@START-END parts: byte-identical shards; no
    curated file at all fails the task (it would pass for "no pages")."""
    path, ids = warc
    name = task_name(path)
    _curated(str(tmp_path / "whole"), path, ids[1:])
    _curated(str(tmp_path / "split"), path, ids[1:], split=1)
    assert sorted(p.name for p in (tmp_path / "split" / "curated").iterdir()) == [
        f"{name}@000000000000-000000004096.parquet", f"{name}@000000004096-000000009000.parquet"]
    a = run([path], tmp_path / "a", _job(pages={"kept_from": str(tmp_path / "whole")}), INLINE)
    b = run([path], tmp_path / "b", _job(pages={"kept_from": str(tmp_path / "split")}), INLINE)
    assert a["successes"] == b["successes"] == 3 and a["pages"] == b["pages"]
    shards = {k: v for k, v in _tree(str(tmp_path / "a")).items() if not k.startswith("_")}
    assert shards == {k: v for k, v in _tree(str(tmp_path / "b")).items() if not k.startswith("_")}
    none = run([path], tmp_path / "c", _job(pages={"kept_from": str(tmp_path / "nothing")}), INLINE)
    assert none["status"] == "incomplete" and none["failed_tasks"] == [path]
    assert any(e["record"] == path and "does not exist" in e["message"] for e in none["errors"])


def test_nothing_left_on_the_local_disk_for_an_s3_output(s3_server, warc, tmp_path, monkeypatch):
    """The output never touches the local file system outside the node's scratch (no shared-disk assumption):
    run from an empty working directory, nothing appears there."""
    path, _ = warc
    monkeypatch.chdir(tmp_path)
    run([path], s3_server.bucket("pairs-cwd") + "/pairs", _job(), INLINE)
    assert list(Path(tmp_path).iterdir()) == []
