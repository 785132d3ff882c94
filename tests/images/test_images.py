"""Image-text pairs (issue 7): fetch failure modes against a local server on 127.0.0.1, bad images,
resize modes, dedup (sha256 + pHash), the img2dataset shard layout, and the WARC-record path on the
shared Mona Lisa WARC. Nothing here leaves 127.0.0.1."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import tarfile
import time
import zlib
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.conftest import ROOT, shared

sys.path.insert(0, str(ROOT))

from bench.images import ImageServer  # noqa: E402
from crawlmix.runtime.config import ConfigError  # noqa: E402
from crawlmix.images.captions import page_images, parse_srcset  # noqa: E402
from crawlmix.images.fetch import fetch_many, robots_disallowed  # noqa: E402
from crawlmix.images.index import WarcIndex, index_file, url_key  # noqa: E402
from crawlmix.images.process import ImageError, ImageProcessor, hamming, phash  # noqa: E402
from crawlmix.images.shards import NearDupIndex  # noqa: E402
from crawlmix.images.job import run  # noqa: E402
from crawlmix.runtime.executor import Executor  # noqa: E402
from crawlmix.images.config import FetchConfig, FilterConfig, ImagesJob, ProcessConfig, load_images_job  # noqa: E402

MONA = "warc/wikipedia-mona-lisa-images.warc.gz"
INLINE = Executor("inline", 1, progress=False)

# ----------------------------------------------------------------------------------------------
# test images, all generated here


def picture(seed: int, size=(320, 240)) -> Image.Image:
    """A smooth, photo-like picture (gradient, blurred shapes, grain); the layout is drawn in
    relative coordinates, so one seed at two sizes is the same picture; seeds differ in pHash."""
    from PIL import ImageDraw, ImageFilter

    w, h = size
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    ang = rng.uniform(0, 2 * np.pi)
    t = ((x / w - 0.5) * np.cos(ang) + (y / h - 0.5) * np.sin(ang) + 0.75) / 1.5
    arr = c0 * (1 - t[..., None]) + c1 * t[..., None]
    img = Image.fromarray(arr.clip(0, 255).astype("uint8"))
    d = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = rng.uniform(-0.2, 0.8, 2)
        bw, bh = rng.uniform(0.15, 0.6, 2)
        box = [x0 * w, y0 * h, (x0 + bw) * w, (y0 + bh) * h]
        fill = tuple(int(v) for v in rng.uniform(0, 255, 3))
        (d.ellipse if rng.random() < 0.5 else d.rectangle)(box, fill=fill)
    img = img.filter(ImageFilter.GaussianBlur(max(1, w // 160)))
    grain = rng.normal(0, 3, (h, w, 3))
    return Image.fromarray((np.asarray(img, dtype=np.float32) + grain).clip(0, 255).astype("uint8"))


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(side=50_000) -> bytes:
    """A 300-byte PNG whose header claims side x side pixels."""
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
            + _png_chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + _png_chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def imgs() -> dict[str, bytes]:
    base = picture(0)
    jpg = encode(base, "JPEG", quality=92)
    near = encode(base.resize((300, 225), Image.Resampling.LANCZOS), "JPEG", quality=60)
    png = encode(picture(2), "PNG")
    anim = [picture(5, (120, 90)), picture(6, (120, 90))]
    buf = io.BytesIO()
    anim[0].save(buf, "GIF", save_all=True, append_images=anim[1:], duration=100, loop=0)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    noise = np.random.default_rng(1).integers(0, 256, (420, 420, 3), dtype=np.uint8)
    corrupt = bytearray(jpg)
    corrupt[2:40] = b"\x00" * 38  # no markers where the header should be
    out = {
        "good.jpg": jpg, "copy.jpg": jpg, "near.jpg": near, "good.png": png,
        "good.webp": encode(picture(3), "WEBP", quality=85), "small.webp": encode(picture(3, (80, 60)), "WEBP"),
        "other.jpg": encode(picture(4), "JPEG"), "good2.jpg": encode(picture(7), "JPEG"),
        "good3.jpg": encode(picture(8), "JPEG"), "b800.jpg": encode(picture(9, (800, 600)), "JPEG"),
        "a300.jpg": encode(picture(9, (300, 225)), "JPEG"), "cmyk.jpg": encode(picture(10).convert("CMYK"), "JPEG"),
        "rotated.jpg": encode(picture(11, (320, 200)), "JPEG", exif=exif.tobytes()),
        "nocap.jpg": encode(picture(12), "JPEG"), "fr.jpg": encode(picture(13), "JPEG"),
        "blocked.jpg": encode(picture(14), "JPEG"), "captured.jpg": encode(picture(15), "JPEG"),
        "sibling.jpg": encode(picture(16), "JPEG"), "rgba.png": encode(picture(17).convert("RGBA"), "PNG"),
        "corrupt.jpg": bytes(corrupt), "truncated.png": png[: len(png) // 2], "bomb.png": bomb_png(),
        "vector.svg": b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="300" height="300">'
                      b'<rect width="300" height="300" fill="red"/></svg>',
        "pixel.gif": encode(Image.new("RGB", (1, 1)), "GIF"), "anim.gif": buf.getvalue(),
        "huge.png": encode(Image.fromarray(noise), "PNG"),  # ~530 kB > process.max_bytes below
    }
    return out


CTYPES = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp", "gif": "image/gif", "svg": "image/svg+xml"}


@pytest.fixture(scope="module")
def server(imgs):
    files = {name: (data, CTYPES[name.rsplit(".", 1)[1]]) for name, data in imgs.items()}
    with ImageServer(files) as srv:
        yield srv


def proc(**kw) -> ImageProcessor:
    f = {k: kw.pop(k) for k in list(kw) if k in FilterConfig.model_fields}
    return ImageProcessor(ProcessConfig(**kw), FilterConfig(**f))


# ----------------------------------------------------------------------------------------------
# config and entry points

def test_shipped_job_loads_and_bad_fields_are_named(tmp_path):
    job = load_images_job(ROOT / "jobs" / "images.yaml")
    assert job.process.resize_mode == "keep_ratio" and not job.fetch.enabled
    assert load_images_job(ROOT / "jobs" / "images.yaml", {"fetch": {"enabled": True}}).fetch.enabled
    bad = tmp_path / "bad.yaml"
    bad.write_text("filters:\n  min_sidez: 3\nprocess:\n  resize_mode: stretch\n")
    with pytest.raises(ConfigError) as e:
        load_images_job(bad)
    msg = str(e.value)
    assert "filters.min_sidez: unknown key" in msg and "process.resize_mode" in msg and "stretch" in msg


@pytest.mark.parametrize("script", ["pipelines/images.py", "pipelines/image_fetch.py",
                                    "pipelines/image_process.py", "bench/images.py"])
def test_entry_points_have_help(script):
    r = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "usage:" in r.stdout


# ----------------------------------------------------------------------------------------------
# Pillow stage

@pytest.mark.parametrize("mode,expect", [("keep_ratio", (341, 256)), ("keep_ratio_largest", (256, 192)),
                                         ("center_crop", (256, 256)), ("border", (256, 256)), ("no", (320, 240))])
def test_resize_modes(imgs, mode, expect):
    r = proc(resize_mode=mode).process(imgs["good.jpg"])
    assert (r.width, r.height) == expect and (r.original_width, r.original_height) == (320, 240)
    out = Image.open(io.BytesIO(r.data))
    assert out.size == expect and out.mode == "RGB" and out.format == "JPEG"
    if mode == "border":  # letterbox: white bars top and bottom
        assert out.getpixel((128, 2)) >= (245, 245, 245) and out.getpixel((128, 253)) >= (245, 245, 245)


def test_resize_only_if_bigger_and_formats(imgs):
    r = proc(image_size=512, resize_only_if_bigger=True).process(imgs["good.jpg"])
    assert (r.width, r.height) == (320, 240)
    for fmt, pil in (("webp", "WEBP"), ("png", "PNG"), ("jpg", "JPEG")):
        r = proc(encode_format=fmt, encode_quality=80).process(imgs["good.png"])
        assert Image.open(io.BytesIO(r.data)).format == pil and r.ext == fmt


def test_exif_transpose_rgb_and_cmyk(imgs):
    r = proc(resize_mode="no").process(imgs["rotated.jpg"])
    assert (r.width, r.height) == (200, 320)  # stored 320x200, EXIF orientation 6
    r = proc().process(imgs["cmyk.jpg"])
    assert r.source_mode == "CMYK" and Image.open(io.BytesIO(r.data)).mode == "RGB"
    r = proc(resize_mode="no", encode_format="png").process(imgs["rgba.png"])
    assert r.source_mode == "RGBA" and Image.open(io.BytesIO(r.data)).mode == "RGB"
    # draft decoding of a large JPEG: same size out, close to a full decode
    big = proc().process(imgs["b800.jpg"])
    full = proc(jpeg_draft=False).process(imgs["b800.jpg"])
    assert (big.width, big.height) == (full.width, full.height) == (341, 256)
    a = np.asarray(Image.open(io.BytesIO(big.data)), dtype=np.float32)
    b = np.asarray(Image.open(io.BytesIO(full.data)), dtype=np.float32)
    assert np.abs(a - b).mean() < 3.0


@pytest.mark.parametrize("name,reason", [
    ("corrupt.jpg", "decode_error"), ("truncated.png", "truncated_image"), ("bomb.png", "decompression_bomb"),
    ("vector.svg", "svg"), ("pixel.gif", "too_small"), ("anim.gif", "animated"), ("huge.png", "too_large"),
])
def test_bad_images_are_counted_not_raised(imgs, name, reason):
    with pytest.raises(ImageError) as e:
        proc(max_bytes=300_000).process(imgs[name])
    assert e.value.reason == reason, e.value.detail
    # garbage of every kind: only ImageError, never anything else
    rng = np.random.default_rng(3)
    for data in (b"", b"GIF89a", imgs["good.jpg"][:200], bytes(rng.integers(0, 256, 5000, dtype=np.uint8)),
                 imgs["good.png"][:60] + bytes(200)):
        with pytest.raises(ImageError):
            proc().process(data)


def test_filters_and_animated_first_frame(imgs):
    assert proc(animated="first_frame").process(imgs["anim.gif"]).original_width == 120
    with pytest.raises(ImageError) as e:
        proc(max_aspect_ratio=1.2).process(imgs["good.jpg"])
    assert e.value.reason == "aspect_ratio"
    with pytest.raises(ImageError) as e:
        proc(max_area=10_000).process(imgs["good.jpg"])
    assert e.value.reason == "too_large_area"
    with pytest.raises(ImageError) as e:
        proc(max_pixels=1000).process(imgs["good.jpg"])
    assert e.value.reason == "decompression_bomb"


def test_phash_near_and_far(imgs):
    p = proc()
    h = {k: p.process(imgs[k]).phash for k in ("good.jpg", "near.jpg", "copy.jpg", "other.jpg", "good2.jpg",
                                                "good3.jpg", "nocap.jpg", "fr.jpg", "captured.jpg")}
    assert h["good.jpg"] == h["copy.jpg"]
    assert hamming(h["good.jpg"], h["near.jpg"]) <= 4
    distinct = [v for k, v in h.items() if k not in ("copy.jpg", "near.jpg")]
    assert min(hamming(a, b) for i, a in enumerate(distinct) for b in distinct[i + 1:]) > 8
    idx = NearDupIndex(4)
    assert idx.find_or_add(h["good.jpg"], "k0") is None
    assert idx.find_or_add(h["near.jpg"], "k1") == "k0"
    assert idx.find_or_add(h["other.jpg"], "k2") is None
    assert idx.find_or_add(h["good.jpg"] ^ 0b10101, "k3") == "k0"  # 3 bits off
    assert idx.find_or_add(phash(Image.new("RGB", (64, 64), "white")), "k4") is None


# ----------------------------------------------------------------------------------------------
# HTML -> candidates

def test_candidates_from_html():
    html = """<html><head><base href="https://cdn.example.test/a/"></head><body>
    <figure><img src="one.jpg" alt="alt one" title="t1"><figcaption>The  figure
      caption</figcaption></figure>
    <picture><source type="image/svg+xml" srcset="v.svg"><source srcset="p1.webp 1x, p2.webp 2x">
      <img src="fallback.jpg" alt="pic"></picture>
    <img src="data:image/gif;base64,R0lGOD" data-src="lazy.jpg" alt="lazy one">
    <img src="data:image/png;base64,iVBORw0KGgo=" alt="inline">
    <img srcset="//x.test/Mona_Lisa,_by.jpg 300w, //x.test/big,1.jpg 900w" src="s.jpg" width="1" height="1">
    <div class="wp-caption"><img src="wp.jpg"><p class="wp-caption-text">WordPress caption</p></div>
    <div><p>Some surrounding paragraph text that is long enough <img src="inline.jpg"></p></div>
    </body></html>"""
    job = ImagesJob()
    c = page_images(html, "https://example.test/page", job)
    assert [x.urls[0] if x.urls else None for x in c] == [
        "https://cdn.example.test/a/one.jpg", "https://cdn.example.test/a/p2.webp",
        "https://cdn.example.test/a/lazy.jpg", None, "https://x.test/big,1.jpg",
        "https://cdn.example.test/a/wp.jpg", "https://cdn.example.test/a/inline.jpg"]
    assert c[0].figcaption == "The figure caption" and c[0].alt == "alt one" and c[0].title == "t1"
    assert c[1].urls == ["https://cdn.example.test/a/p2.webp", "https://cdn.example.test/a/p1.webp",
                         "https://cdn.example.test/a/fallback.jpg"]
    assert c[3].data_uri and c[4].declared == (1, 1)
    assert c[5].figcaption == "WordPress caption"
    assert c[6].surrounding.startswith("Some surrounding paragraph")
    # HTML's grammar: a URL runs to whitespace (commas inside are kept), trailing commas end it
    assert parse_srcset("a.jpg, b.jpg 2x,c,d.jpg 3x,e.jpg,  f.jpg 640w") == [
        ("a.jpg", 1e-6), ("b.jpg", 2e-6), ("c,d.jpg", 3e-6), ("e.jpg", 1e-6), ("f.jpg", 640.0)]
    assert url_key("http://Upload.Example.org:80/a/Mona_Lisa%2C_x.jpg#f") == url_key(
        "https://upload.example.org/a/Mona_Lisa,_x.jpg")


# ----------------------------------------------------------------------------------------------
# fetch stage against the local server

def test_fetch_failure_modes(server):
    server.reset()
    cfg = FetchConfig(timeout_s=0.6, connect_timeout_s=0.5, retries=1, backoff_s=0.01, max_bytes=1_000_000)
    cases = {
        "/img/good.jpg": None, "/status/404": "http_404", "/status/500": "http_500", "/slow/3/good.jpg": "timeout",
        "/truncated/good.jpg": "truncated", "/type/text%2Fhtml/good.jpg": "wrong_content_type",
        "/big/30": "too_large", "/bigchunked/30": "too_large", "/loop": "too_many_redirects",
        "/redirect/good2.jpg": None, "/flaky/1/good3.jpg": None, "/notype/good.png": None,
        "/robots/noai/good.jpg": "x_robots_tag", "/robots/crawlmix%3A%20noimageai/good.jpg": "x_robots_tag",
        "/robots/otherbot%3A%20noai/good.jpg": None, "/robots/noarchive/good.jpg": None,
        "/img/vector.svg": "svg",
    }
    t0 = time.perf_counter()
    res = fetch_many([server.url(p) for p in cases] + ["data:image/png;base64,AAAA", "ftp://x/y.jpg"], cfg)
    assert time.perf_counter() - t0 < 10
    got = {p: r.reason for p, r in zip(cases, res)}
    assert got == cases
    by = dict(zip(cases, res))
    assert by["/img/good.jpg"].data == server.files["good.jpg"][0]
    assert by["/redirect/good2.jpg"].final_url.endswith("/img/good2.jpg")
    assert by["/flaky/1/good3.jpg"].attempts == 2 and server.hits["/flaky/1/good3.jpg"] == 2
    assert server.hits["/status/500"] == 2 and server.hits["/status/404"] == 1  # 5xx retried, 404 not
    assert by["/status/500"].attempts == 2 and by["/loop"].attempts == 1
    assert server.hits["/big/30"] == 1  # Content-Length over the cap: not retried, body not read
    assert [r.reason for r in res[-2:]] == ["bad_url", "bad_url"]
    assert all("crawlmix" in ua for ua in server.user_agents)


def test_fetch_politeness_and_concurrency(server):
    server.reset()
    cfg = FetchConfig(per_host=2, concurrency=16)
    res = fetch_many([server.url("/slow/0.05/good.jpg")] * 12, cfg)
    assert all(r.ok for r in res) and server.max_inflight_by["/slow/0.05/good.jpg"] == 2
    server.reset()
    cfg = FetchConfig(per_host=4, per_host_interval_s=0.05)
    fetch_many([server.url("/img/good.png")] * 6, cfg)
    starts = sorted(t for t, _ in server.starts)
    assert starts[-1] - starts[0] >= 0.2  # 6 starts, >= 50 ms apart
    assert min(b - a for a, b in zip(starts, starts[1:])) >= 0.03


def test_fetch_throughput_local(server, imgs):
    """Issue target: >= 200 images/s from the local server (bench/images.py measures it properly)."""
    server.reset()
    urls = [server.url(f"/img/{n}") for n in ("good.jpg", "good.png", "other.jpg", "good2.jpg")] * 150
    fetch_many(urls[:20], FetchConfig())
    t0 = time.perf_counter()
    res = fetch_many(urls, FetchConfig())
    rate = len(res) / (time.perf_counter() - t0)
    assert all(r.ok for r in res) and rate >= 200, rate


def test_robots_header_rules():
    d = ["noai", "noimageai"]
    assert robots_disallowed(["noai"], "crawlmix", d) == "noai"
    assert robots_disallowed(["noindex, NoImageAI"], "crawlmix", d) == "noimageai"
    assert robots_disallowed(["otherbot: noai"], "crawlmix", d) is None
    assert robots_disallowed(["CrawlMix: noai"], "crawlmix", d) == "noai"
    assert robots_disallowed(["unavailable_after: 25 Jun 2010 15:00:00 PST"], "crawlmix", d) is None
    assert robots_disallowed([], "crawlmix", d) is None


# ----------------------------------------------------------------------------------------------
# end to end: WARC pages -> candidates -> WARC records / fetch -> shards

def _write_warc(path: Path, pages: list[tuple[str, str]], images: list[tuple[str, bytes, str]] = ()):
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


def _e2e_job(server, **over) -> ImagesJob:
    cfg = {
        "url_filter": {"use_ut1_lists": False, "extra_domains": ["blocked.test"],
                       "extra_urls": [server.url("/img/blocked.jpg")]},
        "captions": {"languages": ["en"], "language_threshold": 0.4},
        "warc_lookup": {"extra_warcs": []},
        "fetch": {"enabled": True, "timeout_s": 0.6, "connect_timeout_s": 0.5, "retries": 1, "backoff_s": 0.01,
                  "max_bytes": 1_000_000},
        "process": {"max_bytes": 300_000},
        "shards": {"samples_per_shard": 4},
    }
    for k, v in over.items():
        cfg[k] = {**cfg.get(k, {}), **v}
    return ImagesJob.model_validate(cfg)


CAP = "A photograph of the old stone bridge over the river at sunset"
EXPECT = {  # image path -> reason (None: an image-text pair)
    "/img/good.jpg": None, "/img/good.png": None, "/img/good.webp": None, "/img/b800.jpg": None,
    "/img/cmyk.jpg": None, "/redirect/good2.jpg": None, "/flaky/1/good3.jpg": None,
    "/status/404": "http_404", "/status/500": "http_500", "/slow/3/good.jpg": "timeout",
    "/truncated/good.jpg": "truncated", "/type/text%2Fhtml/good.jpg": "wrong_content_type", "/big/30": "too_large",
    "/loop": "too_many_redirects", "/robots/noimageai/good.jpg": "x_robots_tag",
    "/img/corrupt.jpg": "decode_error", "/img/truncated.png": "truncated_image", "/img/bomb.png": "decompression_bomb",
    "/img/vector.svg": "svg", "/notype/vector.svg": "svg", "/img/pixel.gif": "too_small",
    "/img/anim.gif": "animated", "/img/huge.png": "too_large", "/img/copy.jpg": "duplicate_sha256",
    "/img/near.jpg": "near_duplicate", "/img/blocked.jpg": "url_blocklist:url", "/img/nocap.jpg": "no_caption",
    "/img/fr.jpg": "caption_language", "/img/other.jpg": None,
}


@pytest.fixture(scope="module")
def e2e(server, tmp_path_factory):
    d = tmp_path_factory.mktemp("e2e")
    u = server.url
    tags = []
    for p, reason in EXPECT.items():
        if p == "/img/b800.jpg":
            tags.append(f'<img src="{u("/img/a300.jpg")}" srcset="{u("/img/a300.jpg")} 300w, {u(p)} 800w" '
                        f'alt="{CAP} (the larger srcset candidate)">')
        elif p == "/img/good.webp":
            tags.append(f'<picture><source srcset="{u("/img/small.webp")} 1x, {u(p)} 2x" type="image/webp">'
                        f'<img src="{u("/status/404")}" alt="{CAP} (best picture source)"></picture>')
        elif p == "/img/nocap.jpg":
            tags.append(f'<img src="{u(p)}">')
        elif p == "/img/fr.jpg":
            tags.append(f'<img src="{u(p)}" alt="Une photo de la tour Eiffel à Paris au coucher du soleil">')
        elif p == "/img/good.png":
            tags.append(f'<figure><img src="{u(p)}" alt="ignored alt"><figcaption>A caption from the figure '
                        f'element</figcaption></figure>')
        else:
            tags.append(f'<img src="{u(p)}" alt="{CAP}">')
    tags += [
        f'<img src="{u("/img/good.jpg")}" alt="{CAP} again">',  # duplicate_url
        f'<img src="{u("/img/other.jpg")}" alt="x">',  # caption_too_short (checked before the URL repeat)
        '<img src="data:image/png;base64,iVBORw0KGgo=" alt="An inlined data URI image">',  # data_uri
        f'<img src="{u("/img/pixel.gif")}?t=1" width="1" height="1" alt="Tracking pixel declared one by one">',
        '<img src="http://captured.test/cat.jpg" alt="An image captured in the same WARC">',
        '<img src="http://sibling.test/dog.jpg" alt="An image captured in a sibling WARC">',
    ]
    page = "<html><body><p>An English page about test pictures.</p>" + "\n".join(tags) + "</body></html>"
    warc = d / "pages.warc.gz"
    _write_warc(warc, [("http://example.test/page", page),
                       ("http://blocked.test/page", page)],  # page URL filtered: nothing from it
                [("http://captured.test/cat.jpg", server.files["captured.jpg"][0], "image/jpeg")])
    sib = d / "sibling.warc.gz"
    _write_warc(sib, [], [("http://sibling.test/dog.jpg", server.files["sibling.jpg"][0], "image/jpeg")])
    job = _e2e_job(server, warc_lookup={"extra_warcs": [str(sib)]})
    out = d / "out"
    server.reset()
    stats = run([str(warc)], out, job, INLINE)
    return {"out": out, "stats": stats, "warc": warc, "sib": sib, "job": job, "hits": dict(server.hits)}


def _rows(out: Path) -> list[dict]:
    rows = []
    for f in sorted(out.glob("[0-9][0-9][0-9][0-9][0-9].parquet")):
        rows += pq.read_table(f).to_pylist()
    return rows


def test_e2e_every_candidate_has_a_row_with_its_reason(e2e, server):
    rows = _rows(e2e["out"])
    by_url = {}
    for r in rows:
        by_url.setdefault(r["url"].replace(server.url(""), ""), []).append(r)
    for p, reason in EXPECT.items():
        r = by_url[p][0]
        assert r["reason"] == reason, (p, r["reason"], r["detail"])
        assert (r["status"] == "success") == (reason is None)
    assert by_url["/img/good.jpg"][1]["reason"] == "duplicate_url"
    assert by_url["/img/other.jpg"][1]["reason"] == "caption_too_short"
    assert by_url["/img/pixel.gif?t=1"][0]["reason"] == "too_small"
    assert by_url["/img/pixel.gif?t=1"][0]["stage"] == "size_hint"  # never fetched
    assert e2e["hits"]["/img/pixel.gif"] == 1 and "/img/nocap.jpg" not in e2e["hits"]
    assert any(r["reason"] == "data_uri" for r in rows)
    cat = by_url["http://captured.test/cat.jpg"][0]
    dog = by_url["http://sibling.test/dog.jpg"][0]
    assert cat["status"] == dog["status"] == "success" and cat["source"] == dog["source"] == "warc"
    assert dog["warc_file"] == str(e2e["sib"]) and cat["warc_file"] == str(e2e["warc"])
    assert by_url["/img/good.png"][0]["caption"] == "A caption from the figure element"
    assert by_url["/img/good.png"][0]["caption_source"] == "figcaption"
    assert by_url["/img/copy.jpg"][0]["duplicate_of"] == by_url["/img/good.jpg"][0]["key"]
    assert by_url["/img/near.jpg"][0]["duplicate_of"] == by_url["/img/good.jpg"][0]["key"]
    assert by_url["/img/huge.png"][0]["stage"] == "decode" and by_url["/big/30"][0]["stage"] == "download"
    assert all(r["page_url"] == "http://example.test/page" for r in rows)
    assert all(r["page_language"] == "en" for r in rows)
    assert len(rows) == e2e["stats"]["candidates"] == len(EXPECT) + 6  # + the extra tags


def test_e2e_shards_in_img2dataset_layout(e2e):
    out, stats = e2e["out"], e2e["stats"]
    ok = [r for r in _rows(out) if r["status"] == "success"]
    assert len(ok) == stats["successes"] == sum(v is None for v in EXPECT.values()) + 2
    n_shards = -(-len(ok) // 4)
    assert sorted(p.name for p in out.glob("*.tar")) == [f"{i:05d}.tar" for i in range(n_shards)]
    total = 0
    import webdataset as wds

    for i in range(n_shards):
        st = json.loads((out / f"{i:05d}_stats.json").read_text())
        total += st["successes"]
        assert st["count"] == len(pq.read_table(out / f"{i:05d}.parquet"))
        with tarfile.open(out / f"{i:05d}.tar") as tar:
            names = tar.getnames()
        assert len(names) == 3 * st["successes"] and all(n[:5] == f"{i:05d}" for n in names)
        for sample in wds.WebDataset(str(out / f"{i:05d}.tar"), shardshuffle=False):
            meta = json.loads(sample["json"])
            assert sample["txt"].decode() == meta["caption"] and meta["key"] == sample["__key__"]
            im = Image.open(io.BytesIO(sample["jpg"]))
            assert im.mode == "RGB" and min(im.size) == 256 and (im.width, im.height) == (meta["width"], meta["height"])
    assert total == len(ok)
    sts = [json.loads((out / f"{i:05d}_stats.json").read_text()) for i in range(n_shards)]
    assert all(set(st) >= {"count", "successes", "failed_to_download", "failed_to_resize", "status_dict",
                           "top_errors"} for st in sts)
    failed = sum(st["count"] - st["successes"] for st in sts)
    assert failed == stats["candidates"] - stats["successes"]
    assert sum(sum(st["status_dict"].values()) for st in sts) == failed
    # run stats: funnel sums, pages, sources
    f = stats["funnel"]
    assert f[0]["in"] == stats["candidates"] and f[-1]["out"] == stats["successes"]
    assert all(a["out"] == b["in"] for a, b in zip(f, f[1:]))
    assert stats["pages"]["url_filter:domain"] == 1 and stats["sources"]["warc"] == 2
    assert stats["warc_matches"] == {"exact": 2}
    assert stats["reasons"]["duplicate_sha256"] == 1 and stats["reasons"]["near_duplicate"] == 1


def test_e2e_rerun_is_identical_and_resumes(e2e, tmp_path):
    out = e2e["out"]
    before = {p.name: p.read_bytes() for p in out.glob("0*")}
    stats = run([str(e2e["warc"])], out, e2e["job"], INLINE)  # tasks done: shards only
    assert stats["phase_s"]["images"] < 1.0
    assert {p.name: p.read_bytes() for p in out.glob("0*")} == before
    with pytest.raises(ConfigError):
        run([str(e2e["warc"])], out, e2e["job"].model_copy(update={"name": "other"}), INLINE)


def test_e2e_funnel_matches_the_rows(e2e):
    """The run's funnel (summed StageStats of the tasks + the shard pass's dedup) counts exactly the rows'
    failures, stage by stage."""
    from collections import Counter

    rows = _rows(e2e["out"])
    for f in e2e["stats"]["funnel"]:
        got = Counter(r["reason"] for r in rows if r["status"] != "success" and r["stage"] == f["stage"])
        assert f["dropped"] == dict(got) and f["in"] - f["out"] == sum(got.values()), f


def test_completion_markers_resume_and_overwrite(server, tmp_path):
    """Markers carry the config hash and are written after the staged Parquet; a task whose marker is
    missing, from another config or without its staged file is redone; --overwrite redoes all; no .tmp left."""
    from crawlmix.io.paths import task_name
    from crawlmix.runtime.completion import Completion

    inputs = []
    for i, name in enumerate(("captured.jpg", "sibling.jpg", "good2.jpg")):
        url = f"http://captured.test/{i}.jpg"
        page = f'<html><body><img src="{url}" alt="{CAP} number {i}"></body></html>'
        _write_warc(tmp_path / f"c{i}.warc.gz", [(f"http://example.test/c{i}", page)],
                    [(url, server.files[name][0], "image/jpeg")])
        inputs.append(str(tmp_path / f"c{i}.warc.gz"))
    job, out = _e2e_job(server), tmp_path / "out"
    first = run(inputs, out, job, INLINE)
    assert first["successes"] == 3 and first["sources"] == {"warc": 3}
    done = Completion(out, job.digest())
    names = [task_name(p) for p in inputs]
    assert done.finished() == sorted(names)
    assert all(done.get(n)["config_hash"] == job.digest() and done.get(n)["candidates"] == 1 for n in names)
    shards = {p.name: p.read_bytes() for p in out.glob("0*")}
    staged = {n: (out / "_staging" / f"{n}.parquet").stat().st_mtime_ns for n in names}
    # one marker from another config, one staged file gone, one untouched
    marker = done.path(names[0])
    marker.write_text(marker.read_text().replace(job.digest(), "0" * 16))
    (out / "_staging" / f"{names[1]}.parquet").unlink()
    time.sleep(0.01)
    again = run(inputs, out, job, INLINE)
    after = {n: (out / "_staging" / f"{n}.parquet").stat().st_mtime_ns for n in names}
    assert after[names[0]] != staged[names[0]] and after[names[2]] == staged[names[2]]
    assert {p.name: p.read_bytes() for p in out.glob("0*")} == shards
    assert again["funnel"] == first["funnel"] and again["candidates"] == first["candidates"]
    time.sleep(0.01)
    run(inputs, out, job, INLINE, overwrite=True)
    redone = {n: (out / "_staging" / f"{n}.parquet").stat().st_mtime_ns for n in names}
    assert all(redone[n] != after[n] for n in names) and done.finished() == sorted(names)
    assert {p.name: p.read_bytes() for p in out.glob("0*")} == shards
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_worker_index_is_built_once_per_process(tmp_path):
    from crawlmix.images.task import worker_index

    _write_warc(tmp_path / "i.warc.gz", [], [("http://captured.test/x.jpg", b"\xff\xd8 not really", "image/jpeg")])
    per_file = [index_file(str(tmp_path / "i.warc.gz"))]
    job = ImagesJob()
    a = worker_index(per_file, job)
    assert a is worker_index([dict(f) for f in per_file], job)  # a copy (as Ray hands it over): same index
    assert a.find("http://captured.test/x.jpg")[1] == "exact"
    other = job.model_copy(update={"warc_lookup": job.warc_lookup.model_copy(update={"canonical_urls": False})})
    assert worker_index(per_file, other) is not a and worker_index(None, job) is None


def test_shard_writer_publishes_only_finished_shards(tmp_path):
    from crawlmix.images.shards import ROW_NAMES, PairShardWriter

    job = ImagesJob.model_validate({"shards": {"samples_per_shard": 1}})
    row = {**dict.fromkeys(ROW_NAMES), "status": "success", "caption": "a caption"}
    with pytest.raises(RuntimeError):
        with PairShardWriter(tmp_path, job, {}) as w:
            w.add(dict(row), b"jpeg bytes", "jpg")
            w.add(dict(row), b"more bytes", "jpg")  # closes shard 0, opens shard 1
            raise RuntimeError("stop mid-shard")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00000.parquet", "00000.tar", "00000_stats.json"]


def test_dedup_across_files_in_a_process_pool(server, tmp_path):
    """Two input files, two worker processes: the second file's copy of an image is a duplicate."""
    u = server.url
    for i, (a, b) in enumerate([("good.jpg", "other.jpg"), ("copy.jpg", "good2.jpg")]):
        page = (f'<html><body><img src="{u("/img/" + a)}" alt="{CAP}">'
                f'<img src="{u("/img/" + b)}" alt="{CAP}, again"></body></html>')
        _write_warc(tmp_path / f"f{i}.warc.gz", [(f"http://example.test/p{i}", page)])
    inputs = [str(tmp_path / "f0.warc.gz"), str(tmp_path / "f1.warc.gz")]
    stats = run(inputs, tmp_path / "out", _e2e_job(server), Executor("processes", 2, progress=False))
    assert stats["backend"] == "processes" and not stats["failed_tasks"]
    rows = _rows(tmp_path / "out")
    assert [r["reason"] for r in rows] == [None, None, "duplicate_sha256", None]
    assert stats["successes"] == 3


