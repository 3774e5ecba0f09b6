"""Where a path is, without following the link it may be.

A model that is a symlink is reported as the link (BG000), under the link's own name: resolving
the whole path would report it under its target's path (an in-tree alias counted twice, a link
out of the repository failing the run). Only the directories above it are resolved.
"""

from __future__ import annotations

from pathlib import Path


def located(path: Path) -> Path:
    """`path` made absolute, its directories resolved, a final symlink kept as the link."""
    path = Path(path)
    if path.is_symlink():
        return path.parent.resolve() / path.name
    return path.resolve()
