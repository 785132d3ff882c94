"""One proxy run (one executor task): build the candidate's mix with the mixer, in process, into the run's
folder, then train the proxy on it and score every eval target.

builtin:ngram reads the ``.txt`` members of the mix's shards (text-only: image / video members are not
scored) and trains crawlmix.tune.ngram.ByteNGram; the loss is bits per byte on each target. A 'command'
trainer gets the shards, the targets and an output folder and writes OUT/metrics.json.
"""

from __future__ import annotations

import io
import json
import shlex
import shutil
import subprocess
import tarfile
import uuid
from pathlib import Path

from crawlmix.mix.config import parse_mixture
from crawlmix.mix.fetch import local_copy, location, relative
from crawlmix.mix.job import run as mix_run
from crawlmix.runtime import storage
from crawlmix.tune.ngram import ByteNGram, join

PROXY_SHARD_SAMPLES = 100_000  # one shard per proxy mix where the samples allow


class RunFailed(RuntimeError):
    """A proxy run that produced no losses; the message says why."""


def candidate_mixture(base_raw: dict, stage: str, weights: dict[str, float], seed: int, budget_tokens: int,
                      overrides: dict[str, dict] | None = None):
    """The base mixture with only ``stage``, its weights replaced, its budget the proxy's, and ``seed``."""
    raw = json.loads(json.dumps(base_raw))
    raw.pop("tuning", None)
    st = next(s for s in raw["stages"] if s["name"] == stage)
    st["budget"] = {"tokens": int(budget_tokens), "samples": None}
    st["shards"] = {"max_samples": PROXY_SHARD_SAMPLES, "max_bytes": None, "pattern": st["shards"]["pattern"]}
    st["normalize"] = True
    for s in st["sources"]:
        s["weight"] = float(weights.get(s["name"], 0.0))
        s.update((overrides or {}).get(s["name"], {}))
    raw["stages"] = [st]
    raw["seed"] = int(seed)
    raw["name"] = f"{raw['name']}-proxy"
    return parse_mixture(raw, where=f"proxy mixture ({stage})")


def build_mix(base_raw: dict, stage: str, weights: dict, seed: int, budget_tokens: int, out: Path | str,
              root: Path | str, overrides: dict | None = None) -> list[Path] | list[str]:
    """Write the candidate's shards under out/<stage>/ (a folder or a URL); their paths (URLs), in order."""
    mix = candidate_mixture(base_raw, stage, weights, seed, budget_tokens, overrides)
    res = mix_run(mix, out, root, stages=[stage], overwrite=True, progress=False, threads=1)
    d = location(res[0]["out"])
    idx = json.loads(storage.read_bytes(storage.join(d, "shardindex.json")))
    return [storage.join(d, s["url"]) if isinstance(d, str) else d / s["url"] for s in idx["shardlist"]]


def shard_texts(shards: list[Path] | list[str]) -> list[str]:
    """The .txt members of the shards (local paths or URLs), in shard and member order."""
    out = []
    for p in shards:
        with storage.open(p, "rb") as f, tarfile.open(fileobj=f) as tf:
            for m in tf:
                if m.isfile() and m.name.endswith(".txt"):
                    out.append(tf.extractfile(m).read().decode("utf-8", "replace"))
    return out


def read_target(path: str | Path, text_field: str = "text") -> list[str]:
    """Texts of an eval target (a local path or a URL): JSONL (a ``text_field`` per line) or Parquet (a
    ``text_field`` column)."""
    p = location(path)
    if not storage.exists(p):
        raise RunFailed(f"eval target {p} does not exist")
    if str(p).endswith(".parquet"):
        import pyarrow.parquet as pq

        t = pq.read_table(p if isinstance(p, Path) else local_copy(p))
        if text_field not in t.column_names:
            raise RunFailed(f"eval target {p} has no column {text_field!r}")
        return [x for x in t.column(text_field).to_pylist() if isinstance(x, str)]
    texts = []
    with io.TextIOWrapper(storage.open(p, "rb"), encoding="utf-8") as f:
        for ln, line in enumerate(f, 1):
            if line.strip():
                obj = json.loads(line)
                if not isinstance(obj, dict) or not isinstance(obj.get(text_field), str):
                    raise RunFailed(f"eval target {p}:{ln}: no string field {text_field!r}")
                texts.append(obj[text_field])
    return texts


