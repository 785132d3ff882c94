"""Faults survived, with real processes and real SIGKILLs (issue #13): a Ray worker killed mid-task by the test,
and the driver killed mid-crawl, mid-dedup, mid-PII and mid-mix. Each run is compared with a clean run of the
same inputs (every output file byte for byte, so the same rows, nothing lost, nothing doubled), and each rerun
is measured: how many tasks it ran again and how many it skipped through their completion markers (a marker
is written once, when its task finishes, so a marker whose mtime changed or that is new is a task redone).

The inputs: the bundled sample's pages split over five small WARC files, plus a sixth, larger one (~100 pages,
a task of about a second) that comes last: with 2 workers the executor has at most 4 tasks in flight, so it
starts only after two others have finished, and a driver killed when the first task marker appears always
leaves it (at least) unfinished. PII is scrubbed inside the crawl tasks, so a driver killed mid-crawl is
killed mid-PII too; the PII step's own entry point (pipelines/pii.py) is killed mid-run as well. The crawl runs
through its entry point on its own local Ray with --workers 2, in a process group of its own; what is left of
the group after a kill (Ray's processes) is killed by group id and by PID.
tests/crawl/test_failures.py covers the other crashes (driver killed after dedup; a worker killed on every
attempt of a task).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.cluster.conftest import descendants
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

N_FILES = 6
MARKERS = {"crawl": "_tasks", "signatures": "_dedup/sig/_tasks", "pairs": "pairs/_tasks",
           "interleaved": "interleaved/_tasks"}
FIGURES: dict[str, dict] = {}  # what each rerun redid, printed at the end of the module (pytest -s shows it)


# ------------------------------------------------------------------------------------------------ processes
def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _kill(pids) -> None:
    for q in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(q, signal.SIGKILL)


@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str
    wall_s: float
    killed: list[int] = field(default_factory=list)  # PIDs the watcher SIGKILLed

    def check(self, rc: int = 0) -> "Run":
        assert self.rc == rc, f"exit {self.rc}, expected {rc}\n{self.stdout[-2000:]}\n{self.stderr[-4000:]}"
        return self


def run(cmd: list[str], logs: Path, env_add: dict | None = None, watch=None, timeout: float = 300) -> Run:
    """``cmd`` in its own process group. ``watch(proc)`` is called every 10 ms while it runs and returns the
    PIDs it SIGKILLed (it stops being called once it has killed something). When the command ends (or has
    been killed), whatever is left of its group and of its descendants is killed, by group id and by PID."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "CRAWLMIX_FAILPOINT")}
    env.update({"RAY_AUTH_MODE": "token", **(env_add or {})})
    logs.mkdir(parents=True, exist_ok=True)
    k = len(list(logs.glob("*.out")))
    out_f, err_f = logs / f"{k}.out", logs / f"{k}.err"
    t0 = time.monotonic()
    killed: list[int] = []
    with open(out_f, "w") as so, open(err_f, "w") as se:
        p = subprocess.Popen(cmd, stdout=so, stderr=se, text=True, env=env, cwd=ROOT, start_new_session=True)
        family: set[int] = set()
        scanned = 0.0
        try:
            while p.poll() is None:
                if time.monotonic() - scanned > 0.25:  # its processes, to stop them all in the end
                    family.update(descendants(p.pid))
                    scanned = time.monotonic()
                if watch is not None and not killed:
                    killed = watch(p) or []
                if time.monotonic() - t0 > timeout:
                    pytest.fail(f"{cmd[1]} ran past {timeout}s\n{err_f.read_text()[-3000:]}")
                time.sleep(0.01)
            p.wait()
        finally:
            family.update(descendants(p.pid))
            for _ in range(50):
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            _kill(family)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=10)
    return Run(p.returncode, out_f.read_text(), err_f.read_text(), round(time.monotonic() - t0, 1), killed)


def crawl(out: Path, inputs: Path, failpoint: str | None = None, watch=None) -> Run:
    return run([sys.executable, str(ROOT / "pipelines" / "crawl.py"), "--no-progress", "--workers", "2",
                "--input", str(inputs / "*.warc.gz"), "--output", str(out)], out.parent / f"logs-{out.name}",
               {"CRAWLMIX_FAILPOINT": failpoint} if failpoint else None, watch)


def kill_driver_when(ready):
    """A watcher: SIGKILL the driver (only it; its Ray is cleaned up after) once ``ready()`` is true."""
    def watch(p):
        if ready():
            os.kill(p.pid, signal.SIGKILL)
            return [p.pid]
        return []
    return watch


