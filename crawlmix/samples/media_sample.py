"""Generate the bundled media sample: small, deterministic image / multi-image / video sources (and a
synthetic text source) drawn with Pillow, for the mixer. All content is made here; nothing is fetched.

Written to OUTPUT (default sample/media/), each as a WebDataset tar (one sample = members sharing a
dot-free key, like img2dataset's output) unless noted:

| file             | modality    | members per sample                               | what                                  |
|------------------|-------------|--------------------------------------------------|---------------------------------------|
| charts.tar       | image       | .png .txt .json                                  | bar/line charts, question + answer    |
| tables.tar       | image       | .png .txt .json                                  | rendered tables, markdown transcript  |
| ocr.tar          | image       | .png .txt .json                                  | rendered paragraphs, their text (OCR) |
| photos.tar       | image       | .jpg .txt .json                                  | synthetic landscapes, captions        |
| multi-image.tar  | multi-image | .0.jpg .1.jpg [.2.jpg] .txt .json                | image sets, comparison question       |
| video.tar        | video       | .0.jpg ... .7.jpg .txt .json (fps, frames)       | 8-frame clips of moving shapes        |
| textbook.jsonl   | text        | one JSON object per line: id, url, text, language | short synthetic expository texts      |
| interleaved.parquet | interleaved | one row per web document, OBELICS layout (below) | town-market articles with photos and charts |

interleaved.parquet: ``id, url, language: string; texts: list<string>; images: list<struct<url: string,
bytes: binary, width: int32, height: int32>>`` (aligned: position k is a paragraph or an image, exactly one
non-null) + provenance columns ``source, offset, crawlmix_version, config_hash``, as crawlmix's interleaved
extraction writes them.

``MEDIA_MANIFEST.json`` lists the files, sample counts and sizes (about 2.9 MB in all, mostly tar headers and padding).

    python pipelines/make_media_sample.py [--output sample/media] [--seed 0] [--scale 1]
"""

from __future__ import annotations

import argparse
import io
import json
import random
from pathlib import Path


from PIL import Image, ImageDraw, ImageFont

from crawlmix import __version__
from crawlmix.io.tar import TarWriter
from crawlmix.runtime.atomic import ParquetSink
from crawlmix.runtime.resources import project_dir

BASE_URL = "https://media.sample.crawlmix.invalid"
TOWNS = ["Ashford", "Brenton", "Caldmoor", "Dunwick", "Elmstead", "Farrow", "Glenholm", "Harlow", "Ivybridge",
         "Kestrel", "Larkhill", "Milbrook"]
ITEMS = ["apples", "wool", "timber", "cheese", "barley", "honey", "salt", "copper", "flax", "cider"]
COLORS = {"red": (200, 40, 40), "blue": (40, 70, 200), "green": (40, 150, 60), "orange": (230, 130, 20),
          "purple": (130, 50, 160), "yellow": (220, 200, 30)}
SHAPES = ["circle", "square", "triangle"]
YEARS = list(range(2015, 2024))


def _font(size: int):
    return ImageFont.load_default(size=size)


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "jpg":
        img.convert("RGB").save(buf, format="JPEG", quality=85, optimize=False)
    else:
        img.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def _meta(kind: str, i: int, ext: str, **extra) -> dict:
    return {"id": f"{kind}-{i:05d}", "url": f"{BASE_URL}/{kind}/{i:05d}.{ext}", "license": "generated",
            "generator": "crawlmix make_media_sample", **extra}


def chart(rng: random.Random, i: int):
    town, item = rng.choice(TOWNS), rng.choice(ITEMS)
    years = YEARS[rng.randrange(0, 4):][:rng.randint(4, 6)]
    vals = [rng.randint(5, 95) for _ in years]
    w, h = 176, 128
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    d.text((4, 2), f"{item} sold in {town}", fill="black", font=_font(10))
    x0, y0, x1, y1 = 24, 18, w - 6, h - 16
    d.line([(x0, y0), (x0, y1), (x1, y1)], fill="black")
    bw = (x1 - x0) // len(years)
    line = rng.random() < 0.4
    pts = []
    for j, (yr, v) in enumerate(zip(years, vals)):
        top = y1 - int((y1 - y0) * v / 100)
        cx = x0 + j * bw + bw // 2
        if line:
            pts.append((cx, top))
        else:
            d.rectangle([x0 + j * bw + 3, top, x0 + (j + 1) * bw - 3, y1 - 1], fill=COLORS["blue"])
        d.text((cx - 9, y1 + 2), f"'{str(yr)[2:]}", fill="black", font=_font(9))
    if line:
        d.line(pts, fill=COLORS["red"], width=2)
    for t in (0, 50, 100):
        d.text((2, y1 - int((y1 - y0) * t / 100) - 5), str(t), fill="gray", font=_font(8))
    best = years[vals.index(max(vals))]
    q = rng.choice([f"In which year were the most {item} sold in {town}?",
                    f"How many tonnes of {item} did {town} sell in {years[0]}?"])
    a = str(best) if "which year" in q else str(vals[0])
    txt = f"Question: {q}\nAnswer: {a}"
    return [("png", _encode(img, "png")), ("txt", txt.encode()),
            ("json", _meta("charts", i, "png", chart="line" if line else "bar", width=w, height=h,
                           values=dict(zip(map(str, years), vals))))]


