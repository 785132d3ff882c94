"""What the PII stage finds, puts in its place and counts: detected spans and their union, the fake
values that can replace them, the Arrow type of the `pii` column, and the per-file counts (never a
piece of the original text)."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, NamedTuple

import pyarrow as pa


class Span(NamedTuple):
    type: str
    start: int
    end: int
    score: float = 1.0


_SUMS = ("docs", "docs_scrubbed", "docs_with_pii", "skipped_language", "chars", "chars_analyzed", "windows",
         "seconds")  # PiiStats' numeric fields, summed over files


@dataclass
class PiiStats:
    """Counts only: never a piece of the original text."""

    docs: int = 0
    docs_scrubbed: int = 0
    docs_with_pii: int = 0
    skipped_language: int = 0
    errors: Counter = field(default_factory=Counter)
    replacements: Counter = field(default_factory=Counter)
    chars: int = 0
    chars_analyzed: int = 0  # characters presidio looked at (windows), the rest was only scanned
    windows: int = 0
    seconds: float = 0.0

    def add(self, other: "PiiStats") -> None:
        for k in _SUMS:
            setattr(self, k, getattr(self, k) + getattr(other, k))
        self.errors.update(other.errors)
        self.replacements.update(other.replacements)

    def to_dict(self) -> dict:
        return {"docs": self.docs, "docs_scrubbed": self.docs_scrubbed, "docs_with_pii": self.docs_with_pii,
                "skipped_language": self.skipped_language, "errors": dict(sorted(self.errors.items())),
                "replacements": dict(sorted(self.replacements.items())),
                "replacements_total": sum(self.replacements.values()), "chars": self.chars,
                "chars_analyzed": self.chars_analyzed,
                "analyzed_frac": round(self.chars_analyzed / self.chars, 4) if self.chars else 0.0,
                "windows": self.windows, "seconds": round(self.seconds, 3)}

    @classmethod
    def from_dict(cls, d: dict) -> "PiiStats":
        """The inverse of to_dict (the derived totals are recomputed)."""
        s = cls(**{k: d[k] for k in _SUMS})
        s.errors.update(d["errors"])
        s.replacements.update(d["replacements"])
        return s


# --------------------------------------------------------------------------------------------------
# Fake values: consistent (same value -> same fake for a seed), from small, obviously fake spaces

_FIRST = ("Alex", "Sam", "Robin", "Jordan", "Taylor", "Morgan", "Casey", "Jamie", "Riley", "Avery")
_LAST = ("Smith", "Jones", "Garcia", "Miller", "Davis", "Lopez", "Wilson", "Moore", "Clark", "Lewis")


def _luhn_complete(digits: str) -> str:
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d) * (2 if i % 2 == 0 else 1)
        total += n - 9 if n > 9 else n
    return digits + str((10 - total % 10) % 10)


def fake_value(kind: str, value: str, seed: int) -> str:
    h = int.from_bytes(hashlib.blake2b(f"{kind}\0{value}".encode("utf-8", "surrogatepass"), digest_size=8,
                                       key=str(seed).encode()).digest(), "big")
    n = h % 10_000
    if kind == "EMAIL_ADDRESS":
        return f"user{n:04d}@example.com"
    if kind == "PHONE_NUMBER":
        return f"555-01{n % 100:02d}"  # 555-0100..0199: reserved for fiction
    if kind == "IP_ADDRESS":
        return f"2001:db8::{n:x}" if ":" in value else f"192.0.2.{n % 254 + 1}"  # documentation ranges
    if kind == "CREDIT_CARD":
        d = _luhn_complete(f"400000000{n % 1_000_000:06d}")
        return f"{d[:4]} {d[4:8]} {d[8:12]} {d[12:]}"
    if kind == "IBAN_CODE":
        return f"XX00 0000 0000 {n:04d}"  # no such country
    if kind == "US_SSN":
        return f"000-00-{n:04d}"  # area 000 is never issued
    if kind == "PERSON":
        return f"{_FIRST[n % 10]} {_LAST[(n // 10) % 10]}"
    return f"<{kind}_{n:04d}>"


# --------------------------------------------------------------------------------------------------
# Detections -> the regions that are replaced


def merge_spans(spans: Iterable[Span]) -> list[Span]:
    """Overlapping detections -> non-overlapping regions (their union), each typed by its best
    detection: highest score, then longest, then type name (deterministic)."""
    out: list[Span] = []
    group: list[Span] = []
    end = -1
    for s in sorted(spans, key=lambda x: (x.start, -x.end)):
        if group and s.start >= end:
            out.append(_region(group, end))
            group = []
        group.append(s)
        end = max(end, s.end) if len(group) > 1 else s.end
    if group:
        out.append(_region(group, end))
    return out


def _region(group: list[Span], end: int) -> Span:
    best = max(group, key=lambda x: (x.score, x.end - x.start, x.type))
    return Span(best.type, group[0].start, end, best.score)


# the `pii` column: the replaced regions of the original text
PII_TYPE = pa.list_(pa.struct([("type", pa.string()), ("start", pa.int64()), ("end", pa.int64())]))
