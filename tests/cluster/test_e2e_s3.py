"""The crawl and the mixer on a real cluster with input and output on S3, against the same job run on one
machine: a head node (no CPUs) and two one-CPU worker nodes, each worker in its own mount namespace with a
private tmpfs scratch (they share no disk with the head or each other), and an S3 server (moto), all on
127.0.0.1 (tests/cluster/conftest.py).

The bundled sample is uploaded to s3://e2e/in/; pipelines/crawl.py runs as a driver against the cluster
with ``--input 's3://e2e/in/*.warc.gz' --output s3://e2e/out/run1``, a job YAML whose read.split_bytes cuts
the WARC into several byte-range tasks and whose storage_options name the S3 endpoint (the driver's
environment has none); then pipelines/mix.py mixes s3://e2e/out/run1/curated into s3://e2e/mix. The
reference is the same job and mixture on one machine (a local Ray, output on the local disk, the same S3
inputs, so that every row's `source` is the same URL): the curated and removed Parquet files hold the same
tables (and bytes), and the shards have the same sha256.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from crawlmix.runtime import storage
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

CRAWL, MIX = str(ROOT / "pipelines" / "crawl.py"), str(ROOT / "pipelines" / "mix.py")
SPLIT = 12_000  # bytes: the 42 kB sample WARC becomes 4 tasks, the ARC stays one


def _job(tmp_path: Path, endpoint: str) -> Path:
    """The shipped default job, text side (crawl -> dedup -> PII), split small, S3 endpoint in the YAML."""
    job = yaml.safe_load((ROOT / "jobs" / "default.yaml").read_text())
    job.update(name="e2e", read={"split_bytes": SPLIT}, images={"enabled": False}, interleaved={"enabled": False},
               storage_options={"s3": {"endpoint_url": endpoint}})
    p = tmp_path / "e2e.yaml"
    p.write_text(yaml.safe_dump(job))
    return p


def _mixture(tmp_path: Path) -> Path:
    """A text mixture over the crawl's curated/ (relative to --root: the same relative names either way)."""
    src = "run1/curated/*.parquet"
    m = {"name": "e2e-text", "seed": 7, "tokens": {"tokenizer": "builtin:whitespace"},
         "stages": [{"name": "pretrain", "budget": {"tokens": 3000}, "shards": {"max_samples": 6, "max_bytes": 32768},
                     "sources": [{"name": "web-en", "modality": "text", "path": src, "languages": ["en"],
                                  "weight": 0.6, "max_epochs": 4},
                                 {"name": "web-other", "modality": "text", "path": src, "weight": 0.4,
                                  "languages": ["de", "fr", "es", "it", "nl", "ru", "zh"], "max_epochs": 2}]}]}
    p = tmp_path / "mix.yaml"
    p.write_text(yaml.safe_dump(m, sort_keys=False))
    return p


def _files(root: str, folder: str, pattern: str = "*") -> dict[str, bytes]:
    return {storage.name(p): storage.read_bytes(p) for p in storage.iglob(storage.join(root, folder, pattern))}


