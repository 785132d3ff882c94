"""PII scrubbing: presidio-analyzer does the recognition, a cheap candidate scan makes it fast.

Presidio analysing every character runs at ~17 k chars/s per core. Almost all text cannot hold an
e-mail, phone number, IP, card number, IBAN or SSN, so a few plain regexes first find *candidates*
(an '@'; digit chains with >= 4 digits; dotted quads and hex:hex: groups; two letters + two digits
followed by an account number), each a superset of what presidio's own recognizer for that type
can match. Each candidate is widened to whole words plus the words presidio reads for context
("phone", "ssn", ...), overlapping windows are merged, and presidio runs on the windows only
(spaCy tokenises them in batches; one engine per process). Presidio's results on a window are
its results on the full text: see docs/pii.md for why, and tests/test_pii.py + bench/pii.py,
which check it. Phone numbers cost the most (libphonenumber, once per region): PhoneFilter reads
libphonenumber's metadata to tell, per digit chain, which regions could match there at all, and
presidio's PhoneRecognizer runs only on those chains, for those regions (ChainPhoneRecognizer).

PERSON needs NER on the full text: presidio's own engine with the model's full spaCy pipeline. It
runs only when ``ner_model`` names an installed spaCy pipeline, and the stage says clearly in its
log and stats.json when PERSON is not detected.

    Scrubber(cfg).scrub(text) -> (new_text, spans)        # per document, from other stages
    Scrubber(cfg).scrub_table(table, stats) -> table      # a pyarrow table with `text` (+ `language`)
    python pipelines/pii.py --input 'out/curated/*.parquet' --output out_pii/ [--config pii.yaml]

Nothing is downloaded: the pattern engine's spaCy pipeline is generated into ~/.cache/crawlmix,
tldextract uses its bundled public-suffix snapshot. No original text is ever logged or counted.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import os
import re
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable, NamedTuple

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines import __version__
from pipelines.config import ConfigError
from pipelines.pii_config import NER_ENTITIES, PiiConfig, load_pii_config

log = logging.getLogger("crawlmix.pii")
# presidio logs at debug/info level with pieces of the analysed text: keep it quiet.
logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)

LEMMA_COMPONENT = "crawlmix_lower_lemma"
PATTERN_LANG = "en"  # presidio's pattern recognizers are registered for English; they are language-free regexes


class Span(NamedTuple):
    type: str
    start: int
    end: int
    score: float = 1.0


# --------------------------------------------------------------------------------------------------
# Offline set-up: a local spaCy pipeline for presidio, tldextract without downloads


def cache_dir() -> Path:
    d = Path(os.environ.get("CRAWLMIX_CACHE", Path.home() / ".cache" / "crawlmix"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def _register_lemma_component() -> None:
    """Blank spaCy has no lemmatizer, so presidio's context words ("phone", "ssn", ...) never match.
    Lower-cased text as the lemma brings context back (presidio matches context by substring, so
    'cards' still finds 'card')."""
    from spacy.language import Language

    if Language.has_factory(LEMMA_COMPONENT):
        return

    @Language.component(LEMMA_COMPONENT)
    def _lower_lemma(doc):
        for t in doc:
            t.lemma_ = t.lower_
        return doc


def pattern_model_dir() -> Path:
    """spacy.blank('en') + the lower-case lemma component, saved once per machine under the cache
    dir (generated here, never downloaded). presidio loads it by path."""
    import spacy

    _register_lemma_component()
    d = cache_dir() / f"spacy-en-patterns-{spacy.__version__}"
    if not (d / "config.cfg").exists():
        nlp = spacy.blank("en")
        nlp.add_pipe(LEMMA_COMPONENT)
        tmp = d.with_name(f"{d.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        nlp.to_disk(tmp)
        try:
            os.replace(tmp, d)
        except OSError:  # another worker made it first
            shutil.rmtree(tmp, ignore_errors=True)
    return d


@lru_cache(maxsize=None)
def make_offline() -> None:
    """presidio's e-mail recognizer validates domains with tldextract's module-level extractor,
    which fetches the public suffix list on first use. Point it (and the module default) at an
    extractor that only uses the snapshot bundled with tldextract."""
    import types

    import tldextract
    import tldextract.tldextract as tt
    from presidio_analyzer.predefined_recognizers.generic import email_recognizer

    offline = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
    tt.TLD_EXTRACTOR = offline
    email_recognizer.tldextract = types.SimpleNamespace(extract=offline, TLDExtract=tldextract.TLDExtract)
    os.environ.setdefault("TLDEXTRACT_CACHE", str(cache_dir() / "tldextract"))


def resolve_ner_model(name: str | None) -> tuple[str | None, str]:
    """(loadable name or path, human-readable status). None when no NER model can be used."""
    if not name:
        return None, "no NER model configured (pii.ner_model): PERSON is NOT detected"
    import spacy

    if Path(name).expanduser().exists():
        return str(Path(name).expanduser()), f"NER model {name} (local path)"
    if spacy.util.is_package(name):
        return name, f"NER model {name} (installed package)"
    return None, f"NER model {name!r} is not installed (no such package or path): PERSON is NOT detected"


@lru_cache(maxsize=4)
def analyzer_for(model: str):
    """One presidio AnalyzerEngine per process and spaCy pipeline (a local path or installed package)."""
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    make_offline()
    _register_lemma_component()
    conf = {"nlp_engine_name": "spacy", "models": [{"lang_code": PATTERN_LANG, "model_name": model}]}
    engine = NlpEngineProvider(nlp_configuration=conf).create_engine()
    return AnalyzerEngine(nlp_engine=engine, supported_languages=[PATTERN_LANG])


@lru_cache(maxsize=4)
def fast_analyzer_for(model: str):
    """analyzer_for(model) with its PhoneRecognizer swapped for ChainPhoneRecognizer (same results,
    libphonenumber only where it could match); every other part is the same object."""
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.predefined_recognizers import PhoneRecognizer

    plain = analyzer_for(model)
    chain_phone = _chain_phone_recognizer_class()
    recognizers = [chain_phone.like(r) if type(r) is PhoneRecognizer else r for r in plain.registry.recognizers]
    registry = RecognizerRegistry(recognizers=recognizers, global_regex_flags=plain.registry.global_regex_flags,
                                  supported_languages=plain.registry.supported_languages)
    return AnalyzerEngine(registry=registry, nlp_engine=plain.nlp_engine, supported_languages=plain.supported_languages,
                          default_score_threshold=plain.default_score_threshold,
                          context_aware_enhancer=plain.context_aware_enhancer)


# --------------------------------------------------------------------------------------------------
# Candidate scan. Each pattern matches a superset of the text presidio's recognizer for that type can
# match (case-insensitive where presidio is, any Unicode digit where presidio's \d is), so every
# presidio result overlaps a candidate.

_GAP = r"(?:[^\w]|[xX_\u30fc]){0,4}"  # libphonenumber: <= 4 punctuation chars (incl. 'x') between digit blocks
# Digit chains with >= 4 digits: every phone number (libphonenumber accepts 4-digit numbers for
# presidio's regions, e.g. '1640'), card number (>= 13 digits), SSN (9), IPv4 (>= 4) lies in one.
_GROUP = re.compile(r"\d(?:" + _GAP + r"\d)*")  # a chain: a group with >= 4 digits
_LEAD = re.compile(r"(?:[^\w\n]|[xX_\u30fc]){0,12}\Z")  # libphonenumber's lead: ( [ + and punctuation
_LEAD_CHARS = "([\uff08\uff3b+\uff0b"


def _first_lead(lead: str) -> int:
    """A libphonenumber candidate starts at one of ( [ + (full-width too) or at a digit."""
    pos = [i for i in (lead.find(c) for c in _LEAD_CHARS) if i >= 0]
    return min(pos) if pos else len(lead)


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


# --------------------------------------------------------------------------------------------------
# Phone numbers. presidio's PhoneRecognizer runs libphonenumber's matcher once per region (8 by
# default): 0.3-1.3 ms per digit chain, most of the time on PII-dense text. PhoneFilter tells from
# libphonenumber's metadata which regions could match on a chain at all, and ChainPhoneRecognizer runs
# presidio's recognizer only there (docs/pii.md; tests/test_pii.py checks it against libphonenumber).

_EXT = None  # libphonenumber's extension pattern (the tail of its candidate pattern), compiled lazily


def _extension_end(text: str, pos: int) -> int:
    global _EXT
    if _EXT is None:
        from phonenumbers.phonenumberutil import _EXTN_PATTERNS_FOR_MATCHING

        _EXT = re.compile(_EXTN_PATTERNS_FOR_MATCHING, re.IGNORECASE | re.UNICODE)
    m = _EXT.match(text, pos)
    return m.end() if m else pos


def _digit_runs(s: str) -> tuple[str, list[int], list[int], list[int], list[int]]:
    """ASCII digits of s; where its runs of consecutive digits start and end (indices into them); and
    the starts of runs after an extension sign ('#', 'x', '~'), and after a '+'."""
    digits, starts, ends, signed, plus, prev, sign, plus_sign = [], [], [], [], [], False, False, False
    for c in s:
        d = c.isdecimal()
        if d and not prev:
            starts.append(len(digits))
            if sign and len(starts) > 1:
                signed.append(len(digits))
            if plus_sign:
                plus.append(len(digits))
            sign = plus_sign = False
        elif prev and not d:
            ends.append(len(digits))
        if d:
            digits.append(str(int(c)))
        elif c in _EXT_SIGNS:
            sign = True
        elif c == "+" or c == "\uff0b":
            plus_sign = True
        prev = d
    if prev:
        ends.append(len(digits))
    return "".join(digits), starts, ends, signed, plus


_EXT_SIGNS = frozenset("xX\uff58\uff38#\uff03~\uff5e")  # libphonenumber: an extension of <= 9 digits follows


class PhoneFilter:
    """Which of a PhoneRecognizer's regions libphonenumber could find a number for in a digit chain.

    For region R, libphonenumber's matcher (leniency VALID and up) returns a number only if parse(
    candidate, R) gives a valid number, written with its national prefix where R's format for it
    requires one. Its candidates and their inner groups start and end at runs of digits (they are cut
    at punctuation; a run is at most 20 digits, or everything passes), so their digits are D[a:j] for
    a run start a and run end j of the chain's digits D, <= 22 runs and 250 digits (an extension is
    stripped at a run end). parse then removes, at most: a '+' or R's international prefix and a
    country code after it; or R's country code if D[a:j] starts with it; and R's national prefix
    (twice after a country code), possibly by R's transform rule (>= 3 letters would make it read
    letters as digits: everything passes). What remains is the national significant number (NSN), and
    a valid NSN matches the general description and one number type of a region with that country
    code, lengths included. The filter tries every such NSN: a superset, so a region it rejects
    cannot match.
    """

    TYPES = ("premium_rate", "toll_free", "shared_cost", "voip", "personal_number", "pager", "uan",
             "voicemail", "fixed_line", "mobile")

    def __init__(self, regions: tuple, leniency: int):
        from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneMetadata

        self.regions = tuple(regions)
        self.exact = leniency >= 1  # POSSIBLE (0) accepts invalid numbers: no filtering then
        self.country_codes = frozenset(str(cc) for cc in COUNTRY_CODE_TO_REGION_CODE)
        self.tables: dict[int, tuple] = {}  # country code -> ({NSN length: [(general, [types])]}, national prefix, rule)
        self.rules = []  # (region, (country code, international prefix, national prefix, transform rule))
        for r in self.regions:
            md = PhoneMetadata.metadata_for_region(r)
            if md is None or _ANCHORED.search(f"{md.international_prefix or ''} {md.national_prefix_for_parsing or ''}"):
                self.exact = False  # read at a number's first digits: sound only without anchors, look-arounds
                continue
            self.rules.append((r, (md.country_code, _rx(md.international_prefix), _rx(md.national_prefix_for_parsing),
                                   md.national_prefix_transform_rule or None)))
        self.groups = list(dict.fromkeys(rule for _, rule in self.rules))  # regions that parse alike (US, CA)
        self.possible = lru_cache(maxsize=100_000)(self._possible)
        self.np_required = lru_cache(maxsize=100_000)(_national_prefix_required)
        _PHONE_FILTERS.append(self)

    def table(self, cc: int) -> tuple:
        """({NSN length: [(general regex, [type regexes])]} of the regions with country code cc, and the
        national prefix and transform rule parse strips after that country code)."""
        if cc not in self.tables:
            from phonenumbers import PhoneMetadata, region_code_for_country_code, region_codes_for_country_code

            by_len: dict[int, list] = {}
            for g in region_codes_for_country_code(cc):
                gm = PhoneMetadata.metadata_for_region(g) or PhoneMetadata.metadata_for_nongeo_region(cc)
                general = gm.general_desc if gm else None
                if general is None or not general.national_number_pattern:
                    continue
                types = [(d.possible_length, _rx(d.national_number_pattern)) for d in
                         (getattr(gm, t, None) for t in self.TYPES) if d is not None and d.national_number_pattern]
                for n in general.possible_length:
                    ok = [rx for lengths, rx in types if not lengths or n in lengths]
                    if ok:
                        by_len.setdefault(n, []).append((_rx(general.national_number_pattern), ok))
            main = PhoneMetadata.metadata_for_region(region_code_for_country_code(cc), None) or \
                PhoneMetadata.metadata_for_nongeo_region(cc)
            np = main.national_prefix_for_parsing if main else None
            self.tables[cc] = (by_len, _rx(np), main.national_prefix_transform_rule if main else None)
        return self.tables[cc]

    def valid(self, cc: int, n: str) -> bool:
        """Could n be the NSN of a valid number with country code cc (general description + a type)?"""
        for general, types in self.table(cc)[0].get(len(n), ()):
            if general.fullmatch(n):
                for t in types:
                    if t.fullmatch(n):
                        return True
        return False

    def _possible(self, s: str) -> tuple:
        """The regions (of self.regions, in order) that could match in s = lead + chain + extension."""
        if not self.exact or sum(c.isalpha() for c in s) >= 3:
            return self.regions
        digits, starts, ends, signed, plus = _digit_runs(s)
        if any(j - a > 20 for a, j in zip(starts, ends)):
            return self.regions
        # an extension after '#', 'x' or '~' takes <= 9 digits of a run: a candidate can end there, and
        # the next one start there
        cut = [a + 9 for a, j in zip(starts, ends) if j - a > 9 and a in signed]
        if cut:
            starts, ends = sorted(starts + cut), sorted(ends + cut)
        if any(self._international(digits, a, ends) for a in plus):
            return self.regions
        spans = [(a, [digits[a:j] for j in _ends_after(ends, a, a)]) for a in starts]
        ok = {rule for rule in self.groups if self._group_possible(digits, spans, *rule)}
        return tuple(r for r, rule in self.rules if rule in ok)

    def _international(self, digits: str, a: int, ends: list) -> bool:
        """After a '+' or an international prefix at a: a country code (libphonenumber takes the first
        of 1-3 digits that is one), then an NSN, maybe after that country's national prefix."""
        for k in (1, 2, 3):
            if digits[a:a + k] in self.country_codes:
                cc = int(digits[a:a + k])
                break
        else:
            return False
        _, np, rule = self.table(cc)
        return any(self.valid(cc, n) for j in _ends_after(ends, a + k, a) for n in (digits[a + k:j],
                                                                              *_strip(digits[a + k:j], np, rule)))

    def _group_possible(self, digits, spans, cc, idd, np, rule) -> bool:
        """spans: (run start a, [D[a:j] for the run ends j a candidate from a can reach])."""
        cc_str, valid, lengths = str(cc), self.valid, self.table(cc)[0]
        for a, cs in spans:
            m = idd.match(digits, a) if idd else None
            if m and self._international(digits, m.end(), cs and [a + len(c) for c in cs]):
                return True
            # no country code and no national prefix written: only where R's format does not require one
            prefixed = bool(np and np.match(digits, a))
            for c in cs:
                if len(c) in lengths and valid(cc, c) and (prefixed or not self.np_required(cc, c)):
                    return True
                if prefixed and any(valid(cc, n) for n in _strip(c, np, rule)):
                    return True
                if c.startswith(cc_str):
                    rest = c[len(cc_str):]
                    if any(valid(cc, n) for x in (rest, *_strip(rest, np, rule)) for n in (x, *_strip(x, np, rule))):
                        return True
        return False


