"""Async HTTP fetch of image URLs: bounded concurrency, per-host politeness, timeouts, retries with
backoff, a byte cap, a Content-Type check and X-Robots-Tag (noai / noimageai, as img2dataset).

A ``Fetcher`` runs one asyncio loop (aiohttp) in a background thread, so a synchronous worker can
keep decoding images while the next ones download: ``fetcher.submit(url)`` returns a
``concurrent.futures.Future`` of a ``FetchResult``. Every failure is a result with a ``reason``
(``http_404``, ``timeout``, ``truncated``, ``wrong_content_type``, ``too_large``,
``too_many_redirects``, ``x_robots_tag``, ``connection_error``, ...), never an exception.

Retried (``fetch.retries`` times, waiting ``backoff_s * 2**attempt`` +-25%): timeouts, dropped
connections, cut-off bodies, 429 and 5xx (a ``Retry-After`` header also pauses that host).
Not retried: other 4xx, redirect loops, wrong types, oversize bodies, robots opt-outs.

Run alone:  python pipelines/image_fetch.py URL [URL ...]
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from urllib.parse import urlsplit

from crawlmix.images.config import FetchConfig

RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


@dataclass
class FetchResult:
    url: str
    data: bytes | None = None
    reason: str | None = None  # None: fetched
    detail: str = ""
    status: int = 0
    content_type: str = ""
    final_url: str = ""
    attempts: int = 0
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.reason is None


def robots_disallowed(values: list[str], token: str, directives: list[str]) -> str | None:
    """The X-Robots-Tag directive that forbids use by ``token`` (img2dataset's rule), or None.

    ``X-Robots-Tag: noai`` applies to every agent, ``X-Robots-Tag: crawlmix: noimageai`` to us only,
    ``X-Robots-Tag: otherbot: noai`` not to us."""
    token, banned = token.lower(), {d.lower() for d in directives}
    for value in values:
        agent, sep, rest = value.partition(":")
        if sep and agent.strip().lower() not in ("", "unavailable_after") and " " not in agent.strip():
            if agent.strip().lower() != token:
                continue
            value = rest
        for d in value.split(","):
            if d.strip().lower() in banned:
                return d.strip().lower()
    return None


class Fetcher:
    """Background-thread asyncio fetcher. Use as a context manager, or call close()."""

    def __init__(self, cfg: FetchConfig):
        self.cfg = cfg
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="crawlmix-fetch", daemon=True)
        self.thread.start()
        self.session = None
        asyncio.run_coroutine_threadsafe(self._open(), self.loop).result()

    async def _open(self):
        import aiohttp

        cfg = self.cfg
        self.sem = asyncio.Semaphore(cfg.concurrency)
        self.host_sems: dict[str, asyncio.Semaphore] = {}
        self.host_next: dict[str, float] = {}
        connector = aiohttp.TCPConnector(limit=cfg.concurrency, limit_per_host=cfg.per_host, ttl_dns_cache=300)
        self.session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=cfg.timeout_s, connect=cfg.connect_timeout_s),
            headers={"User-Agent": cfg.user_agent,
                     "Accept": "image/avif,image/webp,image/png,image/jpeg,image/*;q=0.8,*/*;q=0.5"},
        )

    def submit(self, url: str) -> Future:
        return asyncio.run_coroutine_threadsafe(self.fetch(url), self.loop)

    def close(self) -> None:
        if self.session is not None:
            asyncio.run_coroutine_threadsafe(self.session.close(), self.loop).result()
            self.session = None
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        if not self.thread.is_alive():
            self.loop.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    async def _polite(self, host: str) -> None:
        """Wait for this host's next slot (per_host_interval_s apart, later after a Retry-After)."""
        interval = self.cfg.per_host_interval_s
        now = time.monotonic()
        nxt = self.host_next.get(host, 0.0)
        if nxt <= now and not interval:
            return
        start = max(now, nxt)
        self.host_next[host] = start + interval
        if start > now:
            await asyncio.sleep(start - now)

    async def fetch(self, url: str) -> FetchResult:
        t0 = time.perf_counter()
        res = await self._fetch(url)
        res.elapsed_s = round(time.perf_counter() - t0, 4)
        return res

    async def _fetch(self, url: str) -> FetchResult:
        import aiohttp

        cfg = self.cfg
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return FetchResult(url, reason="bad_url", detail=f"not an http(s) URL: {url[:100]}")
        host = parts.hostname.lower()
        hsem = self.host_sems.setdefault(host, asyncio.Semaphore(cfg.per_host))
        res = FetchResult(url)
        for attempt in range(cfg.retries + 1):
            res.attempts = attempt + 1
            retry_after = None
            async with self.sem, hsem:
                await self._polite(host)
                try:
                    async with self.session.get(url, allow_redirects=True, max_redirects=cfg.max_redirects) as r:
                        res.status, res.final_url = r.status, str(r.url)
                        res.content_type = (r.headers.get("Content-Type") or "").split(";")[0].strip().lower()
                        if r.status != 200:
                            res.reason, res.detail = f"http_{r.status}", f"HTTP {r.status} {r.reason or ''}".strip()
                            if r.status in RETRY_STATUS:
                                retry_after = _retry_after(r.headers.get("Retry-After"))
                                if retry_after:
                                    self.host_next[host] = time.monotonic() + retry_after
                            else:
                                return res
                        else:
                            return await self._body(r, res)
                except aiohttp.TooManyRedirects:
                    res.reason, res.detail = "too_many_redirects", f"more than {cfg.max_redirects} redirects"
                    return res
                except (asyncio.TimeoutError, TimeoutError):
                    res.reason, res.detail = "timeout", f"no complete answer within {cfg.timeout_s}s"
                except aiohttp.ClientPayloadError as e:
                    res.reason, res.detail = "truncated", f"body cut off: {str(e)[:150]}"
                except (aiohttp.ServerDisconnectedError, aiohttp.ClientConnectionError, ConnectionError) as e:
                    res.reason, res.detail = "connection_error", f"{type(e).__name__}: {str(e)[:150]}"
                except aiohttp.InvalidURL as e:
                    res.reason, res.detail = "bad_url", str(e)[:150]
                    return res
                except aiohttp.ClientResponseError as e:  # malformed HTTP
                    res.reason, res.detail = "http_protocol_error", f"{type(e).__name__}: {str(e)[:150]}"
                    return res
                except Exception as e:  # never let one URL take the worker down
                    res.reason, res.detail = "fetch_error", f"{type(e).__name__}: {str(e)[:150]}"
                    return res
            if attempt < cfg.retries:
                wait = cfg.backoff_s * (2 ** attempt) * random.uniform(0.75, 1.25)
                await asyncio.sleep(max(wait, min(retry_after or 0.0, 60.0)))
        if res.attempts > 1:
            res.detail += f" (after {res.attempts} attempts)"
        return res

    async def _body(self, r, res: FetchResult) -> FetchResult:
        cfg = self.cfg
        robots = robots_disallowed(r.headers.getall("X-Robots-Tag", []), cfg.user_agent_token,
                                   cfg.disallowed_header_directives)
        if robots:
            res.reason, res.detail = "x_robots_tag", f"X-Robots-Tag: {robots}"
            return res
        ct = res.content_type
        if ct == "image/svg+xml":
            res.reason, res.detail = "svg", "Content-Type image/svg+xml"
            return res
        wrong = not any(ct.startswith(p) for p in cfg.content_types) if ct else not cfg.allow_missing_content_type
        if wrong:
            res.reason, res.detail = "wrong_content_type", f"Content-Type {ct or '(none)'!r}"
            return res
        if r.content_length is not None and r.content_length > cfg.max_bytes:
            res.reason, res.detail = "too_large", f"Content-Length {r.content_length} > fetch.max_bytes {cfg.max_bytes}"
            return res
        buf = bytearray()
        async for chunk in r.content.iter_chunked(1 << 16):
            buf += chunk
            if len(buf) > cfg.max_bytes:
                res.reason, res.detail = "too_large", f"body over fetch.max_bytes {cfg.max_bytes}"
                return res
        res.data, res.reason, res.detail = bytes(buf), None, ""
        return res


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def fetch_many(urls: list[str], cfg: FetchConfig, progress: bool = False) -> list[FetchResult]:
    """Fetch every URL (in parallel, bounded by cfg); results in the order of ``urls``."""
    from tqdm import tqdm

    with Fetcher(cfg) as f:
        futs = [f.submit(u) for u in urls]
        out = []
        for fut in tqdm(futs, unit="img", desc="fetch", disable=not progress):
            out.append(fut.result())
    return out


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Fetch image URLs as the image stage does; print the outcome of each.")
    ap.add_argument("urls", nargs="+")
    ap.add_argument("--timeout", type=float, default=20.0)
    ap.add_argument("--retries", type=int, default=2)
    ap.add_argument("--max-bytes", type=int, default=10_000_000)
    a = ap.parse_args(argv)
    cfg = FetchConfig(timeout_s=a.timeout, retries=a.retries, max_bytes=a.max_bytes)
    for r in fetch_many(a.urls, cfg):
        what = f"ok {len(r.data)} B {r.content_type}" if r.ok else f"{r.reason}: {r.detail}"
        print(f"{r.status:>4} {r.elapsed_s:>7.3f}s  {what:<60} {r.url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
