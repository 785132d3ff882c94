"""What the dashboard's readers share: the errors the server maps to 404 / 403, file helpers, histograms,
and making any value safe for strict JSON (NaN and infinities become null)."""

from __future__ import annotations

import datetime as dt
import math
import os
from collections import Counter
from pathlib import Path


class NotFound(Exception):
    pass


class Forbidden(Exception):
    pass


class BadRequest(ValueError):
    """A query value the API cannot use (answered 400)."""


def whole(q: dict, name: str, default: int = 0) -> int:
    """The non-negative integer query value ``name`` (a page, a sample index), else BadRequest."""
    raw = q.get(name, default)
    try:
        v = int(raw)
    except (TypeError, ValueError):
        raise BadRequest(f"{name}={raw!r} is not a whole number") from None
    if v < 0:
        raise BadRequest(f"{name}={v} is negative")
    return v


def number(q: dict, name: str, default: float = 0.0) -> float:
    """The finite number query value ``name``, else BadRequest."""
    raw = q.get(name, default)
    try:
        v = float(raw)
    except (TypeError, ValueError):
        raise BadRequest(f"{name}={raw!r} is not a number") from None
    if not math.isfinite(v):
        raise BadRequest(f"{name}={raw!r} is not a finite number")
    return v


def inside(p: Path, root: Path) -> bool:
    """Whether ``p``, symlinks followed, is ``root`` or under it (``root`` resolved)."""
    try:
        r = p.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return False
    return r == root or root in r.parents


def escaping_link(d: Path, root: Path) -> Path | None:
    """The first symlink under folder ``d`` (links are not followed into) that leads outside ``root``,
    else None. The dashboard serves nothing from a folder holding one."""
    stack = [d]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for e in entries:
            if e.is_symlink():
                if not inside(Path(e.path), root):
                    return Path(e.path)
            elif e.is_dir(follow_symlinks=False):
                stack.append(Path(e.path))
    return None


def files(d: Path) -> list[Path]:
    return sorted(d.glob("*.parquet")) if d.is_dir() else []


def size(d: Path) -> int:
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file())


def mtime_iso(p: Path) -> str:
    return dt.datetime.fromtimestamp(p.stat().st_mtime, dt.timezone.utc).isoformat(timespec="seconds")


def hidden(d: Path, root: Path) -> bool:
    """Folders whose path under root has a part starting with "_" (scratch, temporaries) are not listed."""
    return any(part.startswith("_") for part in d.relative_to(root).parts)


def histogram(values: list[float], bins: int = 20, log: bool = True) -> list[dict]:
    vals = [v for v in values if v is not None and v > 0]
    if not vals:
        return []
    f = (lambda x: math.log10(x)) if log else (lambda x: x)
    lo, hi = f(min(vals)), f(max(vals))
    width = (hi - lo) / bins or 1
    counts = Counter(min(bins - 1, int((f(v) - lo) / width)) for v in vals)
    edge = (lambda i: round(10 ** (lo + i * width))) if log else (lambda i: round(lo + i * width, 3))
    return [{"label": f"{edge(i)}", "value": counts.get(i, 0)} for i in range(bins)]


def finite(obj, path: str = "", found: list[str] | None = None):
    """A copy of obj with every NaN / infinity replaced by None; their dotted paths are appended to found."""
    if isinstance(obj, float) and not math.isfinite(obj):
        if found is not None:
            found.append(path or "(value)")
        return None
    if isinstance(obj, dict):
        return {k: finite(v, f"{path}.{k}" if path else str(k), found) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v, f"{path}[{i}]", found) for i, v in enumerate(obj)]
    return obj