def table(rng: random.Random, i: int):
    towns = rng.sample(TOWNS, rng.randint(3, 5))
    items = rng.sample(ITEMS, 3)
    rows = [[t] + [str(rng.randint(1, 999)) for _ in items] for t in towns]
    header = ["town"] + items
    w, h = 220, 18 + 16 * (len(rows) + 1)
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    cw = w // len(header)
    for r, row in enumerate([header] + rows):
        y = 8 + 16 * r
        if r == 0:
            d.rectangle([0, y - 2, w, y + 13], fill=(225, 230, 240))
        for c, cell in enumerate(row):
            d.text((4 + c * cw, y), cell, fill="black", font=_font(10))
        d.line([(0, y + 14), (w, y + 14)], fill=(180, 180, 180))
    md = "| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n" + \
        "\n".join("| " + " | ".join(row) + " |" for row in rows)
    return [("png", _encode(img, "png")), ("txt", md.encode()),
            ("json", _meta("tables", i, "png", width=w, height=h, rows=len(rows)))]


def _sentence(rng: random.Random) -> str:
    t, it, y = rng.choice(TOWNS), rng.choice(ITEMS), rng.choice(YEARS)
    return rng.choice([
        f"In {y} the market of {t} traded more {it} than in any year before.",
        f"Farmers near {t} brought {it} to the bridge every Saturday morning.",
        f"The price of {it} in {t} fell by {rng.randint(2, 30)} percent after the flood of {y}.",
        f"Records from {t} show {rng.randint(10, 900)} carts of {it} crossing the river in {y}.",
        f"Merchants in {t} kept their {it} in stone cellars to protect it from the damp.",
    ])


def ocr(rng: random.Random, i: int):
    lines = [_sentence(rng) for _ in range(rng.randint(2, 4))]
    font = _font(11)
    wrapped = []
    for s in lines:
        words, cur = s.split(), ""
        for wd in words:
            if len(cur) + len(wd) + 1 > 38:
                wrapped.append(cur)
                cur = wd
            else:
                cur = f"{cur} {wd}".strip()
        wrapped.append(cur)
    w, h = 240, 10 + 14 * len(wrapped)
    img = Image.new("L", (w, h), 250)
    d = ImageDraw.Draw(img)
    for r, ln in enumerate(wrapped):
        d.text((6, 5 + 14 * r), ln, fill=20, font=font)
    return [("png", _encode(img, "png")), ("txt", " ".join(lines).encode()),
            ("json", _meta("ocr", i, "png", width=w, height=h, lines=len(wrapped)))]


