#!/usr/bin/env python3
"""Entry point: runs crawlmix.interleaved.job.main (`--help` for its options)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from crawlmix.interleaved.job import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
