"""Image stage benchmark: processing per core against a Pillow floor, and fetch throughput.

    python bench/images.py                 # both parts, figures printed as a table
    python bench/images.py --part process --repeat 40
    python bench/images.py --part fetch --fetch-n 3000

process: the image records of the shared image WARCs (../shared/data/warc/*images*.warc.gz),
repeated --repeat times, through crawlmix's ImageProcessor (checks, EXIF, RGB, resize, encode,
sha256, pHash) and through a bare Pillow loop doing only open + RGB + resize + encode to the same
sizes with the same filter and quality; both in this process, pinned to one core. Target: crawlmix
>= 70% of the bare loop's images/s. A second line does the same on synthetic 1600x1200 photos-like
JPEGs (where libjpeg's scaled decode pays).

fetch: N image URLs served by ImageServer (below, a real HTTP/1.1 server on 127.0.0.1 in a separate
process) fetched with the default fetch config. Target: >= 200 images/s on 2 cores.

ImageServer is also the server tests/images/test_images.py runs its fetch tests against.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SHARED = Path(os.environ.get("CRAWLMIX_SHARED", ROOT.parent / "shared" / "data"))


# ----------------------------------------------------------------------------------------------
# A local HTTP server that serves images and misbehaves on request

class ImageServer:
    """HTTP/1.1 with keep-alive on 127.0.0.1 only, in a background thread.

    Routes (NAME is a key of ``files``: name -> (bytes, content type)):
      /img/NAME                  the file
      /status/CODE               that status, empty body
      /flaky/N/NAME              503 for the first N requests of this path, then the file
      /slow/SECONDS/NAME         waits, then the file
      /truncated/NAME            declares the full Content-Length, sends half, closes
      /type/CTYPE/NAME           the file with another Content-Type (CTYPE %-encoded)
      /notype/NAME               the file without a Content-Type
      /big/MB                    MB megabytes with a Content-Length
      /bigchunked/MB             MB megabytes, no Content-Length (read until close)
      /loop                      302 to itself
      /redirect/NAME             302 to /img/NAME
      /robots/VALUE/NAME         the file with X-Robots-Tag: VALUE (%-encoded)
    Records hits per path, user agents, request start times and the peak of requests in flight
    (overall and per path).
    """

    def __init__(self, files: dict[str, tuple[bytes, str]] | None = None):
        self.files = dict(files or {})
        self.hits: Counter = Counter()
        self.user_agents: set[str] = set()
        self.starts: list[tuple[float, str]] = []
        self.inflight = self.max_inflight = 0
        self.inflight_by: Counter = Counter()
        self.max_inflight_by: Counter = Counter()  # per path
        self.loop = asyncio.new_event_loop()
        self.port = 0

    def start(self) -> "ImageServer":
        ready = threading.Event()

        def run():
            asyncio.set_event_loop(self.loop)
            self.server = self.loop.run_until_complete(asyncio.start_server(self._conn, "127.0.0.1", 0, backlog=512))
            self.port = self.server.sockets[0].getsockname()[1]
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, name="image-server", daemon=True)
        self.thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        async def _close():
            self.server.close()

        asyncio.run_coroutine_threadsafe(_close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def reset(self) -> None:
        self.hits.clear()
        self.starts.clear()
        self.max_inflight = 0
        self.max_inflight_by.clear()

    async def _conn(self, reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                _, target, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    k, _, v = line.partition(":")
                    if k:
                        headers[k.strip().lower()] = v.strip()
                path = target.split("?", 1)[0]
                self.hits[path] += 1
                self.user_agents.add(headers.get("user-agent", ""))
                self.starts.append((time.monotonic(), path))
                self.inflight += 1
                self.inflight_by[path] += 1
                self.max_inflight = max(self.max_inflight, self.inflight)
                self.max_inflight_by[path] = max(self.max_inflight_by[path], self.inflight_by[path])
                try:
                    keep = await self._route(path, writer)
                finally:
                    self.inflight -= 1
                    self.inflight_by[path] -= 1
                if not keep or headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            try:
                writer.close()
            except Exception:
                pass

    async def _send(self, writer, status: int, body: bytes = b"", ctype: str | None = None,
                    headers: dict | None = None, length: int | None = None) -> None:
        reason = {200: "OK", 302: "Found", 404: "Not Found", 500: "Internal Server Error",
                  503: "Service Unavailable"}.get(status, "Status")
        h = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(body) if length is None else length}"]
        if ctype:
            h.append(f"Content-Type: {ctype}")
        h += [f"{k}: {v}" for k, v in (headers or {}).items()]
        writer.write(("\r\n".join(h) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()

    async def _file(self, writer, name: str, ctype: str | None = "", headers=None) -> bool:
        if name not in self.files:
            await self._send(writer, 404, b"", "text/plain")
            return True
        data, default = self.files[name]
        await self._send(writer, 200, data, default if ctype == "" else ctype, headers)
        return True

    async def _route(self, path: str, writer) -> bool:
        parts = path.strip("/").split("/")
        kind, args = parts[0], parts[1:]
        if kind == "img":
            return await self._file(writer, "/".join(args))
        if kind == "status":
            await self._send(writer, int(args[0]), b"", "text/plain")
            return True
        if kind == "flaky":
            if self.hits[path] <= int(args[0]):
                await self._send(writer, 503, b"", "text/plain", {"Retry-After": "0"})
                return True
            return await self._file(writer, "/".join(args[1:]))
        if kind == "slow":
            await asyncio.sleep(float(args[0]))
            return await self._file(writer, "/".join(args[1:]))
        if kind == "truncated":
            data, ctype = self.files[args[0]]
            await self._send(writer, 200, data[: len(data) // 2], ctype, length=len(data))
            return False  # close mid-body
        if kind == "type":
            return await self._file(writer, "/".join(args[1:]), unquote(args[0]))
        if kind == "notype":
            return await self._file(writer, "/".join(args), None)
        if kind in ("big", "bigchunked"):
            n = int(float(args[0]) * 1_000_000)
            chunked = kind == "bigchunked"
            head = (f"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n"
                    + ("Connection: close\r\n" if chunked else f"Content-Length: {n}\r\n") + "\r\n")
            writer.write(head.encode())
            block = b"\xff" * 65536
            sent = 0
            try:
                while sent < n:
                    writer.write(block[: min(len(block), n - sent)])
                    sent += min(len(block), n - sent)
                    await writer.drain()
            except (ConnectionError, RuntimeError):
                return False
            return not chunked
        if kind == "loop":
            await self._send(writer, 302, b"", "text/plain", {"Location": "/loop"})
            return True
        if kind == "redirect":
            await self._send(writer, 302, b"", "text/plain", {"Location": "/img/" + "/".join(args)})
            return True
        if kind == "robots":
            return await self._file(writer, "/".join(args[1:]), "", {"X-Robots-Tag": unquote(args[0])})
        await self._send(writer, 404, b"", "text/plain")
        return True


def _serve_forever(files, port_q, stop_ev):  # in a child process (spawn)
    srv = ImageServer(files).start()
    port_q.put(srv.port)
    stop_ev.wait()
    srv.stop()


# ----------------------------------------------------------------------------------------------
# Benchmarks

def shared_image_payloads() -> list[bytes]:
    """Payloads of the image records (image/* 200 responses) of the shared image WARCs."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    out = []
    for f in sorted((SHARED / "warc").glob("*images*.warc.gz")):
        with open(f, "rb") as fh:
            for rec in ArchiveIterator(fh, record_types=WarcRecordType.response, parse_http=True):
                ct = (rec.http_headers.get("Content-Type") or "") if rec.http_headers else ""
                if rec.http_headers and rec.http_headers.status_code == 200 and ct.startswith("image/"):
                    body = rec.reader.read()
                    if body:
                        out.append(body)
    return out


def synthetic_photos(n: int = 8, size=(1600, 1200)) -> list[bytes]:
    """Photo-like JPEGs (smooth gradients + texture + noise), deterministic."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(7)
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for i in range(n):
        r = 127 + 100 * np.sin(x / (40 + 10 * i) + i) * np.cos(y / 60)
        g = 127 + 100 * np.cos((x + y) / (70 + 5 * i))
        b = 127 + 80 * np.sin(y / (30 + 3 * i))
        arr = np.stack([r, g, b], -1) + rng.normal(0, 12, (h, w, 3))
        buf = io.BytesIO()
        Image.fromarray(arr.clip(0, 255).astype("uint8")).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def _pin_one_core() -> str:
    try:
        cpu = sorted(os.sched_getaffinity(0))[0]
        os.sched_setaffinity(0, {cpu})
        return f"pinned to cpu {cpu}"
    except (AttributeError, OSError):
        return "not pinned"


def bench_process(payloads: list[bytes], repeat: int, label: str) -> dict:
    from PIL import Image

    from crawlmix.images.process import ImageError, ImageProcessor, target_size
    from crawlmix.images.config import FilterConfig, ProcessConfig

    cfg = ProcessConfig()  # the job defaults: keep_ratio 256, lanczos, jpg q95
    proc = ImageProcessor(cfg, FilterConfig(min_side=1, max_aspect_ratio=1e9, max_area=10**12))
    usable = []
    for p in payloads:  # what both sides can do (crawlmix drops animated GIFs, SVG, ...)
        try:
            proc.process(p)
            usable.append(p)
        except ImageError:
            pass
    resample, quality = Image.Resampling.LANCZOS, cfg.encode_quality

    def floor(data: bytes) -> bytes:
        im = Image.open(io.BytesIO(data))
        im = im.convert("RGB")
        im = im.resize(target_size(im.width, im.height, cfg), resample)
        out = io.BytesIO()
        im.save(out, "JPEG", quality=quality)
        return out.getvalue()

    def ours(data: bytes) -> bytes:
        return proc.process(data).data

    res = {}
    for name, fn in (("pillow_floor", floor), ("crawlmix", ours), ("pillow_floor_2", floor), ("crawlmix_2", ours)):
        t0 = time.process_time()
        n = 0
        for _ in range(repeat):
            for p in usable:
                fn(p)
                n += 1
        res[name] = n / (time.process_time() - t0)
    fl = max(res["pillow_floor"], res["pillow_floor_2"])
    cm = max(res["crawlmix"], res["crawlmix_2"])
    return {"set": label, "images": len(usable), "of": len(payloads), "repeat": repeat,
            "floor_per_s": round(fl, 1), "crawlmix_per_s": round(cm, 1), "ratio": round(cm / fl, 3)}


def bench_fetch(n: int, payloads: list[bytes]) -> dict:
    import multiprocessing as mp

    from crawlmix.images.fetch import fetch_many
    from crawlmix.images.config import FetchConfig

    files = {f"{i}.jpg": (p, "image/jpeg") for i, p in enumerate(payloads)}
    ctx = mp.get_context("spawn")
    q, stop = ctx.Queue(), ctx.Event()
    proc = ctx.Process(target=_serve_forever, args=(files, q, stop), daemon=True)
    proc.start()
    try:
        port = q.get(timeout=30)
        urls = [f"http://127.0.0.1:{port}/img/{i % len(files)}.jpg" for i in range(n)]
        cfg = FetchConfig()
        fetch_many(urls[:50], cfg)  # warm up (imports, connection pool)
        t0 = time.perf_counter()
        res = fetch_many(urls, cfg)
        wall = time.perf_counter() - t0
    finally:
        stop.set()
        proc.join(10)
    ok = sum(r.ok for r in res)
    return {"urls": n, "ok": ok, "wall_s": round(wall, 3), "images_per_s": round(ok / wall, 1),
            "mb_per_s": round(sum(len(r.data) for r in res if r.ok) / wall / 1e6, 2),
            "concurrency": cfg.concurrency, "per_host": cfg.per_host}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Benchmark the image stage: processing vs a bare Pillow floor (per "
                                             "core), and HTTP fetch throughput against a local server.")
    ap.add_argument("--part", choices=["all", "process", "fetch"], default="all")
    ap.add_argument("--repeat", type=int, default=30, help="passes over the shared WARC images (default 30)")
    ap.add_argument("--fetch-n", type=int, default=3000, help="URLs to fetch (default 3000)")
    ap.add_argument("--no-synthetic", action="store_true", help="skip the synthetic 1600x1200 photo set")
    a = ap.parse_args(argv)
    payloads = shared_image_payloads()
    if not payloads:
        print(f"shared image WARCs not found under {SHARED / 'warc'}; using synthetic images only")
    if a.part in ("all", "fetch"):
        fp = payloads or synthetic_photos(4, (400, 300))
        f = bench_fetch(a.fetch_n, fp)
        print(f"fetch: {f['ok']}/{f['urls']} images in {f['wall_s']}s = {f['images_per_s']} images/s "
              f"({f['mb_per_s']} MB/s; concurrency {f['concurrency']}, per_host {f['per_host']}; server in a "
              f"separate process on 127.0.0.1; target >= 200/s)")
    if a.part in ("all", "process"):
        print(f"process: {_pin_one_core()}; keep_ratio 256, lanczos, jpg q95")
        rows = []
        if payloads:
            rows.append(bench_process(payloads, a.repeat, "shared image WARCs"))
        if not a.no_synthetic:
            rows.append(bench_process(synthetic_photos(), max(1, a.repeat // 10), "synthetic 1600x1200 JPEG"))
        print(f"{'set':<28}{'images':>8}{'pillow floor/s':>16}{'crawlmix/s':>12}{'ratio':>8}")
        for r in rows:
            print(f"{r['set']:<28}{r['images']:>4}/{r['of']:<3}{r['floor_per_s']:>16}{r['crawlmix_per_s']:>12}"
                  f"{r['ratio']:>8.2f}")
        print("target: crawlmix >= 0.70 x the floor (same bytes, same sizes, one core)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