def _ends_after(ends: list, pos: int, start: int) -> list:
    """Run ends after pos that a candidate starting at start can reach (<= 22 runs, 250 digits)."""
    out = ends[bisect.bisect_right(ends, pos):][:_MAX_RUNS]
    return [j for j in out if j - start <= 250]


def _strip(x: str, np, rule) -> tuple:
    """x without its national prefix, as libphonenumber's _maybe_strip_national_prefix_carrier_code
    may return it (it may also keep x)."""
    m = np.match(x) if np else None
    if not m:
        return ()
    return (np.sub(rule, x, count=1) if rule and m.groups() and m.groups()[-1] is not None else x[m.end():],)


def _national_prefix_required(cc: int, nsn: str) -> bool:
    """libphonenumber's _is_national_prefix_present_if_required, for a number written without one."""
    from phonenumbers import PhoneMetadata, region_code_for_country_code
    from phonenumbers.phonenumberutil import _choose_formatting_pattern_for_number, _formatting_rule_has_first_group_only

    md = PhoneMetadata.metadata_for_region(region_code_for_country_code(cc), None)
    fmt = _choose_formatting_pattern_for_number(md.number_format, nsn) if md else None
    return bool(fmt is not None and fmt.national_prefix_formatting_rule and
                not fmt.national_prefix_optional_when_formatting and
                not _formatting_rule_has_first_group_only(fmt.national_prefix_formatting_rule))


