"""Read WARC (plain or gzip per record), WET and ARC files into page records.

fastwarc does the WARC parsing; warcio reads the legacy ARC format. Charsets are taken
from the HTTP header when it decodes cleanly, otherwise detected (resiliparse).
Every record that cannot be used is reported through ``report`` with its RecordRef (file, offset,
URL, record id); a broken file never stops the job.

Run alone to list what a file holds:  python pipelines/read_warc.py FILE
"""

from __future__ import annotations

import codecs
import json
import re
from dataclasses import dataclass, field
from typing import Callable, Iterator


from crawlmix.io.paths import is_record_member, member_range, open_binary

# report(reason, RecordRef, message, dropped): dropped=False is a notice (the record is still used)
Report = Callable[..., None]

# WHATWG encoding labels whose Python codec is narrower than what browsers decode.
_CHARSET_ALIASES = {"gb2312": "gbk", "gb_2312-80": "gbk", "iso-8859-1": "cp1252", "latin1": "cp1252",
                    "us-ascii": "cp1252", "ascii": "cp1252", "x-gbk": "gbk", "windows-874": "cp874",
                    "iso-8859-9": "cp1254", "shift-jis": "cp932", "shift_jis": "cp932", "euc-kr": "cp949"}
_META_CHARSET = re.compile(rb"<meta[^>]+charset=[\"']?([A-Za-z0-9_\-:.]+)", re.I)
# Responses that are a page's assets, not documents: skipped without a count (the images stage reads them).
# Every other type outside read.mime_types (PDF, plain text, XML, Office, none given) is a counted read
# drop: unsupported_mime.
_ASSET_PREFIXES = ("image/", "video/", "audio/", "font/", "model/", "text/css", "text/javascript",
                   "application/javascript", "application/x-javascript", "application/ecmascript",
                   "application/json", "application/manifest+json", "application/wasm", "application/font-",
                   "application/x-font-", "application/vnd.ms-fontobject")


def _skip_mime(mime: str, mime_types, ref: "RecordRef", report) -> bool:
    """True when the record is not a page to read; a document type is reported (unsupported_mime)."""
    if mime in mime_types:
        return False
    if not mime.startswith(_ASSET_PREFIXES):
        report("unsupported_mime", ref, f"{mime or 'no Content-Type'} is not in read.mime_types")
    return True


@dataclass(frozen=True)
class RecordRef:
    """Where a record is: its file, byte offset, URL and WARC-Record-ID (each may be unknown).

    Printed as ``file@offset (url)`` in messages; never parsed back."""

    path: str
    offset: int | None = None
    url: str = ""
    record_id: str = ""

    def __str__(self) -> str:
        if self.offset is None:
            return self.path
        label = self.url or self.record_id
        return f"{self.path}@{self.offset} ({label})" if label else f"{self.path}@{self.offset}"


@dataclass
class Page:
    id: str
    url: str
    date: str
    source: str
    offset: int
    html: str = ""
    text: str | None = None  # set for WET conversion records (already plain text)
    charset: str = ""
    cc_languages: str = ""  # Common Crawl metadata (cld2) when present
    extra: dict = field(default_factory=dict)

    @property
    def ref(self) -> RecordRef:
        return RecordRef(self.source, self.offset, self.url, self.id)


def _codec(label: str | None) -> str | None:
    if not label:
        return None
    label = label.strip().strip("\"'").lower()
    label = _CHARSET_ALIASES.get(label, label)
    try:
        return codecs.lookup(label).name
    except LookupError:
        return None


def decode_html(body: bytes, declared: str | None) -> tuple[str, str, float, str]:
    """(text, charset used, share of replacement characters, note when a declared charset failed)."""
    failed = []
    for label in (declared, *(_META_CHARSET.findall(body[:4096])[:1])):
        if isinstance(label, bytes):
            label = label.decode("ascii", "ignore")
        if not label:
            continue
        enc = _codec(label)
        if enc:
            try:
                return body.decode(enc), enc, 0.0, ""
            except (UnicodeDecodeError, LookupError):
                failed.append(f"{label!r} does not decode the bytes")
        else:
            failed.append(f"{label!r} is not a known charset")
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding

    enc = detect_encoding(body)
    text = bytes_to_str(body, enc)
    bad = text.count("\ufffd") / max(1, len(text))
    note = f"declared charset {'; '.join(failed)}; decoded as detected {enc}" if failed else ""
    return text, enc, bad, note


