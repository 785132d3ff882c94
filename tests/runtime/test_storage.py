"""The path layer: local paths and URLs through one API; options from config or the environment;
listing sorted and lazy; writes to a URL staged in local scratch and published whole (memory:// here,
S3 in tests/cluster)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from crawlmix.runtime import storage
from crawlmix.runtime.atomic import ParquetSink, write_bytes, write_json
from crawlmix.runtime.completion import Completion


def test_locations():
    assert storage.join("s3://b/run/", "_tasks", "x.json") == "s3://b/run/_tasks/x.json"
    assert storage.join(Path("/o"), "curated", "a.parquet") == "/o/curated/a.parquet"
    assert storage.is_url("file:///x") and not storage.is_remote("file:///x") and storage.local("file:///x") == "/x"
    assert storage.is_remote("s3://b/k") and storage.protocol("gs://b/k") == "gs" and storage.protocol("/x") == "file"
    assert storage.name("s3://b/run/a.json") == "a.json" and storage.parent("s3://b/run/a.json") == "s3://b/run"
    assert storage.name("/o/a.json") == "a.json" and storage.parent("/o/a.json") == "/o"
    with pytest.raises(ValueError, match="atomic"):
        storage.open("/tmp/x", "wb")


def test_glob_regex():
    rx = storage.glob_regex("b/in/*.warc.gz")
    assert rx.fullmatch("b/in/a.warc.gz") and not rx.fullmatch("b/in/sub/a.warc.gz")
    deep = storage.glob_regex("b/in/**/*.warc.gz")
    assert deep.fullmatch("b/in/a.warc.gz") and deep.fullmatch("b/in/x/y/a.warc.gz")
    assert storage.glob_regex("b/p-[0-9]?.gz").fullmatch("b/p-3x.gz")
    assert storage.glob_regex("b/[!a]*").fullmatch("b/zz") and not storage.glob_regex("b/[!a]*").fullmatch("b/az")


def test_storage_options(monkeypatch):
    monkeypatch.delenv(storage.ENV_OPTIONS, raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    assert storage.storage_options("s3://b/k") == {"endpoint_url": "http://127.0.0.1:9"}
    assert storage.storage_options("gs://b/k") == {}
    monkeypatch.setenv(storage.ENV_OPTIONS, json.dumps({"anon": False, "s3": {"endpoint_url": "http://e:1"}}))
    assert storage.storage_options("s3://b/k") == {"anon": False, "endpoint_url": "http://e:1"}
    try:
        storage.configure({"gs": {"project": "p"}, "s3": {"client_kwargs": {"endpoint_url": "http://c:2"}}})
        assert storage.storage_options("gs://b/k") == {"project": "p"}  # configure() wins over the environment
        assert storage.storage_options("s3://b/k") == {"client_kwargs": {"endpoint_url": "http://c:2"}}
    finally:
        storage.configure(None)


def test_local_listing(tmp_path):
    for n in ("b.warc.gz", "a.warc.gz", "c.txt", "sub/d.warc.gz"):
        (tmp_path / n).parent.mkdir(exist_ok=True)
        (tmp_path / n).write_bytes(b"x" * len(n))
    assert list(storage.iglob(f"{tmp_path}/*.warc.gz")) == [f"{tmp_path}/a.warc.gz", f"{tmp_path}/b.warc.gz"]
    assert list(storage.iglob(f"{tmp_path}/**/*.warc.gz", detail=True))[-1] == (f"{tmp_path}/sub/d.warc.gz", 13)
    assert list(storage.iglob(f"{tmp_path}/a.warc.gz")) == [f"{tmp_path}/a.warc.gz"]
    assert list(storage.iglob(f"{tmp_path}/none")) == []
    assert [storage.name(p) for p in storage.ls(tmp_path)] == ["a.warc.gz", "b.warc.gz", "c.txt"]  # files only
    assert list(storage.ls(tmp_path / "missing")) == []


def test_scratch_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(storage.ENV_SCRATCH, str(tmp_path / "node"))
    assert storage.local_scratch("staging") == tmp_path / "node" / "staging" and (tmp_path / "node" / "staging").is_dir()


def test_url_writes_are_staged_then_published(tmp_path, monkeypatch):
    """A URL target: the bytes are written in local scratch and put under the final name in one go; the scratch
    copy is removed; markers and Parquet sinks work the same."""
    import pyarrow as pa

    monkeypatch.setenv(storage.ENV_SCRATCH, str(tmp_path / "scratch"))
    base = f"memory://cm-{os.getpid()}/run"
    write_json(f"{base}/a.json", {"x": 1})
    write_bytes(f"{base}/b.bin", b"\x00\x01")
    schema = pa.schema([("id", pa.string())])
    sink = ParquetSink(f"{base}/c.parquet", schema)
    sink.add({"id": "x"})
    assert str(sink.tmp).startswith(str(tmp_path / "scratch")) and not storage.exists(f"{base}/c.parquet")
    sink.close()
    assert storage.read_json(f"{base}/a.json") == {"x": 1} and storage.read_bytes(f"{base}/b.bin") == b"\x00\x01"
    assert [storage.name(p) for p in storage.ls(base)] == ["a.json", "b.bin", "c.parquet"]
    assert os.listdir(tmp_path / "scratch" / "staging") == []
    done = Completion(base, "h")
    done.mark("t1", {"rows": 1})
    assert done.finished() == ["t1"] and done.get("t1")["rows"] == 1
    storage.rmtree(base)
    assert list(storage.ls(base)) == [] and not done.done("t1")
