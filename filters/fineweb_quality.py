"""FineWeb quality rules (Penedo et al. 2024) over signals; datatrove's defaults."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class FineWebQuality(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    line_punct_thr: float = Field(0.12, ge=0, le=1)
    line_punct_exclude_zero: bool = False
    short_line_thr: float = Field(0.67, ge=0, le=1)
    short_line_length: int = Field(30, ge=0)  # measurement parameter
    char_duplicates_ratio: float = Field(0.01, ge=0, le=1)
    new_line_ratio: float = Field(0.3, ge=0)

    def check(self, s: dict) -> str | None:
        if s["fw_lines"] == 0:
            return "empty"
        r = s["line_punct_ratio"]
        if r < self.line_punct_thr and not (r == 0 and self.line_punct_exclude_zero):
            return "line_punct_ratio"
        if s["short_line_ratio"] > self.short_line_thr:
            return "short_line_ratio"
        if s["char_dup_ratio"] > self.char_duplicates_ratio:
            return "char_dup_ratio"
        if s["list_ratio"] > self.new_line_ratio:
            return "list_ratio"
        return None
