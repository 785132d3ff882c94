"""A real cluster on this machine, for the session: an S3 server and a three-node Ray cluster, all on 127.0.0.1.

- ``s3_server``: moto's S3 server (the real S3 HTTP API) on a free port; its endpoint and test credentials
  go to the environment (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...), where s3fs finds them.
- ``ray_cluster``: a head node (no CPUs: the driver's machine) and two worker nodes of one CPU each. Each
  worker node runs in its own mount namespace (``unshare -m --propagation private``) with a private tmpfs
  over the scratch folder, so, like two real machines, it does not share the head's disk there:
  a file the head writes in scratch is not on the workers, and theirs are not on the head. Every node binds
  127.0.0.1 with explicit ports (free ones, and a worker-port block of its own below the ephemeral range,
  apart from tests/crawl/test_ray_job_submit.py's 10000-29999), uses token auth, and is started with
  ``start_new_session`` so that it is stopped by PID (its process group and its descendants), never by name.

Drivers run as subprocesses (``cluster.run(script)``) with ``RAY_ADDRESS`` set, so they connect through
crawlmix.runtime.executor.init_ray like a job on a real cluster; nothing here connects the test process.
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
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]  # the checkout (not imported from tests/conftest.py, which imports this)

BIN = Path(sys.executable).parent
WORKERS = ("cm_w0", "cm_w1")  # the worker nodes' custom resource names (a task pinned to one asks for it)
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports (held open together while chosen, so none repeats)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def worker_port_block(size: int) -> int:
    """The first port of ``size`` free ports in 6000-9999 (below the ephemeral range, where nothing else
    in the suite takes worker ports), picked by this process's id so parallel sessions differ."""
    slots = (10_000 - 6_000) // size
    for k in range(slots):
        base = 6_000 + ((os.getpid() + k) % slots) * size
        with contextlib.ExitStack() as held:
            try:
                for p in range(base, base + size):
                    s = held.enter_context(socket.socket())
                    s.bind(("127.0.0.1", p))
            except OSError:
                continue
            return base
    raise RuntimeError("no free block of worker ports in 6000-9999")


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            kids.setdefault(ppid, []).append(int(d))
    return kids


def descendants(pid: int) -> list[int]:
    kids, out, todo = _children(), [], [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped) is not running
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def stop(*procs: subprocess.Popen, wait: float = 5) -> None:
    """Stop processes this session started with start_new_session, together: each one's process group, then
    any descendant that left its group, each by PID; SIGTERM, then SIGKILL for what is left after ``wait`` s
    (a Ray node's graceful exit takes longer than the test needs)."""
    pids = [q for p in procs for q in [p.pid, *descendants(p.pid)]]
    for sig, grace in ((signal.SIGTERM, wait), (signal.SIGKILL, 5)):
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, sig)
        for q in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(q, sig)
        end = time.monotonic() + grace
        while time.monotonic() < end and any(_alive(q) for q in pids):
            for p in procs:
                p.poll()  # reap the ones we started
            time.sleep(0.1)
        if not any(_alive(q) for q in pids):
            break
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=5)


def _wait(what: str, ready, procs: list[subprocess.Popen], logs: list[Path], timeout: float = 120) -> None:
    """Poll ``ready()`` until true; fail naming ``what`` (with the logs' tails) when a process died or time ran out."""
    end = time.monotonic() + timeout
    while not ready():
        dead = [p for p in procs if p.poll() is not None]
        if dead or time.monotonic() > end:
            tails = "\n".join(f"--- {log}\n{log.read_text()[-2000:]}" for log in logs if log.exists())
            pytest.fail(f"{what}: {'a process exited' if dead else 'timed out'}\n{tails}")
        time.sleep(0.2)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class S3Server:
    endpoint: str
    env: dict  # what a process needs to reach it (credentials, region, AWS_ENDPOINT_URL)
    pid: int

    def fs(self):
        import s3fs

        return s3fs.S3FileSystem(key="testing", secret="testing", endpoint_url=self.endpoint)

    def bucket(self, name: str) -> str:
        """A fresh, empty bucket: ``s3://name``."""
        fs = self.fs()
        if fs.exists(name):
            fs.rm(name, recursive=True)
        fs.mkdir(name)
        fs.invalidate_cache()
        return f"s3://{name}"


def run_s3_server(tmp_path_factory):
    """The ``s3_server`` fixture's body; tests/conftest.py makes it one session fixture for every folder
    (one moto server per test session)."""
    port = free_ports(1)[0]
    endpoint = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("s3") / "moto.log"
    env = {**os.environ, **S3_ENV}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def up() -> bool:
        try:
            urllib.request.urlopen(endpoint + "/", timeout=2)
            return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False

    try:
        _wait("the S3 server (moto) did not come up", up, [proc], [log], 60)
        with pytest.MonkeyPatch.context() as mp:  # this process's s3fs finds it like any client would
            for k, v in {**S3_ENV, "AWS_ENDPOINT_URL": endpoint}.items():
                mp.setenv(k, v)
            yield S3Server(endpoint, {**S3_ENV, "AWS_ENDPOINT_URL": endpoint}, proc.pid)
    finally:
        stop(proc, wait=3)


