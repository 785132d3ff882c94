"""The one completion scheme: a marker per finished task, carrying the config hash, written last.

A task is done when ``<root>/_tasks/<name>.json`` exists and holds the current config hash. The marker
is written atomically after every output of the task is published, so a crash between the two only
makes the rerun redo that task; a marker from another config does not count.

``root`` is a local folder or a URL (``s3://bucket/run``): markers are then objects, uploaded whole
(crawlmix.runtime.atomic), and listed lazily (:meth:`Completion.names`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from crawlmix.runtime import storage
from crawlmix.runtime.atomic import TMP_SUFFIX, write_json

MARKERS = "_tasks"


class Completion:
    def __init__(self, root: str | Path, config_hash: str, folder: str = MARKERS):
        # a Path for a local root (as before), a str for a URL
        self.dir = storage.join(root, folder) if storage.is_remote(root) else Path(storage.local(root)) / folder
        self.config_hash = config_hash

    def path(self, name: str) -> Path | str:
        return storage.join(self.dir, f"{name}.json") if isinstance(self.dir, str) else self.dir / f"{name}.json"

    def get(self, name: str) -> dict | None:
        """The marker's record when the task finished under this config, else None."""
        try:
            record = json.loads(storage.read_bytes(self.path(name)))
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None
        return record if isinstance(record, dict) and record.get("config_hash") == self.config_hash else None

    def done(self, name: str) -> bool:
        return self.get(name) is not None

    def mark(self, name: str, record: dict | None = None) -> dict:
        """Write the marker (last, after the task's outputs): ``record`` plus the config hash."""
        record = {**(record or {}), "config_hash": self.config_hash}
        write_json(self.path(name), record)
        return record

    def forget(self, name: str) -> None:
        storage.remove(self.path(name))

    def clear(self) -> None:
        """Forget every task (``--overwrite``)."""
        storage.rmtree(self.dir)

    def names(self) -> Iterator[str]:
        """Names of the tasks with a marker (any config), sorted, listed lazily."""
        for p in storage.ls(self.dir):
            n = storage.name(p)
            if n.endswith(".json") and not n.endswith(TMP_SUFFIX):
                yield n[:-5]

    def finished(self) -> list[str]:
        return list(self.names())
