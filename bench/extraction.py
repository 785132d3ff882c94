"""Extraction quality and speed on real articles: token F1 against the true article text.

Uses the 181 pages of ../shared/data/bench/extraction_truth.json (inside realpages.warc.gz).
F1 is bag-of-words over lower-cased \\w+ tokens, averaged over pages.

    python bench/extraction.py
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "bench"

from pipelines.extract import probe_text, resiliparse_text, trafilatura_text  # noqa: E402
from pipelines.read_warc import iter_pages  # noqa: E402

_TOK = re.compile(r"\w+")


def prf(pred: str, gold: str) -> tuple[float, float, float]:
    p, g = Counter(_TOK.findall(pred.lower())), Counter(_TOK.findall(gold.lower()))
    common = sum((p & g).values())
    if not common:
        return 0.0, 0.0, 0.0
    pr, rc = common / sum(p.values()), common / sum(g.values())
    return pr, rc, 2 * pr * rc / (pr + rc)


def datatrove_trafilatura(html: str) -> str:
    import trafilatura

    return trafilatura.extract(html, favor_precision=True, include_comments=False, deduplicate=True) or ""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(DATA))
    a = ap.parse_args(argv)
    truth_path, warc = Path(a.data) / "extraction_truth.json", Path(a.data) / "realpages.warc.gz"
    if not truth_path.exists():
        print(f"{truth_path} not found (needs ../shared/data)", file=sys.stderr)
        return 2
    truth = json.loads(truth_path.read_text())
    pages = {p.url: p.html for p in iter_pages(str(warc), lambda *x, **k: None) if p.url in truth}
    print(f"{len(pages)} articles with true text")
    print(f"{'extractor':<34}{'precision':>10}{'recall':>8}{'F1':>8}{'docs/s':>9}")
    for name, fn in [("resiliparse (main content)", resiliparse_text), ("resiliparse (all text, LID probe)", probe_text),
                     ("trafilatura (crawlmix settings)", trafilatura_text),
                     ("trafilatura (datatrove settings)", datatrove_trafilatura)]:
        t0 = time.perf_counter()
        texts = {u: fn(h) for u, h in pages.items()}
        dt = time.perf_counter() - t0
        scores = [prf(texts[u], truth[u]["articleBody"]) for u in pages]
        p, r, f = (sum(x[i] for x in scores) / len(scores) for i in range(3))
        print(f"{name:<34}{p:>10.3f}{r:>8.3f}{f:>8.3f}{len(pages) / dt:>9.1f}")
    print("cascade (default): every page pays the LID probe, pages kept by the language prefilter pay trafilatura;"
          " its text is trafilatura's, so its F1 is trafilatura's (crawlmix settings).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
