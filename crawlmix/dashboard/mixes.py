"""Mixes for the dashboard: the stages of a mix (plan, shard stats, image size histograms) and one sample of a shard."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from crawlmix.dashboard.common import Forbidden, NotFound, histogram
from crawlmix.dashboard.remote import open_tar
from crawlmix.mix.read import nested_members


def mix_entry(lock: Path, root: Path, mixes: dict) -> None:
    """Adds one stage (a folder with mix.lock.json) to its mix's entry in the runs list."""
    try:
        plan = json.loads(lock.read_text())
    except ValueError:
        return
    mix_dir = lock.parent.parent if lock.parent.parent != root.parent else lock.parent
    m = mixes.setdefault(mix_dir, {"kind": "mix", "path": str(mix_dir.relative_to(root)) or ".",
                                  "name": plan.get("mixture") or plan.get("name") or mix_dir.name,
                                  "config_hash": plan.get("mixture_hash") or plan.get("config_hash"),
                                  "created": plan.get("created", ""), "docs": 0, "bytes": 0,
                                  "version": plan.get("crawlmix_version") or plan.get("version"),
                                  "seed": plan.get("seed"), "stages": []})
    m["stages"].append(lock.parent.name)
    shards = list(lock.parent.glob("*.stats.json"))
    m["docs"] += sum(json.loads(p.read_text()).get("samples", 0) for p in shards)
    m["bytes"] += sum(p.stat().st_size for p in lock.parent.glob("*.tar"))


def mix(root: Path, d: Path, rel: str) -> dict:
    stages = []
    for lock in sorted(d.rglob("mix.lock.json")):
        plan = json.loads(lock.read_text())
        shards = []
        for p in sorted(lock.parent.glob("*.stats.json")):
            s = json.loads(p.read_text())
            s["shard"] = p.name.replace(".stats.json", "").removesuffix(".tar")
            shards.append(s)
        stages.append({"stage": lock.parent.name, "path": str(lock.parent.relative_to(root)), "plan": plan,
                       "shards": shards, "images": image_stats(lock.parent)})
    if not stages:
        raise NotFound(f"{rel} holds no mix")
    return {"path": rel, "stages": stages}


def sample(root: Path, d: Path, shard: str, index: int) -> dict:
    """One sample of a shard: text, metadata, and image members as data URLs."""
    tar_path = (d / shard).resolve()
    if root not in tar_path.parents or not tar_path.is_file() or tar_path.suffix != ".tar":
        raise Forbidden(shard)
    members: dict[str, dict] = {}
    with open_tar(tar_path) as tar:
        for m in tar:
            if not m.isfile():
                continue
            key, _, ext = m.name.partition(".")
            if key not in members and len(members) > index:
                break
            members.setdefault(key, {})[ext] = tar.extractfile(m).read()
    if index >= len(members):
        raise NotFound(f"sample {index}")
    key, parts = list(members.items())[index]
    out = {"key": key, "members": sorted(parts)}
    for ext, data in parts.items():
        if ext.endswith(("txt", "caption")):
            out.setdefault("text", data.decode("utf-8", "replace")[:2000])
        elif ext.endswith("json"):
            out["json"] = json.loads(data)
        elif ext.rsplit(".", 1)[-1] in ("jpg", "jpeg", "png", "webp"):
            mime = {"jpg": "jpeg"}.get(ext.rsplit(".", 1)[-1], ext.rsplit(".", 1)[-1])
            out.setdefault("images", []).append(f"data:image/{mime};base64," + base64.b64encode(data).decode())
        elif ext == "images.tar":  # the mixer's uniform layout: the sample's images as a nested tar
            for name, blob in nested_members(data):
                e = name.rsplit(".", 1)[-1]
                if e in ("jpg", "jpeg", "png", "webp"):
                    out.setdefault("images", []).append(f"data:image/{'jpeg' if e == 'jpg' else e};base64,"
                                                        + base64.b64encode(blob).decode())
    return out


def image_stats(stage_dir: Path) -> dict:
    """Image width/height/aspect histograms of a mix stage, from its per-sample JSON where present."""
    sizes = []
    for tar_path in sorted(stage_dir.glob("*.tar"))[:8]:  # a sample of shards keeps this bounded
        with open_tar(tar_path) as tar:
            for m in tar:
                if m.isfile() and m.name.endswith(".json"):
                    meta = json.loads(tar.extractfile(m).read())
                    inner = meta.get("meta")
                    inner = json.loads(inner) if isinstance(inner, str) else inner  # uniform layout: a JSON string
                    inner = inner if isinstance(inner, dict) else {}
                    w, h = meta.get("width") or inner.get("width"), meta.get("height") or inner.get("height")
                    if w and h:
                        sizes.append((w, h))
    if not sizes:
        return {}
    return {"width": histogram([w for w, _ in sizes], 10, log=False),
            "aspect": histogram([w / h for w, h in sizes], 10, log=False), "count": len(sizes)}
