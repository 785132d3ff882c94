"""Shard statistics dashboard: a local, read-only web page over crawl runs and mixes.

    python pipelines/dashboard.py --root output/ [--port 8765] [--host 127.0.0.1]

Finds every crawl run (a folder with stats.json from crawl.py) and mix (a folder with mix.lock.json
files from mix.py) under --root, and serves pages for them. Everything (HTML, JS, CSS, charts as SVG)
comes from crawlmix/dashboard/static/; nothing is loaded from the network. Aggregates are computed
from the Parquet columns they need (pyarrow), documents are paged, and no path outside --root is served.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
from collections import Counter
from functools import lru_cache
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit


import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from crawlmix.filters.signals import SIGNAL_NAMES

STATIC = Path(__file__).resolve().parent / "static"
STATIC_FILES = {"/": ("index.html", "text/html; charset=utf-8"), "/app.js": ("app.js", "text/javascript"),
                "/style.css": ("style.css", "text/css")}
PAGE_SIZE = 25
# rules a threshold preview can move: signal -> (direction, datatrove default threshold)
PREVIEW_RULES = {
    "words": ("min", 50), "non_symbol_words": ("min", 50), "avg_word_length": ("min", 3), "stop_words": ("min", 2),
    "alpha_words_ratio": ("min", 0.8), "c4_sentences": ("min", 5), "line_punct_ratio": ("min", 0.12),
    "language_score": ("min", 0.65), "dup_line_frac": ("max", 0.3), "dup_para_frac": ("max", 0.3),
    "top_2_gram_char_frac": ("max", 0.2), "dup_5_gram_char_frac": ("max", 0.15), "short_line_ratio": ("max", 0.67),
    "char_dup_ratio": ("max", 0.01), "list_ratio": ("max", 0.3), "bullet_lines_ratio": ("max", 0.9),
}


class NotFound(Exception):
    pass


class Forbidden(Exception):
    pass


def _files(d: Path) -> list[Path]:
    return sorted(d.glob("*.parquet")) if d.is_dir() else []


def _size(d: Path) -> int:
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file())


class Dashboard:
    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()

    # ------------------------------------------------------------- paths
    def resolve(self, rel: str) -> Path:
        """A folder under --root; anything that resolves outside it is refused."""
        if rel is None:
            raise NotFound("missing path")
        p = (self.root / rel).resolve()
        if p != self.root and self.root not in p.parents:
            raise Forbidden(f"{rel!r} is outside the dashboard root")
        if not p.is_dir():
            raise NotFound(rel)
        return p

    def runs(self) -> list[dict]:
        out = []
        for stats in self.root.rglob("stats.json"):
            d = stats.parent
            if any(part.startswith("_") for part in d.relative_to(self.root).parts):
                continue
            try:
                s = json.loads(stats.read_text())
            except ValueError:
                continue
            if "stages" not in s:
                continue
            out.append({"kind": "crawl", "path": str(d.relative_to(self.root)) or ".", "name": s.get("job", d.name),
                        "config_hash": s.get("config_hash"), "created": s.get("created", ""),
                        "docs": s.get("docs_out"), "docs_in": s.get("docs_in"), "bytes": _size(d / "curated"),
                        "version": s.get("crawlmix_version"), "seed": s.get("seed")})
        mixes = {}
        for lock in self.root.rglob("mix.lock.json"):
            try:
                plan = json.loads(lock.read_text())
            except ValueError:
                continue
            mix_dir = lock.parent.parent if lock.parent.parent != self.root.parent else lock.parent
            m = mixes.setdefault(mix_dir, {"kind": "mix", "path": str(mix_dir.relative_to(self.root)) or ".",
                                          "name": plan.get("mixture") or plan.get("name") or mix_dir.name,
                                          "config_hash": plan.get("mixture_hash") or plan.get("config_hash"),
                                          "created": plan.get("created", ""), "docs": 0, "bytes": 0,
                                          "version": plan.get("crawlmix_version") or plan.get("version"),
                                          "seed": plan.get("seed"), "stages": []})
            m["stages"].append(lock.parent.name)
            shards = list(lock.parent.glob("*.stats.json"))
            m["docs"] += sum(json.loads(p.read_text()).get("samples", 0) for p in shards)
            m["bytes"] += sum(p.stat().st_size for p in lock.parent.glob("*.tar"))
        for m in mixes.values():
            if not m["created"]:
                m["created"] = _mtime_iso(self.root / m["path"])
        out += list(mixes.values())
        for r in out:
            if not r["created"]:
                r["created"] = _mtime_iso(self.root / r["path"])
        return sorted(out, key=lambda r: r["created"], reverse=True)

    # ------------------------------------------------------------- crawl runs
    def run(self, rel: str) -> dict:
        d = self.resolve(rel)
        if not (d / "stats.json").exists():
            raise NotFound(f"{rel} is not a crawl run")
        return _run_summary(str(d), (d / "stats.json").stat().st_mtime_ns)

    def docs(self, rel: str, kind: str, reason: str | None, page: int) -> dict:
        d = self.resolve(rel)
        if kind not in ("curated", "removed"):
            raise NotFound(kind)
        files = _files(d / kind)
        cols = (["id", "url", "language", "language_score", "text"] + [c for c in SIGNAL_NAMES]
                if kind == "curated" else ["id", "url", "stage", "reason", "detail", "language", "duplicate_of"])
        rows, total, start = [], 0, page * PAGE_SIZE
        for f in files:
            pf = pq.ParquetFile(f)
            names = set(pf.schema_arrow.names)
            use = [c for c in cols if c in names]
            if reason:
                sel = pq.read_table(f, columns=["reason"]).column("reason")
                idx = pc.indices_nonzero(pc.equal(sel, reason)).to_numpy()
            else:
                idx = None
            n = pf.metadata.num_rows if idx is None else len(idx)
            lo, hi = max(0, start - total), min(n, start + PAGE_SIZE - total)
            if lo < hi:
                if idx is None:
                    t = _read_rows(pf, lo, hi, use)
                else:
                    t = pq.read_table(f, columns=use).take(pa.array(idx[lo:hi]))  # one file's columns
                for r in t.to_pylist():
                    if "text" in r and r["text"] is not None:
                        r["text"] = r["text"][:600]
                    rows.append(r)
            total += n
        return {"rows": rows, "total": total, "page": page, "page_size": PAGE_SIZE}

    def preview(self, rel: str, signal: str, value: float) -> dict:
        if signal not in PREVIEW_RULES:
            raise NotFound(signal)
        d = self.resolve(rel)
        direction, default = PREVIEW_RULES[signal]
        chunks = [c.cast(pa.float64()) for f in _files(d / "curated") if signal in pq.ParquetFile(f).schema_arrow.names
                  for c in pq.read_table(f, columns=[signal]).column(signal).chunks]
        col = pa.chunked_array(chunks, type=pa.float64())
        cmp = pc.greater_equal if direction == "min" else pc.less_equal
        keep = pc.sum(pc.cast(cmp(col, value), pa.int64())).as_py() or 0
        return {"signal": signal, "direction": direction, "value": value, "default": default,
                "kept": keep, "total": len(col)}

    # ------------------------------------------------------------- mixes
    def mix(self, rel: str) -> dict:
        d = self.resolve(rel)
        stages = []
        for lock in sorted(d.rglob("mix.lock.json")):
            plan = json.loads(lock.read_text())
            shards = []
            for p in sorted(lock.parent.glob("*.stats.json")):
                s = json.loads(p.read_text())
                s["shard"] = p.name.replace(".stats.json", "").removesuffix(".tar")
                shards.append(s)
            stages.append({"stage": lock.parent.name, "path": str(lock.parent.relative_to(self.root)), "plan": plan,
                           "shards": shards, "images": _image_stats(lock.parent)})
        if not stages:
            raise NotFound(f"{rel} holds no mix")
        return {"path": rel, "stages": stages}

    def sample(self, rel: str, shard: str, index: int) -> dict:
        """One sample of a shard: text, metadata, and image members as data URLs."""
        import base64
        import tarfile

        d = self.resolve(rel)
        tar_path = (d / shard).resolve()
        if self.root not in tar_path.parents or not tar_path.is_file() or tar_path.suffix != ".tar":
            raise Forbidden(shard)
        members: dict[str, dict] = {}
        with tarfile.open(tar_path) as tar:
            for m in tar:
                if not m.isfile():
                    continue
                key, _, ext = m.name.partition(".")
                if key not in members and len(members) > index:
                    break
                members.setdefault(key, {})[ext] = tar.extractfile(m).read()
        if index >= len(members):
            raise NotFound(f"sample {index}")
        key, parts = list(members.items())[index]
        out = {"key": key, "members": sorted(parts)}
        for ext, data in parts.items():
            if ext.endswith(("txt", "caption")):
                out.setdefault("text", data.decode("utf-8", "replace")[:2000])
            elif ext.endswith("json"):
                out["json"] = json.loads(data)
            elif ext.rsplit(".", 1)[-1] in ("jpg", "jpeg", "png", "webp"):
                mime = {"jpg": "jpeg"}.get(ext.rsplit(".", 1)[-1], ext.rsplit(".", 1)[-1])
                out.setdefault("images", []).append(f"data:image/{mime};base64," + base64.b64encode(data).decode())
        return out


def _mtime_iso(p: Path) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(p.stat().st_mtime, dt.timezone.utc).isoformat(timespec="seconds")


def _read_rows(pf: pq.ParquetFile, lo: int, hi: int, columns: list[str]) -> pa.Table:
    """Rows [lo, hi) of a file, reading only the row groups that hold them."""
    parts, start = [], 0
    for g in range(pf.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        if start + n > lo and start < hi:
            t = pf.read_row_group(g, columns=columns)
            parts.append(t.slice(max(0, lo - start), min(n, hi - start) - max(0, lo - start)))
        start += n
    return pa.concat_tables(parts) if parts else pa.table({c: [] for c in columns})


def _histogram(values: list[float], bins: int = 20, log: bool = True) -> list[dict]:
    vals = [v for v in values if v is not None and v > 0]
    if not vals:
        return []
    f = (lambda x: math.log10(x)) if log else (lambda x: x)
    lo, hi = f(min(vals)), f(max(vals))
    width = (hi - lo) / bins or 1
    counts = Counter(min(bins - 1, int((f(v) - lo) / width)) for v in vals)
    edge = (lambda i: round(10 ** (lo + i * width))) if log else (lambda i: round(lo + i * width, 3))
    return [{"label": f"{edge(i)}", "value": counts.get(i, 0)} for i in range(bins)]


@lru_cache(maxsize=16)
def _run_summary(d: str, _mtime: int) -> dict:
    d = Path(d)
    stats = json.loads((d / "stats.json").read_text())
    chars, domains, langs = [], Counter(), Counter()
    for f in _files(d / "curated"):
        t = pq.read_table(f, columns=["chars", "url", "language"])
        chars += t.column("chars").to_pylist()
        domains.update(urlsplit(u).hostname or "" for u in t.column("url").to_pylist())
        langs.update(t.column("language").to_pylist())
    blocked = Counter()
    reasons = Counter()
    for f in _files(d / "removed"):
        t = pq.read_table(f, columns=["stage", "reason", "url"])
        for stage, reason, url in zip(*(t.column(c).to_pylist() for c in ("stage", "reason", "url"))):
            reasons[f"{stage}:{reason}"] += 1
            if stage == "url_filter":
                blocked[urlsplit(url).hostname or url] += 1
    config = json.loads((d / "config.json").read_text()) if (d / "config.json").exists() else {}
    return {"stats": stats, "config": config, "length_histogram": _histogram(chars),
            "languages": dict(langs.most_common()), "top_domains": domains.most_common(15),
            "blocklist_hits": blocked.most_common(15), "removed_reasons": dict(reasons.most_common()),
            "preview_rules": {k: {"direction": v[0], "default": v[1]} for k, v in PREVIEW_RULES.items()}}


def _image_stats(stage_dir: Path) -> dict:
    """Image width/height/aspect histograms of a mix stage, from its per-sample JSON where present."""
    import tarfile

    sizes = []
    for tar_path in sorted(stage_dir.glob("*.tar"))[:8]:  # a sample of shards keeps this bounded
        with tarfile.open(tar_path) as tar:
            for m in tar:
                if m.isfile() and m.name.endswith(".json"):
                    meta = json.loads(tar.extractfile(m).read())
                    inner = meta.get("meta") if isinstance(meta.get("meta"), dict) else {}
                    w, h = meta.get("width") or inner.get("width"), meta.get("height") or inner.get("height")
                    if w and h:
                        sizes.append((w, h))
    if not sizes:
        return {}
    return {"width": _histogram([w for w, _ in sizes], 10, log=False),
            "aspect": _histogram([w / h for w, h in sizes], 10, log=False), "count": len(sizes)}


class Handler(BaseHTTPRequestHandler):
    dash: Dashboard

    def log_message(self, fmt, *args):  # quiet; no document text in logs
        pass

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, data, code=200):
        self._send(code, json.dumps(data, default=str).encode(), "application/json")

    def do_GET(self):  # noqa: N802
        url = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        try:
            if url.path in STATIC_FILES:
                name, ctype = STATIC_FILES[url.path]
                return self._send(200, (STATIC / name).read_bytes(), ctype)
            api = {
                "/api/runs": lambda: self.dash.runs(),
                "/api/run": lambda: self.dash.run(q.get("path")),
                "/api/docs": lambda: self.dash.docs(q.get("path"), q.get("kind", "curated"), q.get("reason") or None,
                                                    int(q.get("page", 0))),
                "/api/preview": lambda: self.dash.preview(q.get("path"), q.get("signal", ""), float(q.get("value", 0))),
                "/api/mix": lambda: self.dash.mix(q.get("path")),
                "/api/sample": lambda: self.dash.sample(q.get("path"), q.get("shard", ""), int(q.get("index", 0))),
            }.get(url.path)
            if api is None:
                raise NotFound(url.path)
            return self._json(api())
        except Forbidden as e:
            return self._json({"error": f"forbidden: {e}"}, HTTPStatus.FORBIDDEN)
        except (NotFound, FileNotFoundError) as e:
            return self._json({"error": f"not found: {e}"}, HTTPStatus.NOT_FOUND)
        except (ValueError, KeyError) as e:
            return self._json({"error": f"bad request: {e}"}, HTTPStatus.BAD_REQUEST)
        except Exception as e:  # noqa: BLE001 - answer, never drop the connection
            return self._json({"error": f"{type(e).__name__}: {e}"}, HTTPStatus.INTERNAL_SERVER_ERROR)

    def do_POST(self):  # noqa: N802 - read-only
        self._json({"error": "read-only"}, HTTPStatus.METHOD_NOT_ALLOWED)


def serve(root: str | Path, host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    handler = type("BoundHandler", (Handler,), {"dash": Dashboard(root)})
    server = ThreadingHTTPServer((host, port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--root", required=True, help="folder holding crawl outputs and mixes")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    a = ap.parse_args(argv)
    if not Path(a.root).is_dir():
        print(f"error: --root {a.root} is not a folder", file=sys.stderr)
        return 2
    server = serve(a.root, a.host, a.port)
    print(f"crawlmix dashboard on http://{a.host}:{server.server_address[1]}/  (root {Path(a.root).resolve()}; Ctrl-C stops)")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
