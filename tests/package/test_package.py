"""The package's shape: import layers, declared dependencies, one runtime, small modules, a wheel that works."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT

BIN = Path(sys.executable).parent
PKG = ROOT / "crawlmix"
MAX_LINES = 400


def _modules():
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def test_import_layers_hold():
    r = subprocess.run([str(BIN / "lint-imports")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "0 broken" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]


def test_every_script_compiles():
    """bench/ and pipelines/ are not imported by the tests: at least they must compile."""
    scripts = sorted((ROOT / "bench").glob("*.py")) + sorted((ROOT / "pipelines").glob("*.py"))
    assert len(scripts) > 20
    for p in scripts:
        compile(p.read_text(), str(p), "exec")


def test_no_import_cycles():
    """No module imports itself back through others (imports only for type checking left out)."""
    import grimp

    g = grimp.build_graph("crawlmix", exclude_type_checking_imports=True)
    cycles = []
    for m in sorted(g.modules):
        for dep in g.find_modules_directly_imported_by(m):
            if dep != m and g.chain_exists(importer=dep, imported=m):
                cycles.append((m, dep))
    assert not cycles, f"import cycles: {cycles[:10]}"


def test_every_import_is_declared():
    r = subprocess.run([str(BIN / "deptry"), "."], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


def test_no_module_is_too_long_and_none_edits_sys_path():
    mods = _modules()
    assert len(mods) > 40
    long = {str(p.relative_to(ROOT)): n for p in mods if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"
    edits = [str(p.relative_to(ROOT)) for p in mods if "sys.path" in p.read_text()]
    assert not edits, f"sys.path edited inside crawlmix/: {edits}"


@pytest.mark.parametrize("pattern", [r"\bray\.init\(", r"ProcessPoolExecutor|multiprocessing\.Pool\(",
                                     r"\bos\.replace\(", r"\bThreadPoolExecutor\("])
def test_runtime_is_the_only_executor_and_writer(pattern):
    allowed = {PKG / "runtime"}
    if "ThreadPool" in pattern:
        allowed.add(PKG / "mix" / "write.py")  # one background thread overlaps a shard's md5 + writes
    found = [str(p.relative_to(ROOT)) for p in _modules()
             if re.search(pattern, p.read_text()) and not any(p == a or a in p.parents for a in allowed)]
    assert not found, f"{pattern} outside crawlmix/runtime: {found}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_checkout(tmp_path):
    """Build the wheel, install it into a fresh venv in a folder outside the checkout, then run the console
    scripts there: crawl the bundled sample, build a mix from a shipped mixture, serve the dashboard.

    The fresh venv borrows the project venv's third-party packages through a path entry (so the test needs
    no downloads besides the build backend); crawlmix itself comes only from the wheel."""
    wheels = tmp_path / "wheels"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # third-party packages only: a plain path line does not run the project venv's .pth files (its
    # editable crawlmix finder), and the wheel's crawlmix comes first on the path
    (site / "zz_project_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # (no PYTHONPATH: a checkout on it holds crawlmix.egg-info, and pip would take crawlmix as installed)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", *map(str, wheels.glob("*.whl"))],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (site / "crawlmix" / "filters" / "signals.py").is_file()
    assert not (site / "pipelines").exists() and not (site / "filters").exists()
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run([str(py), "-c", "import crawlmix; print(crawlmix.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(site)), where

    crawl = subprocess.run([str(venv / "bin" / "crawlmix-crawl"), "--no-progress", "--workers", "2"], cwd=work,
                           env=env, capture_output=True, text=True, timeout=900)
    assert crawl.returncode == 0, crawl.stdout[-2000:] + crawl.stderr[-3000:]
    assert "kept languages" in crawl.stdout
    stats = json.loads((work / "output" / "default" / "stats.json").read_text())
    assert stats["docs_out"] > 10 and stats["failed_tasks"] == [] and (work / "sample" / "sample.warc.gz").exists()

    mix = subprocess.run([str(venv / "bin" / "crawlmix-mix"), "--no-progress", "--mixture",
                          "mixtures/text-pretrain.yaml", "--output", "mix"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=900)
    assert mix.returncode == 0, mix.stdout[-2000:] + mix.stderr[-3000:]
    assert list((work / "mix" / "pretrain").glob("shard-*.tar"))

    port = _free_port()
    dash = subprocess.Popen([str(venv / "bin" / "crawlmix-dashboard"), "--root", str(work), "--port", str(port)],
                            cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        page = js = b""
        end = time.monotonic() + 60
        while time.monotonic() < end and not page:
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read()
                js = urllib.request.urlopen(f"http://127.0.0.1:{port}/app.js", timeout=5).read()
            except OSError:
                assert dash.poll() is None, dash.stdout.read().decode()[-2000:]
                time.sleep(0.3)
        assert b"<html" in page.lower() and len(js) > 1000
    finally:
        dash.terminate()
        dash.wait(timeout=30)
