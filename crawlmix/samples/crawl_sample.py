"""Generate the bundled sample crawl: a small, deterministic WARC (+ an ARC file) that exercises
every text stage. All text is written here; nothing is fetched.

What it holds (see ``SAMPLE_MANIFEST`` in the output folder for the per-page list):
- articles in 8 languages, in UTF-8, windows-1251, GBK and ISO-8859-1;
- spam and boilerplate pages that Gopher / C4 / FineWeb rules drop;
- a UT1-blocklisted domain, a banned-word URL and a domain from the job's own list;
- near-duplicate and exact-duplicate pages under other URLs;
- personal data (emails, phone numbers, IP addresses) inside otherwise good articles;
- pages with <img> + alt text and <figure>/<figcaption>, and those images captured as records;
- an HTTP redirect and a non-HTML record, which the reader skips.

    python pipelines/make_sample.py [--output sample/] [--seed 0]
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import random
import uuid
from pathlib import Path

from crawlmix.runtime.resources import project_dir


DATE = "2024-05-20T12:00:00Z"

EN = [
    "The river town of Ashford grew around a stone bridge that was built in the twelfth century. "
    "For hundreds of years it was the only crossing between the hills and the coast, and the market that "
    "formed at its northern end drew farmers, weavers and traders from the whole valley. Today the bridge "
    "carries only foot traffic, but the market still opens every Saturday morning.",
    "Historians have argued for a long time about why the bridge survived when so many others were lost. "
    "The most common explanation is that its piers were set on bedrock rather than on timber piles. "
    "Floods that destroyed wooden structures upstream in 1771 and again in 1852 left it almost untouched, "
    "and the repairs recorded in the parish books are small.",
    "A good loaf of bread needs only flour, water, salt and time. The flour provides the starch and the "
    "proteins that form gluten, while the water lets those proteins link into a stretchy network. Salt "
    "tightens that network and slows the yeast, which is why a dough without salt rises quickly but tastes flat.",
    "Most home bakers underestimate how much the temperature of the kitchen matters. A dough that doubles in "
    "two hours at twenty-five degrees may need four hours at eighteen degrees. Rather than following the clock, "
    "it is better to watch the dough itself and to press it gently with a floured finger.",
    "The new library opened its doors to the public on a rainy Monday in March. Within the first week more than "
    "three thousand people signed up for a card, which is twice the number the city had expected. The reading "
    "room on the top floor, with its view over the harbour, quickly became the most popular space in the building.",
    "Librarians say that the biggest change is not the number of books but the way people use the space. Students "
    "come to work in groups, older residents attend computer classes, and parents bring young children to the "
    "story hour on Wednesday afternoons. The building is open until nine in the evening on weekdays.",
    "Cycling to work has become far more common in the city over the last decade. The council added protected "
    "lanes on the main roads and reduced the speed limit in residential streets. Surveys show that the number of "
    "people who cycle at least once a week has grown from one in ten to almost one in four.",
    "Not everyone is convinced that the changes were worth the cost. Some shop owners on the high street say that "
    "fewer parking spaces have kept customers away, and delivery drivers complain about longer routes. The council "
    "has promised to publish a full review of the scheme before the end of the year.",
    "Honey bees communicate the location of food through a pattern of movement known as the waggle dance. The angle "
    "of the dance relative to the vertical tells other bees the direction of the flowers in relation to the sun. "
    "The length of the waggle run tells them how far they will have to fly.",
    "Researchers who study bees have shown that a colony can adjust its foraging within minutes when a rich source "
    "of nectar appears. Scouts that return with good news dance for longer, which recruits more workers, and the "
    "colony as a whole shifts its effort without any single bee being in charge.",
    "The old railway line along the coast was closed to passengers in 1964 and the tracks were removed a few years "
    "later. In the nineties a group of volunteers began to clear the route, and it is now a walking and cycling path "
    "that runs for thirty kilometres between the two fishing villages at either end.",
    "Walkers who follow the whole path should plan for a full day and carry water, because there are few places to "
    "stop in the middle section. The views from the cliffs above the second tunnel are the best on the route, and "
    "in early summer the grassland there is covered with wild orchids.",
]

OTHER = {
    "de": ("iso-8859-1", [
        "Die kleine Stadt am Fluss ist seit dem Mittelalter für ihren Wochenmarkt bekannt. Jeden Samstag kommen "
        "Bauern aus der ganzen Umgebung, um Gemüse, Käse und Brot zu verkaufen. Viele Familien kaufen hier seit "
        "Generationen ein und kennen die Händler persönlich.",
        "Im Sommer finden auf dem Marktplatz außerdem Konzerte statt, die von der Gemeinde organisiert werden. Der "
        "Eintritt ist frei, und bei schönem Wetter bleiben die Besucher oft bis spät in den Abend. Die Gastwirte "
        "freuen sich über die zusätzlichen Gäste und stellen mehr Tische auf die Straße.",
        "Die Bürgermeisterin erklärte, dass die Stadt in den nächsten Jahren die alte Brücke renovieren möchte. "
        "Die Arbeiten sollen im Frühling beginnen und etwa zwei Jahre dauern.",
    ]),
    "fr": ("utf-8", [
        "La petite ville au bord de la rivière est connue depuis le Moyen Âge pour son marché du samedi. Les "
        "agriculteurs de toute la région viennent y vendre leurs légumes, leurs fromages et leur pain. Beaucoup de "
        "familles y font leurs courses depuis plusieurs générations.",
        "En été, la mairie organise aussi des concerts gratuits sur la place principale. Lorsque le temps est beau, "
        "les habitants restent souvent jusqu'à la fin de la soirée et les restaurants installent des tables "
        "supplémentaires dans la rue.",
        "Le maire a annoncé que le vieux pont serait rénové au cours des prochaines années. Les travaux devraient "
        "commencer au printemps et durer environ deux ans.",
    ]),
    "es": ("utf-8", [
        "El pequeño pueblo junto al río es conocido desde la Edad Media por su mercado de los sábados. Los "
        "agricultores de toda la comarca llegan temprano para vender verduras, queso y pan. Muchas familias compran "
        "allí desde hace generaciones y conocen a los vendedores por su nombre.",
        "Durante el verano, el ayuntamiento organiza conciertos gratuitos en la plaza mayor. Cuando hace buen tiempo, "
        "los vecinos se quedan hasta muy tarde y los bares sacan más mesas a la calle.",
        "La alcaldesa explicó que el puente antiguo será restaurado en los próximos años. Las obras comenzarán en "
        "primavera y durarán unos dos años.",
    ]),
    "ru": ("windows-1251", [
        "Небольшой город на берегу реки известен своим субботним рынком ещё со времён Средневековья. Фермеры со всей "
        "округи привозят сюда овощи, сыр и свежий хлеб. Многие семьи делают здесь покупки уже несколько поколений.",
        "Летом городская администрация устраивает на главной площади бесплатные концерты. В хорошую погоду жители "
        "остаются там до позднего вечера, а кафе выставляют на улицу дополнительные столики.",
        "Глава города сообщил, что старый мост будет отремонтирован в ближайшие годы. Работы начнутся весной и "
        "продлятся около двух лет.",
    ]),
    "zh": ("gbk", [
        "这座河边的小城从中世纪起就以每周六的集市而闻名。周边地区的农民一大早就来到这里，出售蔬菜、奶酪和面包。"
        "许多家庭几代人都在这里购物，和摊主们非常熟悉。",
        "夏天，市政府会在中心广场举办免费音乐会。天气好的时候，居民们常常待到很晚，餐馆也会在街上摆出更多的桌子。",
        "市长表示，这座古老的石桥将在未来几年内进行修缮。工程预计在春天开始，大约持续两年。",
    ]),
    "nl": ("utf-8", [
        "Het kleine stadje aan de rivier staat al sinds de middeleeuwen bekend om de zaterdagmarkt. Boeren uit de "
        "hele omgeving komen hier groenten, kaas en brood verkopen. Veel gezinnen doen hier al generaties lang hun "
        "boodschappen en kennen de handelaren bij naam.",
        "In de zomer organiseert de gemeente gratis concerten op het marktplein. Bij mooi weer blijven de bewoners "
        "vaak tot laat in de avond en zetten de cafés extra tafels op straat.",
        "De burgemeester liet weten dat de oude brug de komende jaren wordt gerenoveerd. De werkzaamheden beginnen "
        "in het voorjaar en duren ongeveer twee jaar.",
    ]),
    "it": ("utf-8", [
        "La piccola città sul fiume è famosa fin dal Medioevo per il suo mercato del sabato. Gli agricoltori di "
        "tutta la zona arrivano presto per vendere verdure, formaggi e pane. Molte famiglie fanno la spesa qui da "
        "generazioni e conoscono i venditori per nome.",
        "D'estate il comune organizza concerti gratuiti nella piazza principale. Quando il tempo è bello, gli "
        "abitanti restano fino a tardi e i bar aggiungono tavoli lungo la strada.",
        "Il sindaco ha annunciato che il vecchio ponte sarà restaurato nei prossimi anni. I lavori inizieranno in "
        "primavera e dureranno circa due anni.",
    ]),
}

NAV = '<nav><a href="/">Home</a> | <a href="/news">News</a> | <a href="/about">About us</a> | <a href="/contact">Contact</a></nav>'
FOOTER = ('<footer><p>Copyright 2024 Example Media. All rights reserved.</p><p><a href="/privacy">Privacy policy</a> '
          '| <a href="/terms">Terms of use</a> | This site uses cookies.</p></footer>')


def _html(title: str, paragraphs: list[str], lang: str, charset: str, extra_body: str = "") -> str:
    body = "\n".join(f"<p>{p}</p>" for p in paragraphs)
    return (f'<!DOCTYPE html>\n<html lang="{lang}"><head><meta charset="{charset}"><title>{title}</title>'
            f'<script>var analytics = {{"id": 42}};</script><style>body {{ font-family: serif; }}</style></head>\n'
            f"<body>{NAV}\n<main><article><h1>{title}</h1>\n{body}\n{extra_body}</article></main>\n"
            f'<aside><h3>Most read</h3><ul><li><a href="/a">Ten tips for spring</a></li>'
            f'<li><a href="/b">Weather this week</a></li></ul></aside>\n{FOOTER}</body></html>')


def pages(seed: int) -> list[dict]:
    """The sample's pages: url, html, charset, and what the pipeline should do with each."""
    rng = random.Random(seed)
    out: list[dict] = []

    def add(url, html, charset="utf-8", expect="keep", note="", status=200, ctype="text/html"):
        out.append(dict(url=url, html=html, charset=charset, expect=expect, note=note, status=status, ctype=ctype))

    # English articles: pairs of paragraphs from the bank, some with PII, some with images
    topics = ["ashford-bridge", "bread", "library", "cycling", "bees", "railway-path"]
    for i, topic in enumerate(topics):
        paras = EN[2 * i: 2 * i + 2] + [rng.choice(EN) for _ in range(2)]
        paras = list(dict.fromkeys(paras))
        extra = ""
        note = "article"
        if i in (1, 4):
            extra = (f'<figure><img src="/img/{topic}-1.jpg" alt="A photograph for the story about {topic.replace("-", " ")}.">'
                     f"<figcaption>The {topic.replace('-', ' ')} in the morning light.</figcaption></figure>"
                     f'<p><img src="https://cdn.example.org/{topic}/2.png" alt="A second picture of the {topic.replace("-", " ")}"></p>')
            note = "article with images"
        if i in (2, 3):
            paras.append("For questions about this story, write to jane.doe@example.com or call +1 415-555-0132. "
                         "Our newsroom server at 192.168.10.24 logs every request, and the editor can also be "
                         "reached at (020) 7946 0958 during office hours.")
            note = "article with PII"
        add(f"https://news.example.com/{2023 + i % 2}/{topic}.html", _html(topic.replace("-", " ").title(), paras, "en", "utf-8", extra),
            note=note)

    # near duplicate: the bread article with a few words changed, and an exact copy on a mirror
    base = out[1]
    add("https://mirror.example.net/food/bread.html", base["html"], expect="drop:dedup",
        note="exact duplicate of bread (dedup: exact)")
    near = base["html"].replace("Most home bakers", "Many home bakers").replace("gently", "light")
    add("https://blog.example.org/posts/bread-basics", near, expect="drop:dedup",
        note="near duplicate of bread (dedup: minhash)")

    # other languages and charsets
    for lang, (charset, paras) in OTHER.items():
        add(f"https://{lang}.example.eu/stadt/markt.html", _html(f"Markt {lang}", paras, lang, charset), charset=charset,
            note=f"{lang} article in {charset}")

    # pages the quality rules must drop
    spam = ["Buy cheap watches online now, best price guaranteed!"] * 40
    add("https://deals.example.biz/watches", _html("Cheap watches", spam, "en", "utf-8"), expect="drop:quality",
        note="repetitive spam (Gopher repetition)")
    links = [f'<a href="/p{i}">Product {i}</a>' for i in range(60)]
    add("https://shop.example.biz/catalogue", _html("Catalogue", ["<br>".join(links)], "en", "utf-8"),
        expect="drop", note="link list / boilerplate (too little language to identify, or the quality rules)")
    lorem = EN[:3] + ["Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt."]
    add("https://template.example.com/draft", _html("Draft", lorem, "en", "utf-8"), expect="drop:quality",
        note="lorem ipsum (C4)")
    add("https://tiny.example.com/note", _html("Note", ["Closed today. Back tomorrow."], "en", "utf-8"),
        expect="drop:quality", note="too short (Gopher)")
    code = EN[4:6] + ["function init() { return window.config || {}; } and then the page loads the widget."]
    add("https://dev.example.com/howto", _html("Howto", code, "en", "utf-8"), expect="drop:quality",
        note="curly bracket (C4)")

    # URL filter
    add("http://www.pornhub.com/view/12345", _html("Video", EN[6:8], "en", "utf-8"), expect="drop:url_filter",
        note="domain on the UT1 blocklist")
    add("https://free-xxx-casino.example.net/win", _html("Win", EN[8:10], "en", "utf-8"), expect="drop:url_filter",
        note="banned word in URL")
    add("https://blocked-example.test/page", _html("Blocked", EN[10:12], "en", "utf-8"), expect="drop:url_filter",
        note="domain from the job's extra_domains")

    # reader skips
    add("https://news.example.com/old", "", status=301, expect="drop:read", note="redirect")
    add("https://news.example.com/logo.png", "", ctype="image/png", expect="skip", note="not HTML")
    return out


