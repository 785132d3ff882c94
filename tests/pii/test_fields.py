"""PII outside `text`: URLs (identity kept), record references, messages, row columns, and PiiSink (rows are
scrubbed before a byte is written)."""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crawlmix.pii.config import PiiConfig
from crawlmix.pii.fields import FieldScrubber, PiiSink
from crawlmix.pii.spans import PiiStats
from tests.conftest import shared

EMAIL = "jane.roe@example.org"


@pytest.fixture(scope="module")
def fs():
    return FieldScrubber(PiiConfig())


@pytest.mark.parametrize("url, want", [
    # e-mails anywhere: query value (percent-encoded), path segment, userinfo, fragment
    ("https://x.org/c?email=jane.roe%40example.org&id=7", "https://x.org/c?email=%3CEMAIL_ADDRESS%3E&id=7"),
    (f"https://x.org/team/{EMAIL}/cv.pdf?x=1", "https://x.org/team/%3CEMAIL_ADDRESS%3E/cv.pdf?x=1"),
    ("http://jane.roe@example.org/page", "http://%3CEMAIL_ADDRESS%3E@example.org/page"),
    (f"https://x.org/p#contact={EMAIL}", "https://x.org/p#contact=%3CEMAIL_ADDRESS%3E"),
    # contact schemes: the whole address
    (f"mailto:{EMAIL}?subject=hello", "mailto:%3CEMAIL_ADDRESS%3E?subject=hello"),
    ("tel:+1-415-555-0147", "tel:%3CPHONE_NUMBER%3E"),
    # query values whose key names the kind of PII, or a +-prefixed phone number
    ("https://x.org/p?phone=4155550147&q=abc", "https://x.org/p?phone=%3CPHONE_NUMBER%3E&q=abc"),
    ("https://x.org/p?call=%2B1%20415%20555%200147", "https://x.org/p?call=%3CPHONE_NUMBER%3E"),
    ("https://web.archive.org/x?cip=207.241.231.98&rec=1", "https://web.archive.org/x?cip=%3CIP_ADDRESS%3E&rec=1"),
])
def test_url_pii_replaced_rest_kept(fs, url, want):
    st = PiiStats()
    assert fs.urls([url], st) == [want]
    assert sum(st.replacements.values()) == 1


@pytest.mark.parametrize("url", [
    "https://x.org/article/4155550147?id=4155550147&page=2",  # ids that presidio reads as phone numbers
    "https://x.org/img/20220417_074519831_photo.jpg",
    "https://x.org/p?ll=53.364813,7.204515&ev=6006927712209",  # coordinates, a Luhn-valid id
    "http://166.62.108.43/wp/logo.png",  # a server's address is the page's identity
    "https://x.org/search?q=at+home",
    "",
])
def test_page_identity_kept(fs, url):
    assert fs.urls([url]) == [url]


def test_fake_replacement_and_none(tmp_path):
    fs = FieldScrubber(PiiConfig(replacement="fake"))
    out = fs.urls([f"https://x.org/c?email={EMAIL}", None, "http://jane.roe@example.org/"])
    assert out[0].startswith("https://x.org/c?email=user") and out[0].endswith("%40example.com")
    assert out[1] is None and out[2].startswith("http://user") and out[2].endswith("@example.org/")


def test_refs_and_messages(fs):
    ref = f"/data/a.warc.gz@1234 (https://x.org/c?email={EMAIL})"
    assert fs.refs([ref, "/data/CC-MAIN-20200809045209-00123.warc.gz@99", None]) == [
        "/data/a.warc.gz@1234 (https://x.org/c?email=%3CEMAIL_ADDRESS%3E)",
        "/data/CC-MAIN-20200809045209-00123.warc.gz@99", None]  # file names are not scrubbed as text
    msg = "bad page https://x.org/?mail=jane.roe%40example.org, call +1 415-555-0147"
    assert fs.messages([msg]) == ["bad page https://x.org/?mail=%3CEMAIL_ADDRESS%3E, call <PHONE_NUMBER>"]


