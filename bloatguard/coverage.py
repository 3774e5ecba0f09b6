"""Config tables that apply to no model.

A budget for `model/cnn.onnx` (a typo for `models/`) enforces nothing; a config passed with
`--config` from another directory has globs relative to *that* directory and may match nothing
at all. Either way the run would pass in silence. Each glob table that matches none of the
checked models (nor any other model under the config's directory) becomes a warning that names
the table, the config file and, when one is close, the path it probably meant.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from bloatguard import globs
from bloatguard.config import Config


@dataclass(frozen=True)
class UnmatchedTable:
    table: str  # as the config spells it: budgets."model/cnn.onnx"
    config: Path
    suggestion: str | None = None
    outside: bool = False  # the checked models lie outside the config's directory

    @property
    def message(self) -> str:
        text = f"{self.config}: [{self.table}] matches no model"
        if self.outside:
            text += (f"; the checked models are outside {self.config.parent}, the directory its "
                     "globs are relative to")
        elif self.suggestion:
            text += f"; did you mean {self.suggestion!r}?"
        return text

    def to_json(self) -> dict:
        return {"table": self.table, "config": str(self.config), "suggestion": self.suggestion,
                "message": self.message}


def unmatched_tables(config: Config, checked: Iterable[Path],
                     all_models: Callable[[], list[Path]]) -> list[UnmatchedTable]:
    """The glob tables matching none of the `checked` models. `all_models` (called only when
    some table matches none of them) lists every model under the config's directory, so that a
    run scoped to one directory does not warn about the tables for another."""
    if config.path is None:
        return []
    tables = list(config.glob_tables())
    checked = list(checked)
    paths = _relative(config, checked)
    unmatched = [(name, pattern) for name, pattern in tables if not _matches(pattern, paths)]
    if not unmatched:
        return []
    everywhere = _relative(config, all_models())
    outside = bool(checked) and not paths
    prefix = "tool.bloatguard." if config.path.name == "pyproject.toml" else ""
    return [UnmatchedTable(f'{prefix}{name}."{pattern}"', config.path,
                           None if outside else _nearest(pattern, everywhere), outside)
            for name, pattern in unmatched if not _matches(pattern, everywhere)]


def _relative(config: Config, models: Iterable[Path]) -> list[str]:
    return [rel for rel in map(config.relpath, models) if rel is not None]


def _matches(pattern: str, paths: list[str]) -> bool:
    return any(globs.match(pattern, path) for path in paths)


def _nearest(pattern: str, paths: list[str]) -> str | None:
    """The model path, or directory glob (`models/**`), closest to a pattern that matched none."""
    candidates = set(paths)
    for path in paths:
        for parent in Path(path).parents:
            if parent != Path("."):
                candidates.add(f"{parent.as_posix()}/**")
    close = difflib.get_close_matches(pattern, sorted(candidates), n=1, cutoff=0.6)
    return close[0] if close else None
