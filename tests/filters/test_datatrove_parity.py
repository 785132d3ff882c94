"""Our rules over signals take datatrove's decisions, doc by doc, on real extracted pages.

Runs on the bundled sample plus edge-case texts always, and on the 1,171 real pages of
../shared/data/bench/realpages.warc.gz when present.
"""

from __future__ import annotations

import functools

import pytest
from datatrove.data import Document
from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                        GopherRepetitionFilter)
from datatrove.utils.text import split_into_sentences, split_into_words

from crawlmix.filters.c4_quality import C4Quality
from crawlmix.filters.fineweb_quality import FineWebQuality
from crawlmix.filters.gopher_quality import GopherQuality
from crawlmix.filters.gopher_repetition import GopherRepetition
from crawlmix.filters.signals import SIGNAL_NAMES, SignalParams, compute
from crawlmix.filters.tokenize import splitter
from crawlmix.text.extract import resiliparse_text, trafilatura_text
from crawlmix.io.warc import iter_pages
from tests.conftest import shared

EDGE = [
    "word " * 60,
    "The cat sat on the mat. " * 3 + "\n" + "- item\n" * 30,
    "Hello world... and then... more of the text...\n" * 8,
    "# heading # with # hashes # and # more # of # them # here # ok # and the rest of it\n" * 5,
    "This is a line with a citation[1] and another[edit] one here.\n" * 6,
    "We use cookies to improve the site. Read our privacy policy today.\nThe rest is fine and long enough to pass.\n" * 4,
    "Enable JavaScript to view this page properly, please do it now.\n" + "A normal sentence here. " * 20,
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit.\n" + "Plain text follows here and there. " * 20,
    "The value is {x} and the result is y, as shown in the table.\n" * 6,
    "Mr. Smith went to Washington. He arrived at 3.30 p.m. on Monday! Did he stay? Yes. \"Of course.\"\n" * 5,
    "短い文。これは日本語のテキストです。\n" * 10,
    "Ein ganz normaler deutscher Satz, der nicht englisch ist. Und noch einer.\n" * 10,
    "\n\n\n   \n",
    "A\n\nA\n\nA\n\nB and the other words that follow here in this paragraph of text.",
    "one two three four five six seven eight nine ten " * 20,
    "The end…\n" * 10 + "Some more words to make it long enough for the threshold of fifty words. " * 5,
    "• bullet one\n• bullet two\n• bullet three\n" * 10,
    "x" * 1200 + " long word line.\nThe rest of the text is a normal sentence. " * 6,
]


@functools.lru_cache(maxsize=8)
def _texts_from(path, limit=None, engines=(trafilatura_text,)):
    out = []
    for i, p in enumerate(iter_pages(str(path), lambda *a, **k: None)):
        if limit and i >= limit:
            break
        for eng in engines:
            t = p.text if p.text is not None else eng(p.html)
            if t:
                out.append(t)
    return tuple(out)


def _datatrove(text, c4_ntp):
    doc = Document(text=text, id="x")
    for name, f in (("gopher_repetition", GopherRepetitionFilter()), ("gopher_quality", GopherQualityFilter()),
                    ("c4_quality", C4QualityFilter(filter_no_terminal_punct=c4_ntp)),
                    ("fineweb_quality", FineWebQualityFilter())):
        r = f.filter(doc)
        if r is not True:
            return f"{name}:{r[1] if isinstance(r, tuple) else 'drop'}", None
    return "keep", doc.text


def _ours(text, c4_ntp):
    s, out = compute(text, SignalParams(c4_filter_no_terminal_punct=c4_ntp))
    assert set(s) == set(SIGNAL_NAMES)
    for name, rule in (("gopher_repetition", GopherRepetition()), ("gopher_quality", GopherQuality()),
                       ("c4_quality", C4Quality(filter_no_terminal_punct=c4_ntp)),
                       ("fineweb_quality", FineWebQuality())):
        why = rule.check(s)
        if why:
            return f"{name}:{why}", None
    return "keep", out


def _compare(texts, c4_ntp):
    mismatches = []
    for t in texts:
        ref, ours = _datatrove(t, c4_ntp), _ours(t, c4_ntp)
        if ref != ours:
            mismatches.append((t[:80], ref[0], ours[0]))
    return mismatches