def test_only_pages_kept_by_the_text_run(tmp_path, server):
    """pages.kept_from: images only from pages the text job kept (its curated/<task>.parquet ids)."""
    import pyarrow as pa

    from crawlmix.io.paths import task_name
    from crawlmix.io.warc import iter_pages

    u = server.url
    pages = [(f"http://example.test/k{i}", f'<html><body><img src="{u("/img/" + n)}" alt="{CAP}"></body></html>')
             for i, n in enumerate(("good.jpg", "other.jpg"))]
    warc = tmp_path / "k.warc.gz"
    _write_warc(warc, pages)
    ids = [p.id for p in iter_pages(str(warc), lambda *a, **k: None)]
    crawl = tmp_path / "crawl"
    (crawl / "curated").mkdir(parents=True)
    pq.write_table(pa.table({"id": ids[1:]}), crawl / "curated" / f"{task_name(str(warc))}.parquet")
    stats = run([str(warc)], tmp_path / "out", _e2e_job(server, pages={"kept_from": str(crawl)}), INLINE)
    assert stats["pages"]["not_kept"] == 1 and stats["candidates"] == 1
    assert [r["url"] for r in _rows(tmp_path / "out")] == [u("/img/other.jpg")]


def test_kept_from_missing_or_changed_curated_file(tmp_path, server):
    """A missing curated file fails the task (no marker, run incomplete) instead of passing for "no pages";
    once it exists the task runs; when it changes (other pages kept) the task is staged again."""
    import pyarrow as pa

    from crawlmix.images.task import task_digest
    from crawlmix.io.paths import task_name
    from crawlmix.io.warc import iter_pages
    from crawlmix.runtime.completion import Completion

    u = server.url
    pages = [(f"http://example.test/m{i}", f'<html><body><img src="{u("/img/" + n)}" alt="{CAP}"></body></html>')
             for i, n in enumerate(("good.jpg", "other.jpg"))]
    warc = tmp_path / "m.warc.gz"
    _write_warc(warc, pages)
    ids = [p.id for p in iter_pages(str(warc), lambda *a, **k: None)]
    crawl, out = tmp_path / "crawl", tmp_path / "out"
    job = _e2e_job(server, pages={"kept_from": str(crawl)})
    stats = run([str(warc)], out, job, INLINE)
    assert stats["status"] == "incomplete" and stats["failed_tasks"] == [str(warc)] and stats["candidates"] == 0
    assert not Completion(out, task_digest(job, None)).done(task_name(str(warc)))
    (crawl / "curated").mkdir(parents=True)
    curated = crawl / "curated" / f"{task_name(str(warc))}.parquet"
    pq.write_table(pa.table({"id": ids[:1]}), curated)
    stats = run([str(warc)], out, job, INLINE)
    assert stats["status"] == "finished" and [r["url"] for r in _rows(out)] == [u("/img/good.jpg")]
    pq.write_table(pa.table({"id": ids[1:]}), curated)  # the text run kept the other page this time
    stats = run([str(warc)], out, job, INLINE)
    assert [r["url"] for r in _rows(out)] == [u("/img/other.jpg")] and stats["phase_s"]["images"] > 0