def _split_http(block: bytes) -> tuple[int, dict[str, str], bytes] | None:
    head, sep, body = block.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = block.partition(b"\n\n")
        if not sep:
            return None
    lines = head.decode("latin-1").splitlines()
    if not lines or not lines[0].startswith("HTTP/"):
        return None
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        status = 0
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


def _content_type(headers: dict[str, str]) -> tuple[str, str | None]:
    ct = headers.get("content-type", "")
    mime, _, rest = ct.partition(";")
    m = re.search(r"charset=([^\s;]+)", rest, re.I)
    return mime.strip().lower(), (m.group(1) if m else None)


def _is_arc(path: str) -> bool:
    with open_binary(path) as f:
        head = f.read(64)
    if head[:2] == b"\x1f\x8b":
        import gzip
        import io
        import zlib

        try:
            head = gzip.GzipFile(fileobj=io.BytesIO(_first_bytes(path, 65536))).read(64)
        except (OSError, EOFError, zlib.error):  # a gzip magic, then no gzip stream: the WARC reader names it
            return False
    return head.startswith(b"filedesc://")


is_arc = _is_arc  # (public: the images index reads ARC files too)


def _first_bytes(path: str, n: int) -> bytes:
    with open_binary(path) as f:
        return f.read(n)


def _decode_page(body: bytes, declared: str | None, ref: RecordRef, report: Report) -> tuple[str, str] | None:
    """(html, charset), or None (reported) when too much of it does not decode."""
    html, charset, bad, note = decode_html(body, declared)
    if bad > 0.3:
        report("undecodable", ref, f"{bad:.0%} of characters undecodable as {charset}")
        return None
    if note:
        report("charset_fallback", ref, note, dropped=False)
    return html, charset


def iter_pages(path: str, report: Report, *, max_record_bytes: int = 10_000_000,
               mime_types=("text/html", "application/xhtml+xml"), start: int = 0,
               end: int | None = None) -> Iterator[Page]:
    """Yield the HTML pages (and WET text records) of one file; report everything skipped.

    ``start`` / ``end``: only the records whose gzip member starts in that byte range, the range moved to
    record boundaries (crawlmix.io.paths.member_range); the spans of a split file together give exactly the
    whole file's pages, with the same offsets."""
    span: tuple[int, int | None] | None = (0, None)
    if start or end is not None:
        with open_binary(path) as f:
            span = member_range(f, start, end)
        if span is None:
            return  # no record starts in this range: its neighbours hold them
    if _is_arc(path):
        yield from _iter_arc(path, report, max_record_bytes, mime_types, *span)
        return
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    wanted = WarcRecordType.response | WarcRecordType.resource | WarcRecordType.conversion | WarcRecordType.metadata
    pending: Page | None = None
    offset = 0
    n_records = 0
    broken = False
    try:
        with open_binary(path) as stream:
            if span[0]:
                stream.seek(span[0])
            for rec in ArchiveIterator(stream, record_types=wanted, parse_http=False):
                offset = rec.stream_pos
                if span[1] is not None and offset >= span[1] and not (
                        pending is not None and rec.record_type == WarcRecordType.metadata):
                    break  # the next span's record (a metadata record still completes this span's last page)
                n_records += 1
                url = rec.headers.get("WARC-Target-URI") or ""
                rid = (rec.headers.get("WARC-Record-ID") or f"<{path}@{offset}>").strip("<>")
                ref = RecordRef(path, offset, url, rid)
                kind = rec.record_type
                if kind == WarcRecordType.metadata:
                    if pending is not None and url == pending.url:
                        m = re.search(rb"languages-cld2: (\{.*\})", rec.reader.read(65536))
                        if m:
                            try:
                                langs = json.loads(m.group(1)).get("languages", [])
                                pending.cc_languages = ",".join(x.get("code", "") for x in langs)
                            except ValueError:
                                pass
                    continue
                if pending is not None:
                    yield pending
                    pending = None
                if rec.content_length > max_record_bytes:
                    report("record_too_large", ref, f"{rec.content_length} bytes > read.max_record_bytes")
                    continue
                block = rec.reader.read()
                if len(block) < rec.content_length:
                    report("truncated_record", ref, f"record cut off: {len(block)} of {rec.content_length} bytes")
                    continue
                date = rec.headers.get("WARC-Date") or ""
                if kind == WarcRecordType.conversion:
                    text, _, bad, _ = decode_html(block, "utf-8")
                    pending = Page(rid, url, date, path, offset, text=text, charset="utf-8")
                    continue
                if kind == WarcRecordType.response:
                    parsed = _split_http(block)
                    if parsed is None:
                        report("bad_http", ref, "response record without a parsable HTTP header")
                        continue
                    status, headers, body = parsed
                    if not 200 <= status < 300:
                        report("http_status", ref, f"HTTP {status}")
                        continue
                    mime, declared = _content_type(headers)
                else:  # resource: the block is the document
                    body = block
                    mime, declared = _content_type({"content-type": rec.headers.get("Content-Type") or ""})
                if _skip_mime(mime, mime_types, ref, report):
                    continue
                decoded = _decode_page(body, declared, ref, report)
                if decoded is None:
                    continue
                pending = Page(rid, url, date, path, offset, html=decoded[0], charset=decoded[1])
    except Exception as e:  # a broken stream: keep what was read, name where it broke
        broken = True
        report("corrupt_file", RecordRef(path, offset), f"stopped after {n_records} records: {type(e).__name__}: {e}")
    if pending is not None:
        yield pending
    if n_records == 0 and not broken and span[0] == 0 and (span[1] is None or not is_record_member(
            _first_bytes(path, 65536))):  # (a span of a split WARC may hold no page: not the file's fault)
        report("no_records", RecordRef(path), "no WARC records (empty, not a WARC/ARC file, or unreadable)")


