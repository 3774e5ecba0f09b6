"""Measurements keyed by git blob id, so an unchanged base model is measured once.

The key also covers bloatguard's version and the settings that change a measurement (input
shapes for MACs). Entries are JSON written atomically; an entry that does not parse or does not
match its key is ignored and rewritten, never trusted.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from bloatguard.atomic import replace_file
from bloatguard.facts import ModelFacts, facts_from_dict, facts_to_dict

DEFAULT_DIR = ".bloatguard_cache"


class MetricCache:
    def __init__(self, directory: Path | None) -> None:
        self.directory = directory

    @staticmethod
    def key(blob_sha: str, settings: dict[str, Any]) -> str:
        from bloatguard import __version__

        material = json.dumps({"blob": blob_sha, "version": __version__, "settings": settings},
                              sort_keys=True)
        return hashlib.sha256(material.encode()).hexdigest()

    def _file(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str, display: str) -> ModelFacts | None:
        if self.directory is None:
            return None
        try:
            data = json.loads(self._file(key).read_text(encoding="utf-8"))
            if data.get("key") != key:
                raise ValueError("key mismatch")
            facts = facts_from_dict(display, data["facts"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None  # corrupt or foreign entry: measure again and overwrite it
        return facts

    def put(self, key: str, facts: ModelFacts) -> None:
        if self.directory is None:
            return
        target = self._file(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._ensure_gitignore()
            entry = json.dumps({"key": key, "facts": facts_to_dict(facts)})
            replace_file(target, entry.encode("utf-8"), sync=False)
        except OSError:
            pass  # a read-only or full disk only costs speed

    def _ensure_gitignore(self) -> None:
        ignore = self.directory / ".gitignore"
        if not ignore.exists():
            ignore.write_text("# created by bloatguard\n*\n")
