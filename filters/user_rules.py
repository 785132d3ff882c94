"""User rules from the job YAML: keep a document only if a signal lies within [min, max].

    quality:
      rules:
        - {name: long_enough, signal: words, min: 100}
        - {name: not_listy, signal: bullet_lines_ratio, max: 0.5, languages: [en, de]}
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from .signals import SIGNAL_NAMES

EXTRA_SIGNALS = ("language_score",)


class UserRule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    signal: str
    min: float | None = None
    max: float | None = None
    languages: list[str] | None = None  # None: every language

    @field_validator("signal")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in SIGNAL_NAMES + EXTRA_SIGNALS:
            raise ValueError(f"unknown signal {v!r}; known: {', '.join(SIGNAL_NAMES + EXTRA_SIGNALS)}")
        return v

    @model_validator(mode="after")
    def _bounds(self):
        if self.min is None and self.max is None:
            raise ValueError(f"rule {self.name!r} needs min or max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"rule {self.name!r}: min {self.min} > max {self.max}")
        return self

    def check(self, s: dict, language: str) -> str | None:
        if self.languages is not None and language not in self.languages:
            return None
        v = s[self.signal]
        if (self.min is not None and v < self.min) or (self.max is not None and v > self.max):
            return self.name
        return None
