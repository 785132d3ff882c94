"""The reading-order walk and the document arrangement (crawlmix.interleaved.walk) on small hand-written pages."""

from __future__ import annotations

from crawlmix.interleaved.config import DomConfig
from crawlmix.interleaved.walk import Block, Img, arrange, walk

CFG = DomConfig()


def shape(w) -> list:
    return [("img", it.index) if isinstance(it, Img) else (it.kind, it.text) for it in w.items]


def test_blocks_and_images_in_reading_order():
    html = """<html><body><h2>Title <small>sub</small></h2><p>One <b>bold</b>word<br>next line</p>
    <ul><li>first item of the list here</li><li><p>nested paragraph</p> tail</li></ul>
    <div>Before <img src=a.jpg> after</div><pre>  keep
   lines </pre><table><tr><td>cell one</td><td>cell two</td></tr></table></body></html>"""
    assert shape(walk(html, CFG)) == [
        ("heading", "Title sub"), ("paragraph", "One boldword\nnext line"), ("list_item", "first item of the list here"),
        ("paragraph", "nested paragraph"), ("list_item", "tail"), ("text", "Before"), ("img", 0), ("text", "after"),
        ("paragraph", "keep\nlines"), ("cell", "cell one"), ("cell", "cell two")]


def test_furniture_hidden_and_not_rendered_are_skipped_and_their_images_counted():
    html = """<body><nav><img src=n.png><a href=/>Home</a></nav><div class="widget site-footer"><img src=f.png>x</div>
    <p hidden><img src=h.png>hidden</p><div aria-hidden="true"><img src=h2.png></div><noscript><img src=ns.png></noscript>
    <div class="overflow-hidden"><p>Kept despite the utility class name.</p><img src=k.jpg></div>
    <article><header><h1>Article title stays</h1></header><p>Body text.</p></article><header>Site banner</header>
    <div role="complementary"><img src=c.png></div><div id="cookie-consent">We use cookies</div></body>"""
    w = walk(html, CFG)
    assert shape(w) == [("paragraph", "Kept despite the utility class name."), ("img", 5), ("heading", "Article title stays"),
                        ("paragraph", "Body text.")]
    assert w.skipped_images == {"furniture": 3, "hidden": 2, "not_rendered": 1}  # nav, footer widget, role; noscript
    assert w.images_total - sum(w.skipped_images.values()) == 1


def test_a_furniture_named_wrapper_holding_the_page_is_read():
    body = "".join(f"<p>Paragraph {i} of the article with enough words to count.</p>" for i in range(5))
    html = f"<body><div class='layout has-sidebar'>{body}<div class='sidebar'>Side links</div></div></body>"
    w = walk(html, CFG)
    assert [t for k, t in shape(w)][:1] == ["Paragraph 0 of the article with enough words to count."]
    assert len(w.items) == 5 and "Side links" not in str(shape(w))


def test_link_lists_are_dropped_unless_they_are_a_caption():
    html = """<body><ul><li><a href=/a>Home</a></li><li><a href=/b>Contact us</a></li></ul>
    <p>See <a href=/c>this page</a> for the full story of the bridge and its builders.</p>
    <table><tr><td><img src=x.jpg></td></tr><tr><td><a href=/x>L.H.O.O.Q.</a> by <a href=/d>Marcel Duchamp</a></td></tr></table>
    </body>"""
    w = walk(html, CFG, protect=frozenset({"L.H.O.O.Q. by Marcel Duchamp"}))
    assert shape(w) == [("paragraph", "See this page for the full story of the bridge and its builders."), ("img", 0),
                        ("cell", "L.H.O.O.Q. by Marcel Duchamp")]
    assert w.dropped_blocks == {"link_list": 2}
    assert ("cell", "L.H.O.O.Q. by Marcel Duchamp") not in shape(walk(html, CFG))


def test_deep_pages_do_not_hit_the_recursion_limit():
    html = "<body>" + "<div>" * 5000 + "deep text<img src=d.jpg>" + "</div>" * 5000 + "</body>"
    assert shape(walk(html, CFG)) == [("text", "deep text"), ("img", 0)]


def test_arrange_moves_captions_beside_kept_images_and_joins_text():
    i0, i1, i = {"img": 0}, {"img": 1}, {"img": "x"}  # payloads: the image records (never str)
    items = [Block("Intro", "paragraph"), Img(0), Img(1), Block("Caption zero here", "cell"),
             Block("Caption one here", "cell"), Block("Body", "paragraph"), Img(2), Block("Caption two, dropped image", "text")]
    caps = {0: "Caption zero here", 1: "Caption one here", 2: "Caption two, dropped image"}
    assert arrange(items, {0: i0, 1: i1}, caps, window=4) == [
        "Intro", i0, "Caption zero here", i1, "Caption one here\n\nBody\n\nCaption two, dropped image"]
    assert arrange([Block("a", "p"), Block("b", "p"), Img(0)], {0: i}, {}, 4, merge=False) == ["a", "b", i]
    # a figcaption written before its image moves after it; a caption outside the window stays
    far = [Block("Far caption text", "caption")] + [Block(f"filler {k}", "p") for k in range(5)] + [Img(0)]
    assert arrange(far, {0: i}, {0: "Far caption text"}, window=2)[-1] == i
    assert arrange(far, {0: i}, {0: "Far caption text"}, window=8)[-2:] == [i, "Far caption text"]
