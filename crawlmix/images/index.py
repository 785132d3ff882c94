"""WARC image records looked up by URL (the images job: indexed in crawlmix.images.job, read in .task).

``index_file`` lists the image records (non-text 2xx responses, image ``resource`` records) and 3xx
redirects of one WARC (fastwarc) or legacy ARC file (warcio) with their offsets; ``WarcIndex`` joins
those lists and finds a URL exactly, then by a canonical key (``url_key``), following captured
redirects, and reads a record's payload by seeking to its offset.
"""

from __future__ import annotations

from urllib.parse import quote, unquote, urljoin, urlsplit

from crawlmix.io.paths import open_binary
from crawlmix.io.warc import is_arc

# ----------------------------------------------------------------------------------------------
# WARC image records, looked up by URL

_SAFE_PATH = "/:@!$&'()*+,;=-._~"
_SAFE_QUERY = "/?:@!$'()*+,;=-._~&"


def url_key(url: str) -> str:
    """Canonical form for lookups: no scheme or fragment, host lower-cased, default port dropped,
    %-escapes normalised (``Mona_Lisa%2C_by`` matches ``Mona_Lisa,_by``)."""
    try:
        p = urlsplit(url)
        host = (p.hostname or "").rstrip(".")
        port = p.port
    except ValueError:
        return url
    port_s = f":{port}" if port and port not in (80, 443) else ""
    path = quote(unquote(p.path or "/"), safe=_SAFE_PATH)
    query = quote(unquote(p.query), safe=_SAFE_QUERY)
    return f"{host}{port_s}{path}" + (f"?{query}" if query else "")


_HTML = ("text/html", "application/xhtml+xml")
_GENERIC = ("application/octet-stream", "binary/octet-stream")  # a captured record the decoder decides on


def _is_html(status: int, ct: str) -> bool:
    """A 2xx HTML response: a page the steps read (counted, so a step that skips its pages can say how many)."""
    return 200 <= status < 300 and ct in _HTML


def fetchable_records(per_file: list[dict] | None) -> int:
    """How many indexed records could give an image its bytes: 2xx with an image type other than SVG, a
    generic or no type (the decoder decides). 0 (or no index) with fetching off: no candidate of any page
    can become an image, so the steps need not parse pages for candidates (crawlmix.images.job)."""
    return sum(1 for f in per_file or () for _off, status, ct, loc in f["records"].values()
               if not loc and 200 <= status < 300 and ct != "image/svg+xml"
               and (not ct or ct.startswith("image/") or ct in _GENERIC))


def _keep(records: dict, url: str, offset: int, status: int, ct: str, location: str | None) -> None:
    """Records a 3xx redirect or a 2xx non-text response (an image, probably) of ``url``."""
    if 300 <= status < 400 and location:
        records[url] = [offset, status, ct, urljoin(url, location.strip())]
    elif 200 <= status < 300 and not ct.startswith(("text/", "application/javascript", "application/json")):
        records[url] = [offset, status, ct, ""]


def _index_arc(path: str) -> dict:
    """index_file for a legacy ARC file (warcio reads it; fastwarc reads WARC only)."""
    from warcio.archiveiterator import ArchiveIterator

    records, errors, offset, n, html = {}, [], 0, 0, 0
    try:
        with open_binary(path) as stream:
            it = ArchiveIterator(stream, arc2warc=True)
            for rec in it:
                offset, n = it.get_record_offset(), n + 1
                url = (rec.rec_headers.get_header("WARC-Target-URI") or "").strip().strip("<>")
                if rec.rec_type != "response" or not url or url in records or rec.http_headers is None:
                    continue
                hh = rec.http_headers
                try:
                    status = int(hh.get_statuscode() or 0)
                except ValueError:
                    status = 0
                ct = (hh.get_header("Content-Type") or "").split(";")[0].strip().lower()
                html += _is_html(status, ct)
                _keep(records, url, offset, status, ct, hh.get_header("Location"))
    except Exception as e:  # a broken file: keep the records before the break
        errors.append({"stage": "index", "reason": "corrupt_file", "record": f"{path}@{offset}",
                       "message": f"stopped after {n} ARC records: {type(e).__name__}: {e}"})
    return {"path": path, "format": "arc", "records": records, "errors": errors, "html": html}


