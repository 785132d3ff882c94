"""The images index reads legacy ARC files (warcio) as it reads WARC: a valid ARC file is indexed, not called
corrupt, and its image records are read back by offset."""

from __future__ import annotations

import gzip
import io

import pytest
from PIL import Image

from crawlmix.images.index import WarcIndex, index_file


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 10, 10)).save(buf, "JPEG")
    return buf.getvalue()


def _arc_records(jpg: bytes) -> list[bytes]:
    desc = b"1 0 test\nURL IP-address Archive-date Content-type Archive-length\n"
    html = b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n<html><body><img src='/a.jpg'></body></html>"
    img = b"HTTP/1.0 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpg) + jpg
    moved = b"HTTP/1.0 301 Moved Permanently\r\nLocation: /a.jpg\r\n\r\n"
    return [b"filedesc://t.arc 0.0.0.0 20240520120000 text/plain %d\n" % len(desc) + desc + b"\n",
            b"http://arc.test/ 192.0.2.1 20240520120000 text/html %d\n" % len(html) + html + b"\n",
            b"http://arc.test/a.jpg 192.0.2.1 20240520120000 image/jpeg %d\n" % len(img) + img + b"\n",
            b"http://arc.test/old.jpg 192.0.2.1 20240520120000 text/html %d\n" % len(moved) + moved + b"\n"]


@pytest.mark.parametrize("name", ["t.arc.gz", "t.arc"])
def test_arc_file_is_indexed_and_read_back(tmp_path, name):
    jpg = _jpeg()
    recs = _arc_records(jpg)
    path = tmp_path / name
    path.write_bytes(b"".join(gzip.compress(r) for r in recs) if name.endswith(".gz") else b"".join(recs))
    got = index_file(str(path))
    assert got["errors"] == [] and got["format"] == "arc"
    assert set(got["records"]) == {"http://arc.test/a.jpg", "http://arc.test/old.jpg"}  # the page is text: not listed
    assert got["records"]["http://arc.test/old.jpg"][1:] == [301, "", "http://arc.test/a.jpg"]
    idx = WarcIndex([got])
    (where, match) = idx.find("http://arc.test/old.jpg")
    assert match == "redirect" and where[:2] == (str(path), got["records"]["http://arc.test/a.jpg"][0])
    data, why = idx.read(where[0], where[1], 10_000_000)
    assert why == "" and data == jpg
    idx.close()


def test_broken_arc_keeps_what_came_before(tmp_path):
    recs = _arc_records(_jpeg())
    path = tmp_path / "cut.arc.gz"
    path.write_bytes(b"".join(gzip.compress(r) for r in recs[:3]) + b"\x1f\x8b\x08\x00" + b"garbage" * 20)
    got = index_file(str(path))
    assert "http://arc.test/a.jpg" in got["records"]
    assert [e["reason"] for e in got["errors"]] == ["corrupt_file"] and "cut.arc.gz@" in got["errors"][0]["record"]
    missing = index_file(str(tmp_path / "nope.warc.gz"))
    assert missing["records"] == {} and missing["errors"][0]["reason"] == "unreadable"
