"""Dedup config (the ``dedup:`` section of a job YAML)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from crawlmix.runtime.config import StrictModel


class DedupConfig(StrictModel):
    """Exact (normalised content + URL) and MinHash-LSH near-duplicate removal across all inputs."""

    enabled: bool = True
    exact: bool = True
    minhash: bool = True
    n_grams: int = Field(5, ge=1, le=32)
    threshold: float = Field(0.7, gt=0, le=1)  # target Jaccard; candidates are verified against it
    num_perm: int = Field(128, ge=8, le=1024)  # used when bands/rows are not given
    bands: int | None = Field(None, ge=1)
    rows: int | None = Field(None, ge=1)
    verify: bool = True  # drop LSH candidates whose signature similarity is below threshold
    seed: int = 1

    def lsh_params(self) -> tuple[int, int]:
        """(bands, rows): as given, or datasketch's optimum for the threshold and num_perm."""
        if self.bands and self.rows:
            return self.bands, self.rows
        if self.bands or self.rows:
            raise ValueError("dedup: give both bands and rows, or neither")
        return _optimal_lsh(self.threshold, self.num_perm)


@lru_cache(maxsize=32)
def _optimal_lsh(threshold: float, num_perm: int) -> tuple[int, int]:
    """datasketch's optimum (a numerical integration per (bands, rows) pair, ~11 ms): once per process."""
    from datasketch.lsh import _optimal_param

    return _optimal_param(threshold, num_perm, 0.5, 0.5)
