"""The one executor: every stage runs its tasks through ``Executor.imap`` / ``Executor.map``.

Backends: ``inline`` (this process, one task at a time), ``threads`` (this process; for I/O-bound
tasks that release the GIL), ``processes`` (a spawn- or fork-started process pool on this machine)
and ``ray`` (a local Ray, or the cluster at RAY_ADDRESS). Submission is streaming: tasks are drawn
from an iterable only while fewer than ``max_in_flight`` are running, so the driver never holds a
future per task. Each task may declare its resources (CPUs, GPUs, memory, retries) for Ray. A task
that raises comes back as an ``Outcome`` with its error (one error path for every backend); a worker
that dies is retried by Ray (``max_retries``) and otherwise reported the same way.

``shared`` values are sent to each worker once (``ray.put`` / the pool initializer) and passed to
every call after the task's own arguments: ``fn(*task, *shared)``.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Backend = Literal["inline", "threads", "processes", "ray"]
BACKENDS = ("inline", "threads", "processes", "ray")


@dataclass(frozen=True)
class Resources:
    """What one task needs. Ray schedules by it; the local backends run ``workers`` tasks at a time."""

    num_cpus: float = 1
    num_gpus: float = 0
    memory: int | None = None  # bytes
    max_retries: int = 1  # a task whose worker process died is run again this many times (Ray)


@dataclass
class Outcome:
    """One finished task: its position in the input, its arguments, and a result or an error."""

    index: int
    args: tuple
    result: Any = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def message(self) -> str:
        e = self.error
        return f"{type(e).__name__}: {str(e)[-500:]}" if e is not None else ""


class TaskError(RuntimeError):
    """A task failed and the caller asked for errors to be raised."""


def _package_root() -> Path:
    return Path(__file__).resolve().parents[2]


def init_ray(num_cpus: int | None = None):
    """Connect to the cluster at RAY_ADDRESS (``ray job submit`` sets it), or start a local Ray.

    The only place crawlmix calls ``ray.init``."""
    import ray

    if ray.is_initialized():
        return ray
    address = os.environ.get("RAY_ADDRESS")
    if address:  # the cluster's workers need the storage options in the job's runtime env
        env_vars = _storage_env()
        ray.init(address=address, log_to_driver=True, runtime_env={"env_vars": env_vars} if env_vars else None)
    else:
        # A local Ray's processes are this process's children and inherit its environment (the storage
        # options are in it already), so no runtime env is set: one would keep Ray from using the workers
        # it starts with the node and start new ones at the first task (measured: 1.1 s vs 0.3 s). From a
        # checkout, the workers need its folder on their path: set while Ray's processes start, then put back.
        before = os.environ.get("PYTHONPATH")
        paths = [p for p in (before or "").split(os.pathsep) if p]
        root = str(_package_root())
        if (_package_root() / "pyproject.toml").exists() and root not in paths:
            os.environ["PYTHONPATH"] = os.pathsep.join([root, *paths])
        try:
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=True)
        finally:
            if before is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = before
    return ray


def shutdown_ray() -> None:
    """Stop the local Ray this process started (connected to a cluster: disconnect only). Entry points call
    it once their outputs are written; left to interpreter exit, Ray first sleeps 0.5 s for its log lines."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def _storage_env() -> dict:
    """The driver's storage options (CRAWLMIX_STORAGE_OPTIONS, set by a job's ``storage_options:``) for
    every task's process, on every node; not when a submitted job's runtime env sets them already."""
    from crawlmix.runtime.storage import ENV_OPTIONS

    value = os.environ.get(ENV_OPTIONS)
    if not value or ENV_OPTIONS in os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", ""):
        return {}
    return {ENV_OPTIONS: value}


