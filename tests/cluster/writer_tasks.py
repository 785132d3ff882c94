"""A task loop like a stage's: for each of N tasks not yet done, publish its output object, then its
completion marker (last). Killed and rerun by tests/cluster/test_s3_storage.py.

    python tests/cluster/writer_tasks.py s3://bucket/run N SIZE
"""

from __future__ import annotations

import hashlib
import sys

from crawlmix.runtime import storage
from crawlmix.runtime.atomic import write_bytes
from crawlmix.runtime.completion import Completion


def payload(name: str, size: int) -> bytes:
    block = hashlib.sha256(name.encode()).digest()
    return (block * (size // len(block) + 1))[:size]


def main() -> None:
    base, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    done = Completion(base, "writer-v1")
    for i in range(n):
        name = f"t{i:03d}"
        if done.done(name):
            continue
        data = payload(name, size)
        write_bytes(storage.join(base, "out", f"{name}.bin"), data)
        done.mark(name, {"md5": hashlib.md5(data).hexdigest(), "size": size})
        print(name, flush=True)


if __name__ == "__main__":
    main()
