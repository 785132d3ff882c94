"""A whole worker node killed mid-run (issue #13), on a cluster of the test's own: a head with no CPUs and two
one-CPU worker nodes, each in its own mount namespace with a private tmpfs scratch, all on 127.0.0.1, with its
own ports (the session's ``ray_cluster`` is left alone: killing one of its nodes would break the other tests).
pipelines/crawl.py reads its WARCs from S3 and writes to S3; once a crawl task runs on a worker node, every
process of that node is SIGKILLed at once. Ray reschedules the node's task on the other node (the GCS is told to
declare a silent node dead within ~2 s), the crawl ends normally, and every output object exists exactly once,
byte-identical to a clean run's on the whole cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from crawlmix.runtime import storage
from tests.cluster.conftest import BIN, _node_args, _port_open, _ray_logs, _wait, descendants, free_ports, stop
from tests.conftest import ROOT

pytestmark = pytest.mark.slow
# the GCS declares a node dead ~1.5 s after its raylet stops answering (default: 5 checks 3 s apart)
FAST_HEALTH = {"RAY_health_check_initial_delay_ms": "1000", "RAY_health_check_period_ms": "500",
               "RAY_health_check_timeout_ms": "1000", "RAY_health_check_failure_threshold": "3"}


def port_block(size: int) -> int:
    """``size`` free ports in 30000-32767: above the suite's other Ray clusters (6000-9999 for the session's
    ``ray_cluster``, 10000-29999 for tests/crawl/test_ray_job_submit.py), below the ephemeral range."""
    slots = (32_768 - 30_000) // size
    for k in range(slots):
        base = 30_000 + ((os.getpid() + k) % slots) * size
        with contextlib.ExitStack() as held:
            try:
                for p in range(base, base + size):
                    held.enter_context(socket.socket()).bind(("127.0.0.1", p))
            except OSError:
                continue
            return base
    raise RuntimeError("no free block of worker ports in 30000-32767")


@dataclass
class Cluster:
    env: dict
    temp: Path
    head: subprocess.Popen | None = None
    nodes: list[subprocess.Popen] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def crash(self, node: subprocess.Popen) -> list[int]:
        """SIGKILL every process of a worker node at once (its group and every descendant), as a machine
        that loses power."""
        pids = [node.pid, *descendants(node.pid)]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.pid, signal.SIGKILL)
        for q in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(q, signal.SIGKILL)
        node.wait(timeout=30)
        return pids


@pytest.fixture
def cluster(s3_server):
    """A cluster for one test, stopped (by PID) after it."""
    if os.geteuid() != 0 or subprocess.run(["unshare", "-m", "--propagation", "private", "true"],
                                           capture_output=True).returncode != 0:
        pytest.skip("worker nodes need their own mount namespace: `unshare -m` as root")
    temp = Path(tempfile.mkdtemp(prefix="cmnf", dir="/tmp"))  # unix socket paths must stay short
    scratch = temp / "scratch"
    scratch.mkdir()
    gcs, client, *ports = free_ports(2 + 3 * 6)
    low = port_block(150)
    env = {**os.environ, **s3_server.env, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token",
           "PYTHONPATH": str(ROOT), "CRAWLMIX_SCRATCH": str(scratch)}
    env.pop("RAY_ADDRESS", None)
    env.pop("CRAWLMIX_FAILPOINT", None)
    subprocess.run([str(BIN / "ray"), "get-auth-token", "--generate"], env=env, capture_output=True, check=True,
                   timeout=120)
    c = Cluster({**env, "RAY_ADDRESS": f"127.0.0.1:{gcs}"}, temp)
    try:
        c.logs.append(temp / "head.log")
        with open(c.logs[-1], "w") as out:
            c.head = subprocess.Popen(
                [str(BIN / "ray"), "start", "--head", f"--port={gcs}", f"--ray-client-server-port={client}",
                 "--num-cpus=0", "--include-dashboard=false", *_node_args(ports[:6], low, temp / "ray")],
                env={**env, **FAST_HEALTH}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        _wait("the Ray head did not come up", lambda: _port_open(gcs) and _port_open(ports[0]), [c.head],
              c.logs + _ray_logs(temp))
        for i in range(2):  # one after the other (two raylets starting at once on 2 busy cores can time out)
            node_ports = ports[6 * (i + 1): 6 * (i + 2)]
            c.logs.append(temp / f"w{i}.log")
            mount = 'mount -t tmpfs -o size=256m cmscratch "$0" && exec "$@"'
            with open(c.logs[-1], "w") as out:
                c.nodes.append(subprocess.Popen(
                    ["unshare", "-m", "--propagation", "private", "sh", "-c", mount, str(scratch),
                     str(BIN / "ray"), "start", f"--address=127.0.0.1:{gcs}", "--num-cpus=1",
                     *_node_args(node_ports, low + 50 * (i + 1), temp / "ray")],
                    env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
            _wait(f"Ray worker node {i} did not come up", lambda: _port_open(node_ports[0]), [c.nodes[-1]],
                  c.logs + _ray_logs(temp))
        yield c
    finally:
        stop(*[p for p in (c.head, *c.nodes) if p is not None], wait=3)
        shutil.rmtree(temp, ignore_errors=True)


def _ls(fs, folder: str) -> list[str]:
    try:
        return fs.ls(folder, refresh=True)
    except FileNotFoundError:
        return []


def _running_task(node: subprocess.Popen, title: bytes = b"ray::crawl_task") -> int | None:
    """A process of ``node`` running a task (Ray titles a worker ``ray::<function>`` while it runs one)."""
    for pid in descendants(node.pid):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(title):
                return pid
    return None


def _s3_outputs(fs, run: str) -> dict[str, bytes]:
    """Every final output object of a crawl on S3 (curated/, removed/, pairs/, interleaved/: not staging)."""
    keep = (".parquet", ".tar")
    subs = ("curated", "removed", "pairs", "interleaved", "interleaved/removed")
    return {k.split(f"{run}/", 1)[1]: fs.cat(k) for sub in subs for k in sorted(_ls(fs, f"{run}/{sub}"))
            if k.endswith(keep)}


def test_worker_node_killed_mid_crawl(cluster, s3_server, tmp_path):
    """pipelines/crawl.py on the cluster, input and output on S3: once a crawl task runs on a worker node,
    the whole node is killed. Its task is rescheduled on the other node, the crawl (dedup, PII, pairs,
    interleaved documents: all on the surviving node) exits 0, and every output object is byte-identical to
    a clean run's on the whole cluster."""
    from crawlmix.samples.crawl_sample import pages, write_warc

    base = s3_server.bucket("nodecrawl")
    items = pages(0)
    for i in range(6):
        write_warc(tmp_path / f"part-{i}.warc.gz", items[i::6], seed=i)
        storage.upload(tmp_path / f"part-{i}.warc.gz", f"{base}/in/part-{i}.warc.gz")
    fs = s3_server.fs()

    def crawl(out: str, watch=None) -> tuple[int, str, float]:
        t0 = time.monotonic()
        log = tmp_path / f"{storage.name(out)}.log"
        with open(log, "w") as f:
            p = subprocess.Popen([sys.executable, str(ROOT / "pipelines" / "crawl.py"), "--no-progress", "--workers",
                                  "2", "--input", f"{base}/in/*.warc.gz", "--output", out], env=cluster.env,
                                 cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            while p.poll() is None and time.monotonic() - t0 < 240:
                if watch is not None and watch():
                    watch = None
                time.sleep(0.02)
            p.wait(timeout=5)
        finally:
            stop(p, wait=1)
        return p.returncode, log.read_text(), round(time.monotonic() - t0, 1)

    rc, text, clean_s = crawl(f"{base}/clean")
    assert rc == 0, text[-5000:]
    killed: dict = {}

    def kill_node_running_a_task() -> bool:
        for node in cluster.nodes:
            pid = _running_task(node)
            if pid:
                killed["markers"] = len(_ls(fs, "nodecrawl/run/_tasks"))
                killed["pids"] = cluster.crash(node)
                return True
        return False

    rc, text, run_s = crawl(f"{base}/run", kill_node_running_a_task)
    assert killed, f"no crawl task seen running on a worker node\n{text[-3000:]}"
    assert rc == 0, text[-5000:]
    # the node died inside a task, so that task's work was lost; every task has its marker and none failed
    stats = json.loads(fs.cat("nodecrawl/run/stats.json"))
    assert killed["markers"] < 6 and len(_ls(fs, "nodecrawl/run/_tasks")) == 6
    assert stats["status"] == "finished" and stats["failed_tasks"] == []
    want, got = _s3_outputs(fs, "nodecrawl/clean"), _s3_outputs(fs, "nodecrawl/run")
    assert sorted(got) == sorted(want) and len(want) > 12
    assert [k for k in want if got[k] != want[k]] == []  # byte for byte: nothing lost, nothing doubled
    ref = json.loads(fs.cat("nodecrawl/clean/stats.json"))
    for k in ("docs_in", "docs_out", "stages", "languages", "error_count", "tasks"):
        assert stats[k] == ref[k], k
    assert not [k for k in fs.find("nodecrawl/run") if ".tmp" in k]
    print(f"\nnode killed ({len(killed['pids'])} processes) with {killed['markers']} of 6 tasks done; "
          f"clean crawl {clean_s}s, crawl with the node killed {run_s}s")
