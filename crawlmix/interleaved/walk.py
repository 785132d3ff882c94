"""An HTML page in reading order: text blocks and images, site furniture left out (OBELICS-style).

``walk(html, cfg)`` visits the DOM once, depth first (an explicit stack: deep pages do not hit Python's
recursion limit), and emits

* ``Block(text, kind)`` for every block of text: headings, paragraphs, list items, table cells, captions
  (a block element starts and ends a block; ``<br>`` is a line break; whitespace collapses as a browser
  collapses it, ``<pre>`` keeps its lines);
* ``Img(index)`` for every ``<img>``, ``index`` being its position among the page's ``<img>`` elements, the
  same numbering crawlmix.images.captions.page_images gives its candidates (their URLs, best ``srcset`` /
  ``<picture>`` source, declared size and caption come from there).

Not read: scripts, styles, embedded documents and form controls; HTML5 furniture (``nav``, ``aside``,
``footer``, a ``header`` outside ``article`` / ``main``); elements whose class or id names furniture
(navigation, menus, ads, sharing, cookie boxes, tables of contents, logos, icons, ...) or whose ARIA role
does, unless they hold most of the page's text (a ``<div class="has-sidebar">`` around the article);
hidden elements; and link lists (a short block that is mostly link text). Images inside what is not read
are counted (``furniture``, ``hidden``, ``not_rendered``), never fetched.

``arrange`` then builds the document: failed images out, each kept image's caption block moved next to it
(right after; found by its text within ``dom.caption_window`` blocks), consecutive text blocks joined.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Container
from dataclasses import dataclass
from functools import lru_cache

from crawlmix.interleaved.config import DomConfig

_BLOCK = frozenset("address article aside blockquote body caption center dd details dialog dir div dl dt fieldset "
                   "figcaption figure footer form h1 h2 h3 h4 h5 h6 header hgroup hr li main menu nav ol p pre "
                   "section summary table tbody td tfoot th thead tr ul legend".split())
_KIND = {**{f"h{i}": "heading" for i in range(1, 7)}, "li": "list_item", "dt": "list_item", "dd": "list_item",
         "figcaption": "caption", "caption": "caption", "td": "cell", "th": "cell", "p": "paragraph",
         "blockquote": "paragraph", "pre": "paragraph"}
_NOT_RENDERED = frozenset("script style noscript template head title svg math iframe object embed canvas video "
                          "audio map".split())
_WS = re.compile(r"\s+")
_SPLIT = re.compile(r"[^a-z0-9]+")
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.I)
_STATE = frozenset("has with is no show js".split())  # has-sidebar, with-navigation: the layout, not furniture
_RELATION = frozenset("below above after before under over beside near parent layout container wrap wrapper "
                      "template".split())


@dataclass
class Block:
    text: str
    kind: str  # heading | paragraph | list_item | cell | caption | text


@dataclass
class Img:
    index: int  # position among the page's <img> elements (crawlmix.images.captions.page_images' Candidate.index)


@dataclass
class Walk:
    items: list  # Block | Img, in reading order
    images_total: int  # <img> elements of the page
    skipped_images: Counter  # reason -> <img> elements not read (inside furniture, hidden, not rendered)
    dropped_blocks: Counter  # reason -> text blocks left out (link lists, too short)


class _Rules:
    """The job's furniture rules, prepared once per process."""

    def __init__(self, cfg: DomConfig):
        self.cfg = cfg
        self.skip = frozenset(t.lower() for t in cfg.skip_tags)
        self.keep_header_in = frozenset(t.lower() for t in cfg.keep_header_in)
        self.words = frozenset(w.lower() for w in cfg.furniture_words)
        self.names = frozenset(n.lower() for n in cfg.furniture_names)
        self.roles = frozenset(r.lower() for r in cfg.furniture_roles)
        self.cache: dict[tuple, bool] = {}  # (class, id, role) -> furniture: pages repeat their class names

    def furniture(self, el) -> bool:
        key = (el.getattr("class"), el.getattr("id"), el.getattr("role"))
        if key == (None, None, None):
            return False
        hit = self.cache.get(key)
        if hit is None:
            if len(self.cache) > 50_000:
                self.cache.clear()
            hit = self.cache[key] = self._furniture(*key)
        return hit

    def _furniture(self, cls: str | None, id_: str | None, role: str | None) -> bool:
        """Whether a class / id names furniture: a whole name listed, or its first or last word listed. BEM
        modifiers (``section--ads``), responsive suffixes (``@lg``, ``md:``) and state / relation names
        (``has-sidebar``, ``with-navigation``, ``sticky-sidebar-parent``, ``below-banner``) name no furniture."""
        for name in ((cls or "").split() + [id_ or ""]):
            n = name.lower().split("--", 1)[0].split("@", 1)[0].rsplit(":", 1)[-1]
            if not n:
                continue
            if n in self.names:
                return True
            words = [w for w in _SPLIT.split(n) if w]
            if not words or words[0] in _STATE or any(w in _RELATION for w in words):
                continue
            if words[0] in self.words or words[-1] in self.words:
                return True
        role = (role or "").strip().lower()
        return bool(role) and role in self.roles

    def hidden(self, el) -> bool:
        if not self.cfg.hidden:
            return False
        if el.hasattr("hidden") or (el.getattr("aria-hidden") or "").strip().lower() == "true":
            return True
        style = el.getattr("style")
        return bool(style) and _HIDDEN_STYLE.search(style) is not None


