"""The cluster path: `ray start --head`, then a job submitted with its working directory uploaded.

The head is started in its own process group; the test stops that group by PID and nothing else (never
Ray's machine-wide stop command, which would end every Ray on the machine). Submissions wait for the head's
job agent.
"""

from __future__ import annotations

import json
import re
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
from pathlib import Path

import pytest

from tests.conftest import ROOT

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop_group(pgid: int) -> None:
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        end = time.monotonic() + wait
        while time.monotonic() < end:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


@pytest.fixture
def ray_head():
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    gcs, dash, *agent = (_free_port() for _ in range(9))
    low = 10000 + (os.getpid() % 200) * 100  # worker ports below the ephemeral range the others come from
    temp = tempfile.mkdtemp(prefix="cmray", dir="/tmp")  # unix socket paths must stay short
    subprocess.run([str(BIN / "ray"), "get-auth-token", "--generate"], env=env, capture_output=True, check=True,
                   timeout=120)  # keeps an existing token
    log = open(Path(temp) / "start.log", "w")
    head = subprocess.Popen([str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
                             f"--port={gcs}", "--num-cpus=2", "--dashboard-host=127.0.0.1",
                             f"--dashboard-port={dash}", "--include-dashboard=true", f"--temp-dir={temp}",
                             # explicit ports: another Ray on this machine keeps its own
                             f"--dashboard-agent-listen-port={agent[0]}", f"--dashboard-agent-grpc-port={agent[1]}",
                             f"--metrics-export-port={agent[2]}", f"--runtime-env-agent-port={agent[3]}",
                             f"--node-manager-port={agent[4]}", f"--object-manager-port={agent[5]}",
                             f"--ray-client-server-port={agent[6]}", f"--min-worker-port={low}",
                             f"--max-worker-port={low + 99}",
                             "--disable-usage-stats"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        address = f"http://127.0.0.1:{dash}"
        end = time.monotonic() + 180
        while True:  # the dashboard answers (submit.py then waits for the job agent)
            assert head.poll() is None, (Path(temp) / "start.log").read_text()[-3000:]
            try:
                urllib.request.urlopen(f"{address}/api/version", timeout=5)
                break
            except urllib.error.HTTPError:  # it answers (a token may be required): up
                break
            except OSError:
                assert time.monotonic() < end, "the Ray dashboard did not come up"
                time.sleep(0.5)
        yield address, env
    finally:
        _stop_group(head.pid)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_ray_job_submit(ray_head, sample_dir, tmp_path):
    address, env = ray_head
    out = tmp_path / "out"
    job = subprocess.run(
        [sys.executable, str(ROOT / "pipelines" / "submit.py"), "--address", address, "--working-dir", str(ROOT),
         "--timeout", "400", "--", "python", "pipelines/crawl.py", "--no-progress",
         "--input", str(sample_dir / "sample.warc.gz"), "--output", str(out), "--config", "jobs/default.yaml"],
        env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert job.returncode == 0, (job.stdout[-3000:], job.stderr[-3000:])
    assert "SUCCEEDED" in job.stdout and "kept languages" in job.stdout
    stats = json.loads((out / "stats.json").read_text())
    assert stats["docs_out"] > 10 and stats["failed_tasks"] == []


def test_nothing_stops_every_ray_on_the_machine():
    """No code, test, bench script or make target runs Ray's machine-wide stop or a kill-by-process-name command:
    they end every matching process on the machine (a user's Ray included). Tests stop only the PIDs they started."""
    words = [r"ray[\"',\s]+" + "stop", "p" + "kill", "kill" + "all"]  # split: this file must not match itself
    pattern = re.compile("|".join(rf"\b{w}\b" for w in words))
    found = []
    for folder in ("crawlmix", "pipelines", "tests", "bench", ".ci", "jobs"):
        for p in (ROOT / folder).rglob("*"):
            if p.is_file() and "__pycache__" not in p.parts and p.suffix in ("", ".py", ".sh", ".yaml", ".toml"):
                found += [f"{p.relative_to(ROOT)}:{i}" for i, line in
                          enumerate(p.read_text(errors="replace").splitlines(), 1) if pattern.search(line)]
    for name in ("Makefile", "pyproject.toml"):
        if (ROOT / name).exists():
            found += [f"{name}:{i}" for i, line in enumerate((ROOT / name).read_text().splitlines(), 1)
                      if pattern.search(line)]
    assert not found, f"machine-wide process stops: {found}"
