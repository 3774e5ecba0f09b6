"""Gitignore-style path globs: `*` stays inside one path segment, `**` crosses segments."""

from __future__ import annotations

import functools
import re


@functools.lru_cache(maxsize=512)
def _compile(pattern: str) -> re.Pattern[str]:
    pattern = pattern.strip()
    if pattern.startswith("./"):
        pattern = pattern[2:]
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    # A pattern naming a directory also matches everything below it.
    return re.compile("".join(out) + "(?:/.*)?$")


def match(pattern: str, relpath: str) -> bool:
    """Does the posix path `relpath` (relative to the config's directory) match `pattern`?"""
    return _compile(pattern).match(relpath) is not None


def match_any(patterns: list[str], relpath: str) -> bool:
    return any(match(p, relpath) for p in patterns)