@lru_cache(maxsize=4)
def _rules(cfg_json: str) -> _Rules:
    return _Rules(DomConfig.model_validate_json(cfg_json))


def walk(html: str, cfg: DomConfig, protect: Container[str] = frozenset(), rules: _Rules | None = None,
         tree=None) -> Walk:
    """The page's blocks and images in reading order; ``protect``: caption texts (whitespace-normalised)
    never dropped as link lists (a caption is often mostly links: "L.H.O.O.Q. by Marcel Duchamp"): a set, or
    anything that answers ``in`` (crawlmix.images.captions.PageCaptions: asked only about a block that would
    be dropped as a link list). ``tree``: the page already parsed (resiliparse's HTMLTree of ``html``)."""
    from resiliparse.parse.html import HTMLTree, NodeType

    from crawlmix.text.extract import probe_text, resiliparse_text

    rules = rules or _rules(cfg.model_dump_json())
    tree = HTMLTree.parse(html) if tree is None else tree
    root = tree.body if tree.body is not None else tree.document
    total = len(root.query_selector_all("img"))
    page_chars = len(_WS.sub("", probe_text(tree)))  # visible text only (no scripts, styles)
    keys = _key_lines(resiliparse_text(tree))
    w = _walk(root, _Walker(cfg, rules, None, page_chars, protect, keys), NodeType)
    if w.next_img != total:  # <img> counted in document order disagree with the parser's list: number by node
        order = {node: i for i, node in enumerate(root.query_selector_all("img"))}
        w = _walk(root, _Walker(cfg, rules, order, page_chars, protect, keys), NodeType)
    return Walk(w.items, total, w.skipped, w.dropped)


def _walk(root, w: "_Walker", NodeType) -> "_Walker":
    element, text = NodeType.ELEMENT, NodeType.TEXT
    stack = [(root, False)]
    while stack:
        node, leaving = stack.pop()
        if leaving:
            w.leave(node)
            continue
        kind = node.type
        if kind == text:
            w.text(node.text)
        elif kind == element:
            if w.enter(node):
                stack.append((node, True))
                _push_children(stack, node)
        elif node is root:  # the document itself when there is no <body>
            _push_children(stack, node)
    w.flush()
    return w


def _push_children(stack: list, node) -> None:
    """Children in reverse, so they pop in order (sibling links: ~15x cheaper than ``child_nodes``)."""
    c = node.last_child
    while c is not None:
        stack.append((c, False))
        c = c.previous_sibling


