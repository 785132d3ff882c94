"""A constructed tuning task whose answer is known: six text sources with distinct byte statistics, a
target drawn from a hidden blend of them, and a held-out test split drawn from the same blend that the
tool never sees. Sources are ../shared/data/lid/<lang>.txt sentences when present, else six synthetic
"languages" generated from a seed (own alphabet, syllables and Zipf-distributed words)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("CRAWLMIX_SHARED", ROOT.parent / "shared" / "data"))
LANGS = ["en", "de", "fi", "tr", "ru", "el"]
HAND = [0.3, 0.3, 0.1, 0.1, 0.1, 0.1]  # a plausible hand-set mix
ALPHABETS = ["etaoinshrdlcumwfgypb", "enisratdhulcgmobwfkz", "aiotnesklumvrjyhpd", "aeinrlkdmuytsbozgcsh",
             "оеаинтсрвлкмдпуяыьгз", "αοετινσρκπμλυηωδγχθφ"]


def _synthetic(i: int, n_sent: int, rng) -> list[str]:
    letters = list(ALPHABETS[i])
    vow = letters[:5]
    cons = letters[5:]
    syl = [c + v for c in cons for v in vow] + [v + c for c in cons[:6] for v in vow[:3]]
    lrng = np.random.default_rng(1000 + i)
    words = ["".join(lrng.choice(syl, size=int(lrng.integers(1, 4 + i % 3)))) for _ in range(400)]
    p = 1.0 / np.arange(1, len(words) + 1) ** (0.9 + 0.1 * i)
    p /= p.sum()
    out = []
    for _ in range(n_sent):
        ws = rng.choice(words, size=int(rng.integers(6, 18)), p=p)
        out.append((" ".join(ws)).capitalize() + ".")
    return out


def language_texts(n_sent: int = 420, seed: int = 0) -> tuple[list[list[str]], str]:
    """Six lists of sentences (the same length), and where they come from."""
    rng = np.random.default_rng(seed)
    lid = SHARED / "lid"
    if all((lid / f"{lang}.txt").exists() for lang in LANGS):
        out = []
        for lang in LANGS:
            lines = [ln.strip() for ln in (lid / f"{lang}.txt").read_text(encoding="utf-8").splitlines() if ln.strip()]
            out.append(lines)
        n = min(len(x) for x in out)
        return [x[:n] for x in out], "lid"
    return [_synthetic(i, n_sent, rng) for i in range(6)], "synthetic"


def docs(sentences: list[str], per_doc: int = 3) -> list[str]:
    return [" ".join(sentences[i:i + per_doc]) for i in range(0, len(sentences) - per_doc + 1, per_doc)]


def blend(pools: list[list[str]], w, n: int, rng) -> list[str]:
    counts = np.floor(np.asarray(w) * n + 1e-9).astype(int)
    out = []
    for pool, c in zip(pools, counts):
        out += list(rng.choice(pool, size=min(c, len(pool)), replace=False))
    return out


def write_jsonl(path: Path, texts: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")


def make_task(root: Path, hidden, seed: int = 0, count: int = 12, budget: int = 6000, model: str = "powerlaw",
              extra: dict | None = None) -> Path:
    """Write sources (60% of each language), target (20%) and test (20%) splits and the sweep; the sweep's path."""
    langs, _ = language_texts(seed=0)
    rng = np.random.default_rng(seed)
    train_pools, target_pools, test_pools = [], [], []
    for i, sents in enumerate(langs):
        d = docs(sents)
        d = [d[j] for j in np.random.default_rng(i).permutation(len(d))]
        a, b = int(len(d) * 0.6), int(len(d) * 0.8)
        train_pools.append(d[:a])
        target_pools.append(d[a:b])
        test_pools.append(d[b:])
        write_jsonl(root / "src" / f"s{i}.jsonl", d[:a])
    m = min(len(p) for p in target_pools)
    write_jsonl(root / "eval" / "target.jsonl", blend(target_pools, hidden, m, rng))
    write_jsonl(root / "eval" / "test.jsonl", blend(test_pools, hidden, m, rng))
    mix = {"name": "six", "seed": 5, "stages": [{
        "name": "pretrain", "budget": {"tokens": budget}, "shards": {"max_samples": 1000},
        "sources": [{"name": f"s{i}", "modality": "text", "path": f"src/s{i}.jsonl", "weight": w, "max_epochs": 1}
                    for i, w in enumerate(HAND)]}]}
    (root / "mixtures").mkdir(exist_ok=True)
    (root / "mixtures" / "six.yaml").write_text(yaml.safe_dump(mix, sort_keys=False))
    sweep = {"name": "six-tune", "base": str(root / "mixtures" / "six.yaml"), "stage": "pretrain", "seed": seed,
             "search": {"prior": "uniform", "concentration": [0.5, 3.0]},
             "candidates": {"count": count},
             "proxy": {"trainer": "builtin:ngram", "budget": {"tokens": budget}},
             "eval": {"targets": [{"name": "target", "path": "eval/target.jsonl"}]},
             "regression": {"model": model}, "confirm": {"seeds": 1}}
    for k, v in (extra or {}).items():
        sweep[k] = v
    p = root / "mixtures" / "six.sweep.yaml"
    p.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return p


def test_loss(root: Path, weights: dict, seed: int = 99, budget: int = 6000) -> float:
    """The proxy's loss on the test split for a mix of the task's sources (the same mixer + n-gram path)."""
    from crawlmix.mix.config import load_mixture
    from crawlmix.tune.ngram import join
    from crawlmix.tune.proxy import build_mix, ngram_losses, read_target, shard_texts

    base = load_mixture(root / "mixtures" / "six.yaml").model_dump(mode="json")
    out = root / "eval-runs" / "_".join(f"{weights[k]:.4f}" for k in sorted(weights)) / str(seed)
    shards = build_mix(base, "pretrain", weights, seed, budget, out, root)
    test = join(read_target(root / "eval" / "test.jsonl"))
    return ngram_losses(shard_texts(shards), {"test": test}, 5)["test"]
