"""The cluster path: `ray start --head` then `ray job submit --working-dir . -- python pipelines/crawl.py`."""

from __future__ import annotations

import json
import os
import socket
import shutil
import subprocess
import tempfile
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ray_job_submit(sample_dir, tmp_path):
    # token auth on both sides (the token is generated in ~/.ray on first start)
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_ADDRESS": "", "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS")
    gcs, dash = _free_port(), _free_port()
    temp = tempfile.mkdtemp(prefix="cmray", dir="/tmp")  # unix socket paths must stay short
    subprocess.run([str(BIN / "ray"), "get-auth-token", "--generate"], env=env, capture_output=True, check=True,
                   timeout=120)  # keeps an existing token
    start = subprocess.run([str(BIN / "ray"), "start", "--head", f"--port={gcs}", "--num-cpus=2",
                            "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--include-dashboard=true",
                            f"--temp-dir={temp}", "--disable-usage-stats"],
                           env=env, capture_output=True, text=True, timeout=180)
    assert start.returncode == 0, start.stderr[-2000:]
    try:
        out = tmp_path / "out"
        job = subprocess.run(
            [str(BIN / "ray"), "job", "submit", "--address", f"http://127.0.0.1:{dash}", "--working-dir", str(ROOT),
             "--", "python", "pipelines/crawl.py", "--no-progress", "--input", str(sample_dir / "sample.warc.gz"),
             "--output", str(out), "--config", "jobs/default.yaml"],
            env=env, capture_output=True, text=True, timeout=400, cwd=ROOT)
        assert job.returncode == 0, (job.stdout[-3000:], job.stderr[-3000:])
        assert "succeeded" in job.stdout.lower() and "kept languages" in job.stdout
        stats = json.loads((out / "stats.json").read_text())
        assert stats["docs_out"] > 10 and stats["failed_tasks"] == []
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)