class _Walker:
    def __init__(self, cfg: DomConfig, rules: _Rules, order: dict | None, page_chars: int, protect: frozenset[str],
                 key_lines: list[str]):
        self.cfg, self.rules, self.order, self.page_chars, self.protect = cfg, rules, order, page_chars, protect
        self.key_lines = key_lines
        self.next_img = 0  # <img> elements met so far, read or not: the next one's index (document order)
        self.items: list = []
        self.skipped: Counter = Counter()
        self.dropped: Counter = Counter()
        self.buf: list[str] = []
        self.link_chars = 0
        self.kinds: list[str] = []  # kinds of the open block elements
        self.links = 0  # open <a> elements
        self.pre = 0  # open <pre> elements
        self.keepers = 0  # open article / main elements (a <header> there is the title's)

    # -- elements
    def enter(self, el) -> bool:
        """False: the subtree is not read (its images counted)."""
        tag = el.tag
        why = None
        if tag in _NOT_RENDERED:
            why = "not_rendered"
        elif tag not in ("body", "html"):
            if self.rules.hidden(el):
                why = "hidden"
            elif (tag in self.rules.skip or (tag == "header" and not self.keepers) or self.rules.furniture(el)) \
                    and not self._holds_the_page(el):
                why = "furniture"
        if why is not None:
            n = 1 if tag == "img" else len(el.query_selector_all("img"))
            if n:
                self.skipped[why] += n
                self.next_img += n
            return False
        if tag == "img":
            idx = self.next_img if self.order is None else self.order.get(el)
            self.next_img += 1
            if idx is not None:
                self.flush()
                self.items.append(Img(idx))
            return False
        if tag == "br":
            self.buf.append("\n")
            return False
        if tag in _BLOCK:
            self.flush()
            kind = _KIND.get(tag)
            if kind is None and "caption" in (el.getattr("class") or "").lower():
                kind = "caption"
            self.kinds.append(kind or (self.kinds[-1] if self.kinds else "text"))
        if tag == "a":
            self.links += 1
        elif tag == "pre":
            self.pre += 1
        elif tag in self.rules.keep_header_in:
            self.keepers += 1
        return True

    def leave(self, el) -> None:
        tag = el.tag
        if tag == "a":
            self.links -= 1
        elif tag == "pre":
            self.pre -= 1
        elif tag in self.rules.keep_header_in:
            self.keepers -= 1
        if tag in _BLOCK:
            self.flush()
            if self.kinds:
                self.kinds.pop()

    def _holds_the_page(self, el) -> bool:
        """Furniture by its tag or name that holds the article is the page's layout, not furniture: it holds
        most of the page's visible text, or most of the key lines of the page's main content (resiliparse's
        main-content extraction, as the text stages run it)."""
        text = el.text or ""
        if self.page_chars > 0 and len(_WS.sub("", text)) > 0.5 * self.page_chars:
            return True
        if not self.key_lines:
            return False
        flat = _WS.sub(" ", text)
        return sum(k in flat for k in self.key_lines) >= min(2, len(self.key_lines))

    # -- text
    def text(self, s: str) -> None:
        if not s:
            return
        if self.pre:
            s = s.replace("\r\n", "\n")
        else:
            s = _WS.sub(" ", s)
        self.buf.append(s)
        if self.links:
            self.link_chars += len(_WS.sub("", s))

    def flush(self) -> None:
        if not self.buf:
            return
        raw = "".join(self.buf)
        links, self.buf, self.link_chars = self.link_chars, [], 0
        lines = [_WS.sub(" ", ln).strip() for ln in raw.split("\n")]
        text = "\n".join(ln for ln in lines if ln)
        if not text:
            return
        cfg = self.cfg
        if len(text) < cfg.min_block_chars:
            self.dropped["too_short"] += 1
            return
        if links and len(text.split()) <= cfg.link_block_max_words \
                and links / max(1, len(_WS.sub("", text))) >= cfg.max_link_density \
                and _WS.sub(" ", text) not in self.protect:
            self.dropped["link_list"] += 1
            return
        self.items.append(Block(text, self.kinds[-1] if self.kinds else "text"))


def _key_lines(main: str, n: int = 3, min_chars: int = 40) -> list[str]:
    """The ``n`` longest lines of the page's main content (whitespace-normalised, at least ``min_chars``)."""
    lines = sorted({_WS.sub(" ", ln).strip() for ln in main.split("\n")}, key=lambda s: (-len(s), s))
    return [ln for ln in lines[:n] if len(ln) >= min_chars]


# ----------------------------------------------------------------------------------------------
# The document: kept images, captions beside them, text blocks joined

def _norm(s: str) -> str:
    return _WS.sub(" ", s or "").strip()


def _is_caption(block_text: str, caption: str) -> bool:
    b = _norm(block_text)
    if b == caption:
        return True
    short = min(len(b), len(caption))
    return short >= 10 and (caption.startswith(b) or b.startswith(caption))


def arrange(items: list, kept: dict[int, object], captions: dict[int, str], window: int,
            merge: bool = True) -> list:
    """``items`` with only the images in ``kept`` (index -> payload, put in place of the ``Img``), each kept
    image's caption block (``captions``: index -> caption text) moved right after it, and, with ``merge``,
    consecutive text blocks joined with a blank line. Returns [str | payload] in reading order."""
    items = [it for it in items if not isinstance(it, Img) or it.index in kept]
    claimed: set[int] = set()  # ids of blocks already used as a caption
    i = 0
    while i < len(items):
        it = items[i]
        cap = _norm(captions.get(it.index, "")) if isinstance(it, Img) else ""
        if cap:
            near = sorted(range(max(0, i - window), min(len(items), i + window + 1)), key=lambda j: (abs(j - i), j))
            j = next((j for j in near if j != i and isinstance(items[j], Block) and id(items[j]) not in claimed
                      and _is_caption(items[j].text, cap)), None)
            if j is not None:
                block = items.pop(j)
                claimed.add(id(block))
                block.kind = "caption"
                i = i - 1 if j < i else i
                items.insert(i + 1, block)
        i += 1
    out: list = []
    for it in items:
        if isinstance(it, Img):
            out.append(kept[it.index])
        elif merge and out and isinstance(out[-1], str):
            out[-1] = out[-1] + "\n\n" + it.text
        else:
            out.append(it.text)
    return out
