"""The one executor: every backend gives the same results, one error path, bounded streaming submission."""

from __future__ import annotations

import os
import threading

import pytest

from crawlmix.runtime.executor import Executor, Resources, TaskError


def square_plus(x, k=0):
    return x * x + k


def fail_on_three(x):
    if x == 3:
        raise ValueError(f"bad input {x}")
    return x


def whoami(_):
    return os.getpid()


LOCAL = ["inline", "threads", "processes"]


@pytest.mark.parametrize("backend", LOCAL)
def test_results_in_input_order_with_shared(backend):
    ex = Executor(backend, 2, progress=False)
    assert ex.map(square_plus, [(i,) for i in range(20)], shared=(5,)) == [i * i + 5 for i in range(20)]


@pytest.mark.parametrize("backend", LOCAL)
def test_one_error_path(backend):
    ex = Executor(backend, 2, progress=False)
    failed = []
    res = ex.map(fail_on_three, [(i,) for i in range(6)], on_error=failed.append)
    assert res == [0, 1, 2, None, 4, 5]
    assert [(o.index, o.args) for o in failed] == [(3, (3,))]
    assert failed[0].message() == "ValueError: bad input 3"
    with pytest.raises(TaskError, match="1 task\\(s\\) failed.*bad input 3"):
        ex.map(fail_on_three, [(i,) for i in range(6)])


def test_processes_run_elsewhere_and_fork_sees_driver_memory():
    pids = set(Executor("processes", 2, progress=False).map(whoami, [(i,) for i in range(8)]))
    assert os.getpid() not in pids
    big = list(range(100_000))  # passed by fork, not pickled per task
    ex = Executor("processes", 2, progress=False, start_method="fork")
    assert ex.map(square_plus, [(1,), (2,)], shared=(len(big),)) == [100_001, 100_004]


def test_submission_is_streaming_and_bounded():
    drawn, running, peak = [], [0], [0]
    lock = threading.Lock()

    def tasks():
        for i in range(50):
            drawn.append(i)
            yield (i,)

    def work(i):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        # the executor may not have drawn more than max_in_flight tasks beyond the finished ones
        assert len(drawn) <= i + 1 + 3
        with lock:
            running[0] -= 1
        return i

    ex = Executor("threads", 3, progress=False, max_in_flight=3)
    assert [o.result for o in ex.imap(work, tasks())] == list(range(50))
    assert peak[0] <= 3


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="backend must be one of"):
        Executor("dask")


def test_auto_picks_local_backends_without_ray(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    import ray

    if ray.is_initialized():
        pytest.skip("a Ray is running in this test process")
    assert Executor.auto(1).backend == "inline"
    assert Executor.auto(2).backend == "processes"
    assert Executor.auto(2, ray=True).backend == "ray"


@pytest.mark.slow
def test_ray_backend_resources_errors_and_shared():
    import sys

    import ray

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import a test module
    ex = Executor("ray", 2, progress=False)
    failed = []
    assert ex.map(square_plus, [(i,) for i in range(6)], shared=(1,), resources=Resources(num_cpus=1)) == \
        [i * i + 1 for i in range(6)]
    assert ex.map(fail_on_three, [(i,) for i in range(5)], on_error=failed.append) == [0, 1, 2, None, 4]
    assert "bad input 3" in failed[0].message()
    pids = set(ex.map(whoami, [(i,) for i in range(4)]))
    assert os.getpid() not in pids


@pytest.mark.slow
def test_local_ray_workers_find_the_checkout_and_the_driver_env_stays_as_it_was(tmp_path):
    """A local Ray gets no runtime env (Ray would not use the workers it starts with the node): its workers
    inherit the checkout on PYTHONPATH from the driver while Ray starts, and afterwards the driver's own
    environment is as before, so the driver's later subprocesses do not see the checkout."""
    import json
    import subprocess
    import sys

    from tests.conftest import ROOT

    code = ("import json, os; from crawlmix.runtime.executor import init_ray, shutdown_ray\n"
            "ray = init_ray(1)\n"
            "worker = ray.get(ray.remote(lambda: os.environ.get('PYTHONPATH')).remote())\n"
            "print(json.dumps([os.environ.get('PYTHONPATH'), worker])); shutdown_ray()\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={**env, "RAY_AUTH_MODE": "token"},
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    driver, worker = json.loads(r.stdout.strip().splitlines()[-1])
    assert driver is None and worker.split(os.pathsep)[0] == str(ROOT)
