"""Quality stage: signals once per document, then Gopher / C4 / FineWeb / user rules over them.

Rules run in FineWeb's order (Gopher repetition, Gopher quality, C4, FineWeb, then user rules);
the first failing rule names the drop reason, as datatrove's pipeline would report it.
The built-in rules apply to ``quality.languages`` (English by default, their tuning);
user rules choose their own languages.
"""

from __future__ import annotations

from crawlmix.filters.signals import compute
from crawlmix.text.config import QualityConfig


class Quality:
    def __init__(self, cfg: QualityConfig):
        self.cfg = cfg
        self.params = cfg.signal_params()
        self.rules = [(name, r) for name, r in (
            ("gopher_repetition", cfg.gopher_repetition), ("gopher_quality", cfg.gopher_quality),
            ("c4_quality", cfg.c4_quality), ("fineweb_quality", cfg.fineweb_quality)) if r.enabled]

    def __call__(self, text: str, language: str, language_score: float) -> tuple[dict, str, str | None, str | None]:
        """(signals, output text, failing rule set, reason) for one document."""
        signals, out = compute(text, self.params)
        signals["language_score"] = language_score
        if not self.cfg.enabled:
            return signals, text, None, None
        if self.cfg.languages is None or language in self.cfg.languages:
            for name, rule in self.rules:
                why = rule.check(signals)
                if why:
                    return signals, out, name, why
        else:
            out = text  # built-in rules (and C4's line removal) not applied to this language
        for rule in self.cfg.rules:
            why = rule.check(signals, language)
            if why:
                return signals, out, "user_rules", why
        return signals, out, None, None
