"""Driver (RAY_ADDRESS): the byte-range tasks of every WARC under an s3:// glob, run on the worker nodes;
each reads its range from S3 and publishes its pages (id, url, offset, a digest of the HTML) as Parquet
under the output URL, named by the task (``NAME@START-END``). Prints the task names and the nodes used.

    python tests/cluster/driver_split.py 's3://bucket/in/*.warc.gz' s3://bucket/pages SPLIT_BYTES
"""

from __future__ import annotations

import json
import sys

from crawlmix.io.paths import iter_tasks
from crawlmix.runtime.executor import Executor, init_ray


def read_span(path: str, start: int, end: int | None, name: str, out: str) -> dict:
    import hashlib

    import pyarrow as pa
    import ray

    from crawlmix.io.warc import iter_pages
    from crawlmix.runtime import storage
    from crawlmix.runtime.atomic import ParquetSink

    schema = pa.schema([("id", pa.string()), ("url", pa.string()), ("offset", pa.int64()), ("html", pa.string())])
    sink = ParquetSink(storage.join(out, f"{name}.parquet"), schema)
    for p in iter_pages(path, lambda *a, **k: None, start=start, end=end):
        sink.add({"id": p.id, "url": p.url, "offset": p.offset, "html": hashlib.md5(p.html.encode()).hexdigest()})
    return {"task": name, "rows": sink.close(), "node": ray.get_runtime_context().get_node_id()}


def main() -> None:
    pattern, out, split = sys.argv[1], sys.argv[2], int(sys.argv[3])
    init_ray()
    tasks = [(s.path, s.start, s.end, s.name, out) for s in iter_tasks([pattern], split)]
    done = list(Executor("ray", 2, progress=False).map(read_span, tasks, desc="split"))
    print(json.dumps({"tasks": [d["task"] for d in done], "nodes": sorted({d["node"] for d in done}),
                      "rows": sum(d["rows"] for d in done)}))


if __name__ == "__main__":
    main()
