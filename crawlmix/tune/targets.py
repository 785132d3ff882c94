"""Eval targets: resolve their paths, and generate a held-out slice of a text source when asked.

A target with ``holdout: {source: NAME, every: N}`` whose path is missing is written from the source
(the stage's text source NAME, its languages filter applied): every N-th document goes to the target's
JSONL, the rest to ``<path>.train.jsonl``, which the proxy mixes use for NAME instead of its path, so no
eval document is ever trained on.
"""

from __future__ import annotations

import json
from pathlib import Path

from crawlmix.mix.config import StageConfig
from crawlmix.mix.sources import MixError, resolve_source
from crawlmix.runtime import storage
from crawlmix.runtime.atomic import write_text
from crawlmix.runtime.config import ConfigError


def _rows(files: list[str], fmt: str, text_field: str, languages) -> list[dict]:
    """The (text, language) rows of local files (a remote source's files: their copies, Source.local_path)."""
    rows = []
    for f in files:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            t = pq.read_table(f)
            cols = {c: t.column(c).to_pylist() for c in (text_field, "language") if c in t.column_names}
            n = t.num_rows
            rows += [{"text": cols[text_field][i], "language": cols.get("language", [None] * n)[i]} for i in range(n)]
        else:
            with open(f, encoding="utf-8") as fh:
                for line in fh:
                    if line.strip():
                        o = json.loads(line)
                        rows.append({"text": o.get(text_field), "language": o.get("language")})
    return [r for r in rows if isinstance(r["text"], str) and (not languages or r["language"] in languages)]


def train_path(path: Path | str) -> Path | str:
    """Beside the target: NAME.train.jsonl (a Path for a path, a URL for a URL)."""
    s = str(path)
    t = s[:-len(".jsonl")] + ".train.jsonl" if s.endswith(".jsonl") else s + ".train.jsonl"
    return t if storage.is_remote(s) else Path(t)


def resolve_targets(sweep, stage: StageConfig, root: Path, progress: bool = False) -> tuple[dict, dict]:
    """({target: absolute path}, {source: config overrides for the proxy mixes}); writes held-out slices."""
    paths, overrides = {}, {}
    for t in sweep.eval.targets:
        p = _target(t.path, root)
        if t.holdout is not None:
            src_name, every = t.holdout.get("source"), int(t.holdout.get("every", 5))
            cfg = next(s for s in stage.sources if s.name == src_name)
            tp = train_path(p)
            if not (storage.exists(p) and storage.exists(tp)):
                try:
                    src = resolve_source(cfg, root, progress)
                except MixError as e:
                    raise ConfigError(f"eval.targets.{t.name}.holdout: {e}") from None
                if src.fmt not in ("parquet", "jsonl"):
                    raise ConfigError(f"eval.targets.{t.name}.holdout: source {src_name!r} is {src.fmt}; a held-out "
                                      f"slice needs a text source (Parquet or JSONL)")
                rows = _rows([src.local_path(i) for i in range(len(src.files))], src.fmt, cfg.text_field,
                             cfg.languages)
                held = [r for i, r in enumerate(rows) if i % every == 0]
                rest = [r for i, r in enumerate(rows) if i % every != 0]
                if not held or not rest:
                    raise ConfigError(f"eval.targets.{t.name}.holdout: source {src_name!r} has {len(rows)} "
                                      f"document(s), too few to hold out every {every}th")
                dump = lambda rs: "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rs)  # noqa: E731
                write_text(tp, dump(rest))
                write_text(p, dump(held))
            overrides[src_name] = {"path": str(tp), "format": "jsonl", "text_field": "text", "bundled": None,
                                   "max_samples": None}
        elif not storage.exists(p):
            raise ConfigError(f"eval.targets.{t.name}.path: {t.path!r} does not exist (looked in {p})")
        paths[t.name] = str(p)
    return paths, overrides


def _target(path: str, root: Path | str) -> Path | str:
    """An eval path: a URL as it is, an absolute path as it is, a relative one under --root (a folder or a URL)."""
    if storage.is_remote(path):
        return path
    p = Path(storage.local(path)).expanduser()
    if p.is_absolute():
        return p
    return storage.join(root, str(p)) if storage.is_remote(root) else Path(root) / p
