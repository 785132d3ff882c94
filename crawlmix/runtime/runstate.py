"""Run state: whether the run that writes an output folder has finished, so readers trust only finished output.

Every job that writes a folder other programs read (crawl, dedup, pii, images) records its state in that
folder's ``stats.json``, its field ``status``:

    running      written first, before any output: what is in the folder may be half written (a rerun over a
                 finished folder rewrites files one by one), so nothing in it is final
    finished     written last, with the run's stats: every output is complete (and, with PII on, scrubbed)
    incomplete   the run ended, but tasks failed (named under ``failed_tasks``): outputs are missing

Readers (the mixer, dedup's cross-run input, the PII job's input, the dashboard) call ``check_inputs`` /
``require_finished``: a path inside a folder whose run is not ``finished`` is refused with a message that
says which run and what to do; so are a run's internal folders (``_tasks``, ``_prededup``, ``_staging``, ...:
any part starting with ``_``). A folder without ``stats.json`` is not a crawlmix run and is read as it is;
a ``stats.json`` without ``status`` comes from a crawlmix before run states and is refused (its files may
be a half-written rerun).

``folder`` may be a URL (``s3://bucket/run``, crawlmix.runtime.storage): stats.json is then an object under
it, written whole, and a URL input is checked against the ``stats.json`` of each folder above it.

``failpoint(name)`` is the crash hook the tests use: with CRAWLMIX_FAILPOINT=name in the environment, the
process kills itself there (SIGKILL), as a machine failure would.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from crawlmix.runtime import storage
from crawlmix.runtime.atomic import write_json
from crawlmix.runtime.config import ConfigError

STATS = "stats.json"
RUNNING, FINISHED, INCOMPLETE = "running", "finished", "incomplete"
OUTPUT_FOLDERS = ("curated", "removed", "pairs")  # a run's output folders: their parent holds the run's state


class RunNotFinished(ConfigError):
    """A reader was given output of a run that has not finished (or of a run's internal folder)."""


def begin(folder: str | Path, header: dict) -> None:
    """Mark ``folder``'s run as running: stats.json is rewritten before any output is touched, so an
    interrupted run (or a rerun over a finished folder) is never taken for a finished one."""
    storage.makedirs(folder)  # a URL (s3://...): nothing to make
    write_json(storage.join(folder, STATS), {"status": RUNNING, **header})


def finish(folder: str | Path, stats: dict, failed: list | None = None, indent: int | None = 2) -> dict:
    """Write the run's stats.json with its final state: ``finished``, or ``incomplete`` when tasks failed."""
    stats = {"status": INCOMPLETE if failed else FINISHED, **{k: v for k, v in stats.items() if k != "status"}}
    write_json(storage.join(folder, STATS), stats, indent=indent)
    return stats


def read_state(folder: str | Path) -> tuple[str | None, dict]:
    """(status, stats) of the run in ``folder``: status None when there is no stats.json (not a run),
    "unknown" when it has no status (written before run states) or cannot be read."""
    try:
        stats = json.loads(storage.read_bytes(storage.join(folder, STATS)))
    except FileNotFoundError:
        return None, {}
    except (OSError, ValueError):
        return "unknown", {}
    if not isinstance(stats, dict):
        return "unknown", {}
    return stats.get("status", "unknown"), stats


def why_not_finished(folder: str | Path, allow_incomplete: bool = False) -> str | None:
    """None when the run in ``folder`` is finished (or the folder is not a run); else the reason."""
    status, stats = read_state(folder)
    if status is None or status == FINISHED or (allow_incomplete and status == INCOMPLETE):
        return None
    if status == RUNNING:
        return (f"the run writing {folder} has not finished (status 'running' since {stats.get('created', '?')}: "
                f"still running, or interrupted); rerun the job that writes it to complete it")
    if status == INCOMPLETE:
        names = ", ".join(str(f) for f in (stats.get("failed_tasks") or [])[:5])
        return (f"the run in {folder} is incomplete: {len(stats.get('failed_tasks') or [])} task(s) failed "
                f"({names}); rerun the job to redo them")
    return (f"{folder}/{STATS} has no run state (written by an older crawlmix, or not by crawlmix); "
            f"rerun the job that writes {folder} to complete it")


def require_finished(folder: str | Path, allow_incomplete: bool = False) -> None:
    why = why_not_finished(folder, allow_incomplete)
    if why:
        raise RunNotFinished(why)


def _covering_runs(path: str | Path, has_stats=None) -> list[tuple[str | Path, tuple[str, ...]]]:
    """(run folder, folders between it and ``path``) of every run whose state covers ``path``, nearest first:
    a folder with stats.json that holds ``path`` directly, through output folders (``RUN/curated/x``,
    ``RUN/pairs/x``), or inside one of its internal folders (``RUN/_prededup/...``). ``has_stats``: a
    cache of the folders looked at (one lookup per folder for many inputs)."""
    has_stats = {} if has_stats is None else has_stats
    if storage.is_remote(path):
        return _covering_url_runs(str(path), has_stats)
    p = Path(os.path.abspath(os.path.expanduser(storage.local(str(path)))))
    d = p if p.is_dir() else p.parent
    out = []
    for run in [d, *d.parents]:
        if run not in has_stats:
            has_stats[run] = (run / STATS).is_file()
        if has_stats[run]:
            between = d.relative_to(run).parts
            if not between or between[0].startswith("_") or all(x in OUTPUT_FOLDERS for x in between):
                out.append((run, between))
    return out


def _covering_url_runs(url: str, has_stats: dict) -> list[tuple[str, tuple[str, ...]]]:
    """_covering_runs for a URL: the folders above it, up to the bucket. A name with a suffix is a file
    (no request); one without is asked about (``s3://b/run/curated`` is a folder)."""
    proto, _, rest = url.partition("://")
    parts = [x for x in rest.split("/") if x]
    leaf = parts[-1] if parts else ""
    if not any(c in leaf for c in ".*?[") and storage.isdir(url):
        folder = parts
    else:
        folder = parts[:-1]
    out = []
    for k in range(len(folder), 0, -1):
        run = f"{proto}://" + "/".join(folder[:k])
        if run not in has_stats:
            has_stats[run] = storage.isfile(storage.join(run, STATS))
        if has_stats[run]:
            between = tuple(folder[k:])
            if not between or between[0].startswith("_") or all(x in OUTPUT_FOLDERS for x in between):
                out.append((run, between))
    return out


def check_inputs(paths: list[str | Path], who: str = "input", allow_incomplete: bool = False) -> None:
    """Refuse (RunNotFinished) any path that belongs to an unfinished run, or to a run's internal folder
    (a part starting with ``_``: staging and bookkeeping, never final output)."""
    seen: dict = {}
    has_stats: dict = {}
    for path in paths:
        for run, between in _covering_runs(path, has_stats):
            if between and between[0].startswith("_"):
                raise RunNotFinished(f"{who}: {path} is inside {storage.join(run, between[0])}, a run's internal folder "
                                     f"(staging / bookkeeping, not final output); read the run's output folders")
            if run not in seen:
                seen[run] = why_not_finished(run, allow_incomplete)
            if seen[run]:
                raise RunNotFinished(f"{who}: {seen[run]}")


def failpoint(name: str) -> None:
    """Crash here (SIGKILL of this process) when CRAWLMIX_FAILPOINT lists ``name``: the tests' real crashes."""
    if name in os.environ.get("CRAWLMIX_FAILPOINT", "").split(","):
        os.kill(os.getpid(), signal.SIGKILL)
