"""Where crawlmix finds its shipped files and puts its default outputs, in a checkout or installed.

Shipped jobs and mixtures live in the repository's top-level ``jobs/`` and ``mixtures/`` and reach the
wheel as ``crawlmix/data/`` (links in the checkout, copies in the wheel).
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]
DATA = PACKAGE / "data"
_CHECKOUT = PACKAGE.parent


def checkout() -> Path | None:
    """The repository root when crawlmix runs from a checkout (editable or not), else None."""
    return _CHECKOUT if (_CHECKOUT / "pyproject.toml").exists() and (_CHECKOUT / "pipelines").is_dir() else None


def project_dir() -> Path:
    """Default home of ``sample/`` and ``output/``: the checkout, or the current directory when installed."""
    return checkout() or Path.cwd()


def shipped(rel: str) -> Path:
    """A shipped file, e.g. ``jobs/default.yaml`` or ``mixtures/text-pretrain.yaml``."""
    return DATA / rel


def resolve_config(path: str | Path) -> Path:
    """A config path as the user wrote it: absolute, relative to the current directory, relative to the
    checkout, or one of the shipped files (``jobs/images.yaml``)."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    for base in (checkout(), DATA):
        if base is not None and (base / p).exists():
            return base / p
    return p