def _check_tokens(texts):
    sp = splitter("en")
    for t in texts:
        assert sp.words(t) == split_into_words(t), t[:80]
        for line in t.splitlines():
            line = line.strip()
            if line:
                assert sp.count_sentences(line) == len(split_into_sentences(line)), line[:80]


@pytest.mark.parametrize("c4_ntp", [False, True])
def test_parity_sample_and_edge_cases(sample_dir, c4_ntp):
    texts = list(_texts_from(sample_dir / "sample.warc.gz", engines=(trafilatura_text, resiliparse_text))) + EDGE
    assert len(texts) > 40
    assert _compare(texts, c4_ntp) == []
    _check_tokens(texts)


def test_rules_are_not_vacuous(sample_dir):
    """The sample contains pages that each rule family drops, and pages that pass all of them."""
    texts = list(_texts_from(sample_dir / "sample.warc.gz")) + EDGE
    decisions = {_ours(t, False)[0].split(":")[0] for t in texts}
    assert {"keep", "gopher_repetition", "gopher_quality", "c4_quality"} <= decisions


@pytest.mark.slow
@pytest.mark.parametrize("c4_ntp", [False, True])
def test_parity_real_pages(c4_ntp):
    # both extractors' texts in FineWeb's C4 mode (the default job's); trafilatura's in the other
    engines = (trafilatura_text,) if c4_ntp else (trafilatura_text, resiliparse_text)
    texts = _texts_from(shared("bench/realpages.warc.gz"), engines=engines)
    assert len(texts) > 1000 * len(engines)
    mismatches = _compare(texts, c4_ntp)
    assert mismatches == [], f"{len(mismatches)} of {len(texts)} differ: {mismatches[:5]}"


@pytest.mark.slow
def test_tokens_real_pages():
    texts = _texts_from(shared("bench/realpages.warc.gz"), limit=400, engines=(trafilatura_text, resiliparse_text))
    _check_tokens(texts)


def test_splitter_shortcuts_match_spacy():
    """The chunk shapes that skip spaCy (opening marks + a plain, dashed, numeric or possessive core +
    closing marks) give spaCy's tokens, including tokenizer special cases, other scripts and near misses."""
    import itertools

    from crawlmix.filters.tokenize import WordSplitter

    ws = WordSplitter("en")
    specials = sorted(ws.nlp.tokenizer.rules)[:300]
    heads = ["word", "Word", "WORD", "A", "I", "e", "x", "cannot", "Cannot", "gonna", "1990", "7", "café", "naïve",
             "Straße", "слово", "ինժեներ", "ფელისიტე", "қарым", "中文", "٣٤", "²", "aB", "NASA", "U.S", "Mr", "vs"]
    marks = ["", ",", ";", ":", "!", "?", ")", ".", "'", '"', "-", "…", "%", "$", "”", "’", "'s", "’s", ".)", ").",
             '."', ".”", ",”", "?”", "]", "»", "—", "–", "...", ".."]
    opens = ["", "(", '"', "“", "'", "‘", "[", "«", "„", "¿", "$", "£", "—", "((", '("']
    chunks = {o + h + m for o, h, m in itertools.product(opens, heads + specials, marks)}
    chunks |= {f"{a}{d}{b}" for a, b in itertools.product(heads + specials[:40], repeat=2) for d in "-–—"}
    chunks |= {"", "1,000", "1,000,000", "3.5", "3.5.1", "10:30", "1990.", "9%", "(9%)", "$9.99", "£5,", "1-2", "a-b-c",
               "well-known", "well--known", "-known", "known-", "Díaz-Molina", "A.", "US.", "U.S.", "etc.", "vs.",
               "can't", "don’t", "John's.", "(John’s)", "e.g.", "i.e.,", ":)", "(:", "'em", "'s", "“'s", "''"}
    shortcut = {c for c in chunks if ws._quick(c) is not None}
    assert len(shortcut) > 5000  # the shortcuts are exercised, and...
    for c in sorted(chunks):  # ...every chunk, shortcut or not, splits as spaCy splits it
        assert list(ws._tokens([c])[0]) == split_into_words(c), c
