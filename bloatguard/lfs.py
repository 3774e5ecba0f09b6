"""Git LFS pointers: recognising one, the object it names, and where git-lfs keeps that object.
A leaf module, for the readers (a pointer in the working tree) and gitbase (a pointer in a blob).
"""

from __future__ import annotations

import re
from pathlib import Path

LFS_POINTER_PREFIX = b"version https://git-lfs.github.com/spec/v1"


def lfs_oid(pointer: bytes) -> str | None:
    """The sha256 object id a Git LFS pointer names, if it is well-formed."""
    for line in pointer.decode("utf-8", "replace").splitlines():
        key, _, value = line.partition(" ")
        if key == "oid" and value.startswith("sha256:"):
            oid = value[len("sha256:"):].strip()
            if len(oid) == 64 and all(c in "0123456789abcdef" for c in oid):
                return oid
    return None


def lfs_object_path(start: Path, oid: str) -> Path | None:
    """Where git-lfs keeps the object `oid` for the repository containing `start`, if present."""
    if not re.fullmatch(r"[0-9a-f]{64}", oid):
        return None
    for directory in (start.resolve().parent, *start.resolve().parents):
        git_dir = directory / ".git"
        if git_dir.is_file():  # a worktree or submodule: "gitdir: <path>"
            text = git_dir.read_text(errors="replace").strip()
            if text.startswith("gitdir:"):
                git_dir = (directory / text[len("gitdir:"):].strip()).resolve()
        if git_dir.is_dir():
            candidate = git_dir / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
            return candidate if candidate.is_file() else None
    return None