_PHONE_FILTERS: list[PhoneFilter] = []
_ANCHORED = re.compile(r"\$|\^|\(\?[=!<]|\\[bBAZ]")
# libphonenumber's candidates hold <= 21 blocks of <= 20 digits (+ an extension) and parse reads
# <= 250 characters
_MAX_RUNS = 22


def clear_caches() -> None:
    """Empty the per-process caches (the bench times a cold start, as in a fresh worker)."""
    for f in _PHONE_FILTERS:
        f.possible.cache_clear()
        f.np_required.cache_clear()


def _rx(pattern: str | None):
    return re.compile(pattern) if pattern else None


def _chains(text: str, phone_filter: PhoneFilter | None = None):
    """(start, end, phone) for each digit chain of text; phone: None, or (piece start, piece end,
    regions) where libphonenumber's matcher could find a number over the chain: its candidates there
    lie in the piece, which spans the chain, the lead before it (( [ + and punctuation), an extension
    after it ('ext. 12') and, when the digits before have an extension reaching into it ('12 ext.
    345'), their candidate too."""

    def start(g):  # where a candidate over digit group g = [start, end, lead start, bridged start] can start
        if g[2] is None:
            lead = _LEAD.search(text, max(0, g[0] - 12), g[0]).group()
            g[2] = g[0] - len(lead) + _first_lead(lead)
            if g[3] is not None:
                g[2] = min(g[2], g[3])
        return g[2]

    prev = None
    for m in _GROUP.finditer(text):
        s, e = m.span()
        g = [s, e, None, start(prev) if prev and _extension_end(text, prev[1]) > s else None]
        prev = g
        if e - s < 4 or sum(c.isdecimal() for c in m.group()) < 4:
            continue
        if phone_filter is None:
            yield s, e, None
        else:
            ee = _extension_end(text, e)
            yield s, e, (start(g), ee, phone_filter.possible(text[start(g):ee]))


