"""The storage layer, the atomic writer and completion markers against a real S3 API (moto's server on
127.0.0.1, reached by s3fs through AWS_ENDPOINT_URL): same bytes as local, lazy paged listing, markers
written last, a killed writer never leaves a partial object, errors that name the output."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crawlmix.io.paths import iter_input_files, spans
from crawlmix.io.warc import iter_pages
from crawlmix.runtime import storage
from crawlmix.runtime.atomic import OutputError, ParquetSink, atomic_open, write_json, write_table
from crawlmix.runtime.completion import Completion
from tests.conftest import ROOT

HERE = os.path.dirname(__file__)


def test_round_trip_same_bytes_as_local(s3_server, tmp_path):
    base = s3_server.bucket("roundtrip")
    table = pa.table({"id": ["a", "b", "c"], "n": [1, 2, 3]})
    for root in (str(tmp_path), base):
        write_json(storage.join(root, "x", "m.json"), {"a": "ü"})
        write_table(storage.join(root, "x", "t.parquet"), table)
        with atomic_open(storage.join(root, "x", "raw.bin")) as f:
            f.write(b"\x00raw")
        sink = ParquetSink(storage.join(root, "x", "s.parquet"), table.schema, {"config_hash": "abc"},
                           rows_per_group=2)
        for row in table.to_pylist():
            sink.add(row)
        assert not storage.exists(storage.join(root, "x", "s.parquet"))  # nothing under the name before close()
        assert sink.close() == 3
    for n in ("m.json", "t.parquet", "raw.bin", "s.parquet"):
        assert storage.read_bytes(f"{base}/x/{n}") == (tmp_path / "x" / n).read_bytes(), n
    assert storage.read_json(f"{base}/x/m.json") == {"a": "ü"}
    with storage.open(f"{base}/x/s.parquet") as f:
        assert pq.read_table(f).to_pylist() == table.to_pylist()
    assert list(storage.ls(f"{base}/x")) == [f"{base}/x/{n}" for n in ("m.json", "raw.bin", "s.parquet", "t.parquet")]
    assert storage.size(f"{base}/x/raw.bin") == 4 and storage.isfile(f"{base}/x/raw.bin") and storage.isdir(f"{base}/x")
    assert os.listdir(storage.local_scratch("staging")) == []  # every staged upload was removed
    storage.remove(f"{base}/x/raw.bin")
    storage.remove(f"{base}/x/raw.bin")  # missing: fine
    storage.rmtree(f"{base}/x")
    assert not storage.exists(f"{base}/x/m.json") and list(storage.ls(f"{base}/x")) == []


def test_listing_is_lazy_and_paged(s3_server, monkeypatch):
    """S3 answers a listing in pages (1,000 keys; 10 here, so that a few dozen keys make several pages):
    taking the first matches asks for one page, and sizes come from the listing (no request per file)."""
    base = s3_server.bucket("listing")
    fs = s3_server.fs()
    names = [f"in/part-{i:05d}.warc.gz" for i in range(45)] + ["in/sub/deep.warc.gz", "in/other.txt"]
    fs.pipe({f"listing/{n}": b"x" * (i % 7) for i, n in enumerate(names)})
    s3, _ = storage.filesystem(base)
    calls = []
    real = s3._call_s3

    async def small_pages(method, *a, **k):
        calls.append(method)
        if method == "list_objects_v2":
            k["MaxKeys"] = 10
        return await real(method, *a, **k)

    monkeypatch.setattr(s3, "_call_s3", small_pages)
    first = list(itertools.islice(storage.iglob(f"{base}/in/*.warc.gz"), 3))
    assert first == [f"{base}/in/part-0000{i}.warc.gz" for i in range(3)]
    assert calls.count("list_objects_v2") == 1  # one page, not the whole listing
    calls.clear()
    found = list(iter_input_files([f"{base}/in/*.warc.gz", f"{base}/in/part-00001.warc.gz"]))
    assert [p for p, _ in found] == [f"{base}/{n}" for n in names[:45]]  # sorted, the repeat dropped
    assert [s for _, s in found[:8]] == [0, 1, 2, 3, 4, 5, 6, 0]  # sizes from the listing (no HEAD each)
    assert calls.count("list_objects_v2") >= 5 and "head_object" not in calls
    assert list(storage.iglob(f"{base}/in/**/*.warc.gz"))[-1] == f"{base}/in/sub/deep.warc.gz"
    with pytest.raises(FileNotFoundError, match="matches no file"):
        list(iter_input_files([f"{base}/nothing/*.warc.gz"]))


def test_completion_markers_on_s3(s3_server):
    base = s3_server.bucket("markers")
    a = Completion(f"{base}/run", "hash-a")
    assert a.get("t1") is None and a.finished() == []
    a.mark("t1", {"rows": 3})
    a.mark("t2")
    assert a.get("t1") == {"rows": 3, "config_hash": "hash-a"} and a.dir == f"{base}/run/_tasks"
    assert not Completion(f"{base}/run", "hash-b").done("t1")
    assert a.finished() == ["t1", "t2"]
    a.forget("t2")
    assert a.finished() == ["t1"]
    a.clear()
    assert a.finished() == [] and not a.done("t1")


def test_split_ranges_read_from_s3(s3_server, sample_dir):
    """Byte-range reads over S3 give the local pages, offsets included."""
    base = s3_server.bucket("warcs")
    local = str(sample_dir / "sample.warc.gz")
    storage.upload(local, f"{base}/in/sample.warc.gz")
    url = f"{base}/in/sample.warc.gz"
    whole = [(p.id, p.offset, p.html) for p in iter_pages(local, lambda *a, **k: None)]
    parts = spans(url, 5000)
    assert len(parts) > 5
    got = [(p.id, p.offset, p.html) for s in parts for p in iter_pages(url, lambda *a, **k: None,
                                                                        start=s.start, end=s.end)]
    assert got == whole


def test_write_errors_name_the_url(s3_server):
    with pytest.raises(OutputError, match=r"cannot write s3://no-such-bucket-x/a/m.json") as e:
        write_json("s3://no-such-bucket-x/a/m.json", {"a": 1})
    assert e.value.filename == "s3://no-such-bucket-x/a/m.json" and isinstance(e.value, OSError)
    schema = pa.schema([("id", pa.string())])
    sink = ParquetSink("s3://no-such-bucket-x/a/s.parquet", schema)
    sink.add({"id": "x"})
    with pytest.raises(OutputError, match="no-such-bucket-x/a/s.parquet"):
        sink.close()
    assert not sink.tmp.exists()  # the staged copy is gone too


def test_killed_writer_leaves_no_partial_object_and_resumes(s3_server, tmp_path):
    """A writer SIGKILLed while uploading an 8 MB object: every object under its final name is whole, every
    marker's object is there (markers go last), no temporary key exists; the rerun does only what was left."""
    base = s3_server.bucket("killed") + "/run"
    env = {**os.environ, **s3_server.env, "PYTHONPATH": str(ROOT), "CRAWLMIX_SCRATCH": str(tmp_path / "scratch")}
    n, size = 8, 8 << 20
    cmd = [sys.executable, os.path.join(HERE, "writer_tasks.py"), base, str(n), str(size)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = [proc.stdout.readline().strip() for _ in range(3)]
    staging = tmp_path / "scratch" / "staging"
    end = time.monotonic() + 30
    while time.monotonic() < end:  # t003 staged whole in scratch: its upload is starting -> kill it there
        staged = [f for f in os.listdir(staging) if "t003" in f] if staging.exists() else []
        if staged and (staging / staged[0]).stat().st_size == size:
            break
        time.sleep(0.002)
    proc.kill()
    proc.wait()
    assert first == ["t000", "t001", "t002"], proc.stderr.read()[-2000:]
    assert [f for f in os.listdir(staging) if "t003" in f]  # killed between staging and the end of publishing
    sys.path.insert(0, HERE)
    from writer_tasks import payload

    fs = s3_server.fs()
    fs.invalidate_cache()
    keys = sorted(fs.find(base.removeprefix("s3://")))
    assert keys and not [k for k in keys if k.endswith(".tmp")]
    outs = {k.rsplit("/", 1)[1][:-4] for k in keys if k.endswith(".bin")}
    for name in outs:  # whole, or not there at all
        assert fs.cat(f"{base}/out/{name}.bin") == payload(name, size), name
    done = Completion(base, "writer-v1")
    marked = set(done.finished())
    assert marked <= outs and {"t000", "t001", "t002"} <= marked
    print(f"killed after {len(marked)} markers, {len(outs)} objects", flush=True)
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    redone = rerun.stdout.split()
    assert redone == [f"t{i:03d}" for i in range(n) if f"t{i:03d}" not in marked]  # only the unfinished ones
    assert done.finished() == [f"t{i:03d}" for i in range(n)]
    for i in range(n):
        rec = done.get(f"t{i:03d}")
        data = storage.read_bytes(f"{base}/out/t{i:03d}.bin")
        assert hashlib.md5(data).hexdigest() == rec["md5"] and len(data) == size


def test_local_ray_tasks_get_the_jobs_storage_options(s3_server, sample_dir, tmp_path):
    """No AWS variable in the environment: the job YAML's ``storage_options:`` alone name the endpoint and
    the keys. A local Ray's workers inherit them from the driver (no runtime env is set for a local Ray), so
    dedup's tasks, which get no config of their own, read and write the S3 output too."""
    out = s3_server.bucket("local-opts") + "/run"
    job = tmp_path / "job.yaml"
    job.write_text((ROOT / "jobs" / "fineweb-en.yaml").read_text() + "\nstorage_options:\n  s3: {endpoint_url: '"
                   + s3_server.endpoint + "', key: testing, secret: testing}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="token", PYTHONPATH=str(ROOT), CRAWLMIX_SCRATCH=str(tmp_path / "scratch"))
    r = subprocess.run([sys.executable, str(ROOT / "pipelines" / "crawl.py"), "--input", str(sample_dir / "*.warc.gz"),
                        "--output", out, "--config", str(job), "--workers", "2", "--no-progress"],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    stats = json.loads(storage.read_bytes(out + "/stats.json"))
    assert stats["status"] == "finished" and stats["docs_out"] > 0
    assert stats["dedup"]["bands"] > 0  # dedup's tasks ran against S3
    rows = sum(pq.read_metadata(s3_server.fs().open(f)).num_rows
               for f in s3_server.fs().glob(out.removeprefix("s3://") + "/curated/*.parquet"))
    assert rows == stats["docs_out"]  # dedup's apply tasks wrote every kept row to S3
