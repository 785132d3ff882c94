"""Test material for the interleaved job, all generated here: smooth pictures (pHash-stable under resizing), WARCs
holding pages and captured image records, and a synthetic article with every kind of furniture around its figures."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from crawlmix.interleaved.config import InterleavedJob
from crawlmix.runtime.executor import Executor

INLINE = Executor("inline", 1, progress=False)

PROSE = [
    "The old stone bridge was built in the fourteenth century by the monks of the nearby abbey. It crosses the "
    "river at its narrowest point, where the water runs fast over a bed of smooth grey stones. For centuries it was "
    "the only way to reach the market town from the farms on the eastern bank.",
    "Travellers who came to the town in the summer months often stopped on the bridge to watch the fishermen below. "
    "The arches were repaired many times after floods, and each repair left its own colour of stone in the walls. "
    "Local historians have counted at least seven different kinds of masonry in the structure.",
    "In the nineteenth century a mill was built a short distance upstream. Its wheel turned day and night, and the "
    "miller paid a toll to the town for every sack of flour that crossed the bridge. The mill burned down in a fire "
    "that was seen from the hills many miles away.",
    "Today the bridge is closed to cars and is used by walkers and cyclists. A small museum in the old toll house "
    "tells the story of the bridge, the mill and the families who lived beside the river. Volunteers keep the "
    "museum open on weekends from April to October.",
]
FIG_BRIDGE = "The bridge at sunset, seen from the east bank of the river"
FIG_MILL = "The mill upstream, drawn a few years before the fire"


def picture(seed: int, size=(320, 240)) -> Image.Image:
    """A smooth picture: a few random colours upsampled; one seed at two sizes has (nearly) the same pHash."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
    return small.resize(size, Image.Resampling.BICUBIC)


def encode(img: Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def write_warc(path: Path, pages: list[tuple[str, str]], images: list[tuple[str, bytes, str]] = ()) -> str:
    """A gzipped WARC: HTML response records, then image response records (url, bytes, content type)."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    with open(path, "wb") as f:
        w = WARCWriter(f, gzip=True)
        for url, html in pages:
            hh = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1")
            w.write_record(w.create_warc_record(url, "response", payload=io.BytesIO(html.encode()), http_headers=hh))
        for url, data, ctype in images:
            hh = StatusAndHeaders("200 OK", [("Content-Type", ctype)], protocol="HTTP/1.1")
            w.write_record(w.create_warc_record(url, "response", payload=io.BytesIO(data), http_headers=hh))
    return str(path)


def job(**over) -> InterleavedJob:
    """The default job, no UT1 lists (fast), with ``over`` merged per section."""
    cfg: dict = {"url_filter": {"use_ut1_lists": False}}
    for k, v in over.items():
        cfg[k] = {**cfg.get(k, {}), **v} if isinstance(v, dict) else v
    return InterleavedJob.model_validate(cfg)


S = "http://site.test"
# image URL -> (bytes, content type); what happens to each in the synthetic article is in EXPECTED_IMAGES
IMAGES = {
    f"{S}/img/bridge.jpg": (encode(picture(1)), "image/jpeg"),
    f"{S}/img/mill.png": (encode(picture(2, (300, 200)), "PNG"), "image/png"),
    f"{S}/img/logo.png": (encode(picture(3, (200, 80)), "PNG"), "image/png"),
    f"{S}/img/banner.jpg": (encode(picture(4, (300, 250))), "image/jpeg"),
    f"{S}/img/badge.png": (encode(picture(5, (88, 88)), "PNG"), "image/png"),
    f"{S}/img/hidden.jpg": (encode(picture(6)), "image/jpeg"),
    f"{S}/img/icon.png": (encode(picture(7, (16, 16)), "PNG"), "image/png"),
    f"{S}/img/wide.jpg": (encode(picture(8, (900, 100))), "image/jpeg"),
    f"{S}/img/corrupt.jpg": (b"\xff\xd8\xff\xe0" + b"\x00" * 300, "image/jpeg"),
    f"{S}/img/spacer.gif": (encode(Image.new("RGB", (300, 1)), "GIF"), "image/gif"),
    "http://track.test/t.gif?id=42": (encode(Image.new("RGB", (1, 1)), "GIF"), "image/gif"),
    f"{S}/img/share.png": (encode(picture(9, (100, 100)), "PNG"), "image/png"),
}
EXPECTED_IMAGES = {  # reason per <img> of the article (None: kept), counted in the image funnel
    "logo (header)": "furniture", "banner (ad)": "furniture", "badge (footer)": "furniture",
    "share (role=navigation)": "furniture", "hidden (display:none)": "hidden",
    "bridge": None, "mill": None, "tracking pixel (declared 1x1)": "too_small", "spacer": "furniture_url",
    "icon 16x16": "too_small", "wide 9:1": "aspect_ratio", "corrupt": "decode_error", "missing": "not_captured",
    "data uri": "data_uri", "bridge again": "duplicate_in_document",
}


def article(title: str = "The old stone bridge", prose: list[str] = PROSE) -> str:
    p = prose
    return f"""<!DOCTYPE html><html><head><title>{title}</title><style>p {{ margin: 0 }}</style></head><body>
<header class="site-header"><a href="/"><img src="/img/logo.png" alt="Site logo"></a><a href="/a">Home</a></header>
<nav class="menu"><ul><li><a href="/news">News</a></li><li><a href="/about">About us</a></li></ul></nav>
<div id="content">
<h1>{title}</h1>
<p>{p[0]}</p>
<figure><img src="/img/bridge.jpg" width="320" height="240" alt="bridge"><figcaption>{FIG_BRIDGE}</figcaption></figure>
<p>{p[1]}<img src="http://track.test/t.gif?id=42" width="1" height="1"></p>
<div class="ad-slot"><img src="/img/banner.jpg"></div>
<div role="navigation"><img src="/img/share.png"><a href="/share">Share this</a></div>
<div style="display: none"><img src="/img/hidden.jpg"><p>hidden text that must not appear</p></div>
<script>var s = "<img src='/img/script.jpg'>";</script>
<p>{p[2]}</p>
<img src="/img/spacer.gif" width="300" height="1">
<figure class="wp-block-image"><figcaption>{FIG_MILL}</figcaption><img src="/img/mill.png"></figure>
<ul><li><a href="/x">Related link one</a></li><li><a href="/y">Related link two</a></li></ul>
<p><img src="/img/icon.png"></p><p><img src="/img/wide.jpg"></p><p><img src="/img/corrupt.jpg"></p>
<p><img src="/img/missing.jpg"></p><p><img src="data:image/png;base64,iVBORw0KGgo="></p>
<p>{p[3]}</p>
<p><img src="/img/bridge.jpg" alt="the same picture again"></p>
</div>
<footer><img src="/img/badge.png"> Copyright 2024 Site</footer>
</body></html>"""


def article_warc(path: Path, url: str = f"{S}/bridge", extra_pages=(), images=None) -> str:
    imgs = images if images is not None else IMAGES
    return write_warc(path, [(url, article()), *extra_pages], [(u, d, c) for u, (d, c) in imgs.items()])
