"""A bad job YAML fails before any work, naming the field."""

import subprocess
import sys

import pytest

from crawlmix.crawl.config import load_job
from crawlmix.runtime.config import ConfigError
from tests.conftest import ROOT


def _write(tmp_path, text):
    p = tmp_path / "job.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text, field, words", [
    ("quality:\n  gopher_quality:\n    min_doc_wordz: 10\n", "quality.gopher_quality.min_doc_wordz", "unknown key"),
    ("langid:\n  threshold: high\n", "langid.threshold", "valid number"),
    ("langid:\n  threshold: 1.5\n", "langid.threshold", "less than or equal to 1"),
    ("quality:\n  fineweb_quality:\n    line_punct_thr: -0.1\n", "quality.fineweb_quality.line_punct_thr", "greater than"),
    ("extract:\n  engine: magic\n", "extract.engine", "'resiliparse' or 'trafilatura'"),
    ("extract:\n  skip_elements: [header, 'div[[']\n", "extract.skip_elements", "not a CSS selector"),
    ("quality:\n  rules:\n    - {name: r, signal: nosuch, min: 1}\n", "quality.rules.0.signal", "unknown signal"),
    ("quality:\n  rules:\n    - {name: r, signal: words}\n", "quality.rules.0", "needs min or max"),
    ("[1, 2]\n", "top level", "mapping"),
])
def test_bad_field_is_named(tmp_path, text, field, words):
    with pytest.raises(ConfigError) as e:
        load_job(_write(tmp_path, text))
    msg = str(e.value)
    assert field in msg and words in msg, msg
    assert str(tmp_path / "job.yaml") in msg


def test_shipped_jobs_load():
    from crawlmix.images.config import load_images_job
    from crawlmix.interleaved.config import load_interleaved_job

    stages = {"images.yaml": load_images_job, "interleaved.yaml": load_interleaved_job}  # a stage's own job
    for p in sorted((ROOT / "jobs").glob("*.yaml")):
        load = stages.get(p.name, load_job)
        assert load(p).digest() == load(p).digest()


def test_crawl_fails_before_work(tmp_path):
    bad = _write(tmp_path, "quality:\n  c4_quality:\n    min_num_sentences: many\n")
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, str(ROOT / "pipelines" / "crawl.py"), "--config", str(bad), "--output", str(out),
                        "--input", str(bad)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "quality.c4_quality.min_num_sentences" in r.stderr
    assert not out.exists()  # nothing started


def test_help_on_every_entry_point():
    scripts = sorted((ROOT / "pipelines").glob("*.py"))
    assert len(scripts) >= 15
    for script in scripts:
        r = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and "usage:" in r.stdout, (script, r.stderr[-500:])
