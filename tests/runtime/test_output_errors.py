"""A full disk, a read-only output or a refused write raises OutputError naming the output (not a bare
traceback), leaves no temporary file and no published output, and the same write works once the disk
has room (the run is resumable). The disks are real: a tiny tmpfs and a read-only tmpfs, mounted in a
private mount namespace (``unshare -m``) so nothing outside the test sees them."""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import subprocess
import sys

import pytest

from crawlmix.runtime.atomic import OutputError, atomic_path, exit_on_output_error, output_error, write_json
from tests.conftest import ROOT

PROBE = r'''
import json, os, sys
import pyarrow as pa
from crawlmix.runtime.atomic import OutputError, ParquetSink, exit_on_output_error, write_bytes, write_json, write_table
from crawlmix.runtime.completion import Completion

full, ro = sys.argv[1], sys.argv[2]
out = {}

def attempt(key, fn):
    try:
        fn()
        out[key] = "ok"
    except OutputError as e:
        out[key] = {"errno": e.errno, "filename": e.filename, "text": str(e)}

attempt("bytes", lambda: write_bytes(f"{full}/big.bin", b"x" * (2 << 20)))
table = pa.table({"id": [os.urandom(64).hex() for _ in range(40_000)]})
attempt("table", lambda: write_table(f"{full}/t.parquet", table, compression="none"))

def sink():
    s = ParquetSink(f"{full}/s.parquet", table.schema, compression="none", rows_per_group=5_000)
    for row in table.to_pylist():
        s.add(row)
    s.close()

attempt("sink", sink)
out["left_in_full"] = sorted(os.listdir(full))
attempt("json_ro", lambda: write_json(f"{ro}/sub/m.json", {"a": 1}))
attempt("marker_ro", lambda: Completion(ro, "h").mark("task"))

@exit_on_output_error
def main():
    write_bytes(f"{full}/again.bin", b"y" * (2 << 20))
    return 0

out["main_rc"] = main()
attempt("small_fits", lambda: write_bytes(f"{full}/small.bin", b"z" * 1000))  # room is left: the run goes on
out["left_after"] = sorted(os.listdir(full))
print(json.dumps(out))
'''


def test_disk_full_and_read_only_name_the_path(tmp_path):
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and `unshare -m` to mount a tiny and a read-only tmpfs")
    full, ro = tmp_path / "full", tmp_path / "ro"
    full.mkdir()
    ro.mkdir()
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    mount = 'mount -t tmpfs -o size=512k cmfull "$0" && mount -t tmpfs -o ro cmro "$1" && exec "$2" "$3" "$0" "$1"'
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", mount, str(full), str(ro),
                        sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    if r.returncode != 0 and "mount" in r.stderr and "permission denied" in r.stderr.lower():
        pytest.skip(f"cannot mount here: {r.stderr[-300:]}")
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    for key, name in (("bytes", "big.bin"), ("table", "t.parquet"), ("sink", "s.parquet")):
        e = got[key]
        assert e != "ok" and e["errno"] == errno.ENOSPC and e["filename"] == f"{full}/{name}", (key, e)
        assert e["text"].startswith(f"cannot write {full}/{name}: No space left on device"), e
    assert got["left_in_full"] == []  # nothing published, no .tmp left behind
    for key, path in (("json_ro", f"{ro}/sub/m.json"), ("marker_ro", f"{ro}/_tasks/task.json")):
        assert got[key]["errno"] == errno.EROFS and got[key]["filename"] == path, got[key]
    assert got["main_rc"] == 1 and f"error: cannot write {full}/again.bin: No space left on device" in r.stderr
    assert "Traceback" not in r.stderr
    assert got["small_fits"] == "ok" and got["left_after"] == ["small.bin"]


def test_an_input_error_inside_the_block_stays_the_inputs(tmp_path):
    """Only errors about the output become OutputError: a missing input read inside the block stays as it was."""
    with pytest.raises(FileNotFoundError) as e:
        with atomic_path(tmp_path / "out.bin") as tmp:
            tmp.write_bytes(b"part")
            open(tmp_path / "no-such-input")
    assert not isinstance(e.value, OutputError) and os.listdir(tmp_path) == []
    with pytest.raises(OutputError, match=r"cannot write .*out.bin: Permission denied \[EACCES\]"):
        with atomic_path(tmp_path / "out.bin") as tmp:
            raise PermissionError(errno.EACCES, "Permission denied", str(tmp))


def test_output_error_travels_between_processes(tmp_path):
    e = output_error(OSError("Error writing bytes to file. Detail: [errno 28] No space left on device"),
                     "s3://b/k.parquet", tmp_path / "staged")
    back = pickle.loads(pickle.dumps(e))  # (Ray and process pools pickle a task's exception)
    assert isinstance(back, OutputError) and back.errno == errno.ENOSPC and back.filename == "s3://b/k.parquet"
    assert str(back) == f"cannot write s3://b/k.parquet: No space left on device [ENOSPC] (staged in {tmp_path}/staged)"
    write_json(tmp_path / "ok.json", {"a": 1})  # the ordinary path is untouched
    assert exit_on_output_error(lambda: 7)() == 7