def test_bad_warc_input_is_counted(tmp_path, server):
    junk = tmp_path / "junk.warc.gz"
    junk.write_bytes(b"\x1f\x8b\x08\x00garbage" * 50)
    empty = tmp_path / "empty.warc"
    empty.write_bytes(b"")
    stats = run([str(junk), str(empty)], tmp_path / "out", _e2e_job(server), INLINE)
    reasons = {e["reason"] for e in stats["errors"]}
    assert reasons & {"corrupt_file", "no_records"} and stats["candidates"] == 0
    assert (tmp_path / "out" / "00000.parquet").exists() and stats["successes"] == 0


# ----------------------------------------------------------------------------------------------
# the WARC-record path on real data: the Mona Lisa article and its captured images

MONA_CAPTIONS = {
    "Mona_Lisa,_by_Leonardo_da_Vinci": "Mona Lisa",  # the infobox (its table caption)
    "Mona_Lisa_margin_scribble": "A note by Agostino Vespucci 1503 in a book at Heidelberg University states "
                                 "that Leonardo was working on a portrait of Lisa del Giocondo.",
    "Self-Portrait_-_WGA12798": "Self-portrait by Leonardo da Vinci, executed in red chalk sometime between "
                                "1512 and 1515",
    "Mona_Lisa_stolen-1911": "Vacant wall in the Salon Carré, Louvre",
    "Mona_Lisa_detail_background_right": "Detail of the background (right side)",
    "Mona_Lisa_detail_hands": "Detail of Lisa's hands, her right hand resting on her left.",
    "Mona-lisa_in_the_Louvre": "2010: Mona Lisa is among the greatest attractions in the Louvre",
    "ARC194219": "US President John F. Kennedy",
    "Sapeck-La_Joconde_fumant_la_pipe": "Le rire (The laugh) by Eugène Bataille, or Sapeck (1883)",
    "Marcel_Duchamp_Mona_Lisa_LHOOQ": "L.H.O.O.Q. by Marcel Duchamp (1919)",
}


