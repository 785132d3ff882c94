"""Document signals, computed once per document and kept in the output.

Every quality rule in ``filters/`` is a comparison over these numbers, so the
dashboard can preview a threshold without re-running the pipeline. Each signal
reproduces the quantity datatrove's filter computes on the same text, in the same
arithmetic, so a rule over it takes the same decision (see tests/filters/test_datatrove_parity.py).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

from .tokenize import splitter

# datatrove.utils.text.PUNCTUATION_SET / TERMINAL_PUNCTUATION: the same sets, imported so they never drift.
from datatrove.utils.text import PUNCTUATION_SET, TERMINAL_PUNCTUATION  # noqa: E402

GOPHER_STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
TOP_NGRAMS = (2, 3, 4)
DUP_NGRAMS = (5, 6, 7, 8, 9, 10)
_PARAGRAPH = re.compile(r"\n{2,}")
_LINES = re.compile("\n+")
_CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
_END_PUNCT = (".", "?", "!", '"', "'")
_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")


SIGNAL_NAMES = (
    "chars", "paragraphs", "dup_para_frac", "dup_para_char_frac", "dup_line_frac", "dup_line_char_frac",
    *(f"top_{n}_gram_char_frac" for n in TOP_NGRAMS), *(f"dup_{n}_gram_char_frac" for n in DUP_NGRAMS),
    "words", "non_symbol_words", "avg_word_length", "hash_word_ratio", "ellipsis_word_ratio", "lines",
    "bullet_lines_ratio", "end_ellipsis_lines_ratio", "alpha_words_ratio", "stop_words",
    "c4_sentences", "c4_lorem_ipsum_line", "c4_curly_bracket_line", "c4_kept_lines",
    "fw_lines", "line_punct_ratio", "short_line_ratio", "char_dup_ratio", "list_ratio",
)


@dataclass(frozen=True)
class SignalParams:
    """Parameters that change how signals are measured (not thresholds)."""

    stop_words: tuple[str, ...] = GOPHER_STOP_WORDS
    c4_enabled: bool = True
    c4_remove_citations: bool = True
    c4_filter_no_terminal_punct: bool = False
    c4_min_words_per_line: int = 3
    c4_max_word_length: int = 1000
    c4_filter_javascript: bool = True
    c4_filter_policy: bool = True
    fineweb_stop_chars: tuple[str, ...] = tuple(TERMINAL_PUNCTUATION)
    fineweb_short_line_length: int = 30


def _duplicates(items: list[str]) -> tuple[int, int]:
    seen: set[str] = set()
    dup_n = dup_chars = 0
    for x in items:
        if x in seen:
            dup_n += 1
            dup_chars += len(x)
        else:
            seen.add(x)
    return dup_n, dup_chars


def _top_ngram_chars(ids: np.ndarray, starts: np.ndarray, n: int) -> int:
    """len(" ".join(top n-gram)) * count, ties to the first seen, as datatrove's find_top_duplicate.

    Words carry no spaces, so " ".join equality is word-sequence equality: with per-document word
    ids below 2**16, an n-gram (n <= 4) packs exactly into one uint64."""
    m = len(ids) - n + 1
    if m <= 0:
        return 0
    key = np.zeros(m, dtype=np.uint64)
    for i in range(n):
        key = (key << np.uint64(16)) | ids[i:i + m]
    s = np.sort(key)
    new = np.empty(m, dtype=bool)
    new[0] = True
    np.not_equal(s[1:], s[:-1], out=new[1:])
    idx = np.flatnonzero(new)
    counts = np.diff(idx, append=m)
    best = int(counts.max())
    # Counter.most_common(1): the first inserted among the most common
    pos = 0 if best == 1 else int(np.argmax(np.isin(key, s[idx[counts == best]])))
    return int(starts[pos + n] - starts[pos] + n - 1) * best


def _top_ngram_chars_counter(words: list[str], n: int) -> int:
    if len(words) < n:
        return 0
    counts = Counter(zip(*(words[i:] for i in range(n))))
    gram, count = max(counts.items(), key=lambda kv: kv[1])
    return (sum(map(len, gram)) + n - 1) * count


_P1, _P2, _BASE = 2_147_483_647, 2_147_483_629, 1_000_003
_POW: list[np.ndarray] = [np.ones(1, dtype=np.int64), np.ones(1, dtype=np.int64)]


def _powers(length: int) -> tuple[np.ndarray, np.ndarray]:
    """BASE**j mod P for j <= length, grown by doubling and kept per process."""
    for k, p in enumerate((_P1, _P2)):
        pw = _POW[k]
        while len(pw) <= length:
            step = pow(_BASE, len(pw), p)
            pw = np.concatenate([pw, pw * step % p])
        _POW[k] = pw
    return _POW[0], _POW[1]


def _ngram_hashes(words: list[str]) -> tuple[np.ndarray, np.ndarray, int]:
    """Prefix sums for hashing any run of words as the string "".join(run) (two moduli)."""
    joined = "".join(words)
    codes = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.int64)
    length = len(codes)
    p1, p2 = _powers(length)
    starts = np.zeros(len(words) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, words), dtype=np.int64, count=len(words)), out=starts[1:])
    out = []
    for p, pw in ((_P1, p1), (_P2, p2)):
        pre = np.zeros(length + 1, dtype=np.int64)
        np.cumsum(codes * pw[:length] % p, out=pre[1:])  # < 2**31 * len: no overflow below 4e9 chars
        out.append(pre % p)
    return out, starts, length


def _ngram_keys(hashes, n: int, at: np.ndarray | None = None) -> np.ndarray:
    """One int64 per n-gram (or per n-gram starting at the positions ``at``); equal strings always
    get equal keys."""
    (h1, h2), starts, length = hashes
    s = starts[:-n] if at is None else starts[at]
    e = starts[n:] if at is None else starts[at + n]
    k1 = (h1[e] - h1[s]) % _P1 * _POW[0][length - s] % _P1
    k2 = (h2[e] - h2[s]) % _P2 * _POW[1][length - s] % _P2
    return k1 * _P2 + k2


def _dup_ngram_chars(words: list[str], n: int, hashes, within: np.ndarray | None = None) -> tuple[int, np.ndarray]:
    """Characters in repeated n-grams, greedy left-to-right, keyed on "".join as datatrove does.

    datatrove walks every position, skipping n ahead after a repeat. Positions whose key occurs
    once can neither repeat nor be repeated, so only the others are walked, in order, honouring
    the skips. Keys are hashes; every repeat is confirmed on the strings, and a collision (never
    seen in practice) falls back to datatrove's walk over strings.

    Also returns the positions whose n-gram occurs more than once: an (n+1)-gram can only occur
    twice where its n-gram prefix does, so the next n only looks there (``within``).
    """
    if len(words) < n:
        return 0, np.zeros(0, dtype=np.int64)
    at = None if within is None else within[within <= len(words) - n]
    keys = _ngram_keys(hashes, n, at)
    order = np.argsort(keys)
    ordered = keys[order]
    same = ordered[1:] == ordered[:-1]
    repeats = np.zeros(len(keys), dtype=bool)  # in sorted order: the key equals a neighbour's
    repeats[1:] |= same
    repeats[:-1] |= same
    mask = np.empty(len(keys), dtype=bool)
    mask[order] = repeats
    multi = np.flatnonzero(mask)
    candidates = multi if at is None else at[multi]
    if not len(candidates):
        return 0, candidates
    keys = keys[multi]
    starts = hashes[1]
    first: dict[int, int] = {}
    repeated = next_visit = 0
    for idx, k in zip(candidates.tolist(), keys.tolist()):
        if idx < next_visit:
            continue  # skipped over by an earlier repeat
        j = first.get(k)
        if j is None:
            first[k] = idx
        elif "".join(words[j:j + n]) == "".join(words[idx:idx + n]):
            repeated += int(starts[idx + n] - starts[idx])
            next_visit = idx + n
        else:
            return _dup_ngram_chars_strings(words, n), None
    return repeated, candidates


def _dup_ngram_chars_strings(words: list[str], n: int) -> int:
    keys = list(map("".join, zip(*(words[i:] for i in range(n)))))
    seen: set[str] = set()
    repeated = idx = 0
    while idx < len(keys):
        k = keys[idx]
        if k in seen:
            repeated += len(k)
            idx += n
        else:
            seen.add(k)
            idx += 1
    return repeated


_NON_SYMBOL, _ALPHA = 1, 2
_KIND: dict[str, int] = {}


def _word_kind(w: str) -> int:
    """Bit flags: has a char outside PUNCTUATION_SET, has an alphabetic char (memoised per word)."""
    k = _KIND.get(w)
    if k is None:
        if w.isalpha() and w.isascii():
            return _NON_SYMBOL | _ALPHA  # (no ASCII letter is in PUNCTUATION_SET)
        k = (_NON_SYMBOL if any(ch not in PUNCTUATION_SET for ch in w) else 0) | (
            _ALPHA if any(c.isalpha() for c in w) else 0)
        if len(_KIND) > 1_000_000:
            _KIND.clear()
        _KIND[w] = k
    return k


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


def c4_lines(text: str, p: SignalParams):
    """C4's line filter, as datatrove's C4QualityFilter walks the lines. Returns the kept lines,
    their sentence count, and the index of the first line that reaches the "lorem ipsum" /
    curly-bracket check and fails it (-1 if none): the rule drops the doc at the earlier one."""
    sp = splitter("en")
    kept: list[str] = []
    sentences = 0
    lorem = curly = -1
    for i, line in enumerate(text.splitlines()):
        line = line.strip()
        words = line.split()
        if p.c4_max_word_length != -1 and words and max(map(len, words)) > p.c4_max_word_length:
            continue
        if p.c4_remove_citations:
            line = _CITATION.sub("", line)
        if p.c4_filter_no_terminal_punct and (not line.endswith(_END_PUNCT) or line.endswith("...")):
            continue
        if len(words) < p.c4_min_words_per_line:
            continue
        low = line.lower()
        if lorem < 0 and "lorem ipsum" in low:
            lorem = i
        if p.c4_filter_javascript and "javascript" in low:
            continue
        if curly < 0 and "{" in line:
            curly = i
        if p.c4_filter_policy and any(x in low for x in _POLICY):
            continue
        sentences += sp.count_sentences(line)
        kept.append(line)
    return kept, sentences, lorem, curly


def compute(text: str, p: SignalParams = SignalParams()) -> tuple[dict, str]:
    """Signals of ``text`` and the text after C4's line filter (the text that is written out)."""
    sp = splitter("en")
    s: dict = {}
    n_chars = len(text)
    s["chars"] = n_chars

    # Gopher repetition
    paragraphs = _PARAGRAPH.split(text.strip())
    d, c = _duplicates(paragraphs)
    s["paragraphs"] = len(paragraphs)
    s["dup_para_frac"] = _ratio(d, len(paragraphs))
    s["dup_para_char_frac"] = _ratio(c, n_chars)
    lines = _LINES.split(text)
    d, c = _duplicates(lines)
    s["dup_line_frac"] = _ratio(d, len(lines))
    s["dup_line_char_frac"] = _ratio(c, n_chars)
    words = sp.words(text)
    hashes = _ngram_hashes(words)
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}  # ids in order of first appearance
    ids = np.fromiter(map(vocab.__getitem__, words), dtype=np.uint64, count=len(words))
    for n in TOP_NGRAMS:
        top = _top_ngram_chars(ids, hashes[1], n) if len(vocab) < 1 << 16 else _top_ngram_chars_counter(words, n)
        s[f"top_{n}_gram_char_frac"] = _ratio(top, n_chars)
    within = None  # positions where the previous n-gram repeats (None: all)
    for n in DUP_NGRAMS:
        dup, within = _dup_ngram_chars(words, n, hashes, within)
        s[f"dup_{n}_gram_char_frac"] = _ratio(dup, n_chars)

    # Gopher quality
    n_words = len(words)
    at = ids.astype(np.intp)
    kinds = np.fromiter(map(_word_kind, vocab), dtype=np.int64, count=len(vocab))[at]
    non_symbol = (kinds & _NON_SYMBOL) != 0
    n_non_symbol = int(non_symbol.sum())
    s["words"] = n_words
    s["non_symbol_words"] = n_non_symbol
    if n_non_symbol:
        lengths = np.fromiter(map(len, vocab), dtype=np.int64, count=len(vocab))[at]
        s["avg_word_length"] = int(lengths[non_symbol].sum()) / n_non_symbol
    else:
        s["avg_word_length"] = 0.0
    s["hash_word_ratio"] = _ratio(text.count("#"), n_words)
    s["ellipsis_word_ratio"] = _ratio(text.count("...") + text.count("…"), n_words)
    split_lines = text.splitlines()
    s["lines"] = len(split_lines)
    s["bullet_lines_ratio"] = _ratio(
        sum(x.lstrip().startswith("•") or x.lstrip().startswith("-") for x in split_lines), len(split_lines))
    s["end_ellipsis_lines_ratio"] = _ratio(
        sum(x.rstrip().endswith("...") or x.rstrip().endswith("…") for x in split_lines), len(split_lines))
    s["alpha_words_ratio"] = _ratio(int(((kinds & _ALPHA) != 0).sum()), n_words)
    s["stop_words"] = len(set(p.stop_words).intersection(words))

    # C4 (line filter; the kept text feeds FineWeb and the output)
    out_text = text
    s["c4_sentences"] = s["c4_lorem_ipsum_line"] = s["c4_curly_bracket_line"] = s["c4_kept_lines"] = -1
    if p.c4_enabled:
        kept, sentences, lorem, curly = c4_lines(text, p)
        s["c4_sentences"] = sentences
        s["c4_lorem_ipsum_line"] = lorem
        s["c4_curly_bracket_line"] = curly
        s["c4_kept_lines"] = len(kept)
        out_text = "\n".join(kept).strip()

    # FineWeb
    fw_lines = [x for x in out_text.split("\n") if x.strip() != ""]
    s["fw_lines"] = len(fw_lines)
    s["line_punct_ratio"] = _ratio(sum(1 for x in fw_lines if x.endswith(p.fineweb_stop_chars)), len(fw_lines))
    s["short_line_ratio"] = _ratio(
        sum(1 for x in fw_lines if len(x) <= p.fineweb_short_line_length), len(fw_lines))
    s["char_dup_ratio"] = _ratio(_duplicates(fw_lines)[1], len(out_text.replace("\n", "")))
    fw_words = n_words if out_text is text else sp.count_words(out_text)
    s["list_ratio"] = _ratio(out_text.count("\n"), fw_words)
    return s, out_text
