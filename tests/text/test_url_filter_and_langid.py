"""URL filter decisions equal datatrove's URLFilter; fastText LID works offline and is accurate."""

from __future__ import annotations

import pytest

from crawlmix.text import langid
from crawlmix.text.config import UrlFilterConfig
from crawlmix.io.warc import iter_pages
from crawlmix.text.url_filter import UrlFilter
from tests.conftest import ROOT, SHARED, shared

HANDMADE = [
    "http://www.pornhub.com/view/1", "https://sub.pornhub.com/x", "https://example.com/free-porn-videos",
    "https://example.com/sexy-girls-cams", "https://example.com/xxxsomething", "https://en.wikipedia.org/wiki/Bridge",
    "https://news.example.com/2024/bread.html", "http://192.168.0.1/admin", "https://a.b.c.example.co.uk/path?q=1",
    "https://example.com/naked-truth-about-cams", "https://camgirls.example.org/", "https://www.bbc.co.uk/news",
    "https://example.com/hot-babes-and-apeshit-stories", "https://example.com/alaskanpipeline-story",
]


def _urls(sample_dir):
    urls = list(HANDMADE) + [p.url for p in iter_pages(str(sample_dir / "sample.warc.gz"), lambda *a, **k: None)]
    real = SHARED / "bench" / "realpages.warc.gz"
    if real.exists():
        urls += [p.url for p in iter_pages(str(real), lambda *a, **k: None)]
    return urls


def test_url_filter_matches_datatrove(sample_dir):
    from datatrove.data import Document
    from datatrove.pipeline.filters import URLFilter
    from tldextract import TLDExtract

    ref = URLFilter()
    ref.tldextractor = TLDExtract(suffix_list_urls=(), cache_dir=None)
    ours = UrlFilter(UrlFilterConfig())
    reasons = set()
    for url in _urls(sample_dir):
        r = ref.filter(Document(text="", id="x", metadata={"url": url}))
        want = None if r is True else r[1]
        assert ours.check(url) == want, url
        reasons.add(want)
    # the handmade URLs reach every kind of rule, and plenty pass
    assert {None, "domain", "hard_blacklisted", "soft_blacklisted", "blacklisted_subword"} <= reasons, reasons


def test_user_lists():
    f = UrlFilter(UrlFilterConfig(use_ut1_lists=False, extra_domains=["bad.example"], extra_urls=["https://ok.example/x"],
                                  banned_words=["spamword"], soft_banned_words=["cheap", "pills"]))
    assert f.check("https://www.bad.example/a") == "subdomain"
    assert f.check("https://bad.example/a") == "domain"
    assert f.check("https://ok.example/x") == "url"
    assert f.check("https://ok.example/spamword-here") == "hard_blacklisted"
    assert f.check("https://ok.example/cheap-pills") == "soft_blacklisted"
    assert f.check("https://ok.example/cheap") is None
    assert f.check("http://www.pornhub.com/") is None  # UT1 lists off


def test_fasttext_predict_works():
    lang, score, scores = langid.best("The quick brown fox jumps over the lazy dog near the river bank.")
    assert lang == "en" and score > 0.8 and abs(sum(langid.predict("hello there", k=-1).values()) - 1) < 0.05
    assert langid.best("Der schnelle braune Fuchs springt über den faulen Hund.")[0] == "de"


LANGS = ["en", "de", "fr", "es", "ru", "zh", "nl", "it", "pt", "ja", "ar", "pl", "tr", "sv", "fi", "uk"]


@pytest.mark.slow
def test_lid_accuracy_on_real_sentences():
    shared("lid/en.txt")
    wrong, total = {}, 0
    for lang in LANGS:
        path = SHARED / "lid" / f"{lang}.txt"
        if not path.exists():
            continue
        lines = [x for x in path.read_text().splitlines() if x.strip()][:200]
        miss = sum(langid.best(x)[0] != lang for x in lines)
        wrong[lang] = miss / len(lines)
        total += 1
    assert total >= 10
    # lid.176.ftz on single sentences: >= 90% right in every one of these languages
    assert all(v <= 0.10 for v in wrong.values()), wrong


def _reach_quality(path, tmp, prefilter: bool) -> tuple[set[str], int]:
    """Ids of the pages that pass every stage before quality (the language filter included), and how
    many pages the probe stopped."""
    import pyarrow.parquet as pq

    from crawlmix.crawl.config import load_job
    from crawlmix.text.curate import curate_file

    cfg = load_job(ROOT / "jobs" / "fineweb-en.yaml")
    cfg.dedup.enabled = False
    cfg.extract.prefilter = prefilter
    r = curate_file(str(path), tmp, cfg)
    assert ("langid_prefilter" in r["stages"]) == prefilter
    ids = set(pq.read_table(tmp / "curated", columns=["id"]).column("id").to_pylist())
    removed = pq.read_table(tmp / "removed", columns=["id", "stage"]).to_pylist()
    probed = sum(r["stages"]["langid_prefilter"]["dropped"].values()) if prefilter else 0
    return ids | {x["id"] for x in removed if x["stage"] == "quality"}, probed


@pytest.mark.parametrize("which", ["sample", "realpages", "cc-2020-34"])
def test_language_probe_drops_no_page_the_language_filter_keeps(which, sample_dir, tmp_path):
    """The probe (fastText on the visible text of the first 16,000 HTML characters of the body) only
    saves work: the pages that reach the quality rules are the same with and without it."""
    path = {"sample": sample_dir / "sample.warc.gz", "realpages": SHARED / "bench" / "realpages.warc.gz",
            "cc-2020-34": SHARED / "warc" / "cc-main-2020-34-sample.warc.gz"}[which]
    if which != "sample":
        shared(str(path.relative_to(SHARED)))
    with_probe, stopped = _reach_quality(path, tmp_path / "on", True)
    without, _ = _reach_quality(path, tmp_path / "off", False)
    assert stopped > 0  # the probe did stop pages (the sample's non-English ones, realpages' 748)...
    assert with_probe and with_probe == without  # ...and none the language filter would have kept
