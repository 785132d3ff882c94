"""PII stage configuration: validated with pydantic, the bad field named in every error.

The ``pii:`` section of a job YAML; ``pipelines/pii.py --config`` (crawlmix/pii/job.py) also reads a YAML
holding these keys alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from crawlmix.runtime.config import StrictModel, load_section, validate

# Entity types with a fast path (cheap candidate scan, presidio on windows around the candidates).
PATTERN_ENTITIES = ("EMAIL_ADDRESS", "PHONE_NUMBER", "IP_ADDRESS", "CREDIT_CARD", "IBAN_CODE", "US_SSN")
# Entity types found by the NER model (only when one is configured and installed).
NER_ENTITIES = ("PERSON",)
EntityName = Literal["EMAIL_ADDRESS", "PHONE_NUMBER", "IP_ADDRESS", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "PERSON"]


class PiiConfig(StrictModel):
    enabled: bool = True
    entities: list[EntityName] = list(PATTERN_ENTITIES + NER_ENTITIES)
    # presidio's score after context enhancement. 0.3 keeps phone numbers (0.4), IPs (0.6), validated
    # e-mails / cards / IBANs (1.0) and SSNs written as 123-45-6789 (0.5), and drops presidio's
    # "very weak" SSN guesses (any 9-digit number, ZIP+4 codes: 0.05) unless a context word
    # ("ssn", "social security", ...) lifts them.
    score_threshold: float = Field(0.3, ge=0, le=1)
    # documents whose `language` is listed are scrubbed; None: every document. The pattern
    # recognizers are language-independent (presidio's English context words); NER runs only on
    # documents in the NER model's language.
    languages: list[str] | None = None
    # placeholder: "<EMAIL_ADDRESS>"; fake: a consistent fake value per original value (same value ->
    # same fake in the whole job), drawn from a small, obviously fake space keyed by `seed`.
    replacement: Literal["placeholder", "fake"] = "placeholder"
    seed: int = 0
    # other string columns to scrub the same way (e.g. url, detail of removed records); the `pii`
    # spans describe `text` only
    extra_columns: list[str] = []
    # spaCy NER pipeline for PERSON: an installed package name or a local directory. None: no NER
    # (PERSON is then not detected, and the stage says so in its log and stats.json).
    ner_model: str | None = None
    # fast path (default) or presidio on every character (the reference; ~100x slower)
    fast_path: bool = True
    # a window reaches back over the words presidio reads for context ("phone", "ssn", ...; its
    # enhancer's context_prefix_count non-stop words), but never further than this
    max_context_chars: int = Field(400, ge=0)
    # a whitespace-free run longer than this (base64, minified junk) is cut this far either side of a
    # candidate: presidio's e-mail pattern is quadratic on such runs.
    max_word_chars: int = Field(1000, ge=64)
    batch_chars: int = Field(200_000, gt=0)  # windows sent to spaCy per nlp.pipe call

    @field_validator("entities")
    @classmethod
    def _no_repeats(cls, v):
        if len(set(v)) != len(v):
            raise ValueError("entities listed twice")
        return v

    @property
    def pattern_entities(self) -> list[str]:
        return [e for e in self.entities if e in PATTERN_ENTITIES]


def parse_pii_config(raw: dict, where: str = "pii config", prefix: str = "") -> PiiConfig:
    return validate(PiiConfig, raw, where, "pii config", prefix)


def load_pii_config(path: str | Path | None = None) -> PiiConfig:
    """A YAML of PiiConfig keys, or a job YAML whose ``pii:`` section is read (its ``seed`` is the
    default seed). No path: the defaults."""
    return load_section(PiiConfig, path, "pii", "pii config")