def node_id() -> str | None:
    """The Ray node this process runs on (a task's worker, or a driver); None outside Ray."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    return ray.get_runtime_context().get_node_id()


def ray_running() -> bool:
    try:
        import ray
    except ImportError:
        return False
    return ray.is_initialized() or bool(os.environ.get("RAY_ADDRESS"))


# -- process pool plumbing: shared values reach each worker once, through the initializer ----------
_SHARED: dict[int, tuple] = {}
_TOKENS = itertools.count()


def _pool_init(token: int, shared: tuple) -> None:
    _SHARED[token] = shared


def _pool_call(fn: Callable, args: tuple, token: int):
    return fn(*args, *_SHARED.get(token, ()))


class Executor:
    """Runs tasks on one backend with at most ``workers`` running (and ``max_in_flight`` submitted)."""

    def __init__(self, backend: Backend = "inline", workers: int = 1, progress: bool = True,
                 max_in_flight: int | None = None, start_method: Literal["spawn", "fork"] = "spawn"):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.backend, self.workers = backend, max(1, int(workers))
        self.progress = progress
        self.max_in_flight = max(1, max_in_flight or (self.workers if backend != "ray" else 2 * self.workers))
        self.start_method = start_method

    @classmethod
    def auto(cls, workers: int, progress: bool = True, ray: bool | None = None, **kw) -> "Executor":
        """Ray when asked, or when a Ray is already running / RAY_ADDRESS is set; else inline for one
        worker and a process pool for more."""
        if ray or (ray is None and ray_running()):
            return cls("ray", workers, progress, **kw)
        return cls("inline" if workers <= 1 else "processes", workers, progress, **kw)

    def __repr__(self) -> str:
        return f"Executor({self.backend!r}, workers={self.workers})"

    # -- public API -----------------------------------------------------------------------------
    def start(self) -> "Executor":
        """Start the backend now (Ray: connect or start a local Ray), so that its start-up is not counted in
        the first step's time; the first map would do it anyway."""
        if self.backend == "ray":
            init_ray(self.workers)
        return self

    def imap(self, fn: Callable, tasks: Iterable[tuple], *, desc: str = "tasks", total: int | None = None,
             shared: tuple = (), resources: Resources | None = None) -> Iterator[Outcome]:
        """Outcomes in completion order (inline and threads: input order)."""
        from tqdm import tqdm

        if total is None and hasattr(tasks, "__len__"):
            total = len(tasks)  # type: ignore[arg-type]
        todo = ((i, tuple(t)) for i, t in enumerate(tasks))
        run = getattr(self, f"_{self.backend}")
        with tqdm(total=total, desc=desc, unit="task", disable=not self.progress) as bar:
            for out in run(fn, todo, shared, resources or Resources()):
                bar.update(1)
                yield out

    def map(self, fn: Callable, tasks: Iterable[tuple], *, desc: str = "tasks", shared: tuple = (),
            resources: Resources | None = None, on_error: Callable[[Outcome], None] | None = None) -> list:
        """Results in input order. A failed task is handed to ``on_error`` (its result is None), or,
        without one, raised as TaskError once every task has finished."""
        results: dict[int, Any] = {}
        failed: list[Outcome] = []
        for o in self.imap(fn, tasks, desc=desc, shared=shared, resources=resources):
            if o.ok:
                results[o.index] = o.result
            else:
                results[o.index] = None
                (on_error or failed.append)(o)
        if failed:
            first = failed[0]
            raise TaskError(f"{len(failed)} task(s) failed; first: {first.args[:1]}: {first.message()}") \
                from first.error
        return [results[i] for i in range(len(results))]

    # -- backends --------------------------------------------------------------------------------
    @staticmethod
    def _call(fn, i, args, shared) -> Outcome:
        try:
            return Outcome(i, args, fn(*args, *shared))
        except Exception as e:  # noqa: BLE001 - the one error path: reported, never swallowed
            return Outcome(i, args, error=e)

    def _inline(self, fn, todo, shared, res) -> Iterator[Outcome]:
        for i, args in todo:
            yield self._call(fn, i, args, shared)

    def _threads(self, fn, todo, shared, res) -> Iterator[Outcome]:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self.workers, thread_name_prefix="crawlmix") as ex:
            yield from self._window(todo, lambda i, a: ex.submit(self._call, fn, i, a, shared))

    def _processes(self, fn, todo, shared, res) -> Iterator[Outcome]:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, wait, FIRST_COMPLETED

        token = next(_TOKENS)
        init = {"initializer": _pool_init, "initargs": (token, shared)} if shared else {}
        if self.start_method == "fork":  # forked workers see the driver's memory: no pickling of shared
            _SHARED[token] = shared
            init = {}
        try:  # the driver's reference goes when the caller stops early or raises, too
            with ProcessPoolExecutor(self.workers, mp_context=mp.get_context(self.start_method), **init) as ex:
                pending: dict = {}
                todo = iter(todo)
                while True:
                    for i, args in itertools.islice(todo, max(0, self.max_in_flight - len(pending))):
                        pending[ex.submit(_pool_call, fn, args, token)] = (i, args)
                    if not pending:
                        break
                    done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
                    for fut in done:
                        i, args = pending.pop(fut)
                        try:
                            yield Outcome(i, args, fut.result())
                        except Exception as e:  # noqa: BLE001 - includes a worker that died (BrokenProcessPool)
                            yield Outcome(i, args, error=e)
        finally:
            _SHARED.pop(token, None)

    def _ray(self, fn, todo, shared, res) -> Iterator[Outcome]:
        ray = init_ray(self.workers)
        opts: dict = {"num_cpus": res.num_cpus, "num_gpus": res.num_gpus, "max_retries": res.max_retries}
        if res.memory:
            opts["memory"] = res.memory
        remote = ray.remote(**opts)(fn)
        refs = [ray.put(x) for x in shared]  # sent once; Ray resolves top-level refs in each call
        pending: dict = {}
        todo = iter(todo)
        while True:
            for i, args in itertools.islice(todo, max(0, self.max_in_flight - len(pending))):
                pending[remote.remote(*args, *refs)] = (i, args)
            if not pending:
                break
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                i, args = pending.pop(ref)
                try:
                    yield Outcome(i, args, ray.get(ref))
                except Exception as e:  # noqa: BLE001 - a RayTaskError carries the task's exception
                    yield Outcome(i, args, error=getattr(e, "cause", None) or e)

    def _window(self, todo, submit) -> Iterator[Outcome]:
        """Keep max_in_flight futures submitted; hand their outcomes back in input order."""
        from collections import deque

        q: deque = deque()
        for i, args in todo:
            q.append(submit(i, args))
            if len(q) >= self.max_in_flight:
                yield q.popleft().result()
        while q:
            yield q.popleft().result()