@dataclass
class RayCluster:
    address: str  # the GCS, 127.0.0.1:PORT (RAY_ADDRESS)
    scratch: Path  # the scratch folder: the same path on every node, a private tmpfs on each worker node
    env: dict  # a driver's environment (RAY_ADDRESS, token auth, S3, CRAWLMIX_SCRATCH, PYTHONPATH)
    procs: list[subprocess.Popen] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def run(self, script: str | Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
        """Run a driver script against the cluster; fail with its output when it exits non-zero."""
        r = subprocess.run([sys.executable, str(script), *args], env=self.env, cwd=ROOT, capture_output=True,
                           text=True, timeout=timeout)
        assert r.returncode == 0, f"driver {script} failed:\n{r.stdout[-4000:]}\n{r.stderr[-6000:]}"
        return r


def _ray_logs(temp: Path) -> list[Path]:
    return sorted((temp / "ray").glob("session_*/logs/raylet*")) + sorted((temp / "ray").glob("session_*/logs/gcs_server.*"))


def _node_args(ports: list[int], low: int, temp: Path) -> list[str]:
    nm, om, grpc, listen, metrics, rtenv = ports
    return ["--block", "--node-ip-address=127.0.0.1", f"--node-manager-port={nm}", f"--object-manager-port={om}",
            f"--dashboard-agent-grpc-port={grpc}", f"--dashboard-agent-listen-port={listen}",
            f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={rtenv}",
            f"--min-worker-port={low}", f"--max-worker-port={low + 49}", f"--temp-dir={temp}",
            f"--object-store-memory={100 * 1024 * 1024}", "--disable-usage-stats"]


@pytest.fixture(scope="session")
def ray_cluster(s3_server):
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("worker nodes need their own mount namespace: `unshare -m` as root")
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"`unshare -m` is not allowed here: {probe.stderr.decode()[-300:]}")
    temp = Path(tempfile.mkdtemp(prefix="cmcl", dir="/tmp"))  # unix socket paths must stay short
    scratch = temp / "scratch"
    scratch.mkdir()
    gcs, client, *node_ports = free_ports(2 + 3 * 6)
    low = worker_port_block(150)
    env = {**os.environ, **s3_server.env, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token",
           "PYTHONPATH": str(ROOT), "CRAWLMIX_SCRATCH": str(scratch)}
    env.pop("RAY_ADDRESS", None)
    subprocess.run([str(BIN / "ray"), "get-auth-token", "--generate"], env=env, capture_output=True, check=True,
                   timeout=120)  # keeps an existing token
    cluster = RayCluster(f"127.0.0.1:{gcs}", scratch, {**env, "RAY_ADDRESS": f"127.0.0.1:{gcs}"})
    try:
        log = temp / "head.log"
        cluster.logs.append(log)
        with open(log, "w") as out:
            cluster.procs.append(subprocess.Popen(
                [str(BIN / "ray"), "start", "--head", f"--port={gcs}", f"--ray-client-server-port={client}",
                 "--num-cpus=0", "--include-dashboard=false", *_node_args(node_ports[:6], low, temp / "ray")],
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
        _wait("the Ray head did not come up", lambda: _port_open(gcs) and _port_open(node_ports[0]),
              cluster.procs, cluster.logs + _ray_logs(temp))
        for i, res in enumerate(WORKERS):  # one after the other: two raylets starting at once on 2 busy cores
            ports = node_ports[6 * (i + 1): 6 * (i + 2)]  # can miss Ray's fixed 30 s registration window
            for attempt in range(2):
                log = temp / f"{res}-{attempt}.log"
                cluster.logs.append(log)
                # a private tmpfs over the scratch folder, in this node's own mount namespace; then exec the node
                mount = 'mount -t tmpfs -o size=256m cmscratch "$0" && exec "$@"'
                with open(log, "w") as out:
                    node = subprocess.Popen(
                        ["unshare", "-m", "--propagation", "private", "sh", "-c", mount, str(scratch),
                         str(BIN / "ray"), "start", f"--address=127.0.0.1:{gcs}", "--num-cpus=1",
                         f"--resources={json.dumps({res: 1})}",
                         *_node_args(ports, low + 50 * (i + 1), temp / "ray")],
                        env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
                cluster.procs.append(node)
                # its raylet listens once it is up (drivers then wait to see the node in the cluster)
                end = time.monotonic() + 120
                while not _port_open(ports[0]) and node.poll() is None and time.monotonic() < end:
                    time.sleep(0.2)
                if _port_open(ports[0]) and node.poll() is None:
                    break
                stop(node)
                if attempt:
                    _wait(f"Ray worker node {i} did not come up", lambda: False, [node], cluster.logs + _ray_logs(temp), 0)
        yield cluster
    finally:
        stop(*cluster.procs, wait=3)
        shutil.rmtree(temp, ignore_errors=True)
