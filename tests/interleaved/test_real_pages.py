"""Interleaved documents from real pages: the Mona Lisa article and the archive.org home page with their images
captured in the same WARCs (../shared/data/warc; skipped with a reason without it), and the bundled sample crawl
as crawl.py runs the step (the text run's kept pages, PII scrubbed)."""

from __future__ import annotations

import io
from urllib.parse import unquote

import pyarrow.parquet as pq
from PIL import Image

from tests.conftest import shared
from tests.interleaved.pages import INLINE, job

from crawlmix.interleaved.job import run

# the article's figures, in page order, and the caption printed beside each
MONA_FIGURES = [
    ("Mona_Lisa,_by_Leonardo_da_Vinci,_from_C2RMF", "Mona Lisa"),
    ("Leonardo_da_Vinci_-_Self-Portrait", "Self-portrait by Leonardo da Vinci, executed in red chalk"),
    ("Mona_Lisa_stolen-1911", "Vacant wall in the Salon Carré, Louvre"),
    ("Mona_Lisa_detail_background_right", "Detail of the background (right side)"),
    ("Mona_Lisa_detail_hands", "Detail of Lisa's hands, her right hand resting on her left."),
    ("Mona-lisa_in_the_Louvre", "2010: Mona Lisa is among the greatest attractions in the Louvre"),
    ("ARC194219", "US President John F. Kennedy at the unveiling the Mona Lisa"),
    ("Sapeck-La_Joconde_fumant_la_pipe", "Le rire (The laugh) by Eugène Bataille, or Sapeck (1883)"),
    ("Marcel_Duchamp_Mona_Lisa_LHOOQ", "L.H.O.O.Q. by Marcel Duchamp (1919)"),
]
MONA_ICONS = ["magnify-clip", "Padlock", "khamsa", "Commons-logo", "search-ltr", "wikimedia-button", "poweredby"]


def _docs(out):
    return [r for f in sorted((out / "interleaved").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def _check_mona(doc: dict) -> None:
    names = [unquote(im["url"]) for im in doc["images"] if im is not None]
    assert len(names) == len(MONA_FIGURES), names
    for name, (fig, _) in zip(names, MONA_FIGURES):
        assert fig in name, (fig, name)
    assert not [n for n in names if any(icon in n for icon in MONA_ICONS)]
    for i, im in enumerate(doc["images"]):
        if im is not None:
            fig = next(c for f, c in MONA_FIGURES if f in unquote(im["url"]))
            assert doc["texts"][i + 1].startswith(fig), (fig, doc["texts"][i + 1][:80])  # the caption right after
            with Image.open(io.BytesIO(im["bytes"])) as img:
                assert img.size == (im["width"], im["height"]) and min(img.size) >= 64
    text = "\n".join(t for t in doc["texts"] if t)
    assert "The Mona Lisa (La Gioconda or La Joconde" in text
    for furniture in ("Navigation menu", "Personal tools", "Privacy policy", "Jump to:", "Retrieved from"):
        assert furniture not in text, furniture


def test_mona_lisa_figures_in_page_order_beside_their_captions_no_icons(tmp_path):
    warc = str(shared("warc/wikipedia-mona-lisa-images.warc.gz"))
    stats = run([warc], tmp_path / "a", job(), INLINE)
    (doc,) = _docs(tmp_path / "a")  # the page is in the WARC twice: the second copy is a re-crawl
    assert doc["url"] == "http://en.wikipedia.org/wiki/Mona_Lisa" and doc["language"] == "en"
    _check_mona(doc)
    f = {r["stage"]: r for r in stats["funnel"]["images"]}
    assert f["dom"]["in"] == 24 and f["dom"]["dropped"] == {"furniture": 5, "hidden": 1}  # footer, search, portal...
    assert f["size_hint"]["dropped"] == {"too_small": 8}  # 7 magnifier glyphs + a Commons logo, never read
    assert f["filter"]["dropped"] == {"aspect_ratio": 1}  # the 440x132 margin note (its caption stays as text)
    assert stats["sources"] == {"warc": 9} and stats["warc_matches"] == {"canonical": 1, "exact": 9}  # records read (10)
    # without the <img width height> hints the icons are read, and the size filter drops them
    stats = run([warc], tmp_path / "b", job(images={"filters": {"use_declared_size": False}}), INLINE)
    (doc,) = _docs(tmp_path / "b")
    _check_mona(doc)
    f = {r["stage"]: r for r in stats["funnel"]["images"]}
    assert f["filter"]["dropped"] == {"too_small": 8, "aspect_ratio": 1}  # decoded: 15x11 glyphs, a 9x12 logo


def test_archive_org_home_page_gives_a_document_without_its_icons(tmp_path):
    warc = str(shared("warc/archive-org-images.warc.gz"))
    stats = run([warc], tmp_path / "out", job(), INLINE)
    (doc,) = _docs(tmp_path / "out")
    assert doc["url"] == "https://archive.org/" and doc["language"] == "en"
    assert "The Internet Archive, a 501(c)(3) non-profit, is building a digital library" in doc["texts"][0]
    assert doc["images"] == [None]  # its pictures were not captured; the captured stars are 16x16 icons
    f = {r["stage"]: r for r in stats["funnel"]["images"]}
    assert f["filter"]["dropped"] == {"too_small": 15} and f["download"]["dropped"] == {"not_captured": 9}
    removed = pq.read_table(next((tmp_path / "out" / "interleaved" / "removed").glob("*.parquet"))).to_pylist()
    assert [r["reason"] for r in removed if r["stage"] == "pages"] == ["repeated"]  # the second copy
    assert {r["stage"] for r in removed} == {"read", "pages"}  # redirects etc.: not pages


def test_bundled_sample_as_the_crawl_runs_the_step(tmp_path, sample_dir):
    """What crawl.py's interleaved step does: the text run's curated/ decides the pages, PII is scrubbed."""
    from crawlmix.pii.config import PiiConfig
    from crawlmix.text.curate import curate_file, load_text_job

    inputs = sorted(str(p) for p in sample_dir.glob("*.warc.gz")) + sorted(str(p) for p in sample_dir.glob("*.arc.gz"))
    crawl = tmp_path / "crawl"
    cfg = load_text_job(None)
    kept = set()
    for p in inputs:
        curate_file(p, crawl, cfg)
    for f in (crawl / "curated").glob("*.parquet"):
        kept |= set(pq.read_table(f, columns=["id"]).column("id").to_pylist())
    stats = run(inputs, crawl, job(), INLINE, kept_from=str(crawl), pii=PiiConfig())
    docs = _docs(crawl)
    assert stats["failed_tasks"] == [] and len(docs) >= 10 and {d["id"] for d in docs} <= kept
    assert stats["images"] >= 1 and list((crawl / "interleaved").glob("*.tar"))
    assert {r["stage"]: r for r in stats["funnel"]["documents"]}["pages"]["dropped"]["not_kept"] >= 1
    assert stats["pii"]["replacements"].get("EMAIL_ADDRESS", 0) >= 1
    for d in docs:
        assert "@example" not in "\n".join(t for t in d["texts"] if t)  # sample e-mails are all scrubbed
