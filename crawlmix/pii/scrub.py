"""PII detection and replacement: presidio-analyzer does the recognition, a cheap candidate scan makes it fast.

Presidio analysing every character runs at ~17 k chars/s per core. Almost all text cannot hold an
e-mail, phone number, IP, card number, IBAN or SSN, so a few plain regexes first find *candidates*
(an '@'; digit chains with >= 4 digits; dotted quads and hex:hex: groups; two letters + two digits
followed by an account number), each a superset of what presidio's own recognizer for that type
can match. Each candidate is widened to whole words plus the words presidio reads for context
("phone", "ssn", ...), overlapping windows are merged, and presidio runs on the windows only
(spaCy tokenises them in batches; one engine per process). Presidio's results on a window are
its results on the full text: see docs/pii.md for why, and tests/pii/test_pii.py + bench/pii.py,
which check it. Phone numbers cost the most (libphonenumber, once per region): PhoneFilter reads
libphonenumber's metadata to tell, per digit chain, which regions could match there at all, and
presidio's PhoneRecognizer runs only on those chains, for those regions (ChainPhoneRecognizer; both
in crawlmix/pii/phone.py; the engines are set up in crawlmix/pii/engine.py).

PERSON needs NER on the full text: presidio's own engine with the model's full spaCy pipeline. It
runs only when ``ner_model`` names an installed spaCy pipeline, and the stage says clearly in its
log and stats.json when PERSON is not detected.

    Scrubber(cfg).scrub(text) -> (new_text, spans)        # per document, from other stages
    Scrubber(cfg).scrub_table(table, stats) -> table      # a pyarrow table with `text` (+ `language`)

Files, the crawl's PII step and the CLI are in crawlmix/pii/job.py. Nothing is downloaded: the
pattern engine's spaCy pipeline is generated into ~/.cache/crawlmix, tldextract uses its bundled
public-suffix snapshot. No original text is ever logged or counted.
"""

from __future__ import annotations

import logging
import re
import time
from functools import lru_cache

from crawlmix.pii.config import NER_ENTITIES, PiiConfig
from crawlmix.pii.engine import PATTERN_LANG, analyzer_for, fast_analyzer_for, pattern_model_dir, resolve_ner_model
from crawlmix.pii.phone import chains
from crawlmix.pii.spans import PII_TYPE, PiiStats, Span, fake_value, merge_spans

log = logging.getLogger("crawlmix.pii")
# presidio logs at debug/info level with pieces of the analysed text: keep it quiet.
logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)


# --------------------------------------------------------------------------------------------------
# Candidate scan. Each pattern matches a superset of the text presidio's recognizer for that type can
# match (case-insensitive where presidio is, any Unicode digit where presidio's \d is), so every
# presidio result overlaps a candidate. Digit chains (phone.chains) hold every phone number, card
# number, SSN and IPv4 address.

# Within a chain, supersets of presidio's patterns (its \d is Unicode too).
_IN_CHAIN = {
    "CREDIT_CARD": re.compile(r"\d(?:[- ]?\d){11,}"),
    "US_SSN": re.compile(r"\d(?:[- .]?\d){8,}"),
    "IP_ADDRESS": re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d"),
}
_CHAIN_TYPES = frozenset({"PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IP_ADDRESS"})
# Triggers outside digit chains; a candidate is then widened to whole words.
_AT = re.compile("@")  # presidio's e-mail pattern needs an ASCII '@'
_IPV6 = re.compile(r":[0-9A-Fa-f]{0,4}:")  # every IPv6 form presidio matches has two ':' with <= 4 hex between
_IBAN = re.compile(r"[A-Za-z][A-Za-z]\d\d")  # presidio upper-cases before its IBAN pattern
_IBAN_TAIL = re.compile(r"(?:[ -]?[A-Za-z0-9])*")


_NONSPACE = re.compile(r"\S*")
_WORD = re.compile(r"\S+")
_STRIP = re.compile(r"^\W+|\W+$")


def _stop_words() -> frozenset:
    from spacy.lang.en.stop_words import STOP_WORDS

    return frozenset(STOP_WORDS)


# --------------------------------------------------------------------------------------------------
# The scrubber: candidates -> windows -> presidio -> replaced regions


