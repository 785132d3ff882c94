"""C4 quality (Raffel et al. 2020) over signals; datatrove's C4QualityFilter defaults.

The line-level switches change which lines are kept, so they are measurement parameters
(see ``signals.c4_lines``); the document-level switches are rules here.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class C4Quality(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    # line filters (measurement parameters)
    remove_citations: bool = True
    filter_no_terminal_punct: bool = True
    min_words_per_line: int = Field(3, ge=-1)
    max_word_length: int = Field(1000, ge=-1)
    filter_javascript: bool = True
    filter_policy: bool = True
    # document rules
    min_num_sentences: int = Field(5, ge=-1)
    filter_lorem_ipsum: bool = True
    filter_curly_bracket: bool = True

    def check(self, s: dict) -> str | None:
        hits = []
        if self.filter_lorem_ipsum and s["c4_lorem_ipsum_line"] >= 0:
            hits.append((s["c4_lorem_ipsum_line"], 0, "lorem_ipsum"))
        if self.filter_curly_bracket and s["c4_curly_bracket_line"] >= 0:
            hits.append((s["c4_curly_bracket_line"], 1, "curly_bracket"))
        if hits:
            return min(hits)[2]
        if s["c4_sentences"] < self.min_num_sentences:
            return "too_few_sentences"
        return None
