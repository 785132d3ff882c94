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

Every page is bounded before its extraction (``bounded_text``; the images stage uses ``check_bounds`` too):
resiliparse's main-content extraction costs about elements x nesting depth, so the DOM, parsed in linear
time, is checked first against ``max_elements`` and ``max_depth`` (two lexbor selector queries in C) and a
page over either is refused with a reason (too_many_elements / too_deep); ``time_limit`` is the wall-time
backstop (extract_timeout).

Run alone:  python pipelines/extract.py FILE.warc.gz [--engine trafilatura]
"""

from __future__ import annotations

import re
import signal
import threading
import time
from contextlib import contextmanager
from functools import lru_cache

from crawlmix.text.config import DEFAULT_SKIP, MAX_DEPTH, MAX_ELEMENTS

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


class PageBoundError(Exception):
    """A page over a bound: ``reason`` is too_deep, too_many_elements or extract_timeout."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


class ExtractTimeout(BaseException):
    """Raised by time_limit. A BaseException, so that libraries' ``except Exception`` cannot swallow it."""


@lru_cache(maxsize=8)
def _deeper_than(depth: int) -> str:
    # an element with ``depth`` element ancestors: "* > * > ... > *", depth + 1 compounds
    return " > ".join(["*"] * (depth + 1))


def over_bounds(dom, max_depth: int = MAX_DEPTH, max_elements: int = MAX_ELEMENTS) -> tuple[str, str] | None:
    """(reason, detail) when a parsed page (parse_html) is over a bound, else None.

    Both checks run in lexbor's C code on the DOM (which parses in linear time, 100,000 levels deep in
    ~0.07 s): the element count, then, only when there are more elements than ``max_depth``, the first
    element with ``max_depth`` element ancestors (lexbor matches the child-combinator chain from each
    element upwards, at most ``max_depth`` steps, and stops at the first hit). Depth counts the elements
    on the path from <html> down, <html> included. A page of more than twice ``max_elements`` is refused
    on its count alone, which keeps the depth query's worst case (elements x max_depth steps) short."""
    doc = dom.document
    n = len(doc.query_selector_all("*"))
    if max_depth < n <= 2 * max_elements and doc.query_selector(_deeper_than(max_depth)) is not None:
        return "too_deep", f"elements nested more than extract.max_depth {max_depth} deep ({n} elements)"
    if n > max_elements:
        return "too_many_elements", f"{n} elements > extract.max_elements {max_elements}"
    return None


def check_bounds(dom, max_depth: int = MAX_DEPTH, max_elements: int = MAX_ELEMENTS):
    """``dom``, or PageBoundError when it is over a bound (over_bounds)."""
    why = over_bounds(dom, max_depth, max_elements)
    if why is not None:
        raise PageBoundError(*why)
    return dom


@contextmanager
def time_limit(seconds: float, what: str = "extraction"):
    """Raise ExtractTimeout when the block runs longer than ``seconds`` (0: no limit).

    In a process's main thread a SIGALRM timer interrupts Python code at the limit (trafilatura); a native
    call (resiliparse) holds the interpreter until it returns, and the timeout is raised then. Elsewhere
    (a thread) the elapsed time is checked when the block ends. A timer already set (pytest-timeout, ...)
    gets its handler and its remaining time back."""
    if not seconds or seconds <= 0:
        yield
        return
    t0 = time.monotonic()
    alarm = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    message = f"{what} ran over extract.timeout_s {seconds:g} s"

    def ring(signum, frame):
        raise ExtractTimeout(message)

    if alarm:
        old_handler = signal.signal(signal.SIGALRM, ring)
        old_timer = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        if alarm:
            try:
                signal.setitimer(signal.ITIMER_REAL, 0)
            finally:  # (the alarm may ring just now: the old handler comes back whatever happens)
                signal.signal(signal.SIGALRM, old_handler)
                if old_timer[0] > 0:  # someone else's timer: what is left of it
                    signal.setitimer(signal.ITIMER_REAL, max(1e-3, old_timer[0] - (time.monotonic() - t0)),
                                     old_timer[1])
    if time.monotonic() - t0 > seconds:
        raise ExtractTimeout(message)


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


def bounded_text(html: str, engine: str = "resiliparse", skip=DEFAULT_SKIP, fallback_below: int = 200, dom=None,
                 max_depth: int = MAX_DEPTH, max_elements: int = MAX_ELEMENTS, timeout_s: float = 0.0
                 ) -> tuple[str, str]:
    """main_text within the page bounds: PageBoundError (too_deep, too_many_elements, extract_timeout)
    instead of an extraction that could hold the task for minutes. The page is parsed once (both engines:
    the bound is checked on resiliparse's DOM, which resiliparse's extraction then reuses)."""
    try:
        with time_limit(timeout_s):
            dom = check_bounds(parse_html(html) if dom is None else dom, max_depth, max_elements)
            return main_text(html, engine, skip, fallback_below, dom if engine == "resiliparse" else None)
    except ExtractTimeout as e:
        raise PageBoundError("extract_timeout", str(e)) from None


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
        try:
            text = p.text if p.text is not None else bounded_text(p.html, a.engine, timeout_s=30)[0]
        except PageBoundError as e:
            print(f"SKIP {p.ref}: {e}\n")
            continue
        print(f"=== {p.url}\n{text[:2000]}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
