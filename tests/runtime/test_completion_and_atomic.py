"""Task markers carry the config hash and are written atomically; outputs appear only when complete."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crawlmix.runtime.atomic import ParquetSink, atomic_open, atomic_path, write_json
from crawlmix.runtime.completion import Completion
from crawlmix.runtime.config import ConfigError, StrictModel, load_section, validate


def test_marker_counts_only_for_the_same_config(tmp_path):
    a = Completion(tmp_path, "hash-a")
    assert a.get("t1") is None and not a.done("t1")
    a.mark("t1", {"rows": 3})
    assert a.get("t1") == {"rows": 3, "config_hash": "hash-a"}
    assert not Completion(tmp_path, "hash-b").done("t1")  # another config: redo
    (a.dir / "t2.json").write_text("{not json")  # a torn marker never counts
    assert not a.done("t2")
    assert a.finished() == ["t1", "t2"]
    a.clear()
    assert not a.done("t1")


def test_atomic_path_publishes_only_on_success(tmp_path):
    target = tmp_path / "sub" / "x.bin"
    with pytest.raises(RuntimeError):
        with atomic_open(target) as f:
            f.write(b"half")
            raise RuntimeError("killed")
    assert not target.exists() and list(target.parent.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"whole")
        assert not target.exists()
    assert target.read_bytes() == b"whole"
    write_json(tmp_path / "m.json", {"a": "ü"})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": "ü"}


def test_parquet_sink_streams_row_groups_and_appears_on_close(tmp_path):
    schema = pa.schema([("id", pa.string()), ("n", pa.int64())])
    sink = ParquetSink(tmp_path / "p.parquet", schema, {"config_hash": "abc"}, "zstd", rows_per_group=2)
    for i in range(5):
        sink.add({"id": str(i), "n": i})
    assert not (tmp_path / "p.parquet").exists()
    assert sink.close() == 5
    f = pq.ParquetFile(tmp_path / "p.parquet")
    assert f.metadata.num_row_groups == 3 and f.schema_arrow.metadata[b"config_hash"] == b"abc"
    assert f.read().column("n").to_pylist() == [0, 1, 2, 3, 4]


class Inner(StrictModel):
    size: int = 1


class Outer(StrictModel):
    seed: int = 0
    inner: Inner = Inner()


def test_config_base_names_the_field_and_digests(tmp_path):
    with pytest.raises(ConfigError, match=r"where: invalid thing\n  inner.sizez: unknown key"):
        validate(Outer, {"inner": {"sizez": 2}}, "where", "thing")
    with pytest.raises(ConfigError, match=r"inner.size: Input should be a valid integer.*\(got 'big'\)"):
        validate(Outer, {"inner": {"size": "big"}}, "where")
    assert Outer().digest() == Outer(inner=Inner(size=1)).digest() != Outer(seed=1).digest()
    job = tmp_path / "job.yaml"
    job.write_text("seed: 7\nsec:\n  inner: {size: 3}\n")
    got = load_section(Outer, job, "sec", "outer config")
    assert got.seed == 7 and got.inner.size == 3  # the job's seed is the section's default
    job.write_text("sec:\n  inner: {size: x}\n")
    with pytest.raises(ConfigError, match=r"sec.inner.size"):
        load_section(Outer, job, "sec", "outer config")