def _scene(rng: random.Random, w: int, h: int):
    """A synthetic landscape photo and the words that describe it."""
    sky = rng.choice([("a clear blue sky", (120, 170, 235)), ("an overcast sky", (170, 175, 185)),
                      ("a sunset sky", (240, 150, 90))])
    ground = rng.choice([("green hills", (70, 140, 60)), ("a sandy beach", (220, 200, 140)),
                         ("a snowy field", (235, 235, 240))])
    img = Image.new("RGB", (w, h), sky[1])
    d = ImageDraw.Draw(img)
    for y in range(h // 2):  # sky gradient
        f = y / (h / 2)
        d.line([(0, y), (w, y)], fill=tuple(int(c * (1 - 0.25 * f) + 255 * 0.25 * f) for c in sky[1]))
    horizon = h // 2 + rng.randint(-8, 8)
    d.polygon([(0, horizon)] + [(x, horizon - rng.randint(0, 10)) for x in range(0, w + 16, 16)] + [(w, h), (0, h)],
              fill=ground[1])
    things = []
    if rng.random() < 0.6:
        sx, sy = rng.randint(10, w - 20), rng.randint(5, horizon - 20)
        d.ellipse([sx, sy, sx + 14, sy + 14], fill=(250, 220, 90))
        things.append("the sun")
    n = rng.randint(0, 3)
    for _ in range(n):
        hx, hy = rng.randint(5, w - 30), rng.randint(horizon, h - 22)
        col = rng.choice(list(COLORS))
        d.rectangle([hx, hy, hx + 18, hy + 14], fill=COLORS[col])
        d.polygon([(hx - 2, hy), (hx + 9, hy - 9), (hx + 20, hy)], fill=(120, 60, 40))
    if n:
        things.append(f"{n} small house{'s' if n > 1 else ''}")
    for _ in range(rng.randint(0, 2)):
        tx, ty = rng.randint(5, w - 10), rng.randint(horizon, h - 18)
        d.rectangle([tx + 3, ty + 8, tx + 5, ty + 16], fill=(90, 60, 30))
        d.ellipse([tx - 2, ty, tx + 10, ty + 10], fill=(30, 100, 40))
        if "a tree" not in things:
            things.append("a tree")
    # sensor noise makes it look less flat (and makes JPEG sizes realistic)
    px = img.load()
    for _ in range(w * h // 12):
        x, y = rng.randrange(w), rng.randrange(h)
        r, g, b = px[x, y]
        k = rng.randint(-14, 14)
        px[x, y] = (max(0, min(255, r + k)), max(0, min(255, g + k)), max(0, min(255, b + k)))
    caption = f"A photo of {ground[0]} under {sky[0]}" + (f", with {', '.join(things)}" if things else "") + "."
    return img, caption


def photo(rng: random.Random, i: int):
    img, caption = _scene(rng, 128, 96)
    return [("jpg", _encode(img, "jpg")), ("txt", caption.encode()),
            ("json", _meta("photos", i, "jpg", width=128, height=96, caption=caption))]


def multi(rng: random.Random, i: int):
    k = rng.randint(2, 3)
    members, caps = [], []
    for j in range(k):
        img, cap = _scene(rng, 96, 72)
        members.append((f"{j}.jpg", _encode(img, "jpg")))
        caps.append(cap)
    q = "Which of these images shows a sunset sky?"
    hits = [str(j + 1) for j, c in enumerate(caps) if "sunset" in c]
    a = ("Image " + " and ".join(hits)) if hits else "None of them."
    txt = "\n".join(f"Image {j + 1}: {c}" for j, c in enumerate(caps)) + f"\nQuestion: {q}\nAnswer: {a}"
    return members + [("txt", txt.encode()), ("json", _meta("multi-image", i, "jpg", images=k))]


def video(rng: random.Random, i: int, frames: int = 8):
    w = h = 64
    col, shape = rng.choice(list(COLORS)), rng.choice(SHAPES)
    bg = rng.choice([(245, 245, 245), (30, 30, 40), (200, 225, 245)])
    x, y = rng.randint(4, 20), rng.randint(4, 40)
    dx, dy = rng.choice([(6, 0), (5, 2), (0, 4), (4, -3)])
    direction = {(6, 0): "left to right", (5, 2): "down and to the right", (0, 4): "downwards",
                 (4, -3): "up and to the right"}[(dx, dy)]
    members = []
    for f in range(frames):
        img = Image.new("RGB", (w, h), bg)
        d = ImageDraw.Draw(img)
        px, py = x + dx * f, y + dy * f
        box = [px, py, px + 14, py + 14]
        if shape == "circle":
            d.ellipse(box, fill=COLORS[col])
        elif shape == "square":
            d.rectangle(box, fill=COLORS[col])
        else:
            d.polygon([(px, py + 14), (px + 7, py), (px + 14, py + 14)], fill=COLORS[col])
        members.append((f"{f}.jpg", _encode(img, "jpg")))
    cap = f"A {col} {shape} moves {direction}."
    return members + [("txt", cap.encode()),
                      ("json", _meta("video", i, "jpg", fps=4, frames=frames, width=w, height=h, caption=cap))]


def textbook(rng: random.Random, i: int) -> dict:
    town, item = rng.choice(TOWNS), rng.choice(ITEMS)
    paras = [" ".join(_sentence(rng) for _ in range(rng.randint(3, 6))) for _ in range(rng.randint(2, 4))]
    text = f"The {item} trade of {town}\n\n" + "\n\n".join(paras)
    return {"id": f"textbook-{i:05d}", "url": f"{BASE_URL}/textbook/{i:05d}", "text": text, "language": "en",
            "license": "generated"}


def web_document(rng: random.Random, i: int) -> dict:
    """An interleaved web document: a headline paragraph, then paragraphs with photos and charts between."""
    town, item = rng.choice(TOWNS), rng.choice(ITEMS)
    texts: list = [f"Market day in {town}: the {item} trade. " + _sentence(rng)]
    images: list = [None]
    for k in range(rng.randint(1, 3)):
        if rng.random() < 0.6:
            w, h = 112, 84
            img, cap = _scene(rng, w, h)
            data, ext = _encode(img, "jpg"), "jpg"
        else:
            members = chart(rng, i * 10 + k)
            data, ext = members[0][1], "png"
            cap = f"The chart above shows how much {item} {town} sold each year."
            w, h = Image.open(io.BytesIO(data)).size
        texts.append(None)
        images.append({"url": f"{BASE_URL}/web/{i:05d}/{k}.{ext}", "bytes": data, "width": w, "height": h})
        texts.append(" ".join([cap] + [_sentence(rng) for _ in range(rng.randint(1, 3))]))
        images.append(None)
    return {"id": f"web-{i:05d}", "url": f"{BASE_URL}/web/{i:05d}.html", "language": "en", "texts": texts,
            "images": images, "source": "sample-interleaved.warc.gz", "offset": 4096 * i}


def interleaved_schema():
    """The OBELICS layout with crawlmix's provenance columns."""
    import pyarrow as pa

    image = pa.struct([("url", pa.string()), ("bytes", pa.binary()), ("width", pa.int32()), ("height", pa.int32())])
    return pa.schema([("id", pa.string()), ("url", pa.string()), ("language", pa.string()),
                      ("texts", pa.list_(pa.string())), ("images", pa.list_(image)), ("source", pa.string()),
                      ("offset", pa.int64()), ("crawlmix_version", pa.string()), ("config_hash", pa.string())])


def interleaved_table(docs: list[dict], config_hash: str):
    """Documents (web_document's dicts) as one table in interleaved_schema()."""
    import pyarrow as pa

    rows = [dict(d, crawlmix_version=__version__, config_hash=config_hash) for d in docs]
    return pa.Table.from_pylist(rows, schema=interleaved_schema())


SOURCES = {  # file -> (maker, samples at scale 1)
    "charts.tar": (chart, 48),
    "tables.tar": (table, 48),
    "ocr.tar": (ocr, 48),
    "photos.tar": (photo, 64),
    "multi-image.tar": (multi, 48),
    "video.tar": (video, 64),
}
TEXTBOOK_DOCS = 200
WEB_DOCS = 48


def write_media_sample(out_dir: str | Path, seed: int = 0, scale: float = 1.0) -> dict:
    """Write every media source into ``out_dir``; same seed and scale => byte-identical files."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest = {"seed": seed, "scale": scale, "files": {}}
    for fname, (maker, n) in SOURCES.items():
        n = max(1, int(round(n * scale)))
        rng = random.Random(f"{seed}:{fname}")
        kind = fname[:-4]
        tmp = out / (fname + ".tmp")
        with TarWriter(tmp) as tw:
            for i in range(n):
                members = maker(rng, i)
                key = f"{kind.replace('-', '_')}_{i:05d}"
                tw.write(key, [(ext, data if isinstance(data, bytes) else
                                json.dumps(data, sort_keys=True).encode()) for ext, data in members])
        tmp.replace(out / fname)
        manifest["files"][fname] = {"samples": n, "bytes": (out / fname).stat().st_size}
    rng = random.Random(f"{seed}:textbook")
    n = max(1, int(round(TEXTBOOK_DOCS * scale)))
    tb = out / "textbook.jsonl"
    tb.write_text("".join(json.dumps(textbook(rng, i), ensure_ascii=False, sort_keys=True) + "\n" for i in range(n)))
    manifest["files"]["textbook.jsonl"] = {"samples": n, "bytes": tb.stat().st_size}
    rng = random.Random(f"{seed}:interleaved")
    n = max(1, int(round(WEB_DOCS * scale)))
    il = out / "interleaved.parquet"
    sink = ParquetSink(il, interleaved_schema(), rows_per_group=64)  # streamed: memory stays flat at any scale
    for i in range(n):
        sink.add(dict(web_document(rng, i), crawlmix_version=__version__, config_hash=f"media-sample-{seed}"))
    sink.close()
    manifest["files"]["interleaved.parquet"] = {"samples": n, "bytes": il.stat().st_size}
    (out / "MEDIA_MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="make_media_sample.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", default=str(project_dir() / "sample" / "media"),
                    metavar="DIR", help="output folder (default: sample/media)")
    ap.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every sample count (default 1)")
    a = ap.parse_args(argv)
    m = write_media_sample(a.output, a.seed, a.scale)
    for f, v in m["files"].items():
        print(f"{a.output}/{f}: {v['samples']} samples, {v['bytes'] / 1e3:.1f} kB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
