"""Submitting a crawlmix job to a Ray cluster, waiting for the head's job agent first.

Right after ``ray start --head`` the dashboard answers before its job agent has registered, and a
submission fails with "No available agent to submit job, please try again later". That answer means
nothing was submitted, so ``submit_job`` asks again until the agent takes the job (or ``agent_wait_s``
runs out); it never relies on sleeping a fixed time first.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable

AGENT_NOT_READY = "No available agent to submit job"
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def submit_job(address: str, entrypoint: list[str], working_dir: str = ".", agent_wait_s: float = 300,
               job_timeout_s: float | None = None, env_vars: dict | None = None,
               log: Callable[[str], None] = print) -> tuple[str, str, str]:
    """Submit ``entrypoint`` with ``working_dir`` uploaded; follow it to the end.

    Returns (submission id, final status, logs)."""
    from ray.job_submission import JobSubmissionClient

    runtime_env: dict = {"working_dir": working_dir}
    if env_vars:
        runtime_env["env_vars"] = env_vars
    deadline = time.monotonic() + agent_wait_s
    waited = False
    client = None
    while True:
        try:
            client = client or JobSubmissionClient(address)  # ConnectionError until the dashboard answers
            job_id = client.submit_job(entrypoint=shlex.join(entrypoint), runtime_env=runtime_env)
            break
        except (ConnectionError, RuntimeError) as e:
            not_up = client is None or AGENT_NOT_READY in str(e)
            if not not_up or time.monotonic() > deadline:
                raise
            if not waited:
                log(f"waiting for the job agent of {address} ...")
                waited = True
            time.sleep(1)
    log(f"submitted {job_id}")
    end = time.monotonic() + job_timeout_s if job_timeout_s else None
    status = str(client.get_job_status(job_id).value)
    while status not in TERMINAL:
        if end is not None and time.monotonic() > end:
            client.stop_job(job_id)
            raise TimeoutError(f"job {job_id} still {status} after {job_timeout_s} s (stopped)")
        time.sleep(1)
        status = str(client.get_job_status(job_id).value)
    return job_id, status, client.get_job_logs(job_id)


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(
        prog="submit.py", description="Submit a command to a Ray cluster (the working directory is uploaded), "
        "waiting for the head's job agent; prints the job's logs and exits with its outcome.",
        epilog="example: python pipelines/submit.py --address http://127.0.0.1:8265 -- python pipelines/crawl.py "
               "--input 's3://bucket/in/*.warc.gz' --output s3://bucket/out")
    ap.add_argument("--address", required=True, help="the Ray dashboard address, e.g. http://127.0.0.1:8265")
    ap.add_argument("--working-dir", default=".", help="folder uploaded as the job's working directory (default .)")
    ap.add_argument("--agent-wait", type=float, default=300, metavar="S", help="how long to wait for the job agent")
    ap.add_argument("--timeout", type=float, default=None, metavar="S", help="stop the job after this long")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
    a = ap.parse_args(argv)
    cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not cmd:
        ap.error("give the command after --")
    job_id, status, logs = submit_job(a.address, cmd, a.working_dir, a.agent_wait, a.timeout)
    print(logs, end="" if logs.endswith("\n") else "\n")
    print(f"job {job_id} {status}")
    return 0 if status == "SUCCEEDED" else 1