def test_rows_every_column(fs):
    rows = [{"id": f"f@1 (https://x.org/?e={EMAIL})", "url": f"mailto:{EMAIL}", "text": f"Write to {EMAIL}.",
             "language": "en", "caption": f"Jane ({EMAIL})", "candidates": [f"https://x.org/i.jpg?email={EMAIL}"],
             "detail": f"redirected to https://x.org/?email={EMAIL}", "offset": 3}]
    text_st, field_st = PiiStats(), PiiStats()
    out = fs.rows(rows, text_st, field_st)[0]
    assert EMAIL not in repr(out) and "jane.roe%40" not in repr(out)
    assert out["text"] == "Write to <EMAIL_ADDRESS>."
    assert out["pii"] == [{"type": "EMAIL_ADDRESS", "start": 9, "end": 29}]
    assert out["offset"] == 3 and text_st.replacements["EMAIL_ADDRESS"] == 1
    assert field_st.replacements["EMAIL_ADDRESS"] == 5  # id, url, caption, candidates, detail


def test_pii_sink_writes_only_scrubbed_rows(tmp_path):
    from crawlmix.text.schema import CURATED_SCHEMA, REMOVED_SCHEMA

    cfg = PiiConfig()
    cur = PiiSink(tmp_path / "curated" / "t.parquet", CURATED_SCHEMA, {"input": "x"}, "zstd", 2, pii=cfg, batch=2)
    rem = PiiSink(tmp_path / "removed" / "t.parquet", REMOVED_SCHEMA, {"input": "x"}, "zstd", 2, pii=cfg)
    for i in range(5):
        cur.add({"id": f"<urn:{i}>", "url": f"https://x.org/{i}?email={EMAIL}", "text": f"Mail {EMAIL} or 415-555-0147",
                 "language": "en"})
    rem.add({"id": f"f.warc@9 (https://x.org/?email={EMAIL})", "url": f"https://x.org/?email={EMAIL}",
             "stage": "read", "reason": "bad_http", "detail": f"no header in https://x.org/?email={EMAIL}"})
    assert (cur.close(), rem.close()) == (5, 1)
    for f in (tmp_path / "curated" / "t.parquet", tmp_path / "removed" / "t.parquet"):
        assert EMAIL.encode() not in f.read_bytes()
        assert EMAIL not in repr(pq.read_table(f).to_pylist())
    t = pq.read_table(tmp_path / "curated" / "t.parquet")
    assert t.schema.field("pii").type == pa.list_(pa.struct([("type", pa.string()), ("start", pa.int64()),
                                                             ("end", pa.int64())]))
    meta = t.schema.metadata
    assert meta[b"pii_config_hash"] == cfg.digest().encode() and meta[b"pii_input"] == b"curated/t.parquet"
    assert pq.read_schema(tmp_path / "removed" / "t.parquet").metadata[b"pii_config_hash"] == cfg.digest().encode()
    assert cur.stats()["text"]["replacements"] == {"EMAIL_ADDRESS": 5, "PHONE_NUMBER": 5}
    assert cur.stats()["fields"] == {"EMAIL_ADDRESS": 5} and rem.stats()["fields"] == {"EMAIL_ADDRESS": 3}


def test_realpages_urls_mostly_unchanged(fs):
    """On the real pages: no page URL changes, and of every link and image URL on them only those with a
    clear piece of PII (mailto:/tel:/callto: links, an e-mail, a hinted query key) change: well under 1%."""
    from crawlmix.io.warc import iter_pages

    pages = list(iter_pages(str(shared("bench/realpages.warc.gz")), lambda *a, **k: None))
    page_urls = [p.url for p in pages]
    assert len(page_urls) > 1000 and fs.urls(page_urls) == page_urls
    links = []
    for p in pages:
        for m in re.finditer(r'<(?:img|a)\b[^>]*?(?:src|href)="([^"]+)"', p.html or "", re.I):
            try:
                links.append(urljoin(p.url, m.group(1)))
            except ValueError:
                pass
    new = fs.urls(links)
    changed = [(a, b) for a, b in zip(links, new) if a != b]
    assert len(links) > 100_000 and 0 < len(changed) < 0.005 * len(links), len(changed)
    for a, b in changed:
        assert a.lower().startswith(("mailto:", "tel:", "callto:", "sms:")) or "@" in a or "%40" in a.lower() \
            or re.search(r"[?&#](phone|tel|cip|ip|mobile)=", a, re.I), a
        assert urlsplit(b).scheme == urlsplit(a).scheme, (a, b)
        if urlsplit(a).scheme.lower() not in ("mailto", "tel", "callto", "sms"):  # there the address is the PII
            assert urlsplit(b).hostname == urlsplit(a).hostname, (a, b)