def _iter_arc(path, report, max_record_bytes, mime_types, start=0, end=None) -> Iterator[Page]:
    from warcio.archiveiterator import ArchiveIterator

    n = 0
    offset = 0
    try:
        with open_binary(path) as stream:
            if start:
                stream.seek(start)
            it = ArchiveIterator(stream, arc2warc=True)
            for rec in it:
                n += 1
                body = rec.content_stream().read() if rec.rec_type == "response" else b""
                offset = it.get_record_offset()  # (warcio reads the record to its end here)
                if end is not None and offset >= end:
                    break
                if rec.rec_type != "response":
                    continue
                url = rec.rec_headers.get_header("WARC-Target-URI") or ""
                ref = RecordRef(path, offset, url)
                if len(body) > max_record_bytes:
                    report("record_too_large", ref, f"{len(body)} bytes > read.max_record_bytes")
                    continue
                mime, declared = _content_type({"content-type": rec.http_headers.get_header("Content-Type") or ""}) \
                    if rec.http_headers else ("", None)
                if _skip_mime(mime, mime_types, ref, report):
                    continue
                decoded = _decode_page(body, declared, ref, report)
                if decoded is None:
                    continue
                date = rec.rec_headers.get_header("WARC-Date") or ""
                yield Page(f"arc:{path}@{offset}", url, date, path, offset, html=decoded[0], charset=decoded[1])
    except Exception as e:
        report("corrupt_file", RecordRef(path, offset), f"stopped after {n} ARC records: {type(e).__name__}: {e}")
    if n == 0:
        report("no_records", RecordRef(path), "no ARC records")


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="List the HTML pages a WARC/WET/ARC file holds, and what is skipped.")
    ap.add_argument("file")
    ap.add_argument("--limit", type=int, default=20, help="pages to print (default 20)")
    a = ap.parse_args(argv)
    n = 0
    for p in iter_pages(a.file, lambda r, w, m, dropped=True: print(f"{'SKIP' if dropped else 'NOTE'} {r}: {w}: {m}")):
        n += 1
        if n <= a.limit:
            print(f"{p.offset:>10} {p.charset:<10} {p.cc_languages:<6} {len(p.html or p.text or ''):>8} chars  {p.url}")
    print(f"{n} pages")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