class Scrubber:
    """One per worker process (the presidio engine and spaCy pipelines are cached per process)."""

    def __init__(self, cfg: PiiConfig | None = None, warn: bool = True):
        self.cfg = cfg = cfg or PiiConfig()
        self.pattern_entities = cfg.pattern_entities
        self.model_dir = str(pattern_model_dir())
        engine = fast_analyzer_for if cfg.fast_path else analyzer_for
        self.analyzer = engine(self.model_dir) if self.pattern_entities else None
        want_ner = any(e in NER_ENTITIES for e in cfg.entities)
        self.ner_model, self.ner_status = resolve_ner_model(cfg.ner_model) if want_ner else \
            (None, "NER not requested (PERSON not in pii.entities)")
        # PERSON: presidio's own engine with the NER model's full spaCy pipeline, on the full text
        self.ner = analyzer_for(self.ner_model) if self.ner_model else None
        self.ner_lang = self.ner.nlp_engine.nlp[PATTERN_LANG].lang if self.ner else None
        if want_ner and not self.ner and warn:
            log.warning("PII: %s", self.ner_status)
        self.stop = _stop_words()
        self.pattern_entities_set = frozenset(self.pattern_entities)
        enh = self.analyzer.context_aware_enhancer if self.analyzer else None
        self.ctx_before = getattr(enh, "context_prefix_count", 5)
        self.ctx_after = getattr(enh, "context_suffix_count", 0)
        phone = [getattr(r, "filter", None) for r in self.analyzer.registry.recognizers] if self.analyzer else []
        self.phone_filter = next((f for f in phone if f is not None), None)
        if cfg.fast_path and "PHONE_NUMBER" in self.pattern_entities and self.phone_filter is None:
            raise RuntimeError("fast path: presidio's registry has no PhoneRecognizer to run per chain")

    # ---- detection ---------------------------------------------------------------------------

    def candidates(self, text: str) -> list[tuple[int, int, str]]:
        """(start, end, entity type) of every place a pattern entity could be; a superset."""
        ents = self.pattern_entities_set
        out = []
        if ents & _CHAIN_TYPES:
            phone = self.phone_filter if "PHONE_NUMBER" in ents else None
            for s, e, ph in chains(text, phone):
                for kind, rx in _IN_CHAIN.items():
                    if kind in ents and rx.search(text, s, e):
                        out.append((s, e, kind))
                if ph and ph[2]:
                    out.append((ph[0], ph[1], "PHONE_NUMBER"))
        if "EMAIL_ADDRESS" in ents:
            out += [(m.start(), m.end(), "EMAIL_ADDRESS") for m in _AT.finditer(text)]
        if "IP_ADDRESS" in ents:
            out += [(m.start(), m.end(), "IP_ADDRESS") for m in _IPV6.finditer(text)]
        if "IBAN_CODE" in ents:
            for m in _IBAN.finditer(text):
                end = _IBAN_TAIL.match(text, m.end(), m.end() + 64).end()
                out.append((m.start(), end, "IBAN_CODE"))
        return out

    def windows(self, text: str) -> list[tuple[int, int, frozenset]]:
        """Merged [start, end) windows of `text` that presidio must see, with the entity types whose
        candidates they hold: a candidate widened to whole words, plus the words before it that
        presidio's context look-back reads."""
        cands = self.candidates(text)
        if not cands:
            return []
        cands.sort()
        cfg = self.cfg
        out: list[list] = []
        for s, e, kind in cands:
            if out and e <= out[-1][1]:
                out[-1][2].add(kind)
                continue
            ws = self._word_start(text, s, max(0, s - cfg.max_word_chars))
            we = _NONSPACE.match(text, e, min(len(text), e + cfg.max_word_chars)).end()
            if self.ctx_after:
                we = self._context_end(text, we)
            cs = ws if out and ws <= out[-1][1] else self._context_start(text, ws)
            if out and cs <= out[-1][1]:
                out[-1][1] = max(out[-1][1], we)
                out[-1][2].add(kind)
            else:
                out.append([cs, we, {kind}])
        return [(a, b, frozenset(k)) for a, b, k in out]

    @staticmethod
    def _word_start(text: str, pos: int, lo: int) -> int:
        rev = text[lo:pos][::-1]
        return pos - _NONSPACE.match(rev).end()

    def _qualifies(self, word: str) -> bool:
        """A word that surely yields a token presidio counts as a context word (not a stop word, not
        punctuation); other words may yield none, so they are passed over."""
        core = _STRIP.sub("", word)
        return core.isalnum() and core.lower() not in self.stop

    def _context_end(self, text: str, we: int) -> int:
        need = self.ctx_after + 1
        for m in _WORD.finditer(text, we, min(len(text), we + self.cfg.max_context_chars)):
            we = m.end()
            if self._qualifies(m.group()):
                need -= 1
                if need == 0:
                    break
        return we

    def _context_start(self, text: str, ws: int) -> int:
        """Start of the words before `ws` that presidio's context look-back can reach: it collects
        context_prefix_count + 1 non-stop, non-punctuation tokens (the entity's own token may be one)."""
        need = self.ctx_before + 1
        if need <= 1 or ws == 0:
            return ws
        lo = max(0, ws - self.cfg.max_context_chars)
        chunk = text[lo:ws]
        words = list(_WORD.finditer(chunk))
        if lo > 0 and words and words[0].start() == 0 and not text[lo - 1].isspace():
            words = words[1:]  # a word cut by the char limit: start at the next whole word
        start = ws
        for m in reversed(words):
            start = lo + m.start()
            if self._qualifies(m.group()):
                need -= 1
                if need == 0:
                    break
        return start

    def detect_batch(self, texts: list[str], languages: list[str | None] | None = None,
                     stats: PiiStats | None = None) -> list[list[Span]]:
        """Presidio-equivalent detections (possibly overlapping, score >= threshold) per text."""
        cfg = self.cfg
        results: list[list[Span]] = [[] for _ in texts]
        if self.analyzer:
            jobs = []  # (doc index, offset, text, entity types)
            for i, t in enumerate(texts):
                if cfg.fast_path:  # windows, each with the types of its candidates (a result overlaps one)
                    jobs += [(i, a, t[a:b], [e for e in self.pattern_entities if e in kinds])
                             for a, b, kinds in self.windows(t)]
                else:
                    jobs += [(i, a, piece, self.pattern_entities) for a, piece in _pieces(t, 500_000)]
            if stats is not None:
                stats.windows += len(jobs) if cfg.fast_path else 0
                stats.chars_analyzed += sum(len(j[2]) for j in jobs)
            self._presidio(self.analyzer, jobs, results)
        if self.ner:
            self._presidio(self.ner, [(i, a, piece, ["PERSON"]) for i, t in enumerate(texts)
                                      if not (languages and languages[i] and languages[i] != self.ner_lang)
                                      for a, piece in _pieces(t, 100_000)], results, batch_size=32)
        return results

    def _presidio(self, engine, jobs: list[tuple], results: list[list[Span]], batch_size: int = 256) -> None:
        """engine.analyze on each job (doc index, offset, text, entities), its spaCy pipeline run with
        nlp.pipe over <= batch_chars characters at a time; the spans, shifted by offset, go to results."""
        start = 0
        while start < len(jobs):
            end, size = start, 0
            while end < len(jobs) and (end == start or size < self.cfg.batch_chars):
                size += len(jobs[end][2])
                end += 1
            batch = jobs[start:end]
            arts = engine.nlp_engine.process_batch([j[2] for j in batch], PATTERN_LANG, batch_size=batch_size)
            for (i, off, text, ents), (_, art) in zip(batch, arts):
                for r in engine.analyze(text=text, language=PATTERN_LANG, entities=ents,
                                        score_threshold=self.cfg.score_threshold, nlp_artifacts=art):
                    results[i].append(Span(r.entity_type, off + r.start, off + r.end, float(r.score)))
            start = end

    def detect(self, text: str, language: str | None = None) -> list[Span]:
        return self.detect_batch([text], [language])[0]

    # ---- replacement -------------------------------------------------------------------------

    def replace(self, text: str, spans: list[Span]) -> tuple[str, list[Span]]:
        regions = merge_spans(spans)
        parts, pos = [], 0
        for r in regions:
            parts.append(text[pos:r.start])
            parts.append(f"<{r.type}>" if self.cfg.replacement == "placeholder"
                         else fake_value(r.type, text[r.start:r.end], self.cfg.seed))
            pos = r.end
        parts.append(text[pos:])
        return "".join(parts), regions

    def scrub(self, text: str, language: str | None = None) -> tuple[str, list[dict]]:
        """(scrubbed text, [{type, start, end}] of the replaced regions, offsets in the original
        text in Python characters, non-overlapping, sorted)."""
        return self.scrub_batch([text], [language])[0]

    def scrub_batch(self, texts: list[str | None], languages: list[str | None] | None = None,
                    stats: PiiStats | None = None) -> list[tuple[str | None, list[dict]]]:
        st = stats if stats is not None else PiiStats()
        t0 = time.perf_counter()
        langs = languages or [None] * len(texts)
        keep = self.cfg.languages
        skip = [bool(t) and keep is not None and langs[i] is not None and langs[i] not in keep
                for i, t in enumerate(texts)]  # an unknown language (None) is scrubbed
        todo = [i for i, t in enumerate(texts) if t and not skip[i]]
        st.docs += len(texts)
        st.docs_scrubbed += len(todo)
        st.skipped_language += sum(skip)
        st.chars += sum(len(texts[i]) for i in todo)
        out: list[tuple[str | None, list[dict]]] = [(t, []) for t in texts]
        try:
            found = self.detect_batch([texts[i] for i in todo], [langs[i] for i in todo], st)
        except Exception:  # noqa: BLE001 - one bad document must not stop the batch: redo one by one
            found = []
            for i in todo:
                try:
                    found.append(self.detect_batch([texts[i]], [langs[i]])[0])
                except Exception as e:  # noqa: BLE001
                    st.errors[f"scrub_error:{type(e).__name__}"] += 1  # the type only: messages can quote text
                    found.append(None)
        for i, spans in zip(todo, found):
            if spans is None:
                out[i] = ("", [{"type": "SCRUB_ERROR", "start": 0, "end": len(texts[i])}])  # never pass unscrubbed
                continue
            new, regions = self.replace(texts[i], spans)
            if regions:
                st.docs_with_pii += 1
                st.replacements.update(r.type for r in regions)
            out[i] = (new, [{"type": r.type, "start": r.start, "end": r.end} for r in regions])
        st.seconds += time.perf_counter() - t0
        return out

    def scrub_table(self, table, stats: PiiStats | None = None, text_column: str | None = "text",
                    also: list[str] | None = None):
        """A pyarrow table with `text_column` scrubbed and a `pii` column (list of {type, start, end})
        added, and the string columns in `also` (default: the config's extra_columns) scrubbed too
        (counted in stats.replacements, no spans). text_column=None: only `also`, no `pii` column
        (e.g. url/detail of removed records)."""
        import pyarrow as pa

        langs = table.column("language").to_pylist() if "language" in table.column_names else None
        for col in (self.cfg.extra_columns if also is None else also):
            if col not in table.column_names or col == text_column:
                continue
            side = PiiStats()
            res = self.scrub_batch(table.column(col).to_pylist(), langs, side)
            if stats is not None:
                stats.replacements.update(side.replacements)
                stats.errors.update(side.errors)
            idx = table.column_names.index(col)
            table = table.set_column(idx, table.schema.field(col), pa.array([r[0] for r in res], pa.string()))
        if text_column is None:
            return table
        res = self.scrub_batch(table.column(text_column).to_pylist(), langs, stats)
        idx = table.column_names.index(text_column)
        table = table.set_column(idx, table.schema.field(text_column), pa.array([r[0] for r in res], pa.string()))
        pii = pa.array([r[1] for r in res], PII_TYPE)
        if "pii" in table.column_names:
            return table.set_column(table.column_names.index("pii"), pa.field("pii", PII_TYPE), pii)
        return table.append_column(pa.field("pii", PII_TYPE), pii)

    def describe(self) -> dict:
        return {"entities": list(self.cfg.entities), "pattern_entities": self.pattern_entities,
                "ner": self.ner_status, "ner_model": self.ner_model, "pattern_model": "spacy.blank('en') + "
                "lower-case lemma, generated locally", "fast_path": self.cfg.fast_path}


def _pieces(text: str, size: int) -> list[tuple[int, str]]:
    """Cut text into pieces of <= size chars at whitespace (spaCy refuses texts over 1 M chars)."""
    if len(text) <= size:
        return [(0, text)]
    out, pos = [], 0
    while pos < len(text):
        end = min(len(text), pos + size)
        if end < len(text):
            cut = max(text.rfind("\n", pos + size // 2, end), text.rfind(" ", pos + size // 2, end))
            end = cut + 1 if cut > pos else end
        out.append((pos, text[pos:end]))
        pos = end
    return out


@lru_cache(maxsize=4)
def scrubber_for(cfg_json: str) -> Scrubber:
    """Per-process cache: one engine per worker, not per file."""
    return Scrubber(PiiConfig.model_validate_json(cfg_json), warn=False)  # run() has said it once