def _word_start(text: str, a: int) -> int:
    while a > 0 and not text[a - 1].isspace():
        a -= 1
    return a


def _word_end(text: str, b: int) -> int:
    n = len(text)
    while b < n and not text[b].isspace():
        b += 1
    return b


@lru_cache(maxsize=1)
def _chain_phone_recognizer_class():
    from presidio_analyzer import EntityRecognizer
    from presidio_analyzer.predefined_recognizers import PhoneRecognizer

    class ChainPhoneRecognizer(PhoneRecognizer):
        """presidio's PhoneRecognizer, run by presidio's own code on each whitespace-bounded piece of
        the text around a digit chain, with only the regions PhoneFilter leaves there. Same results as
        PhoneRecognizer on the whole text: libphonenumber's matches never cross a piece, it reads one
        character either side of a candidate (whitespace at a piece's edge is as neutral as the text's
        start or end), and a region it rejects has no match."""

        @classmethod
        def like(cls, orig):
            new = cls(context=orig.context, supported_language=orig.supported_language,
                      supported_entity=orig.supported_entities[0], supported_regions=orig.supported_regions,
                      leniency=orig.leniency, name=orig.name)
            new.filter = PhoneFilter(orig.supported_regions, orig.leniency)
            return new

        def pieces(self, text: str) -> list[list]:
            out: list[list] = []
            for _, _, (ls, ee, regions) in _chains(text, self.filter):
                if not regions:
                    continue
                if out and ls < out[-1][1]:  # in the piece before: widen it (each character is read once)
                    out[-1][1] = _word_end(text, max(ee, out[-1][1]))
                    out[-1][2] = tuple(r for r in self.filter.regions if r in out[-1][2] or r in regions)
                else:
                    out.append([_word_start(text, ls), _word_end(text, ee), regions])
            return out

        def analyze(self, text, entities, nlp_artifacts=None):
            results = []
            every = self.supported_regions
            try:
                for a, b, regions in self.pieces(text):
                    self.supported_regions = regions
                    for r in super().analyze(text[a:b], entities, nlp_artifacts):
                        r.start += a
                        r.end += a
                        results.append(r)
            finally:
                self.supported_regions = every
            return EntityRecognizer.remove_duplicates(results)

    return ChainPhoneRecognizer


