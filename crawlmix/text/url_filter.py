"""URL filter: datatrove's shipped UT1 blocklist and banned-word lists, plus the job's own lists.

Decisions follow datatrove's URLFilter (same lists, same order of checks, same reasons).
The 4.5 M-domain UT1 list is turned once into a sorted array of 64-bit hashes cached on
disk (~36 MB, memory-mapped), so a worker loads it in milliseconds and shares the pages
with other workers, instead of building a ~500 MB Python set per task.

Run alone:  python pipelines/url_filter.py URL [URL ...]
"""

from __future__ import annotations

import os
import re
import tarfile
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import xxhash


from crawlmix.runtime.atomic import atomic_open
from crawlmix.text.config import UrlFilterConfig

_NEW_TLDEXTRACT = hasattr(__import__("tldextract").tldextract.ExtractResult, "top_domain_under_public_suffix")
_NORMALIZER = re.compile(r"[^a-zA-Z0-9]+")


def _assets() -> Path:
    from datatrove.utils._import_utils import ASSETS_PATH

    return Path(ASSETS_PATH)


def cache_dir() -> Path:
    d = Path(os.environ.get("CRAWLMIX_CACHE", Path.home() / ".cache" / "crawlmix"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def _h(s: str) -> int:
    return xxhash.xxh3_64_intdigest(s.encode("utf-8", "surrogatepass"))


@lru_cache(maxsize=None)
def _ut1_hashes(member: str) -> np.ndarray:
    """Sorted uint64 hashes of one UT1 list ("domains" or "urls"), built once per machine."""
    src = _assets() / "url_filterblacklistsv0_3_0.tar.gz"
    out = cache_dir() / f"ut1-{member}-{int(src.stat().st_mtime)}-{src.stat().st_size}.npy"
    if not out.exists():
        with tarfile.open(src, "r:gz") as tar:
            data = tar.extractfile(member).read().decode("utf-8", "ignore")
        hashes = np.unique(np.fromiter((_h(x.strip()) for x in data.splitlines() if x and x[0] != "#"),
                                       dtype=np.uint64))
        with atomic_open(out, unique=True) as f:  # workers of a node may build it at once
            np.save(f, hashes)
    return np.load(out, mmap_mode="r")


def _in(hashes: np.ndarray, s: str) -> bool:
    h = np.uint64(_h(s))
    i = int(np.searchsorted(hashes, h))
    return i < len(hashes) and hashes[i] == h


def _norm(x: str) -> str:
    return _NORMALIZER.sub("", x).lower()


def _word_list(name: str) -> set[str]:
    with open(_assets() / name, encoding="utf-8") as f:
        return {_norm(x) for x in f if x and x[0] != "#"}


class UrlFilter:
    """One per worker process; ``check(url)`` returns a drop reason or None."""

    def __init__(self, cfg: UrlFilterConfig):
        import ahocorasick
        from tldextract import TLDExtract

        self.cfg = cfg
        self.tld = TLDExtract(suffix_list_urls=(), cache_dir=None)  # bundled public suffix list, no download
        use = cfg.use_ut1_lists
        self.domains = _ut1_hashes("domains") if use else np.zeros(0, dtype=np.uint64)
        self.urls = _ut1_hashes("urls") if use else np.zeros(0, dtype=np.uint64)
        self.extra_domains = {x.strip() for x in cfg.extra_domains}
        self.extra_urls = {x.strip() for x in cfg.extra_urls}
        self.banned = {_norm(x) for x in cfg.banned_words} | (_word_list("banned_words.txt") if use else set())
        self.soft = {_norm(x) for x in cfg.soft_banned_words} | (_word_list("soft_banned_words.txt") if use else set())
        subwords = {_norm(x) for x in cfg.banned_subwords} | (_word_list("banned_subwords.txt") if use else set())
        self.sub = ahocorasick.Automaton(ahocorasick.STORE_INTS)
        for i, w in enumerate(sorted(subwords)):
            self.sub.add_word(w, i)
        if subwords:
            self.sub.make_automaton()
        self.has_sub = bool(subwords)
        self.tld("http://example.com/")  # builds tldextract's suffix trie now, once per worker

    def _domain_listed(self, d: str) -> bool:
        return bool(d) and (d in self.extra_domains or _in(self.domains, d))

    def check(self, url: str) -> str | None:
        if not url:
            return "no_url"
        info = self.tld(url)
        if self._domain_listed(info.top_domain_under_public_suffix if _NEW_TLDEXTRACT else info.registered_domain):
            return "domain"
        if self._domain_listed(info.fqdn):
            return "subdomain"
        host = (urlsplit(url).hostname or "").rstrip(".")
        if host and host != info.fqdn and self._domain_listed(host):  # hosts without a public suffix (.test, IPs)
            return "domain"
        if self.extra_domains and any(host.endswith("." + d) for d in self.extra_domains):
            return "subdomain"  # the job's own domains also block their subdomains
        if url in self.extra_urls or _in(self.urls, url):
            return "url"
        words = set(_NORMALIZER.split(url))
        if not words.isdisjoint(self.banned):
            return "hard_blacklisted"
        if len(words & self.soft) >= self.cfg.soft_word_threshold:
            return "soft_blacklisted"
        if self.has_sub and next(self.sub.iter(_norm(url)), False):
            return "blacklisted_subword"
        return None


@lru_cache(maxsize=4)
def url_filter_for(cfg_json: str) -> UrlFilter:
    """Per-process cache: the lists load once per worker, not once per task."""
    return UrlFilter(UrlFilterConfig.model_validate_json(cfg_json))


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Check URLs against the UT1 blocklist and banned words.")
    ap.add_argument("urls", nargs="+")
    a = ap.parse_args(argv)
    f = UrlFilter(UrlFilterConfig())
    for u in a.urls:
        print(f"{f.check(u) or 'ok':<20} {u}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