def _warc_record(kind: str, url: str, payload: bytes, rng: random.Random, ctype: str) -> bytes:
    rid = uuid.UUID(int=rng.getrandbits(128), version=4)
    head = (f"WARC/1.0\r\nWARC-Type: {kind}\r\nWARC-Date: {DATE}\r\nWARC-Record-ID: <urn:uuid:{rid}>\r\n"
            + (f"WARC-Target-URI: {url}\r\n" if url else "")
            + f"Content-Type: {ctype}\r\nContent-Length: {len(payload)}\r\n\r\n")
    return head.encode() + payload + b"\r\n\r\n"


def _http(page: dict) -> bytes:
    body = page["html"].encode(page["charset"]) if page["html"] else b"\x89PNG\r\n\x1a\n" + bytes(64)
    reason = {200: "OK", 301: "Moved Permanently"}[page["status"]]
    ct = page["ctype"] + (f"; charset={page['charset']}" if page["ctype"] == "text/html" else "")
    extra = "Location: https://news.example.com/new\r\n" if page["status"] == 301 else ""
    head = f"HTTP/1.1 {page['status']} {reason}\r\nContent-Type: {ct}\r\n{extra}Content-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def _gz(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as f:
        f.write(data)
    return buf.getvalue()


def _image(topic: str, k: int, fmt: str, seed: int) -> bytes:
    """A small deterministic picture (sky, hills, sun, a label) for the page's <img> records."""
    from PIL import Image, ImageDraw

    r = random.Random(f"{seed}-{topic}-{k}")
    w, h = 480, 320
    img = Image.new("RGB", (w, h), (r.randrange(90, 160), r.randrange(150, 210), 235))
    d = ImageDraw.Draw(img)
    for i in range(3):
        y = r.randrange(150, 260)
        d.polygon([(0, h), (0, y), (r.randrange(80, 400), y - r.randrange(30, 90)), (w, y + 20), (w, h)],
                  fill=(40 + 30 * i, 120 + 25 * i, 50))
    sx, sy = r.randrange(40, 440), r.randrange(30, 110)
    d.ellipse([sx - 25, sy - 25, sx + 25, sy + 25], fill=(250, 220, 80))
    d.text((12, 12), f"{topic} {k}", fill=(20, 20, 20))
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 85} if fmt == "JPEG" else {}))
    return buf.getvalue()


