"""The one config base: strict pydantic models, their digest, YAML loading, errors that name the field.

Every area owns its schema (crawlmix/<area>/config.py) and builds it on these helpers.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError


class ConfigError(ValueError):
    """A config that cannot run; the message names the file and the field."""


class StrictModel(BaseModel):
    """A config section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")
    # fields left out of digest(): settings that say where things are, not what is done
    digest_exclude: ClassVar[Any] = None

    def digest_data(self) -> dict:
        """What digest() hashes: the resolved config less ``digest_exclude``."""
        return self.model_dump(mode="json", exclude=self.digest_exclude)

    def digest(self) -> str:
        """Hash of the fully resolved config: provenance for every output and the key of task markers."""
        return hashlib.sha256(json.dumps(self.digest_data(), sort_keys=True).encode()).hexdigest()[:16]


def read_yaml_mapping(path: str | Path, what: str = "config") -> dict:
    """The top-level mapping of a YAML file, or a ConfigError naming the file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such {what} file") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    return raw


def named_location(raw: Any, loc: tuple) -> str:
    """stages.0.sources.2.weight -> stages.video.sources.photos.weight (names read where they exist)."""
    out, node = [], raw
    for part in loc:
        if isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
            name = node.get("name") if isinstance(node, dict) else None
            out.append(str(name) if isinstance(name, str) and name else str(part))
        elif isinstance(node, dict) and part in node:
            node = node[part]
            out.append(str(part))
        else:
            node = None
            out.append(str(part))
    return ".".join(out) or "(top level)"


M = TypeVar("M", bound=BaseModel)


def validate(model: type[M], raw: Any, where: str, what: str = "config", prefix: str = "", named: bool = False) -> M:
    """model.model_validate(raw), every error naming its field: ``prefix.a.b: message (got ...)``; with
    ``named``, list items are called by their ``name:`` where they have one (``stages.video.weight``)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: invalid {what}\n  {prefix.rstrip('.') or '(top level)'}: expected a mapping, "
                          f"got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        msgs = []
        for err in e.errors():
            kind, inp = err["type"], err.get("input")
            msg = "unknown key" if kind == "extra_forbidden" else err["msg"]
            got = "" if kind in ("extra_forbidden", "missing") or isinstance(inp, (dict, list)) else f" (got {inp!r})"
            loc = tuple(x for x in err["loc"] if not (isinstance(x, str) and x.startswith("function-")))
            where_ = named_location(raw, loc) if named else ".".join(str(x) for x in loc) or "(top level)"
            msgs.append(f"  {prefix}{where_}: {msg}{got}")
        raise ConfigError(f"{where}: invalid {what}\n" + "\n".join(msgs)) from None


def load_section(model: type[M], path: str | Path | None, section: str, what: str) -> M:
    """A stage's config from a YAML holding its keys, or from a job YAML's ``section:`` (whose top-level
    ``seed`` is the section's default seed when the model has one). No path: the defaults."""
    if path is None:
        return model()
    raw = read_yaml_mapping(path)
    if section in raw:
        part = raw[section] or {}
        if isinstance(part, dict) and "seed" in model.model_fields and "seed" not in part \
                and isinstance(raw.get("seed"), int):
            part = {**part, "seed": raw["seed"]}
        return validate(model, part, str(path), what, prefix=f"{section}.")
    return validate(model, raw, str(path), what)