_NONSPACE = re.compile(r"\S*")
_WORD = re.compile(r"\S+")
_STRIP = re.compile(r"^\W+|\W+$")


def _stop_words() -> frozenset:
    from spacy.lang.en.stop_words import STOP_WORDS

    return frozenset(STOP_WORDS)


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
        for k in ("docs", "docs_scrubbed", "docs_with_pii", "skipped_language", "chars", "chars_analyzed",
                  "windows", "seconds"):
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
            for s, e, ph in _chains(text, phone):
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


def _pii_type():
    import pyarrow as pa

    return pa.list_(pa.struct([("type", pa.string()), ("start", pa.int64()), ("end", pa.int64())]))


PII_TYPE = _pii_type()


@lru_cache(maxsize=4)
def scrubber_for(cfg_json: str) -> Scrubber:
    """Per-process cache: one engine per worker, not per file."""
    return Scrubber(PiiConfig.model_validate_json(cfg_json), warn=False)  # run() has said it once


# --------------------------------------------------------------------------------------------------
# Parquet in, Parquet out


def out_name(path: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(path.split("://")[-1]).name)[:120]


def out_names(paths: list[str]) -> list[str]:
    """Output file names: the input's name, with a hash of its path when two inputs share a name."""
    names = [out_name(p) for p in paths]
    dup = {n for n in names if names.count(n) > 1}
    return [f"{Path(n).stem}-{hashlib.sha1(p.encode()).hexdigest()[:8]}{Path(n).suffix}" if n in dup else n
            for n, p in zip(names, paths)]


