"""Driver (RAY_ADDRESS): one task pinned to each worker node checks that the node's scratch folder is its
own (a file the head wrote there is absent; the folder is a tmpfs of that node) and that s3:// works from
it (reads the driver's object, publishes one of its own). Prints one JSON line for the test to check.

    python tests/cluster/driver_nodes.py s3://bucket/prefix
"""

from __future__ import annotations

import json
import os
import sys
import time

from crawlmix.runtime import storage
from crawlmix.runtime.atomic import write_text
from crawlmix.runtime.executor import init_ray

WORKERS = ("cm_w0", "cm_w1")


def wait_for_nodes(ray, n: int, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while sum(node["Alive"] for node in ray.nodes()) < n:
        if time.monotonic() > end:
            raise SystemExit(f"only {ray.nodes()} joined")
        time.sleep(0.2)


def scratch_fstype(folder: str) -> str | None:
    """The file system mounted exactly at ``folder`` in this process's mount namespace (None: not a mount)."""
    for line in open("/proc/self/mountinfo"):
        f = line.split()
        if f[4] == folder:
            return f[f.index("-") + 1]
    return None


def probe(head_file: str, base: str) -> dict:
    import ray

    from crawlmix.runtime.atomic import write_json

    node = ray.get_runtime_context().get_node_id()
    scratch = storage.local_scratch()
    (storage.local_scratch("probe") / "worker.txt").write_text(node)
    text = storage.read_text(storage.join(base, "in", "hello.txt"))
    write_json(storage.join(base, "out", f"{node}.json"), {"node": node, "read": text})
    return {"node": node, "sees_head_file": os.path.exists(head_file), "scratch": str(scratch),
            "scratch_fs": scratch_fstype(str(scratch)), "staging_left": os.listdir(storage.local_scratch("staging"))}


def main() -> None:
    base = sys.argv[1]
    ray = init_ray()
    wait_for_nodes(ray, 1 + len(WORKERS))
    scratch = storage.local_scratch()
    head_file = str(scratch / "head-only.txt")
    open(head_file, "w").write("written on the head")
    write_text(storage.join(base, "in", "hello.txt"), "hello from the driver")
    refs = [ray.remote(num_cpus=1, resources={r: 1}, max_retries=0)(probe).remote(head_file, base) for r in WORKERS]
    workers = ray.get(refs)
    print(json.dumps({"head": ray.get_runtime_context().get_node_id(), "workers": workers,
                      "head_scratch": sorted(os.listdir(scratch)), "head_scratch_fs": scratch_fstype(str(scratch)),
                      "outputs": sorted(storage.name(p) for p in storage.ls(storage.join(base, "out")))}))


if __name__ == "__main__":
    main()
