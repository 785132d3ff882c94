"""Gopher repetition rules (Rae et al. 2021, table A1) over signals; datatrove's defaults."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from .signals import DUP_NGRAMS, TOP_NGRAMS


class GopherRepetition(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    dup_line_frac: float | None = Field(0.3, ge=0, le=1)
    dup_para_frac: float | None = Field(0.3, ge=0, le=1)
    dup_line_char_frac: float | None = Field(0.2, ge=0, le=1)
    dup_para_char_frac: float | None = Field(0.2, ge=0, le=1)
    top_n_grams: dict[int, float] = {2: 0.2, 3: 0.18, 4: 0.16}
    dup_n_grams: dict[int, float] = {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}

    def check(self, s: dict) -> str | None:
        """First failing reason in datatrove's order, or None. A falsy threshold disables a check."""
        if s["chars"] == 0:
            return "empty"
        for name in ("dup_para_frac", "dup_para_char_frac", "dup_line_frac", "dup_line_char_frac"):
            thr = getattr(self, name)
            if thr and s[name] > thr:
                return name
        for n, thr in self.top_n_grams.items():
            if s[f"top_{n}_gram_char_frac"] > thr:
                return f"top_{n}_gram"
        for n, thr in self.dup_n_grams.items():
            if s[f"dup_{n}_gram_char_frac"] > thr:
                return f"duplicated_{n}_n_grams"
        return None

    def model_post_init(self, _ctx) -> None:
        bad = [n for n in self.top_n_grams if n not in TOP_NGRAMS] + [n for n in self.dup_n_grams if n not in DUP_NGRAMS]
        if bad:
            raise ValueError(f"n-gram sizes {bad} are not measured; top_n_grams takes {TOP_NGRAMS}, dup_n_grams {DUP_NGRAMS}")