def scrub_file(path: str, out_dir: str, cfg_json: str, batch_rows: int = 256, progress: bool = False,
               name: str | None = None, input_label: str | None = None) -> dict:
    """One curated Parquet file -> OUT/curated/<name> with scrubbed `text` and a `pii` column."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm import tqdm

    from pipelines.io import open_binary

    cfg = PiiConfig.model_validate_json(cfg_json)
    scrubber = scrubber_for(cfg_json)
    st = PiiStats()
    dest = Path(out_dir) / "curated" / (name or out_name(path))
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    with open_binary(path) as fh:
        pf = pq.ParquetFile(fh)
        schema = pf.schema_arrow
        if "text" not in schema.names:
            raise ValueError(f"{path}: no `text` column")
        if "pii" in schema.names:
            schema = schema.remove(schema.get_field_index("pii"))
        meta = dict(schema.metadata or {})
        meta.update({b"pii_config_hash": cfg.digest().encode(), b"pii_seed": str(cfg.seed).encode(),
                     b"pii_crawlmix_version": __version__.encode(), b"pii_input": (input_label or path).encode()})
        schema = schema.append(pa.field("pii", PII_TYPE)).with_metadata(meta)
        writer = pq.ParquetWriter(tmp, schema, compression="zstd")
        bar = tqdm(total=pf.metadata.num_rows, desc=out_name(path)[:30], unit="doc", disable=not progress)
        for batch in pf.iter_batches(batch_size=batch_rows):
            table = pa.Table.from_batches([batch])
            if "pii" in table.column_names:
                table = table.drop_columns(["pii"])
            out = scrubber.scrub_table(table, st)
            writer.write_table(out.cast(schema))
            bar.update(table.num_rows)
        bar.close()
        writer.close()
    os.replace(tmp, dest)
    return {"input": path, "output": str(dest), **st.to_dict()}


def scrub_crawl_task(curated: str, removed: list[str], cfg_json: str) -> dict:
    """The PII step of crawl.py for one task: its curated file in place (text + `pii` column), and the
    url/detail columns of its removed files. Files already scrubbed with this config are left alone."""
    import pyarrow.parquet as pq

    cfg = PiiConfig.model_validate_json(cfg_json)
    done = cfg.digest().encode()
    parts = []
    if (pq.read_schema(curated).metadata or {}).get(b"pii_config_hash") != done:
        parts.append(scrub_file(curated, str(Path(curated).parent.parent), cfg_json, name=Path(curated).name,
                                input_label=f"curated/{Path(curated).name}"))  # in place: no run-specific path
    for path in removed:
        meta = pq.read_schema(path).metadata or {}
        if meta.get(b"pii_config_hash") == done:
            continue
        st = PiiStats()
        table = scrubber_for(cfg_json).scrub_table(pq.read_table(path), st, text_column=None, also=["url", "detail"])
        table = table.replace_schema_metadata({**meta, b"pii_config_hash": done})
        tmp = path + ".tmp"
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
        parts.append({"input": path, **st.to_dict()})
    return merge_pii_stats(parts) if parts else None


def merge_pii_stats(parts: list[dict]) -> dict:
    """Sum per-file PII stats (crawl.py and pii.py both report the total)."""
    tot = PiiStats()
    for p in parts:
        s = PiiStats(**{k: p[k] for k in ("docs", "docs_scrubbed", "docs_with_pii", "skipped_language", "chars",
                                           "chars_analyzed", "windows", "seconds")})
        s.errors.update(p["errors"])
        s.replacements.update(p["replacements"])
        tot.add(s)
    return tot.to_dict()


def run(inputs: list[str], out_dir: Path, cfg: PiiConfig, workers: int = 1, progress: bool = True) -> dict:
    import datetime as dt

    from tqdm import tqdm

    from pipelines.write import write_json

    t0 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg_json = cfg.model_dump_json()
    scrub = Scrubber(cfg)  # fail early (and say what NER does) before any work
    names = out_names(inputs)
    parts = []
    if workers <= 1 or len(inputs) <= 1:
        for p, n in zip(inputs, names):
            parts.append(scrub_file(p, str(out_dir), cfg_json, progress=progress, name=n))
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as ex:
            futs = [ex.submit(scrub_file, p, str(out_dir), cfg_json, name=n) for p, n in zip(inputs, names)]
            for f in tqdm(futs, desc="pii", unit="file", disable=not progress):
                parts.append(f.result())
    stats = {"stage": "pii", "crawlmix_version": __version__, "config_hash": cfg.digest(), "seed": cfg.seed,
             "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "output": str(out_dir),
             "inputs": len(inputs), "workers": workers, "wall_s": round(time.perf_counter() - t0, 2),
             **scrub.describe(), "pii": merge_pii_stats(parts), "files": sorted(parts, key=lambda x: x["input"])}
    write_json(out_dir / "stats.json", stats)
    write_json(out_dir / "config.json", {"pii": cfg.model_dump(mode="json")})
    return stats


def summary(stats: dict) -> str:
    p = stats["pii"]
    lines = [f"crawlmix {stats['crawlmix_version']}  pii  config={stats['config_hash']}  seed={stats['seed']}  "
             f"files={stats['inputs']}  wall={stats['wall_s']}s",
             f"output: {stats['output']}/curated/*.parquet  stats.json",
             f"docs {p['docs']}  scrubbed {p['docs_scrubbed']}  with PII {p['docs_with_pii']}  "
             f"(presidio read {100 * p['analyzed_frac']:.1f}% of {p['chars']} chars)",
             "replacements: " + (", ".join(f"{k}={v}" for k, v in p["replacements"].items()) or "none"),
             f"NER: {stats['ner']}"]
    if p["errors"]:
        lines.append("errors: " + ", ".join(f"{k}={v}" for k, v in p["errors"].items()))
    return "\n".join(lines)


def main(argv=None) -> int:
    import argparse

    from pipelines.io import resolve_inputs

    ap = argparse.ArgumentParser(prog="pii.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Writes OUTPUT/curated/<file>.parquet (scrubbed `text` + `pii` spans of the "
                                        "original text) and OUTPUT/stats.json (replacements per entity type).")
    ap.add_argument("--input", action="append", required=True, metavar="PARQUET_GLOB",
                    help="curated Parquet file(s) with a `text` column; repeatable")
    ap.add_argument("--output", required=True, metavar="DIR")
    ap.add_argument("--config", metavar="YAML", help="pii config, or a job YAML with a `pii:` section")
    ap.add_argument("--workers", type=int, default=1, help="processes, one presidio engine each (default 1)")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        cfg = load_pii_config(a.config)
        inputs = resolve_inputs(a.input)
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    stats = run(inputs, Path(a.output), cfg, max(1, a.workers), progress=not a.no_progress)
    print(summary(stats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
