"""The one completion scheme: a marker per finished task, carrying the config hash, written last.

A task is done when ``<root>/_tasks/<name>.json`` exists and holds the current config hash. The marker
is written atomically after every output of the task is published, so a crash between the two only
makes the rerun redo that task; a marker from another config does not count.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from crawlmix.runtime.atomic import TMP_SUFFIX, write_json

MARKERS = "_tasks"


class Completion:
    def __init__(self, root: str | Path, config_hash: str, folder: str = MARKERS):
        self.dir = Path(root) / folder
        self.config_hash = config_hash

    def path(self, name: str) -> Path:
        return self.dir / f"{name}.json"

    def get(self, name: str) -> dict | None:
        """The marker's record when the task finished under this config, else None."""
        try:
            record = json.loads(self.path(name).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return record if record.get("config_hash") == self.config_hash else None

    def done(self, name: str) -> bool:
        return self.get(name) is not None

    def mark(self, name: str, record: dict | None = None) -> dict:
        """Write the marker (last, after the task's outputs): ``record`` plus the config hash."""
        record = {**(record or {}), "config_hash": self.config_hash}
        write_json(self.path(name), record)
        return record

    def forget(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)

    def clear(self) -> None:
        """Forget every task (``--overwrite``)."""
        if self.dir.exists():
            shutil.rmtree(self.dir)

    def finished(self) -> list[str]:
        return sorted(p.name[:-5] for p in self.dir.glob("*.json") if not p.name.endswith(TMP_SUFFIX))
