from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("CRAWLMIX_SHARED", ROOT.parent / "shared" / "data"))


def shared(rel: str) -> Path:
    """A file from ../shared/data, or skip the test saying which file is missing."""
    p = SHARED / rel
    if not p.exists():
        pytest.skip(f"shared data {p} not present (tests that need real Common Crawl data run only beside ../shared)")
    return p


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    from crawlmix.samples.crawl_sample import write_sample

    d = tmp_path_factory.mktemp("sample")
    write_sample(d)
    return d


@pytest.fixture(scope="session")
def manifest(sample_dir):
    import json

    return json.loads((sample_dir / "SAMPLE_MANIFEST.json").read_text())


# moto's S3 server on 127.0.0.1, once per session, for every folder's object-store tests (tests/cluster/conftest.py)
from tests.cluster.conftest import run_s3_server  # noqa: E402

s3_server = pytest.fixture(scope="session", name="s3_server")(run_s3_server)