def image_records(seed: int) -> list[tuple[str, bytes, str]]:
    """(url, bytes, content type) for the images the sample's articles link (captured, as some archives do)."""
    out = []
    for topic, year in (("bread", 2024), ("bees", 2023)):
        out.append((f"https://news.example.com/img/{topic}-1.jpg", _image(topic, 1, "JPEG", seed), "image/jpeg"))
        out.append((f"https://cdn.example.org/{topic}/2.png", _image(topic, 2, "PNG", seed), "image/png"))
    return out


def write_warc(path: Path, items: list[dict], seed: int) -> None:
    rng = random.Random(seed)
    with open(path, "wb") as f:
        f.write(_gz(_warc_record("warcinfo", "", b"software: crawlmix make_sample\r\nformat: WARC File Format 1.0\r\n",
                                 rng, "application/warc-fields")))
        for p in items:  # one gzip member per record, as Common Crawl does
            f.write(_gz(_warc_record("response", p["url"], _http(p), rng, "application/http; msgtype=response")))
        for url, data, ctype in image_records(seed):
            http = f"HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data
            f.write(_gz(_warc_record("response", url, http, rng, "application/http; msgtype=response")))


def write_arc(path: Path, items: list[dict]) -> None:
    """A legacy ARC v1 file (what the Internet Archive wrote before WARC)."""
    recs = []
    desc = b"1 0 crawlmix\nURL IP-address Archive-date Content-type Archive-length\n"
    recs.append(b"filedesc://sample.arc 0.0.0.0 20240520120000 text/plain %d\n" % len(desc) + desc + b"\n")
    for p in items:
        http = _http(p)
        recs.append(f"{p['url']} 192.0.2.1 20240520120000 text/html {len(http)}\n".encode() + http + b"\n")
    with open(path, "wb") as f:
        for r in recs:
            f.write(_gz(r))


def write_sample(out_dir: str | Path = "sample", seed: int = 0) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    items = pages(seed)
    write_warc(out / "sample.warc.gz", items, seed)
    arc_items = [dict(url=f"http://archive.example.org/{lang}/markt.html", html=_html("Markt", paras, lang, cs),
                      charset=cs, status=200, ctype="text/html") for lang, (cs, paras) in list(OTHER.items())[:2]]
    write_arc(out / "sample.arc.gz", arc_items)
    manifest = [{k: p[k] for k in ("url", "charset", "expect", "note")} for p in items]
    manifest += [{"url": p["url"], "charset": p["charset"], "expect": "drop:dedup",
                  "note": "ARC copy of a WARC article (cross-file near duplicate)"} for p in arc_items]
    (out / "SAMPLE_MANIFEST.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    return out / "sample.warc.gz"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Write the bundled sample crawl (deterministic).")
    ap.add_argument("--output", default=str(project_dir() / "sample"))
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    print(write_sample(a.output, a.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
