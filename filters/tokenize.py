"""Word and sentence splitting that reproduces datatrove's English tokenisation, fast.

datatrove splits English words with ``spacy.blank("en")`` (plus a sentencizer) on every
call. spaCy's tokenizer works on whitespace-delimited chunks independently, so the words
of a text are the concatenation of the tokens of its chunks. We memoise per chunk and send
only unseen chunks to spaCy, in one call per document. Sentence counts replay spaCy's
Sentencizer rule over the same tokens.

``tests/test_datatrove_parity.py`` checks both against datatrove on real pages.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

_GAPS = re.compile(r"(\s+)")
_CACHE_LIMIT = 1_000_000  # chunks (~150 MB per worker at most); cleared when full
_VOCAB_LIMIT = 2_000_000  # spaCy lexemes before the pipeline is rebuilt (its vocab only grows)


@lru_cache(maxsize=None)
def _sentence_punct() -> frozenset[str]:
    from spacy.pipeline.sentencizer import Sentencizer

    return frozenset(Sentencizer.default_punct_chars)


@lru_cache(maxsize=200_000)
def _is_punct(token: str) -> bool:  # spacy.lang.lex_attrs.is_punct
    return all(unicodedata.category(c).startswith("P") for c in token)


class WordSplitter:
    """Per-worker, memoised, spaCy-compatible word splitter for one language."""

    def __init__(self, language: str = "en"):
        self.language = language
        self._nlp = None
        self._cache: dict[str, tuple[str, ...]] = {}

    @property
    def nlp(self):
        if self._nlp is None or len(self._nlp.vocab) > _VOCAB_LIMIT:
            import spacy

            self._nlp = spacy.blank(self.language)
        return self._nlp

    def _fill(self, chunks: list[str]) -> None:
        """Tokenise unseen chunks in one spaCy call and cache their tokens."""
        if len(self._cache) + len(chunks) > _CACHE_LIMIT:
            self._cache.clear()
        joined = " ".join(chunks)
        nlp = self.nlp
        nlp.max_length = max(nlp.max_length, len(joined) + 10)
        starts, pos = [], 0
        for c in chunks:
            starts.append(pos)
            pos += len(c) + 1
        out: list[list[str]] = [[] for _ in chunks]
        k = 0
        for tok in nlp.tokenizer(joined):
            while k + 1 < len(starts) and tok.idx >= starts[k + 1]:
                k += 1
            s = tok.text.strip()
            if s:
                out[k].append(s)
        for c, toks in zip(chunks, out):
            self._cache[c] = tuple(toks)

    def _tokens(self, chunks: list[str]) -> list[tuple[str, ...]]:
        cache = self._cache
        missing = [c for c in dict.fromkeys(chunks) if c not in cache]
        if missing:
            self._fill(missing)
        return [cache[c] for c in chunks]

    def words(self, text: str) -> list[str]:
        """Same list as ``datatrove.utils.text.split_into_words(text, "en")``."""
        out: list[str] = []
        for toks in self._tokens(text.split()):
            out.extend(toks)
        return out

    def count_sentences(self, line: str) -> int:
        """len(datatrove.utils.text.split_into_sentences(line)) for a stripped, non-empty line.

        spaCy's Sentencizer starts a sentence at the first token that is neither punctuation
        nor a sentence-final character after one that is sentence-final. Whitespace beyond a
        single space between chunks is a (non-punctuation) token of its own in spaCy.
        """
        punct = _sentence_punct()
        if not any(c in punct for c in line[:-1]):
            return 1
        parts = _GAPS.split(line)
        chunks = parts[0::2]
        gaps = parts[1::2]
        toks = self._tokens(chunks)
        n, seen = 1, False
        for i, chunk_toks in enumerate(toks):
            if i and gaps[i - 1] != " ":
                if seen:
                    n, seen = n + 1, False
            for t in chunk_toks:
                inp = t in punct
                if seen and not inp and not _is_punct(t):
                    n, seen = n + 1, False
                elif inp:
                    seen = True
        return n


@lru_cache(maxsize=None)
def splitter(language: str = "en") -> WordSplitter:
    """One splitter per language per process (Ray reuses worker processes)."""
    return WordSplitter(language)
