"""Word and sentence splitting that reproduces datatrove's English tokenisation, fast.

datatrove splits English words with ``spacy.blank("en")`` (plus a sentencizer) on every
call. spaCy's tokenizer works on whitespace-delimited chunks independently, so the words
of a text are the concatenation of the tokens of its chunks. We memoise per chunk and send
only unseen chunks to spaCy, in one call per document. The common chunk shapes skip spaCy
(WordSplitter._quick): letters only or ASCII digits only, which no prefix, suffix or infix rule of
spaCy's English tokenizer splits, with one-character opening / closing marks, dashes, digit groups
and "'s" split as its rules split them, unless a run of the tokens spells a special case ("can't").
Sentence counts replay spaCy's Sentencizer rule over the same tokens.

``tests/filters/test_datatrove_parity.py`` checks both against datatrove on real pages.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from itertools import chain

import numpy as np

_GAPS = re.compile(r"(\s+)")
_CACHE_LIMIT = 1_000_000  # chunks (~150 MB per worker at most); cleared when full
# One-character prefixes / suffixes of spaCy's English tokenizer (each is its own alternative in its
# prefix / suffix regex, and no longer alternative starts with it), and the characters its suffix rule
# for "." accepts before the dot, limited to ASCII (the rule's letter class has more).
_PREFIX_1 = frozenset("\"“”‘'([«»„¿¡—–$£€")
_SUFFIX_1 = frozenset(",;:!?)]\"”“„’'»«—–")
_BEFORE_DOT = frozenset("abcdefghijklmnopqrstuvwxyz0123456789,;:!?()[]\"”“„’'»«")
_DIGITS = frozenset("0123456789")
_DASHES = frozenset("-–—")  # spaCy's hyphen infixes between letters (one dash, not "--")
_POSSESSIVE = frozenset(("'s", "'S", "’s", "’S"))
_NUM_SEP = frozenset(".,:")  # between ASCII digits: no infix rule splits there
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
        self._specials: frozenset[str] = frozenset()
        self._changing: frozenset[str] = frozenset()

    @property
    def nlp(self):
        if self._nlp is None or len(self._nlp.vocab) > _VOCAB_LIMIT:
            import spacy  # (imported here: a driver that only reads the filters' configs never loads spaCy)
            from spacy.attrs import ORTH

            self._nlp = spacy.blank(self.language)
            rules = self._nlp.tokenizer.rules or {}
            self._specials = frozenset(rules)  # the tokenizer's special cases ("can't", "etc.", "'s", ":)")
            # ...less those that are their own single token ("'s", "'"): as one token they change nothing
            self._changing = frozenset(k for k, v in rules.items() if not (len(v) == 1 and v[0].get(ORTH) == k))
        return self._nlp

    def _plain(self, chunk: str) -> bool:
        """True when spaCy would return the chunk as one token: letters only, or ASCII digits only,
        and not a tokenizer special case."""
        return (chunk.isalpha() or (chunk.isdigit() and chunk.isascii())) and chunk not in self._changing

    def _quick(self, chunk: str) -> tuple[str, ...] | None:
        """spaCy's tokens for the common chunk shapes, or None (spaCy decides). A shape is: one-character
        prefixes, a core, one-character suffixes ("." only after a-z, 0-9 or a closing mark, as spaCy's
        rule; no "..", which is one suffix). The core is a plain chunk, ASCII letter runs joined by single
        dashes (the hyphen infix; spaCy's letter class does not cover every script), or ASCII digit runs
        joined by one kind of "." "," ":" (no infix rule splits between digits; at most one "."), or a
        plain chunk + "'s" (a suffix rule).
        No run of the resulting tokens may spell a tokenizer special case ("can't", "etc.", ":)"):
        spaCy would keep or rebuild it."""
        if self._plain(chunk):
            return (chunk,)
        if not chunk:
            return None
        last = chunk[-1]  # the commonest other shape first: plain + one suffix ("word," "word.")
        if (last in _SUFFIX_1 or (last == "." and chunk[-2:-1] in _BEFORE_DOT)) and self._plain(chunk[:-1]):
            return None if chunk in self._specials or last in self._changing else (chunk[:-1], last)
        n = len(chunk)
        i = 0
        while i < n and chunk[i] in _PREFIX_1:
            i += 1
        j = n
        while j > i:
            c = chunk[j - 1]
            if c in _SUFFIX_1 or (c == "." and j >= 2 and chunk[j - 2] in _BEFORE_DOT) or (
                    c == "%" and j >= 2 and chunk[j - 2] in _DIGITS):  # "%" is a unit after a digit
                j -= 1
            else:
                break
        core = chunk[i:j]
        if not core:
            return None
        if self._plain(core):
            mid: tuple[str, ...] = (core,)
        else:
            mid = self._split_core(core)
            if mid is None:
                return None
        toks = (*chunk[:i], *mid, *chunk[j:])
        specials, changing = self._specials, self._changing
        for a in range(len(toks)):  # every run of tokens, the whole chunk included
            if toks[a] in changing:
                return None
            s = toks[a]
            for b in range(a + 1, len(toks)):
                s += toks[b]
                if s in specials:
                    return None
        return toks

    def _split_core(self, core: str) -> tuple[str, ...] | None:
        if core[-2:] in _POSSESSIVE and self._plain(core[:-2]):  # spaCy's "'s" suffix rule
            return (core[:-2], core[-2:])
        seps = {c for c in core if not c.isalnum()}
        if len(seps) != 1:
            return None
        sep = seps.pop()
        parts = core.split(sep)
        if not all(x and x.isascii() for x in parts):
            return None
        if sep in _DASHES and all(x.isalpha() for x in parts):
            out: list[str] = []
            for x in parts:
                out += (x, sep)
            return tuple(out[:-1])
        if sep in _NUM_SEP and all(x.isdigit() for x in parts) and (sep != "." or len(parts) == 2):
            return (core,)
        return None

    def _fill(self, chunks: list[str]) -> None:
        """Tokenise unseen chunks in one spaCy call and cache their tokens."""
        joined = " ".join(chunks)
        nlp = self.nlp
        nlp.max_length = max(nlp.max_length, len(joined) + 10)
        starts, pos = [], 0
        for c in chunks:
            starts.append(pos)
            pos += len(c) + 1
        out: list[list[str]] = [[] for _ in chunks]
        from spacy.attrs import IDX

        doc = nlp.tokenizer(joined)
        owner = np.searchsorted(np.asarray(starts), doc.to_array([IDX]).reshape(-1), side="right") - 1
        for k, tok in zip(owner.tolist(), doc):
            s = tok.text.strip()
            if s:
                out[k].append(s)
        for c, toks in zip(chunks, out):
            self._cache[c] = tuple(toks)

    def _tokens(self, chunks: list[str]) -> list[tuple[str, ...]]:
        self._ensure(chunks)
        return list(map(self._cache.__getitem__, chunks))

    def _ensure(self, chunks: list[str]) -> None:
        """Tokenise the chunks not in the cache: the common shapes directly, the rest with spaCy."""
        cache = self._cache
        missing = set(chunks).difference(cache)
        if not missing:
            return
        if len(cache) + len(missing) > _CACHE_LIMIT:
            cache.clear()
            missing = set(chunks)
        self.nlp  # noqa: B018 - loads the special cases
        quick = self._quick
        hard = []
        for c in missing:
            toks = quick(c)
            if toks is None:
                hard.append(c)
            else:
                cache[c] = toks
        if hard:
            self._fill(sorted(hard))  # sorted: the same spaCy call whatever the set order

    def count_words(self, text: str) -> int:
        """len(self.words(text)), without building the list."""
        chunks = text.split()
        self._ensure(chunks)
        return sum(map(len, map(self._cache.__getitem__, chunks)))

    def words(self, text: str) -> list[str]:
        """Same list as ``datatrove.utils.text.split_into_words(text, "en")``."""
        chunks = text.split()
        self._ensure(chunks)
        return list(chain.from_iterable(map(self._cache.__getitem__, chunks)))

    def count_sentences(self, line: str) -> int:
        """len(datatrove.utils.text.split_into_sentences(line)) for a stripped, non-empty line.

        spaCy's Sentencizer starts a sentence at the first token that is neither punctuation
        nor a sentence-final character after one that is sentence-final. Whitespace beyond a
        single space between chunks is a (non-punctuation) token of its own in spaCy.
        """
        punct = _sentence_punct()
        if punct.isdisjoint(line[:-1]):  # (single characters)
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
