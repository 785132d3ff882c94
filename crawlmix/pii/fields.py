"""PII in every field of a record, not only `text`: URLs, ids and messages that quote URLs, captions, lists of URLs.

    fs = FieldScrubber(PiiConfig())
    fs.texts(["mail me: a@b.com"])                 # -> ["mail me: <EMAIL_ADDRESS>"]   (presidio, crawlmix/pii/scrub.py)
    fs.urls(["https://x.org/c?email=a%40b.com"])   # -> ["https://x.org/c?email=%3CEMAIL_ADDRESS%3E"]
    fs.rows(rows)                                  # every known column of a list of row dicts, in place
    sink = PiiSink(path, schema, meta, ...)        # a ParquetSink whose rows are scrubbed before they are written

The crawl's tasks write through ``PiiSink`` (crawlmix.text.curate takes a sink factory), so no row reaches
disk unscrubbed; the images tasks stage their rows the same way; interleaved documents call ``texts`` and
``urls`` on their blocks.

URLs keep their identity: scheme, host and port are never changed, and a piece of a URL changes only where
it clearly holds PII: an e-mail address anywhere (userinfo, path segment, query value, fragment), the whole
path of mailto:, tel:, sms: and callto: URLs, and a query value whose key names a kind of PII (``phone=``,
``tel=``, ``mobile=``, ``ip=``, ``iban=``, ``ssn=``, ``card=``, ...) or that is a +-prefixed phone number.
Digit runs elsewhere (article ids, timestamps, file names) look like phone or card numbers to presidio and
are left alone: on realpages.warc.gz 0 of the 1,171 page URLs change, and 487 of the 205,504 link and image
URLs on those pages (0.24%, nearly all mailto: / tel: links; docs/pii.md). Pieces are percent-decoded before presidio reads them; a changed piece is
percent-encoded again, the rest of the URL keeps its bytes.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache
from urllib.parse import quote, quote_plus, unquote, unquote_plus, urlsplit

from crawlmix.pii.config import PiiConfig
from crawlmix.pii.scrub import scrubber_for
from crawlmix.pii.spans import PII_TYPE, PiiStats, Span, fake_value

# column name -> how it is scrubbed (crawl curated/removed rows, image-text pair rows, error records)
ROLES = {"text": "text", "caption": "plain", "alt": "plain", "title": "plain", "figcaption": "plain",
         "surrounding": "plain", "url": "url", "page_url": "url", "candidates": "urls", "id": "ref",
         "page_id": "ref", "record": "ref", "detail": "message", "message": "message"}
_ALL = frozenset({"EMAIL_ADDRESS", "PHONE_NUMBER", "IP_ADDRESS", "CREDIT_CARD", "IBAN_CODE", "US_SSN"})
_EMAIL = frozenset({"EMAIL_ADDRESS"})
_CONTACT_SCHEMES = {"mailto", "tel", "sms", "callto"}  # the path is the contact itself
# query keys that name a kind of PII (the key's words, lower case)
_KEY_HINTS = {
    "PHONE_NUMBER": {"phone", "tel", "telephone", "telefon", "telefono", "telephone", "mobile", "mobil", "cell",
                     "cellphone", "fax", "handy", "whatsapp", "msisdn", "sms", "phonenumber", "tel1", "tel2"},
    "IP_ADDRESS": {"ip", "ipaddr", "ipaddress", "cip", "clientip", "remoteaddr", "ipv4", "ipv6"},
    "CREDIT_CARD": {"card", "cardnumber", "creditcard", "ccnumber", "ccnum", "pan"},
    "IBAN_CODE": {"iban"},
    "US_SSN": {"ssn", "socialsecurity"},
    "EMAIL_ADDRESS": set(),
}
_KEY_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
_PLUS_PHONE = re.compile(r"\+\d[\d ()./-]{5,}\d")
# URLs quoted inside free text (error records "file@offset (url)", messages, details)
_URL_IN_TEXT = re.compile(r"(?:\b[A-Za-z][A-Za-z0-9+.-]*://|\b(?:mailto|tel|sms|callto):)[^\s<>\"']+")
_SAFE = "!$'()*+,;:~-._"  # kept as they are when a changed piece is encoded again
_QSAFE = "!$'()*,:~-._/"  # the same in a query value ('+' means a space there; '&', ';', '=' separate)


def _key_types(key: str) -> frozenset:
    words = {w.lower() for w in _KEY_WORD.findall(key)} | {re.sub(r"[^a-z0-9]", "", key.lower())}
    return frozenset(t for t, hints in _KEY_HINTS.items() if words & hints) | _EMAIL


class FieldScrubber:
    """One per worker process (``field_scrubber_for``): the text scrubber plus URL and record handling."""

    def __init__(self, cfg: PiiConfig | None = None):
        self.cfg = cfg or PiiConfig()
        self.s = scrubber_for(self.cfg.model_dump_json())
        self.types = frozenset(self.cfg.pattern_entities)

    # ---- free text -------------------------------------------------------------------------------
    def texts(self, texts: list[str | None], languages: list[str | None] | None = None,
              stats: PiiStats | None = None) -> list[str | None]:
        """Scrubbed texts (the Scrubber's rules: e-mails, phones, ... and PERSON with NER)."""
        return [t for t, _ in self.s.scrub_batch(texts, languages, stats)]

    def _plain(self, texts: list, stats: PiiStats | None) -> list:
        side = PiiStats()
        out = self.texts(texts, None, side)
        if stats is not None:
            stats.replacements.update(side.replacements)
            stats.errors.update(side.errors)
        return out

    # ---- URLs ------------------------------------------------------------------------------------
    def urls(self, urls: list[str | None], stats: PiiStats | None = None) -> list[str | None]:
        """URLs with the PII pieces replaced (see the module doc); every other byte kept."""
        plans = [self._pieces(u) for u in urls]
        jobs = [(i, j) for i, p in enumerate(plans) if p for j in range(len(p[1]))]
        if not jobs:
            return list(urls)
        found = self.s.detect_batch([plans[i][1][j][2] for i, j in jobs])
        repl: dict[int, list] = {}
        for (i, j), spans in zip(jobs, found):
            start, end, text, allowed, enc = plans[i][1][j]
            keep = [s for s in spans if s.type in allowed and s.type in self.types]
            if not keep:
                continue
            new, regions = self.s.replace(text, keep)
            if stats is not None:
                stats.replacements.update(r.type for r in regions)
            if enc is _USER:  # presidio read user@host: the whole user part goes, the host stays
                r = regions[0]
                new = (f"<{r.type}>" if self.cfg.replacement == "placeholder"
                       else fake_value(r.type, text[r.start:r.end], self.cfg.seed).split("@")[0])
                enc = _quote_piece
            repl.setdefault(i, []).append((start, end, enc(new)))
        out = list(urls)
        for i, parts in repl.items():
            u = plans[i][0]
            for start, end, piece in sorted(parts, reverse=True):
                u = u[:start] + piece + u[end:]
            out[i] = u
        return out

    def _pieces(self, url: str | None):
        """(url, [(start, end, decoded text, types allowed there, re-encoder)]) of the pieces presidio must
        read, or None when the URL cannot hold PII by these rules (most URLs: no '@', no hinted key)."""
        if not url or not isinstance(url, str):
            return None
        low = url.lower()
        try:
            sp = urlsplit(url)
        except ValueError:  # not a URL (bad IPv6 brackets, ...): read it as text, e-mails only
            return (url, [(0, len(url), url, _EMAIL, lambda s: s)]) if "@" in url or "%40" in low else None
        scheme = sp.scheme.lower()
        has_at = "@" in url or "%40" in low
        if not has_at and scheme not in _CONTACT_SCHEMES and "=" not in sp.query and "=" not in sp.fragment:
            return None
        pieces = []
        pos = len(scheme) + 1 if scheme else 0
        if scheme in _CONTACT_SCHEMES:
            rest_end = len(url) - (len(sp.fragment) + 1 if "#" in url else 0)
            q = url.find("?", pos, rest_end)
            end = q if q >= 0 else rest_end
            pieces.append((pos, end, unquote(url[pos:end]), _ALL, lambda s: quote(s, safe=_SAFE + "@/")))
            if q >= 0:
                pieces += self._query(url, q + 1, rest_end)
            return (url, pieces)
        if url.startswith("//", pos):
            net_start = pos + 2
            net_end = net_start + len(sp.netloc)
            at = url.rfind("@", net_start, net_end)
            if at >= 0:  # userinfo: user[:password]@host; presidio reads user@host, only the user part changes
                pieces.append((net_start, at, unquote(url[net_start:at]) + url[at:net_end], _EMAIL, _USER))
            pos = net_end
        q = url.find("?", pos)
        h = url.find("#", pos)
        path_end = min(x for x in (q, h, len(url)) if x >= 0)
        if has_at:
            seg = pos
            while seg < path_end:
                nxt = url.find("/", seg, path_end)
                nxt = path_end if nxt < 0 else nxt
                raw = url[seg:nxt]
                if "@" in raw or "%40" in raw.lower():
                    pieces.append((seg, nxt, unquote(raw), _EMAIL, _quote_piece))
                seg = nxt + 1
        if q >= 0 and (h < 0 or q < h):
            pieces += self._query(url, q + 1, h if h >= 0 else len(url))
        if h >= 0:
            frag = url[h + 1:]
            if "=" in frag:
                pieces += self._query(url, h + 1, len(url))
            elif "@" in frag or "%40" in frag.lower():
                pieces.append((h + 1, len(url), unquote(frag), _EMAIL, lambda s: quote(s, safe=_SAFE + "/?")))
        return (url, pieces) if pieces else None

    def _query(self, url: str, start: int, end: int) -> list:
        out = []
        pos = start
        while pos < end:
            amp = [x for x in (url.find("&", pos, end), url.find(";", pos, end)) if x >= 0]
            nxt = min(amp) if amp else end
            eq = url.find("=", pos, nxt)
            if eq >= 0:
                raw = url[eq + 1:nxt]
                value = unquote_plus(raw)
                types = _key_types(unquote_plus(url[pos:eq]))
                if _PLUS_PHONE.fullmatch(value.strip()):
                    types = types | {"PHONE_NUMBER"}
                if types != _EMAIL or "@" in value:
                    out.append((eq + 1, nxt, value, types, lambda s: quote_plus(s, safe=_QSAFE)))
            pos = nxt + 1
        return out

    # ---- text that quotes URLs -------------------------------------------------------------------
    def refs(self, refs: list[str | None], stats: PiiStats | None = None) -> list[str | None]:
        """Record references (``file@offset (url)``, ids): the URLs they quote, scrubbed; nothing else."""
        found = [[(m.start(), _trim(m.group())) for m in _URL_IN_TEXT.finditer(r)] if isinstance(r, str) else []
                 for r in refs]
        flat = [u for f in found for _, u in f]
        if not flat:
            return list(refs)
        new = iter(self.urls(flat, stats))
        out = []
        for r, f in zip(refs, found):
            parts, last = [], 0
            for start, u in f:
                parts += [r[last:start], next(new)]
                last = start + len(u)
            out.append("".join(parts) + r[last:] if f else r)
        return out

    def messages(self, msgs: list[str | None], stats: PiiStats | None = None) -> list[str | None]:
        """Free-text messages (removed `detail`, error messages): quoted URLs, then the text itself."""
        return self._plain(self.refs(msgs, stats), stats)

    # ---- rows ------------------------------------------------------------------------------------
    def rows(self, rows: list[dict], text_stats: PiiStats | None = None,
             field_stats: PiiStats | None = None) -> list[dict]:
        """Every column of ``rows`` that ROLES names, in place; a `text` column gets its `pii` spans
        (``text_stats`` counts it; every other column counts in ``field_stats``)."""
        if not rows:
            return rows
        for col in list(rows[0]):
            role = ROLES.get(col)
            if role is None:
                continue
            vals = [r.get(col) for r in rows]
            if role == "text":
                res = self.s.scrub_batch(vals, [r.get("language") for r in rows], text_stats)
                for r, (t, spans) in zip(rows, res):
                    r[col], r["pii"] = t, spans
                continue
            if role == "urls":
                flat = [u for v in vals for u in (v or [])]
                it = iter(self.urls(flat, field_stats))
                for r, v in zip(rows, vals):
                    r[col] = None if v is None else [next(it) for _ in v]
                continue
            fn = {"plain": self._plain, "url": self.urls, "ref": self.refs, "message": self.messages}[role]
            for r, v in zip(rows, fn(vals, field_stats)):
                r[col] = v
        return rows

    def records(self, records: list[dict], stats: PiiStats | None = None) -> list[dict]:
        """Error records ({stage, reason, record, message, ...}) as copies with record and message scrubbed."""
        out = [dict(r) for r in records]
        return self.rows(out, None, stats)


_USER = object()  # marks the userinfo piece of a URL


def _quote_piece(s: str) -> str:
    return quote(s, safe=_SAFE)


def _trim(u: str) -> str:
    """A URL found in text, without the punctuation that closes the sentence or the parenthesis around it."""
    while u and u[-1] in ".,;:!?)]}" and not (u[-1] == ")" and u.count("(") >= u.count(")")):
        u = u[:-1]
    return u


@lru_cache(maxsize=4)
def field_scrubber_for(cfg_json: str) -> FieldScrubber:
    """Per-process cache: one engine per worker."""
    return FieldScrubber(PiiConfig.model_validate_json(cfg_json))


# --------------------------------------------------------------------------------------------------
# Sinks: rows are scrubbed before they are written


def pii_metadata(cfg: PiiConfig, label: str) -> dict:
    """The provenance a scrubbed file carries (the same keys pipelines/pii.py writes)."""
    from crawlmix import __version__

    return {"pii_config_hash": cfg.digest(), "pii_seed": str(cfg.seed), "pii_crawlmix_version": __version__,
            "pii_input": label}


class PiiSink:
    """A ``crawlmix.runtime.atomic.ParquetSink`` whose rows are scrubbed (``FieldScrubber.rows``) in
    batches before they are written: the file, its temporary file included, never holds raw PII. A schema
    with `text` gets the `pii` spans column. Same constructor as ParquetSink plus the PII config, so it
    is handed to writers as a sink factory (``functools.partial(PiiSink, pii=cfg)``)."""

    def __init__(self, path, schema, metadata: dict | None = None, compression: str = "zstd",
                 rows_per_group: int = 2_000, *, pii: PiiConfig, label: str | None = None, batch: int = 256):
        import pyarrow as pa

        from crawlmix.runtime.atomic import ParquetSink

        self.cfg = pii
        self.fs = field_scrubber_for(pii.model_dump_json())
        if "text" in schema.names and "pii" not in schema.names:
            schema = schema.append(pa.field("pii", PII_TYPE))
        from crawlmix.runtime import storage

        fname = storage.name(path)  # a local path or a URL (s3://bucket/run/curated/x.parquet)
        label = label or (f"curated/{fname}" if "text" in schema.names else f"{storage.name(storage.parent(path))}/{fname}")
        meta = {**(metadata or {}), **(pii_metadata(pii, label) if "text" in schema.names
                                       else {"pii_config_hash": pii.digest()})}
        self.sink = ParquetSink(path, schema, meta, compression, rows_per_group)
        self.path, self.name = self.sink.path, fname
        self.buf: list[dict] = []
        self.batch = batch
        self.text_stats, self.field_stats = PiiStats(), PiiStats()

    def add(self, row: dict) -> None:
        self.buf.append(row)
        if len(self.buf) >= self.batch:
            self._flush()

    def _flush(self) -> None:
        from crawlmix.runtime.runstate import failpoint

        if self.buf:
            for r in self.fs.rows(self.buf, self.text_stats, self.field_stats):
                self.sink.add(r)
            self.buf = []
            failpoint(f"pii:{self.name}")  # tests: a worker killed in the middle of scrubbing

    def close(self) -> int:
        self._flush()
        return self.sink.close()

    def abort(self) -> None:
        self.buf = []
        self.sink.abort()

    def stats(self) -> dict:
        return {"text": self.text_stats.to_dict(), "fields": dict(sorted(self.field_stats.replacements.items())),
                "field_errors": dict(sorted(self.field_stats.errors.items()))}


def span_counts(pii_column) -> tuple[int, Counter]:
    """(documents with a replaced region, regions per type) of a `pii` column (a pyarrow array or list)."""
    rows = pii_column.to_pylist() if hasattr(pii_column, "to_pylist") else pii_column
    types = Counter(s["type"] for r in rows for s in (r or []))
    return sum(1 for r in rows if r), types


__all__ = ["FieldScrubber", "PiiSink", "ROLES", "Span", "field_scrubber_for", "pii_metadata", "span_counts"]