def _local(cmd: list[str], env: dict, timeout: float = 240) -> subprocess.CompletedProcess:
    """A driver on this machine alone: a local Ray (no RAY_ADDRESS)."""
    r = subprocess.run([sys.executable, *cmd], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{cmd[0]} failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    return r


def test_crawl_and_mix_on_two_nodes_and_s3_match_one_machine(ray_cluster, s3_server, sample_dir, tmp_path):
    base = s3_server.bucket("e2e")
    for name in ("sample.warc.gz", "sample.arc.gz"):
        storage.upload(sample_dir / name, f"{base}/in/{name}")
    job, mixture = _job(tmp_path, s3_server.endpoint), _mixture(tmp_path)
    inputs = ["--input", f"{base}/in/*.warc.gz", "--input", f"{base}/in/*.arc.gz"]
    out = f"{base}/out/run1"
    # the cluster: the endpoint comes from the job's storage_options alone
    cluster = dataclasses.replace(ray_cluster, env={k: v for k, v in ray_cluster.env.items()
                                                    if not k.startswith("AWS_ENDPOINT_URL")})
    r = cluster.run(CRAWL, *inputs, "--output", out, "--config", str(job), "--workers", "2", "--no-progress",
                    timeout=300)
    assert "FAILED" not in r.stdout

    # the reference: the same job on this machine alone (local Ray), output on the local disk
    ref = tmp_path / "ref"
    env = {**{k: v for k, v in ray_cluster.env.items() if k != "RAY_ADDRESS"},
           "CRAWLMIX_SCRATCH": str(tmp_path / "scratch")}
    _local([CRAWL, *inputs, "--output", str(ref / "run1"), "--config", str(job), "--workers", "2", "--no-progress"],
           env)

    stats = storage.read_json(f"{out}/stats.json")
    local = json.loads((ref / "run1" / "stats.json").read_text())
    assert stats["status"] == local["status"] == "finished"
    tasks = stats["tasks"]
    assert tasks == local["tasks"] and sum("@" in t for t in tasks) == 4 and len(tasks) == 5  # the WARC split in 4
    for k in ("docs_in", "docs_out", "stages", "languages", "dedup", "error_count", "errors", "inputs"):
        assert stats[k] == local[k], k
    untimed = [{**s["pii"], "scanned": {k: v for k, v in s["pii"]["scanned"].items() if k != "seconds"}}
               for s in (stats, local)]
    assert untimed[0] == untimed[1]
    assert stats["docs_out"] > 10 and stats["pii"]["replacements_total"] > 0

    # same rows: every curated / removed file, table for table (and byte for byte)
    for folder in ("curated", "removed"):
        remote_files, local_files = _files(out, folder, "*.parquet"), _files(str(ref / "run1"), folder, "*.parquet")
        assert sorted(remote_files) == sorted(local_files) and len(remote_files) >= 5, folder
        for name, data in remote_files.items():
            a, b = pq.read_table(pa.BufferReader(data)), pq.read_table(pa.BufferReader(local_files[name]))
            assert a.equals(b) and a.schema.metadata == b.schema.metadata, f"{folder}/{name}"
            assert data == local_files[name], f"{folder}/{name}"

    # the tasks ran on both worker nodes (each marker records its node)
    marks = [storage.read_json(p) for p in storage.iglob(f"{out}/_tasks/*.json")]
    assert sorted(m["task"] for m in marks) == tasks
    assert len({m["node"] for m in marks}) == 2
    # everything went through the store: no staging object, nothing left in the head's scratch
    keys = [p for p in storage.iglob(f"{base}/**")]
    assert keys and not [k for k in keys if k.endswith(".tmp")]
    staging = ray_cluster.scratch / "staging"
    assert not staging.exists() or not os.listdir(staging)

    # the mixer over s3://e2e/out/run1/curated, into s3://e2e/mix; the reference over the local run
    ray_cluster.run(MIX, "--mixture", str(mixture), "--root", f"{base}/out", "--output", f"{base}/mix", "--ray",
                    "--workers", "2", "--no-progress", timeout=180)
    _local([MIX, "--mixture", str(mixture), "--root", str(ref), "--output", str(ref / "mix"), "--no-progress"], env)
    remote_shards = {n: hashlib.sha256(b).hexdigest() for n, b in _files(f"{base}/mix", "pretrain", "*.tar").items()}
    local_shards = {n: hashlib.sha256(b).hexdigest() for n, b in _files(str(ref / "mix"), "pretrain", "*.tar").items()}
    assert len(remote_shards) >= 2 and remote_shards == local_shards


STORAGE_DRIVER = """
import json, os, sys
from crawlmix.runtime.executor import init_ray
os.environ["CRAWLMIX_STORAGE_OPTIONS"] = sys.argv[1]
ray = init_ray()
probe = ray.remote(num_cpus=1, max_retries=0)(lambda: os.environ.get("CRAWLMIX_STORAGE_OPTIONS"))
print(json.dumps(ray.get([probe.options(resources={r: 1}).remote() for r in ("cm_w0", "cm_w1")])))
"""


def test_storage_options_reach_every_worker_node(ray_cluster, tmp_path):
    """The driver's storage options (a job's storage_options:) reach task processes on every node, through
    the Ray runtime env (crawlmix.runtime.executor.init_ray), not through a shared environment."""
    script = tmp_path / "driver_options.py"
    script.write_text(STORAGE_DRIVER)
    opts = json.dumps({"s3": {"endpoint_url": "http://127.0.0.1:1", "anon": False}})
    r = ray_cluster.run(script, opts)
    assert json.loads(r.stdout.strip().splitlines()[-1]) == [opts, opts]
