"""The dashboard over an s3:// root (moto's S3 server on 127.0.0.1, tests/cluster/conftest.py), through plain HTTP:
a crawl run, a mix and a tuning run uploaded from a local folder are listed and served as from that folder
(the same answers), an unfinished run is refused, and nothing outside the root is asked for."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crawlmix.dashboard.server import main as dashboard_main
from crawlmix.dashboard.server import serve
from crawlmix.mix.config import parse_mixture
from crawlmix.mix.job import run as mix_run
from tests.dashboard.test_dashboard import fake_sweep

TEXTS = [f"document {i}: the river market sold wool and cheese in year {1800 + i}." * (i + 1) for i in range(7)]


def crawl_run(d: Path, status: str = "finished") -> None:
    """A crawl run's folder: stats.json with its state, curated/ and removed/ Parquet."""
    (d / "curated").mkdir(parents=True)
    (d / "removed").mkdir()
    (d / "stats.json").write_text(json.dumps({"status": status, "job": d.name, "docs_in": 9, "docs_out": len(TEXTS),
                                              "created": "2030-01-02T00:00:00+00:00",
                                              "stages": {"read": {"in": 9, "out": 9, "dropped": {}}}}))
    n = len(TEXTS)
    pq.write_table(pa.table({"id": [f"d{i}" for i in range(n)], "url": [f"https://ex{i % 3}.test/{i}" for i in range(n)],
                             "language": ["en"] * n, "language_score": [0.9] * n, "text": TEXTS,
                             "chars": [len(t) for t in TEXTS], "words": [len(t.split()) for t in TEXTS]}),
                   d / "curated" / "part-0.parquet")
    pq.write_table(pa.table({"id": ["x0", "x1"], "url": ["https://spam.test/a", "https://ex0.test/b"],
                             "stage": ["url_filter", "quality"], "reason": ["blocklist", "words"],
                             "detail": ["", "3 < 50"], "language": ["en", "en"], "duplicate_of": [None, None]}),
                   d / "removed" / "part-0.parquet")


@pytest.fixture(scope="module")
def roots(s3_server, tmp_path_factory):
    """(local root, s3 URL of the same files)."""
    root = tmp_path_factory.mktemp("dash-s3")
    crawl_run(root / "crawl")
    crawl_run(root / "half", status="running")
    mix = {"name": "dash-mix", "seed": 1, "stages": [{"name": "s1", "budget": {"samples": 12},
                                                     "shards": {"max_samples": 5}, "sources": [
        {"name": "web", "modality": "text", "path": "crawl", "weight": 1.0, "max_epochs": 2}]}]}
    mix_run(parse_mixture(mix), root / "mix", root, progress=False)
    fake_sweep(root / "tune", "2030-01-03T00:00:00+00:00")
    url = s3_server.bucket("dash") + "/team/runs"
    fs = s3_server.fs()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            fs.put_file(str(p), f"dash/team/runs/{p.relative_to(root).as_posix()}")
    fs.pipe_file("dash/team/elsewhere/stats.json", json.dumps({"status": "finished", "job": "OUTSIDE"}).encode())
    return root, url


@pytest.fixture(scope="module")
def apis(roots):
    servers = [serve(r, "127.0.0.1", 0) for r in roots]

    def client(server):
        def get(endpoint: str, **q):
            url = f"http://127.0.0.1:{server.server_address[1]}{endpoint}?{urlencode(q)}"
            try:
                with urllib.request.urlopen(url, timeout=30) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as e:
                return e.code, json.loads(e.read())
        return get

    yield [client(s) for s in servers]
    for s in servers:
        s.shutdown()
        s.server_close()


def test_runs_are_listed_and_served_as_from_a_local_root(apis):
    local, remote = apis
    code, runs = remote("/api/runs")
    assert code == 200
    listed = {r["path"]: (r["kind"], r["name"], r.get("status"), r["docs"], r["bytes"]) for r in runs}
    assert listed == {r["path"]: (r["kind"], r["name"], r.get("status"), r["docs"], r["bytes"]) for r in local("/api/runs")[1]}
    assert {p: v[0] for p, v in listed.items()} == {"crawl": "crawl", "half": "crawl", "mix": "mix", "tune": "tuning"}
    assert listed["mix"][3] == 12 and listed["crawl"][4] > 0 and "OUTSIDE" not in json.dumps(runs)
    for endpoint, q in (("/api/run", {"path": "crawl"}),
                        ("/api/docs", {"path": "crawl", "kind": "curated", "page": 0}),
                        ("/api/docs", {"path": "crawl", "kind": "removed", "reason": "blocklist"}),
                        ("/api/preview", {"path": "crawl", "signal": "words", "value": 20}),
                        ("/api/mix", {"path": "mix"}),
                        ("/api/sample", {"path": "mix", "shard": "s1/shard-000001.tar", "index": 3}),
                        ("/api/tuning", {"path": "tune"}), ("/api/candidates", {"path": "tune", "page": 1})):
        code, body = remote(endpoint, **q)
        assert code == 200, (endpoint, body)
        want = local(endpoint, **q)[1]
        if endpoint == "/api/tuning":
            body.pop("created"), want.pop("created")
        assert body == want, endpoint
    code, body = remote("/api/docs", path="crawl", kind="curated")
    assert [r["text"] for r in body["rows"]] == [t[:600] for t in TEXTS]
    code, body = remote("/api/sample", path="mix", shard="s1/shard-000000.tar", index=0)
    assert body["text"] in TEXTS and body["json"]["source"] == "web"


def test_unfinished_runs_and_paths_outside_the_root_are_refused(apis):
    _, remote = apis
    code, body = remote("/api/run", path="half")
    assert code == 403 and "has not finished" in body["error"] and "s3://dash/team/runs/half" in body["error"]
    for bad in ("../", "../elsewhere", "/etc", "crawl/../../elsewhere"):
        code, body = remote("/api/run", path=bad)
        assert code in (403, 404) and "OUTSIDE" not in json.dumps(body), (bad, code, body)
    for shard in ("../../elsewhere/stats.json", "../crawl/curated/part-0.parquet", "/etc/passwd"):
        code, _ = remote("/api/sample", path="mix", shard=shard, index=0)
        assert code in (403, 404), shard
    code, body = remote("/api/docs", path="crawl", kind="curated", page=-1)
    assert code == 400 and "page" in body["error"]


def test_cli_refuses_an_empty_prefix(s3_server, roots, capsys):
    assert dashboard_main(["--root", roots[1] + "-nothing-here"]) == 2
    assert "nothing is stored under it" in capsys.readouterr().err