# ------------------------------------------------------------------------------------------------ outputs
def outputs(out: Path) -> dict[str, bytes]:
    """Every final output file of a crawl: curated/, removed/, pairs/ and interleaved/ (not staging)."""
    keep = (".parquet", ".tar")
    files = [p for sub in ("curated", "removed", "pairs", "interleaved", "interleaved/removed")
             for p in sorted((out / sub).glob("*")) if p.is_file() and p.name.endswith(keep)]
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in files}


def rows(out: Path, sub: str) -> list[dict]:
    return [r for p in sorted((out / sub).glob("*.parquet")) for r in pq.read_table(p).to_pylist()]


def untimed(v):
    """``v`` without its timings (``seconds``): the only figures that differ from run to run."""
    if isinstance(v, dict):
        return {k: untimed(x) for k, x in v.items() if k != "seconds"}
    return [untimed(x) for x in v] if isinstance(v, list) else v


def counts(out: Path) -> dict:
    s = untimed(json.loads((out / "stats.json").read_text()))
    return {"status": s["status"], "docs_in": s["docs_in"], "docs_out": s["docs_out"], "stages": s["stages"],
            "languages": s["languages"], "dedup": s.get("dedup"), "pii": s["pii"],
            "images": {k: s["images"][k] for k in ("candidates", "successes", "funnel")},
            "interleaved": {k: s["interleaved"][k] for k in ("documents", "images", "funnel")},
            "error_count": s["error_count"], "failed_tasks": s["failed_tasks"], "tasks": s["tasks"]}


def assert_same_as_clean(out: Path, clean: Path) -> None:
    for sub in ("curated", "removed"):
        assert rows(out, sub) == rows(clean, sub), sub
    got, want = outputs(out), outputs(clean)
    assert sorted(got) == sorted(want)
    assert [n for n in want if got[n] != want[n]] == []  # byte for byte: nothing lost, nothing doubled
    assert counts(out) == counts(clean)
    assert not [p for p in out.rglob("*.tmp*")]  # no partial file left behind


def markers(out: Path) -> dict[str, dict[str, int]]:
    return {k: {p.name: p.stat().st_mtime_ns for p in (out / sub).glob("*.json")} for k, sub in MARKERS.items()}


def redone(before: dict, after: dict) -> dict[str, dict[str, int]]:
    """Per kind of task: how many the rerun ran (marker new or rewritten) and skipped (marker untouched)."""
    return {k: {"ran": sum(1 for n, t in after[k].items() if before[k].get(n) != t),
                "skipped": sum(1 for n, t in after[k].items() if before[k].get(n) == t)} for k in MARKERS}


# ------------------------------------------------------------------------------------------------ inputs
@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    from crawlmix.samples.crawl_sample import pages, write_warc

    d = tmp_path_factory.mktemp("faults-in")
    items = pages(0)
    for i in range(N_FILES - 1):
        write_warc(d / f"part-{i}.warc.gz", items[i::N_FILES - 1], seed=i)
    big = [dict(p, url=f"{p['url']}?copy={s}") for s in range(1, 9) for p in pages(s) if p["expect"] == "keep"]
    write_warc(d / f"part-{N_FILES - 1}.warc.gz", big, seed=N_FILES)  # the larger file, last
    return d


