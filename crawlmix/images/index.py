"""WARC image records looked up by URL (the images job: indexed in crawlmix.images.job, read in .task).

``index_file`` lists the image records (non-text 2xx responses, image ``resource`` records) and 3xx
redirects of one WARC with their offsets; ``WarcIndex`` joins those lists and finds a URL exactly, then
by a canonical key (``url_key``), following captured redirects, and reads a record's payload by
seeking to its offset.
"""

from __future__ import annotations

from urllib.parse import quote, unquote, urljoin, urlsplit

from crawlmix.io.paths import open_binary

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


def index_file(path: str) -> dict:
    """{"records": {url: [offset, status, content_type, location]}, "errors": [...]} for one WARC."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    records, errors, offset, n = {}, [], 0, 0
    try:
        with open_binary(path) as stream:
            for rec in ArchiveIterator(stream, record_types=WarcRecordType.response | WarcRecordType.resource,
                                       parse_http=True):
                offset, n = rec.stream_pos, n + 1
                url = (rec.headers.get("WARC-Target-URI") or "").strip().strip("<>")
                if not url or url in records:
                    continue
                if rec.record_type == WarcRecordType.resource:
                    ct = (rec.headers.get("Content-Type") or "").split(";")[0].strip().lower()
                    if ct.startswith("image/"):
                        records[url] = [offset, 200, ct, ""]
                    continue
                hh = rec.http_headers
                if hh is None:
                    continue
                status = hh.status_code or 0
                ct = (hh.get("Content-Type") or "").split(";")[0].strip().lower()
                if 300 <= status < 400 and hh.get("Location"):
                    records[url] = [offset, status, ct, urljoin(url, hh.get("Location").strip())]
                elif 200 <= status < 300 and not ct.startswith(("text/", "application/javascript", "application/json")):
                    records[url] = [offset, status, ct, ""]
    except Exception as e:  # a broken file: keep the records before the break
        errors.append({"stage": "index", "reason": "corrupt_file", "record": f"{path}@{offset}",
                       "message": f"stopped after {n} records: {type(e).__name__}: {e}"})
    return {"path": path, "records": records, "errors": errors}


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
            rec = next(iter(ArchiveIterator(f, parse_http=True)), None)
            if rec is None:
                return None, "no record at the indexed offset"
            if rec.content_length > max_bytes + 65536:
                return None, f"record of {rec.content_length} bytes"
            body = rec.reader.read(max_bytes + 1)
            return body, ""
        except Exception as e:
            return None, f"{type(e).__name__}: {e}"

    def close(self):
        for h in self._handles.values():
            h.close()
        self._handles.clear()