def ngram_losses(texts: list[str], targets: dict[str, bytes], order: int) -> dict[str, float]:
    if not texts:
        raise RunFailed("the mix holds no text members for the builtin:ngram proxy")
    lm = ByteNGram(order).fit(join(texts))
    return {name: round(lm.bits_per_byte(data), 6) for name, data in targets.items()}


def command_losses(template: str, shards: list[Path], targets: dict[str, str], out: Path, seed: int,
                   timeout_s: float) -> dict[str, float]:
    """Run the user's trainer; its OUT/metrics.json = {"metrics": {target: value}, "lower_is_better": true}."""
    metrics = out / "metrics.json"
    metrics.unlink(missing_ok=True)
    values = {"shards": " ".join(str(p) for p in shards), "shard_dir": str(shards[0].parent) if shards else "",
              "eval": ",".join(f"{k}={v}" for k, v in targets.items()), "out": str(out), "seed": str(seed)}
    args = []
    for tok in shlex.split(template):
        if tok == "{shards}":
            args += [str(p) for p in shards]
        else:
            args.append(tok.format(**values))
    try:
        r = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise RunFailed(f"trainer timed out after {timeout_s:g}s: {' '.join(args)[:200]}") from None
    except OSError as e:
        raise RunFailed(f"trainer could not start: {e}") from None
    (out / "trainer.log").write_text(r.stdout or "")
    if r.returncode:
        tail = (r.stdout or "").strip().splitlines()[-3:]
        raise RunFailed(f"trainer exited with status {r.returncode}: {' | '.join(tail)[-400:]}")
    if not metrics.exists():
        raise RunFailed(f"trainer exited 0 but wrote no {metrics}")
    try:
        rec = json.loads(metrics.read_text())
        vals = rec["metrics"]
        sign = 1.0 if rec.get("lower_is_better", True) else -1.0
        missing = [k for k in targets if k not in vals]
        if missing:
            raise RunFailed(f"{metrics} has no value for target(s) {missing}")
        return {k: round(sign * float(vals[k]), 6) for k in targets}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise RunFailed(f"{metrics} is not {{\"metrics\": {{target: value}}, \"lower_is_better\": true}}: {e}") from None


def proxy_task(run: dict, ctx: dict) -> dict:
    """One run: {id, weights, seed} -> {losses, texts, shards}; ctx is the sweep's shared context. The output
    may be a URL: the run's mix is written there, and a command trainer gets local copies (see remote_command)."""
    storage.configure(ctx["base_raw"].get("storage_options"))  # this worker reaches the store like the driver
    out = location(storage.join(ctx["output"], "runs", run["id"]))
    storage.makedirs(out)
    shards = build_mix(ctx["base_raw"], ctx["stage"], run["weights"], run["seed"], ctx["budget_tokens"],
                       storage.join(out, "mix"), location(ctx["root"]), ctx.get("overrides"))
    if ctx["trainer"] == "builtin:ngram":
        texts = shard_texts(shards)
        targets = {k: join(read_target(p, ctx["text_fields"][k])) for k, p in ctx["targets"].items()}
        losses = ngram_losses(texts, targets, ctx["order"])
        n = len(texts)
    else:
        targets = {k: local_copy(p) for k, p in ctx["targets"].items()}  # a remote target: its local copy
        if isinstance(out, str):
            losses = remote_command(ctx, shards, targets, out, run)
        else:
            losses = command_losses(ctx["command"], shards, targets, out, run["seed"], ctx["timeout_s"])
        n = None
    return {"losses": losses, "text_samples": n, "shards": [relative(str(p), ctx["output"]) for p in shards]}


def remote_command(ctx: dict, shards: list[str], targets: dict[str, str], out: str, run: dict) -> dict[str, float]:
    """A command trainer for a run whose folder is a URL: the trainer gets local files, as always (the shards
    downloaded into this node's scratch, OUT a scratch folder); its metrics.json and trainer.log are then
    uploaded to the run's folder and the scratch copies removed."""
    work = storage.local_scratch("tune-runs", f"{run['id']}-{uuid.uuid4().hex[:8]}")
    try:
        local = []
        for url in shards:
            dest = work / "mix" / storage.name(storage.parent(url)) / storage.name(url)
            dest.parent.mkdir(parents=True, exist_ok=True)
            local.append(storage.download(url, dest))
        try:
            return command_losses(ctx["command"], local, targets, work, run["seed"], ctx["timeout_s"])
        finally:
            for name in ("metrics.json", "trainer.log"):
                if (work / name).is_file():
                    storage.upload(work / name, storage.join(out, name))
    finally:
        shutil.rmtree(work, ignore_errors=True)
