"""A three-node Ray cluster on 127.0.0.1 (a head and two worker nodes, each worker in its own mount namespace
with a private tmpfs over the scratch folder) and an S3 server: the workers do not share the head's disk,
and work that reads and writes s3:// runs on them."""

from __future__ import annotations

import json
import os

import pyarrow.parquet as pq
import pytest

from crawlmix.io.warc import iter_pages
from crawlmix.runtime import storage

HERE = os.path.dirname(__file__)

pytestmark = pytest.mark.slow


def test_worker_nodes_have_their_own_disk_and_reach_s3(ray_cluster, s3_server):
    base = s3_server.bucket("nodes")
    r = ray_cluster.run(os.path.join(HERE, "driver_nodes.py"), base)
    got = json.loads(r.stdout.strip().splitlines()[-1])
    workers = got["workers"]
    assert len({w["node"] for w in workers}) == 2 and got["head"] not in {w["node"] for w in workers}
    for w in workers:
        assert w["scratch"] == str(ray_cluster.scratch)  # the same path on every node...
        assert w["scratch_fs"] == "tmpfs"  # ...a tmpfs of the worker's own there
        assert not w["sees_head_file"]  # the head's file is not on the worker's disk
        assert w["staging_left"] == []  # its staged upload was removed once published
    assert got["head_scratch_fs"] is None  # on the head, the plain folder...
    assert "head-only.txt" in got["head_scratch"] and "probe" not in got["head_scratch"]  # ...without theirs
    assert got["outputs"] == sorted(f"{w['node']}.json" for w in workers)
    for w in workers:
        assert storage.read_json(f"{base}/out/{w['node']}.json") == {"node": w["node"], "read": "hello from the driver"}


def test_split_tasks_on_workers_read_s3_ranges(ray_cluster, s3_server, sample_dir):
    """The byte-range tasks of a WARC on S3, run on both worker nodes, publish together exactly the pages of
    one local read of the file, in task-name order."""
    base = s3_server.bucket("split")
    local = str(sample_dir / "sample.warc.gz")
    storage.upload(local, f"{base}/in/sample.warc.gz")
    r = ray_cluster.run(os.path.join(HERE, "driver_split.py"), f"{base}/in/*.warc.gz", f"{base}/pages", "4000")
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(got["tasks"]) > 5 and all("@" in t for t in got["tasks"])
    assert len(got["nodes"]) == 2  # both worker nodes ran tasks
    rows = []
    for name in sorted(got["tasks"]):
        with storage.open(f"{base}/pages/{name}.parquet") as f:
            rows += pq.read_table(f).to_pylist()
    import hashlib

    whole = [{"id": p.id, "url": p.url, "offset": p.offset, "html": hashlib.md5(p.html.encode()).hexdigest()}
             for p in iter_pages(local, lambda *a, **k: None)]
    assert rows == whole and got["rows"] == len(whole)
