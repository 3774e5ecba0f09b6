"""Report writers. Each takes the check results and returns the report as a string."""

from __future__ import annotations

from typing import Callable


def writer(name: str) -> Callable:
    if name == "json":
        from bloatguard.report.json import render
    elif name == "text":
        from bloatguard.report.text import render
    elif name == "markdown":
        from bloatguard.report.markdown import render
    else:
        raise ValueError(name)
    return render


FORMATS = ("text", "json", "markdown")
