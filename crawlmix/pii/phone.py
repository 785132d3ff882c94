"""Phone numbers for the PII stage, fast: digit chains, and which of presidio's regions libphonenumber
could find a number for in each (PhoneFilter, read from libphonenumber's own metadata), so presidio's
PhoneRecognizer runs only there (ChainPhoneRecognizer). Same results as presidio on the whole text:
docs/pii.md; tests/pii/test_pii.py checks it. Used by crawlmix/pii/scrub.py and crawlmix/pii/engine.py.
"""

from __future__ import annotations

import bisect
import re
from functools import lru_cache

# Digit chains (the candidate scan of crawlmix/pii/scrub.py starts from them).
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


# --------------------------------------------------------------------------------------------------
# Phone numbers. presidio's PhoneRecognizer runs libphonenumber's matcher once per region (8 by
# default): 0.3-1.3 ms per digit chain, most of the time on PII-dense text. PhoneFilter tells from
# libphonenumber's metadata which regions could match on a chain at all, and ChainPhoneRecognizer runs
# presidio's recognizer only there (docs/pii.md; tests/pii/test_pii.py checks it against libphonenumber).

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


def chains(text: str, phone_filter: PhoneFilter | None = None):
    """(start, end, phone) for each digit chain of text; phone: None, or (piece start, piece end,
    regions) where libphonenumber's matcher could find a number over the chain: its candidates there
    lie in the piece, which spans the chain, the lead before it (( [ + and punctuation), an extension
    after it ('ext. 12') and, when the digits before have an extension reaching into it ('12 ext.
    345'), their candidate too."""

    def start(g):  # where a candidate over digit group g = [start, end, lead start, bridged start, ext end] can start
        if g[2] is None:
            lead = _LEAD.search(text, max(0, g[0] - 12), g[0]).group()
            g[2] = g[0] - len(lead) + _first_lead(lead)
            if g[3] is not None:
                g[2] = min(g[2], g[3])
        return g[2]

    def ext_end(g):  # where an extension after group g ends (g's end when there is none); computed once
        if g[4] is None:
            g[4] = _extension_end(text, g[1])
        return g[4]

    prev = None
    for m in _GROUP.finditer(text):
        s, e = m.span()
        g = [s, e, None, start(prev) if prev and ext_end(prev) > s else None, None]
        prev = g
        if e - s < 4 or sum(c.isdecimal() for c in m.group()) < 4:
            continue
        if phone_filter is None:
            yield s, e, None
        else:
            ee = ext_end(g)
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
def chain_phone_recognizer_class():
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
            for _, _, (ls, ee, regions) in chains(text, self.filter):
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