@pytest.fixture(scope="module")
def clean(inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("faults") / "clean"
    r = crawl(out, inputs).check()
    FIGURES["clean crawl"] = {"wall_s": r.wall_s, "steps_s": json.loads((out / "stats.json").read_text())["steps_s"]}
    assert len(list((out / "_tasks").glob("*.json"))) == N_FILES
    return out


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    if FIGURES:
        print("\nissue #13 fault figures:\n" + "\n".join(f"  {k}: {json.dumps(v)}" for k, v in FIGURES.items()))


# ------------------------------------------------------------------------------------------------ (1) worker
def test_worker_killed_mid_task_is_retried(clean, inputs, tmp_path):
    """The test SIGKILLs the Ray worker process running a crawl task (found by its process title,
    ``ray::crawl_task``, among the driver's descendants) once: Ray runs the task again, the job exits 0
    and its output is the clean run's."""
    out = tmp_path / "crawl"
    seen: dict = {}

    def kill_a_task(p):
        for pid in descendants(p.pid):
            if cmdline(pid).startswith("ray::crawl_task"):
                os.kill(pid, signal.SIGKILL)
                seen["finished_before"] = len(list((out / "_tasks").glob("*.json")))
                return [pid]
        return []

    r = crawl(out, inputs, watch=kill_a_task).check()
    assert len(r.killed) == 1, "no worker was seen running a crawl task"
    # the worker died inside a task (its process title named it), so that task's work was lost; yet every task
    # has its marker and none failed: the killed one ran again
    assert seen["finished_before"] < N_FILES and len(list((out / "_tasks").glob("*.json"))) == N_FILES
    stats = json.loads((out / "stats.json").read_text())
    assert stats["status"] == "finished" and stats["failed_tasks"] == [] and stats["errors"] == \
        json.loads((clean / "stats.json").read_text())["errors"]
    assert_same_as_clean(out, clean)
    FIGURES["worker killed mid-task"] = {"tasks_finished_at_kill": seen["finished_before"], "wall_s": r.wall_s,
                                         "clean_wall_s": FIGURES["clean crawl"]["wall_s"]}


# ------------------------------------------------------------------------------------------------ (3) driver
def test_driver_killed_mid_crawl_rerun_does_only_unfinished_tasks(clean, inputs, tmp_path):
    """The driver is SIGKILLed as soon as the first task marker appears (tasks still running: their rows are
    being scrubbed of PII inside the tasks); the rerun runs exactly the tasks without a marker."""
    out = tmp_path / "crawl"
    r = crawl(out, inputs, watch=kill_driver_when(lambda: any((out / "_tasks").glob("*.json")))).check(-signal.SIGKILL)
    assert r.killed
    assert json.loads((out / "stats.json").read_text())["status"] == "running"
    before = markers(out)
    done = len(before["crawl"])
    assert 1 <= done < N_FILES, before  # the larger last task cannot have finished
    assert not (out / "curated").exists() or not list((out / "curated").glob("*.parquet"))
    r2 = crawl(out, inputs).check()
    did = redone(before, markers(out))
    assert did["crawl"] == {"ran": N_FILES - done, "skipped": done}
    assert json.loads((out / "stats.json").read_text())["tasks_reused"] == done  # read in the driver, not re-sent
    assert_same_as_clean(out, clean)
    FIGURES["driver killed mid-crawl"] = {"tasks_done_at_kill": done, "rerun": did, "killed_run_s": r.wall_s,
                                          "rerun_s": r2.wall_s}


def test_driver_killed_mid_dedup_rerun_redoes_no_task(clean, inputs, tmp_path):
    """The driver is killed in dedup, once the signatures are written and before any candidate edge or
    deduplicated file: the rerun runs no crawl task and no signature task again, only dedup's candidate,
    cluster and apply steps (and the image / interleaved steps, never reached)."""
    out = tmp_path / "crawl"
    r = crawl(out, inputs, failpoint="driver:dedup:signatures").check(-signal.SIGKILL)
    before = markers(out)
    assert len(before["crawl"]) == N_FILES and len(before["signatures"]) == N_FILES
    assert not list((out / "_dedup" / "edges").glob("*.npy")) and not list((out / "curated").glob("*.parquet"))
    r2 = crawl(out, inputs).check()
    did = redone(before, markers(out))
    assert did["crawl"] == {"ran": 0, "skipped": N_FILES} and did["signatures"] == {"ran": 0, "skipped": N_FILES}
    assert_same_as_clean(out, clean)
    FIGURES["driver killed mid-dedup"] = {"rerun": did, "killed_run_s": r.wall_s, "rerun_s": r2.wall_s,
                                          "rerun_steps_s": json.loads((out / "stats.json").read_text())["steps_s"]}


@pytest.fixture(scope="module")
def pii_inputs(inputs, tmp_path_factory) -> Path:
    """Six curated-like Parquet files whose text and URLs carry e-mail addresses, phone numbers and IPs."""
    import pyarrow as pa

    from crawlmix.samples.crawl_sample import EN

    d = tmp_path_factory.mktemp("pii-in")
    for f in range(N_FILES):
        recs = [{"id": f"doc-{f}-{i}", "url": f"https://example.com/{f}/{i}?mail=ann.{f}.{i}%40example.org",
                 "text": f"{EN[(f + i) % len(EN)]} Write to ann.{f}.{i}@example.org or call +1 415-555-01{i:02d}; "
                         f"the server at 10.0.{f}.{i} answers."} for i in range(20)]
        pq.write_table(pa.Table.from_pylist(recs), d / f"part-{f}.parquet")
    return d


def pii(out: Path, src: Path, failpoint: str | None = None) -> Run:
    """pipelines/pii.py with one worker: the files are scrubbed in the driver process, one after another."""
    return run([sys.executable, str(ROOT / "pipelines" / "pii.py"), "--no-progress", "--input",
                str(src / "*.parquet"), "--output", str(out)], out.parent / f"logs-{out.name}",
               {"CRAWLMIX_FAILPOINT": failpoint} if failpoint else None)


def test_driver_killed_mid_pii_rerun_scrubs_only_the_rest(pii_inputs, tmp_path):
    """pipelines/pii.py's driver (scrubbing the files itself) is killed once the third file is marked done:
    the rerun scrubs only the other three and the folder ends identical to a clean run's."""
    r0 = pii(tmp_path / "clean", pii_inputs).check()
    out = tmp_path / "pii"
    r = pii(out, pii_inputs, failpoint="pii:marked:part-2.parquet").check(-signal.SIGKILL)
    marked = sorted(p.name for p in (out / "_tasks" / "pii").glob("*.json"))
    assert marked == ["part-0.parquet.json", "part-1.parquet.json", "part-2.parquet.json"]
    assert json.loads((out / "stats.json").read_text())["status"] == "running"
    r2 = pii(out, pii_inputs).check()
    stats, ref = (json.loads((d / "stats.json").read_text()) for d in (out, tmp_path / "clean"))
    assert (stats["scrubbed"], stats["resumed"]) == (3, 3)
    assert untimed(stats["pii"]) == untimed(ref["pii"]) and ref["pii"]["replacements"]["EMAIL_ADDRESS"] >= 6 * 20
    want = {p.name: p.read_bytes() for p in sorted((tmp_path / "clean" / "curated").glob("*"))}
    assert {p.name: p.read_bytes() for p in sorted((out / "curated").glob("*"))} == want
    FIGURES["driver killed mid-PII (pipelines/pii.py)"] = {"rerun": {"ran": stats["scrubbed"],
                                                                     "skipped": stats["resumed"]},
                                                           "clean_s": r0.wall_s, "killed_run_s": r.wall_s,
                                                           "rerun_s": r2.wall_s}


def test_driver_killed_mid_mix_rerun_writes_only_the_rest(clean, tmp_path):
    """The mixer's driver is killed once the second of six shards is marked (the shards after it may be half
    written): the rerun writes only the unmarked shards, and every shard, the shard index and mix.lock.json
    are byte-identical to a clean mix."""
    mixture = tmp_path / "mix.yaml"
    mixture.write_text(
        "name: faults\nseed: 3\nstages:\n  - name: s\n    budget: {samples: 30}\n    shards: {max_samples: 5}\n"
        f"    sources:\n      - {{name: web, modality: text, path: {clean}/curated/*.parquet, weight: 0.7, "
        f"max_epochs: 4}}\n      - {{name: pairs, modality: image, path: {clean}/pairs/*.tar, weight: 0.3, "
        "max_epochs: 4}\n")

    def mix(out: Path, failpoint: str | None = None) -> Run:
        return run([sys.executable, str(ROOT / "pipelines" / "mix.py"), "--mixture", str(mixture), "--no-progress",
                    "--output", str(out)], tmp_path / f"logs-{out.name}",
                   {"CRAWLMIX_FAILPOINT": failpoint} if failpoint else None)

    def digests(stage: Path) -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(stage.glob("*"))
                if p.is_file()}

    mix(tmp_path / "clean").check()
    ref = digests(tmp_path / "clean" / "s")
    assert sum(n.endswith(".tar") for n in ref) == 6
    out = tmp_path / "mixed"
    r = mix(out, failpoint="driver:mix:shard-000001").check(-signal.SIGKILL)
    before = {p.name: p.stat().st_mtime_ns for p in (out / "s" / "_tasks").glob("*.json")}
    assert sorted(before) == ["shard-000000.json", "shard-000001.json"]
    r2 = mix(out).check()
    assert "wrote 4 shard(s), kept 2 finished" in r2.stdout
    after = {p.name: p.stat().st_mtime_ns for p in (out / "s" / "_tasks").glob("*.json")}
    assert {n: after[n] for n in before} == before and len(after) == 6  # the two finished shards untouched
    assert digests(out / "s") == ref  # shards, their stats, shardindex.json and mix.lock.json
    FIGURES["driver killed mid-mix"] = {"rerun": {"ran": 4, "skipped": 2}, "killed_run_s": r.wall_s,
                                        "rerun_s": r2.wall_s}
