"""Shard statistics dashboard: a local, read-only web page over crawl runs, mixes and mixture-weight tunings.

    python pipelines/dashboard.py --root output/ [--port 8765] [--host 127.0.0.1]
    python pipelines/dashboard.py --root s3://bucket/runs      (any fsspec URL; AWS_* or CRAWLMIX_STORAGE_OPTIONS)

Finds every crawl run (a folder with stats.json from crawl.py), mix (a folder with mix.lock.json files from
mix.py) and tuning run (a folder with report.json of "kind": "crawlmix-tuning" from tune_mix.py, beside it
tuned.yaml and candidates.csv) under --root, lists them newest first, and serves a page for each:
  crawl   filter funnel, drop reasons, languages, lengths, dedup, PII, threshold preview, paged documents;
  mix     target vs realised shares per stage, shards, image sizes, one sample of a shard;
  tuning  predicted vs measured loss per target (with y = x; failed runs listed apart), weights base -> tuned
          per source, baselines (base, uniform, tuned: confirmed mean ± std, predicted), held-out Spearman / R²,
          the proxy (trainer, text-only), the candidate table (paged) and provenance (sweep hash, created).
          A partial or malformed report (missing keys, failed runs, NaN) is shown as far as it goes, and the
          page names what is missing.
Everything (HTML, JS, CSS, charts as SVG) comes from crawlmix/dashboard/static/; nothing is loaded from the
network. Aggregates are computed from the Parquet columns they need (pyarrow), documents and candidates are
paged, JSON answers are strict (NaN becomes null), and no path outside --root is served: a folder holding a
symlink that leads out of --root is refused (403, the link named), and a bad page / index / value is a 400.

Modules: server.py (HTTP, this entry point), runs.py (discovery, crawl runs), mixes.py, tuning.py, common.py,
remote.py (a URL --root: one listing of the keys, files read through crawlmix.runtime.storage).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from crawlmix.dashboard.common import Forbidden, NotFound, finite, number, whole
from crawlmix.dashboard.runs import PAGE_SIZE, PREVIEW_RULES, Dashboard
from crawlmix.runtime import storage

STATIC = Path(__file__).resolve().parent / "static"
STATIC_FILES = {"/": ("index.html", "text/html; charset=utf-8"), "/app.js": ("app.js", "text/javascript"),
                "/tuning.js": ("tuning.js", "text/javascript"),
                "/interleaved.js": ("interleaved.js", "text/javascript"),
                "/interleaved.css": ("interleaved.css", "text/css"),
                "/style.css": ("style.css", "text/css")}

__all__ = ["Dashboard", "Forbidden", "Handler", "NotFound", "PAGE_SIZE", "PREVIEW_RULES", "main", "serve"]


def dumps(data) -> bytes:
    """Strict JSON (browsers reject NaN): non-finite numbers are sent as null."""
    try:
        return json.dumps(data, default=str, allow_nan=False).encode()
    except ValueError:
        return json.dumps(finite(data), default=str, allow_nan=False).encode()


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
        self._send(code, dumps(data), "application/json")

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
                                                    whole(q, "page")),
                "/api/interleaved": lambda: self.dash.interleaved(q.get("path"), whole(q, "page")),
                "/api/preview": lambda: self.dash.preview(q.get("path"), q.get("signal", ""), number(q, "value")),
                "/api/mix": lambda: self.dash.mix(q.get("path")),
                "/api/sample": lambda: self.dash.sample(q.get("path"), q.get("shard", ""), whole(q, "index")),
                "/api/tuning": lambda: self.dash.tuning(q.get("path")),
                "/api/candidates": lambda: self.dash.candidates(q.get("path"), whole(q, "page")),
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
    ap.add_argument("--root", required=True,
                    help="folder or URL (s3://bucket/prefix, gs://...) holding crawl outputs, mixes and tuning runs")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    a = ap.parse_args(argv)
    remote = storage.is_remote(a.root)
    try:
        there = storage.isdir(a.root) if remote else Path(storage.local(a.root)).is_dir()
    except OSError as e:  # the store could not be reached, or refused
        print(f"error: --root {a.root}: {e}", file=sys.stderr)
        return 2
    if not there:
        print(f"error: --root {a.root} is not a folder{' (nothing is stored under it)' if remote else ''}",
              file=sys.stderr)
        return 2
    server = serve(a.root, a.host, a.port)
    shown = a.root if remote else Path(storage.local(a.root)).resolve()
    print(f"crawlmix dashboard on http://{a.host}:{server.server_address[1]}/  (root {shown}; Ctrl-C stops)")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
