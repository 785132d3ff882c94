"""Image candidates and their captions from HTML pages (the images job's per-file task, crawlmix.images.task).

Every <img> of a page (with <picture>/<source> and the best srcset candidate) becomes a ``Candidate``
with absolute URLs, best first, and the captions the page gives it: figcaption or a caption-class
element, alt, title and surrounding text; ``choose_caption`` picks one in ``captions.sources`` order.
Nothing is fetched here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urljoin

from crawlmix.images.config import ImagesJob

_LAZY_ATTRS = ("data-src", "data-lazy-src", "data-original", "data-url", "data-lazy")
_BLOCKS = {"p", "div", "td", "li", "figure", "section", "article", "dd", "blockquote", "center", "table"}
_WS = re.compile(r"\s+")


def _norm(s: str | None) -> str:
    return _WS.sub(" ", s or "").strip()


# ----------------------------------------------------------------------------------------------
# Candidates from HTML

@dataclass
class Candidate:
    index: int
    urls: list[str]  # absolute, in order of preference (best srcset/<source> first, then src)
    alt: str
    title: str
    figcaption: str
    surrounding: str
    declared: tuple[int, int] | None  # <img width height> when both are plain integers
    data_uri: bool = False


def parse_srcset(value: str | None) -> list[tuple[str, float]]:
    """[(url, score)] per the HTML srcset grammar (URLs may contain commas); score: w, or x*1e-6."""
    out, s, i, n = [], value or "", 0, len(value or "")
    while i < n:
        while i < n and (s[i].isspace() or s[i] == ","):
            i += 1
        j = i
        while j < n and not s[j].isspace():
            j += 1
        url = s[i:j]
        if url.endswith(","):
            url, desc, i = url.rstrip(","), "", j
        else:
            k = s.find(",", j)
            k = n if k < 0 else k
            desc, i = s[j:k].strip(), k + 1
        if not url:
            continue
        score = 1e-6  # "1x"
        d = desc.split()[0].lower() if desc else ""
        try:
            if d.endswith("w"):
                score = float(d[:-1])
            elif d.endswith("x"):
                score = float(d[:-1]) * 1e-6
        except ValueError:
            pass
        out.append((url, score))
    return out


def _int_attr(v: str | None) -> int | None:
    v = (v or "").strip().lower().removesuffix("px")
    return int(v) if v.isdigit() else None


def _caption_element(img) -> str:
    """The caption the page gives this image, if any:
    <figure><figcaption>; else the nearest element whose class names a caption (Wikipedia's
    thumbcaption, WordPress's wp-caption-text, ...), climbing at most 3 levels and never past an
    element that also holds another image; else, for an image alone in a table cell, the cell
    below it (galleries laid out as tables); else the <caption> of a table holding only this image."""
    fig = img.closest("figure")
    if fig is not None:
        cap = fig.query_selector("figcaption")
        if cap is not None and not cap.contains(img):
            text = _norm(cap.text)
            if text:
                return text
    node = img.parent
    for _ in range(3):
        if node is None or node.tag in ("body", "html"):
            break
        caps = [el for el in node.query_selector_all('[class*="caption"]') if not el.contains(img)]
        if any(i != img and not any(c.contains(i) for c in caps) for i in node.query_selector_all("img")):
            break  # captions from here up may belong to another image
        for el in caps:
            text = _norm(el.text)
            if text:
                return text
        node = node.parent
    td = img.closest("td")
    if td is not None and td.parent is not None and td.parent.tag == "tr" and not _norm(td.text) \
            and len(td.query_selector_all("img")) == 1:
        cells = [c for c in td.parent.child_nodes if c.tag in ("td", "th")]
        col = next((i for i, c in enumerate(cells) if c == td), None)
        below = td.parent.next_element_sibling
        if col is not None and below is not None and below.tag == "tr":
            row = [c for c in below.child_nodes if c.tag in ("td", "th")]
            if len(row) == len(cells) > 1 and row[col].query_selector("img") is None:
                text = _norm(row[col].text)
                if 0 < len(text) <= 500:
                    return text
    table = img.closest("table")
    if table is not None and len(table.query_selector_all("img")) == 1:
        cap = table.query_selector("caption")
        if cap is not None:
            return _norm(cap.text)
    return ""


def _surrounding(img, limit: int) -> str:
    if limit <= 0:
        return ""
    node = img.parent
    for _ in range(4):
        if node is None or node.tag in ("body", "html"):
            break
        if node.tag in _BLOCKS:
            text = _norm(node.text)
            if len(text) >= 20:
                return text[:limit]
        node = node.parent
    return ""


def page_images(html: str, page_url: str, job: ImagesJob) -> list[Candidate]:
    """Every <img> of a page as a candidate (absolute URLs, captions); nothing is fetched here."""
    from resiliparse.parse.html import HTMLTree

    from crawlmix.text.extract import check_bounds

    tree = check_bounds(HTMLTree.parse(html))  # PageBoundError (too_deep, ...): the text stages' page bounds
    base = page_url
    head = tree.head
    b = head.query_selector("base[href]") if head is not None else None
    if b is not None:
        base = urljoin(page_url, b.getattr("href").strip())
    root = tree.body if tree.body is not None else tree.document
    out = []
    for idx, img in enumerate(root.query_selector_all("img")):
        if idx >= job.pages.max_images_per_page:
            break
        ranked: list[tuple[str, float]] = []
        parent = img.parent
        if parent is not None and parent.tag == "picture":
            for src in parent.query_selector_all("source"):
                if (src.getattr("type") or "").strip().lower() == "image/svg+xml":
                    continue
                ranked += sorted(parse_srcset(src.getattr("srcset")), key=lambda x: -x[1])
        ranked += sorted(parse_srcset(img.getattr("srcset") or img.getattr("data-srcset")), key=lambda x: -x[1])
        src = (img.getattr("src") or "").strip()
        if not src or src.startswith("data:"):
            lazy = next((img.getattr(a).strip() for a in _LAZY_ATTRS if (img.getattr(a) or "").strip()), "")
            src = lazy or src
        urls, data_uri = [], False
        for u in [x for x, _ in ranked] + [src]:
            u = u.strip()
            if not u:
                continue
            if u.startswith("data:"):
                data_uri = True
                continue
            try:
                a = urljoin(base, u).split("#", 1)[0]
            except ValueError:
                continue
            if a not in urls:
                urls.append(a)
        w, h = _int_attr(img.getattr("width")), _int_attr(img.getattr("height"))
        out.append(Candidate(idx, urls, _norm(img.getattr("alt")), _norm(img.getattr("title")),
                             _caption_element(img), _surrounding(img, job.captions.surrounding_chars),
                             (w, h) if w is not None and h is not None else None, data_uri and not urls))
    return out


def page_captions(tree, max_images: int) -> frozenset[str]:
    """The captions ``page_images`` would give the page's first ``max_images`` images (their ``figcaption``
    field), from a parsed tree, without the rest of a candidate (URLs, srcset, sizes, surrounding text)."""
    root = tree.body if tree.body is not None else tree.document
    out = set()
    for idx, img in enumerate(root.query_selector_all("img")):
        if idx >= max_images:
            break
        out.add(_caption_element(img))
    out.discard("")
    return frozenset(out)


def _caption_sources(root) -> set[str]:
    """A superset of the captions ``_caption_element`` gives a page's images, cheap to find: the texts of
    every figcaption, caption-class and <caption> element, and of the cells of the row below each table cell
    holding an image. (Reading a node out of a resiliparse query result costs about as much as running the
    query again, so only the few images in table cells are visited.)"""
    if root.query_selector("img") is None:
        return set()
    out = {_norm(el.text) for el in root.query_selector_all('figcaption, [class*="caption"], caption')}
    for img in root.query_selector_all("td img"):
        td = img.closest("td")
        if td is not None and td.parent is not None and td.parent.tag == "tr":
            below = td.parent.next_element_sibling
            if below is not None and below.tag == "tr":
                out.update(_norm(c.text) for c in below.child_nodes if c.tag in ("td", "th"))
    return out


class PageCaptions:
    """``text in PageCaptions(tree, n)``: is ``text`` (whitespace-normalised) the caption ``page_images`` gives
    one of the page's first ``n`` images? Found only as far as needed: nothing until the first question; then
    a cheap superset (``_caption_sources``); the captions themselves (per image, the costly part) only for a
    text in that superset."""

    def __init__(self, tree, max_images: int):
        self.tree, self.max_images = tree, max_images
        self.sources: set[str] | None = None
        self.captions: frozenset[str] | None = None

    def __contains__(self, text) -> bool:
        if self.sources is None:
            self.sources = _caption_sources(self.tree.body if self.tree.body is not None else self.tree.document)
        if text not in self.sources:
            return False
        if self.captions is None:
            self.captions = page_captions(self.tree, self.max_images)
        return text in self.captions


def choose_caption(c: Candidate, job: ImagesJob) -> tuple[str, str]:
    for source in job.captions.sources:
        text = getattr(c, source)
        if text:
            mx = job.captions.max_chars
            if len(text) > mx:
                cut = text[:mx]
                text = cut[:cut.rfind(" ")] if " " in cut[mx // 2:] else cut
            return text, source
    return "", ""
