"""Run a function over many argument tuples on Ray (local or cluster), bounded and with a progress bar."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def init_ray(workers: int):
    import ray

    if ray.is_initialized():
        return ray
    address = os.environ.get("RAY_ADDRESS")
    if address:  # inside `ray job submit`, or pointed at a cluster
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=True,
                 runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    return ray


def parallel_map(fn, arg_tuples: list[tuple], workers: int, desc: str, progress: bool = True,
                 on_error=None) -> list:
    """fn(*args) for each tuple, at most `workers` at a time, results in input order.

    With workers == 1 and no Ray running, runs inline (no Ray start-up for small jobs and tests).
    A task that raises is passed to on_error(args, exc) when given (its result is None), else re-raised.
    """
    from tqdm import tqdm

    bar = tqdm(total=len(arg_tuples), desc=desc, unit="task", disable=not progress)
    results: list = [None] * len(arg_tuples)

    def collect(i, args, get):
        try:
            results[i] = get()
        except Exception as e:  # noqa: BLE001
            if on_error is None:
                raise
            on_error(args, e)
        bar.update(1)

    try:
        import ray

        inline = workers <= 1 and not ray.is_initialized() and not os.environ.get("RAY_ADDRESS")
    except ImportError:
        inline = True
    if inline:
        for i, args in enumerate(arg_tuples):
            collect(i, args, lambda: fn(*args))
    else:
        ray = init_ray(workers)
        remote = ray.remote(num_cpus=1, max_retries=1)(fn)
        pending, todo = {}, list(enumerate(arg_tuples))
        while todo or pending:
            while todo and len(pending) < workers:
                i, args = todo.pop(0)
                pending[remote.remote(*args)] = (i, args)
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                i, args = pending.pop(ref)
                collect(i, args, lambda: ray.get(ref))
    bar.close()
    return results
