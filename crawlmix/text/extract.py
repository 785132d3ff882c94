"""HTML -> main text: resiliparse (default) or trafilatura, and the cheap language probe.

Measured on the 181 articles of ../shared/data/bench/extraction_truth.json (bench/extraction.py):
resiliparse's main-content extraction with post metadata off and page/article headers, footers
and captions skipped scores a higher token F1 than trafilatura (0.952 vs 0.951) at ~7x its speed,
so it is the default; trafilatura stays one config line away (``extract.engine: trafilatura``).

Both engines can sit behind the language probe (``extract.prefilter``): the visible text of a window
of HTML from <body> on (probe_window, parsed alone; no main-content detection) decides, with a margin,
whether the page can reach the job's languages before the main extraction runs. A page short enough
to fit the window keeps the probe's DOM for the extraction. With resiliparse, a page whose main
content comes out nearly empty goes to trafilatura.

Run alone:  python pipelines/extract.py FILE.warc.gz [--engine trafilatura]
"""

from __future__ import annotations

import re

from crawlmix.text.config import DEFAULT_SKIP

# trafilatura settings: its default precision/recall balance, no fallback extractors
# (readability/justext triple its cost for +0.001 F1 here), no comments, as datatrove's Trafilatura.
TRAFILATURA_KW = dict(include_comments=False, no_fallback=True, deduplicate=False, with_metadata=False)
# resiliparse: text only (no alt texts, link targets, bullets, form fields, noscript, comments)
RESILIPARSE_KW = dict(alt_texts=False, links=False, list_bullets=False, form_fields=False, noscript=False,
                       comments=False)
_BODY = re.compile(r"<body[\s>/]", re.I)


def parse_html(html: str):
    """A resiliparse DOM (the probe and the extraction can share it)."""
    from resiliparse.parse.html import HTMLTree

    return HTMLTree.parse(html)


def resiliparse_text(html, skip: tuple[str, ...] | list[str] = DEFAULT_SKIP) -> str:
    """Main content of an HTML string or parsed DOM (parse_html)."""
    from resiliparse.extract.html2text import extract_plain_text

    return extract_plain_text(html, main_content=True, post_meta=False, skip_elements=list(skip) or None,
                              **RESILIPARSE_KW)


def probe_text(html) -> str:
    """All visible text of an HTML string or DOM, no main-content detection (cheaper): enough to tell
    the language."""
    from resiliparse.extract.html2text import extract_plain_text

    return extract_plain_text(html, main_content=False, **RESILIPARSE_KW)


def probe_window(html: str, chars: int) -> str:
    """The language probe's share of a page: ``chars`` characters of HTML from the <body> tag on (the
    whole page when it is that short). Visible text starts at the body; parsing a window of it instead
    of the whole page (often 100+ KB of scripts and styles) is what makes the probe cheap."""
    if len(html) <= chars:
        return html
    m = _BODY.search(html)
    start = m.start() if m else 0
    return html[start:start + chars]


def trafilatura_text(html: str) -> str:
    import trafilatura

    return trafilatura.extract(html, **TRAFILATURA_KW) or ""


def main_text(html: str, engine: str = "resiliparse", skip=DEFAULT_SKIP, fallback_below: int = 200,
              dom=None) -> tuple[str, str]:
    """(text, extractor) as a crawl extracts a page. resiliparse main content that comes out shorter
    than ``fallback_below`` characters usually means its main-content detection missed the page:
    trafilatura extracts it instead, when that gives more text (not tried when the page's visible
    text is that short too). ``dom``: the whole page already parsed."""
    if engine == "trafilatura":
        return trafilatura_text(html), "trafilatura"
    if dom is None:
        dom = parse_html(html)
    text = resiliparse_text(dom, skip)
    if len(text) < fallback_below and len(probe_text(dom)) >= fallback_below:
        better = trafilatura_text(html)
        if len(better) > len(text):
            return better, "trafilatura"
    return text, "resiliparse"


def main(argv=None) -> int:
    import argparse

    from crawlmix.io.warc import iter_pages

    ap = argparse.ArgumentParser(description="Print the extracted text of the pages in a WARC file.")
    ap.add_argument("file")
    ap.add_argument("--engine", choices=["resiliparse", "trafilatura"], default="resiliparse")
    ap.add_argument("--limit", type=int, default=3)
    a = ap.parse_args(argv)
    for i, p in enumerate(iter_pages(a.file, lambda *x, **k: print("SKIP", *x))):
        if i >= a.limit:
            break
        print(f"=== {p.url}\n{(p.text if p.text is not None else main_text(p.html, a.engine)[0])[:2000]}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
