"""The dashboard's API over plain HTTP (urllib, no browser): symlinks that lead out of --root are never followed,
and bad query values are a 400 / 404, never a 500."""

from __future__ import annotations

import io
import json
import os
import tarfile
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crawlmix.dashboard.server import serve

SECRET = "outside-the-root secret text"


def _run(d: Path, text: str, job: str) -> None:
    """A finished crawl run with one curated document."""
    (d / "curated").mkdir(parents=True)
    (d / "stats.json").write_text(json.dumps({"status": "finished", "job": job, "docs_in": 1, "docs_out": 1,
                                              "stages": {"read": {"in": 1, "out": 1, "dropped": {}}}}))
    _docs(d / "curated" / "t.parquet", text)


def _docs(path: Path, text: str) -> None:
    pq.write_table(pa.table({"id": ["r1"], "url": ["https://example.test/a"], "language": ["en"],
                             "language_score": [0.9], "text": [text], "chars": [len(text)]}), path)


def _tar(path: Path, n: int) -> None:
    with tarfile.open(path, "w") as tar:
        for i in range(n):
            data = f"sample {i}".encode()
            info = tarfile.TarInfo(f"{i:06d}.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    base = tmp_path_factory.mktemp("dash")
    root, outside = base / "root", base / "outside"
    outside.mkdir()
    _docs(outside / "secret.parquet", SECRET)
    (outside / "stats.json").write_text(json.dumps({"status": "finished", "job": "SECRET-JOB", "stages": {}}))
    _run(root / "ok", "an ordinary kept document", "ok")
    _run(root / "leaky-dir", "kept", "leaky-dir")  # curated/ points outside the root
    os.symlink(outside, root / "leaky-dir" / "curated" / "more")
    _run(root / "leaky-file", "kept", "leaky-file")  # one parquet file points outside
    os.symlink(outside / "secret.parquet", root / "leaky-file" / "curated" / "x.parquet")
    (root / "leaky-stats").mkdir()  # stats.json itself points outside
    os.symlink(outside / "stats.json", root / "leaky-stats" / "stats.json")
    _run(root / "linked", "kept", "linked")  # a link that stays inside the root is fine
    os.symlink(root / "ok" / "curated" / "t.parquet", root / "linked" / "curated" / "ok.parquet")
    (root / "mix" / "text").mkdir(parents=True)
    _tar(root / "mix" / "text" / "shard-000000.tar", 2)
    server = serve(root, "127.0.0.1", 0)
    port = server.server_address[1]

    def get(endpoint: str, **q) -> tuple[int, dict]:
        url = f"http://127.0.0.1:{port}{endpoint}?{urlencode(q)}"
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    yield get
    server.shutdown()
    server.server_close()


def test_symlinks_out_of_root_are_refused(api):
    code, runs = api("/api/runs")
    assert code == 200
    names = {r["name"] for r in runs}
    assert {"ok", "linked", "leaky-dir", "leaky-file"} <= names and "SECRET-JOB" not in names
    assert not any(r["path"] == "leaky-stats" for r in runs)
    for rel, link in (("leaky-dir", "leaky-dir/curated/more"), ("leaky-file", "leaky-file/curated/x.parquet")):
        for endpoint, q in (("/api/run", {}), ("/api/docs", {"kind": "curated"}),
                        ("/api/preview", {"signal": "words", "value": 1})):
            code, body = api(endpoint, path=rel, **q)
            assert code == 403, (endpoint, rel, body)
            assert "symlink" in body["error"] and link in body["error"] and SECRET not in json.dumps(body)
    code, body = api("/api/run", path="leaky-stats")
    assert code == 403 and "SECRET-JOB" not in json.dumps(body)
    code, body = api("/api/docs", path="linked", kind="curated")
    assert code == 200 and body["total"] == 2
    code, body = api("/api/docs", path="../outside", kind="curated")
    assert code == 403


def test_bad_query_values_are_400_or_404(api):
    shard = {"path": "mix", "shard": "text/shard-000000.tar"}
    code, body = api("/api/sample", index=1, **shard)
    assert code == 200 and body["text"] == "sample 1"
    for index in (-1, "x", "1.5"):
        code, body = api("/api/sample", index=index, **shard)
        assert code == 400 and "index" in body["error"], (index, code, body)
    code, body = api("/api/sample", index=2, **shard)
    assert code == 404 and "sample 2" in body["error"]
    for page in (-1, "two"):
        code, body = api("/api/docs", path="ok", kind="curated", page=page)
        assert code == 400 and "page" in body["error"]
        code, body = api("/api/candidates", path="ok", page=page)
        assert code == 400 and "page" in body["error"]
    code, body = api("/api/docs", path="ok", kind="curated", page=3)
    assert code == 200 and body["rows"] == [] and body["total"] == 1
    for value in ("nan", "inf", "x"):
        code, body = api("/api/preview", path="ok", signal="words", value=value)
        assert code == 400 and "value" in body["error"]
    code, body = api("/api/docs", path="ok", kind="nope")
    assert code == 404
