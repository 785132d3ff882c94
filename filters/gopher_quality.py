"""Gopher quality rules (Rae et al. 2021) over signals; datatrove's defaults."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from .signals import GOPHER_STOP_WORDS


class GopherQuality(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    min_doc_words: int | None = Field(50, ge=0)
    max_doc_words: int | None = Field(100_000, ge=0)
    min_avg_word_length: float | None = Field(3, ge=0)
    max_avg_word_length: float | None = Field(10, ge=0)
    max_symbol_word_ratio: float | None = Field(0.1, ge=0)
    max_bullet_lines_ratio: float | None = Field(0.9, ge=0, le=1)
    max_ellipsis_lines_ratio: float | None = Field(0.3, ge=0, le=1)
    max_non_alpha_words_ratio: float | None = Field(0.8, ge=0, le=1)  # datatrove's name: min share of alpha words
    min_stop_words: int | None = Field(2, ge=0)
    stop_words: list[str] = list(GOPHER_STOP_WORDS)

    def check(self, s: dict) -> str | None:
        if self.min_doc_words and s["non_symbol_words"] < self.min_doc_words:
            return "gopher_short_doc"
        if self.max_doc_words and s["non_symbol_words"] > self.max_doc_words:
            return "gopher_long_doc"
        if self.min_avg_word_length and s["avg_word_length"] < self.min_avg_word_length:
            return "gopher_below_avg_threshold"
        if self.max_avg_word_length and s["avg_word_length"] > self.max_avg_word_length:
            return "gopher_above_avg_threshold"
        if self.max_symbol_word_ratio and s["hash_word_ratio"] > self.max_symbol_word_ratio:
            return "gopher_too_many_hashes"
        if self.max_symbol_word_ratio and s["ellipsis_word_ratio"] > self.max_symbol_word_ratio:
            return "gopher_too_many_ellipsis"
        if self.max_bullet_lines_ratio and s["bullet_lines_ratio"] > self.max_bullet_lines_ratio:
            return "gopher_too_many_bullets"
        if self.max_ellipsis_lines_ratio and s["end_ellipsis_lines_ratio"] > self.max_ellipsis_lines_ratio:
            return "gopher_too_many_end_ellipsis"
        if self.max_non_alpha_words_ratio and s["alpha_words_ratio"] < self.max_non_alpha_words_ratio:
            return "gopher_below_alpha_threshold"
        if self.min_stop_words and s["stop_words"] < self.min_stop_words:
            return "gopher_enough_stop_words"
        return None