def index_file(path: str) -> dict:
    """{"records": {url: [offset, status, content_type, location]}, "errors": [...], "html": 2xx HTML responses}
    for one WARC or ARC file (``"format": "arc"`` marks an ARC file's index: its records are read back with
    warcio)."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    try:
        arc = is_arc(path)
    except Exception as e:  # noqa: BLE001 - unreadable: named, the job goes on
        return {"path": path, "records": {}, "html": 0,
                "errors": [{"stage": "index", "reason": "unreadable", "record": path,
                            "message": f"{type(e).__name__}: {e}"}]}
    if arc:
        return _index_arc(path)
    records, errors, offset, n, html = {}, [], 0, 0, 0
    try:
        with open_binary(path) as stream:
            for rec in ArchiveIterator(stream, record_types=WarcRecordType.response | WarcRecordType.resource,
                                       parse_http=True):
                offset, n = rec.stream_pos, n + 1
                url = (rec.headers.get("WARC-Target-URI") or "").strip().strip("<>")
                if not url:
                    continue
                if rec.record_type == WarcRecordType.resource:
                    ct = (rec.headers.get("Content-Type") or "").split(";")[0].strip().lower()
                    html += _is_html(200, ct)
                    if ct.startswith("image/") and url not in records:
                        records[url] = [offset, 200, ct, ""]
                    continue
                hh = rec.http_headers
                if hh is None:
                    continue
                status = hh.status_code or 0
                ct = (hh.get("Content-Type") or "").split(";")[0].strip().lower()
                html += _is_html(status, ct)
                if url not in records:
                    _keep(records, url, offset, status, ct, hh.get("Location"))
    except Exception as e:  # a broken file: keep the records before the break
        errors.append({"stage": "index", "reason": "corrupt_file", "record": f"{path}@{offset}",
                       "message": f"stopped after {n} records: {type(e).__name__}: {e}"})
    return {"path": path, "records": records, "errors": errors, "html": html}


class WarcIndex:
    """URL -> captured record across all indexed files; exact URL first, then canonical key."""

    def __init__(self, per_file: list[dict], canonical: bool = True, follow: int = 5):
        self.exact: dict[str, tuple] = {}
        self.canon: dict[str, tuple] = {}
        self.follow, self.canonical = follow, canonical
        for f in per_file:
            for url, (off, status, ct, loc) in f["records"].items():
                loc_t = (f["path"], off, status, ct, loc)
                self.exact.setdefault(url, loc_t)
                if canonical:
                    self.canon.setdefault(url_key(url), loc_t)
        self._handles: dict[str, object] = {}
        self._arc = {f["path"] for f in per_file if f.get("format") == "arc"}

    def __len__(self):
        return len(self.exact)

    def find(self, url: str) -> tuple[tuple, str] | None:
        """((path, offset, status, content_type, location), match) or None."""
        match = "exact"
        for _ in range(self.follow + 1):
            hit = self.exact.get(url)
            if hit is None and self.canonical:
                hit = self.canon.get(url_key(url))
                match = "canonical" if hit is not None and match == "exact" else match
            if hit is None:
                return None
            if 300 <= hit[2] < 400:
                url, match = hit[4], "redirect"
                continue
            return hit, match
        return None

    def read(self, path: str, offset: int, max_bytes: int) -> tuple[bytes | None, str]:
        """(payload, "") or (None, why)."""
        from fastwarc.warc import ArchiveIterator

        f = self._handles.get(path)
        if f is None:
            if len(self._handles) > 16:
                for h in self._handles.values():
                    h.close()
                self._handles.clear()
            f = self._handles[path] = open_binary(path)
        try:
            f.seek(offset)
            if path in self._arc:
                return self._read_arc(f, max_bytes)
            rec = next(iter(ArchiveIterator(f, parse_http=True)), None)
            if rec is None:
                return None, "no record at the indexed offset"
            if rec.content_length > max_bytes + 65536:
                return None, f"record of {rec.content_length} bytes"
            body = rec.reader.read(max_bytes + 1)
            return body, ""
        except Exception as e:
            return None, f"{type(e).__name__}: {e}"

    @staticmethod
    def _read_arc(f, max_bytes: int) -> tuple[bytes | None, str]:
        from warcio.archiveiterator import ArchiveIterator

        rec = next(iter(ArchiveIterator(f, arc2warc=True)), None)
        if rec is None or rec.rec_type != "response":
            return None, "no ARC response record at the indexed offset"
        return rec.content_stream().read(max_bytes + 1), ""

    def close(self):
        for h in self._handles.values():
            h.close()
        self._handles.clear()