def test_mona_lisa_warc_records_give_pairs_with_captions(tmp_path):
    warc = str(shared(MONA))
    from crawlmix.io.warc import iter_pages

    page = next(p for p in iter_pages(warc, lambda *a, **k: None) if p.url.endswith("/wiki/Mona_Lisa"))
    cands = page_images(page.html, page.url, ImagesJob())
    assert len(cands) == 24
    exact = WarcIndex([index_file(warc)], canonical=False)
    canon = WarcIndex([index_file(warc)], canonical=True)
    assert sum(any(exact.find(u) for u in c.urls) for c in cands) == 23  # the "23 of 24"
    missing = [c for c in cands if not any(exact.find(u) for u in c.urls)]
    assert len(missing) == 1 and "Mona_Lisa%2C_by_Leonardo" in missing[0].urls[-1]
    assert all(any(canon.find(u) for u in c.urls) for c in cands)  # %2C vs "," : the same image

    job = ImagesJob.model_validate({"filters": {"max_aspect_ratio": 4.0}, "url_filter": {"use_ut1_lists": False}})
    stats = run([warc], tmp_path / "mona", job, INLINE)
    assert stats["pages"]["repeated"] == 1 and stats["candidates"] == 24
    assert stats["sources"] == {"warc": 10} and stats["fetch"]["requests"] == 0
    ok = [r for r in _rows(tmp_path / "mona") if r["status"] == "success"]
    got = {}
    for r in ok:
        name = next((k for k in MONA_CAPTIONS if k in unquote(r["url"])), r["url"])
        got[name] = r["caption"]
    assert set(got) == set(MONA_CAPTIONS)
    for name, cap in MONA_CAPTIONS.items():
        assert got[name].startswith(cap), (name, got[name])
    assert {r["warc_match"] for r in ok} == {"exact", "canonical"}
    with tarfile.open(tmp_path / "mona" / "00000.tar") as tar:
        txt = {m.name: tar.extractfile(m).read().decode() for m in tar.getmembers() if m.name.endswith(".txt")}
    assert sorted(txt.values()) == sorted(r["caption"] for r in ok)
    # icons, magnifier glyphs and logos are candidates that fail with a reason
    fails = {r["reason"] for r in _rows(tmp_path / "mona") if r["status"] != "success"}
    assert fails == {"no_caption", "caption_too_short", "too_small"}


@pytest.mark.slow
def test_ray_backend(tmp_path, server):
    ray = pytest.importorskip("ray")
    was_up = ray.is_initialized()
    u = server.url
    page = f'<html><body><img src="{u("/img/good.jpg")}" alt="A picture fetched on Ray"></body></html>'
    _write_warc(tmp_path / "r.warc.gz", [("http://example.test/ray", page)])
    try:
        stats = run([str(tmp_path / "r.warc.gz")], tmp_path / "out", _e2e_job(server),
                    Executor("ray", 1, progress=False))
    finally:
        if not was_up:
            ray.shutdown()
    assert stats["backend"] == "ray" and stats["successes"] == 1
