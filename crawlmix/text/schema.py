"""The Parquet schemas of a crawl's outputs: curated/ (kept documents) and removed/ (every drop)."""

from __future__ import annotations

import pyarrow as pa

from crawlmix.filters.signals import SIGNAL_NAMES

_INT_SIGNALS = {"chars", "paragraphs", "words", "non_symbol_words", "lines", "stop_words", "c4_sentences",
                "c4_lorem_ipsum_line", "c4_curly_bracket_line", "c4_kept_lines", "fw_lines"}

CURATED_SCHEMA = pa.schema(
    [("id", pa.string()), ("url", pa.string()), ("text", pa.string()), ("language", pa.string()),
     ("language_score", pa.float64()), ("date", pa.string()), ("source", pa.string()), ("offset", pa.int64()),
     ("charset", pa.string()), ("cc_languages", pa.string()), ("extractor", pa.string())]
    + [(n, pa.int64() if n in _INT_SIGNALS else pa.float64()) for n in SIGNAL_NAMES]
)
REMOVED_SCHEMA = pa.schema(
    [("id", pa.string()), ("url", pa.string()), ("stage", pa.string()), ("reason", pa.string()),
     ("detail", pa.string()), ("source", pa.string()), ("offset", pa.int64()), ("language", pa.string()),
     ("language_score", pa.float64()), ("cc_languages", pa.string()), ("duplicate_of", pa.string())]
)
