"""Report writers. Each takes the check results and returns the report as a string.

Every writer is `render(results, **context)`; context a writer may use: `budgets_for` (result ->
its budgets) and `rules` (the rules that ran). Writers ignore what they do not need.
"""

from __future__ import annotations

import functools
import importlib
import re
from pathlib import Path
from typing import Any, Callable

FORMATS = ("text", "json", "markdown", "github", "sarif", "junit")


def writer(name: str) -> Callable:
    if name not in FORMATS:
        raise ValueError(name)
    # Imported on demand: the pre-commit hook should not pay for writers it does not use.
    render = importlib.import_module(f"bloatguard.report.{name}").render

    def printable_render(*args: Any, **kwargs: Any) -> str:
        from bloatguard.untrusted import printable

        return printable(render(*args, **kwargs))

    return printable_render


def repo_relative(path: str) -> str:
    """A report path relative to the root of the git work tree that holds it, in posix form:
    GitHub resolves annotation files and SARIF artifact URIs against the repository root, while
    reports show paths relative to the working directory. Outside a repository: `path` as is."""
    absolute = Path(path).resolve()
    root = _work_tree_root(absolute.parent)
    return absolute.relative_to(root).as_posix() if root else Path(path).as_posix()


@functools.lru_cache(maxsize=256)
def _work_tree_root(directory: Path) -> Path | None:
    for candidate in (directory, *directory.parents):
        if (candidate / ".git").exists():  # a directory, or a file in worktrees and submodules
            return candidate
    return None


def drift(result) -> str:
    """"params 676 → 844 (+24.9%), file size ...": how the model moved since the config's drift
    reference, for the metrics that have budgets; empty without a reference."""
    from bloatguard.metrics import WITH_BUDGETS
    from bloatguard.units import format_amount

    if result.reference is None or result.facts is None:
        return ""
    before, after = result.reference.metrics(), result.facts.metrics()
    parts = []
    for metric in WITH_BUDGETS:
        old, new = before.get(metric.key), after.get(metric.key)
        if old is None or new is None or metric.optional:
            continue
        percent = f" ({(new - old) / old * 100:+.1f}%)" if old else ""
        parts.append(f"{metric.label} {format_amount(old, metric.kind)} → "
                     f"{format_amount(new, metric.kind)}{percent}")
    return ", ".join(parts)


def amount(facts, key: str, value, kind: str) -> str:
    """A metric's value for people; unknown MACs of a model with symbolic input dims read as
    their formula (`216·height·width`) rather than `-`."""
    from bloatguard.units import format_amount

    formula = facts.macs_formula if facts is not None and key == "macs" else None
    if value is None and formula:
        return str(formula["text"])
    return format_amount(value, kind)


def doc_section(rule, heading: str) -> str:
    """The first paragraph of one `## heading` section of a rule's docstring (the ruff-style
    rule docs) on one line; empty when there is no such section or it opens with code."""
    doc = rule.documentation()
    match = re.search(rf"^## {re.escape(heading)}[ \t]*\n(.*?)(?=^## |\Z)", doc, re.M | re.S)
    if not match:
        return ""
    paragraph = re.split(r"\n\s*\n|^```", match.group(1).strip(), maxsplit=1, flags=re.M)[0]
    return " ".join(paragraph.split())


# How many changed layers a report lists per model before counting the rest.
TOP_CHANGES = {"text": 5, "markdown": 15}
_CHANGE_MARKS = {"added": "+", "removed": "-", "resized": "~", "retyped": "~"}


def change_summary(diff) -> str:
    """"3 layers changed: +1.80M params, +7.2 MB, +12.5M MACs": the headline of a layer diff."""
    if not diff.changes:
        return "no layer changed shape or type"
    totals = []
    for key, kind, noun in (("params_delta", "count", " params"), ("bytes_delta", "bytes", ""),
                            ("macs_delta", "count", " MACs")):
        values = [getattr(change, key) for change in diff.changes]
        if None not in values:
            totals.append(signed(sum(values), kind) + noun)
    count = len(diff.changes)
    return f"{count} layer{'s' if count != 1 else ''} changed: " + ", ".join(totals)


def change_line(change) -> str:
    """"~ conv1 (Conv) resized float32[16, 3, 3, 3] +1 → float32[64, 3, 3, 3] +1: +1.30K params,
    +5.2 KB, +2.4M MACs", for a terminal."""
    from bloatguard.diff import describe

    name = change.name + (f" (was {change.renamed_from})" if change.renamed_from else "")
    op = f" ({change.op})" if change.op else ""
    shapes = {"added": describe(change.head), "removed": describe(change.base)}.get(
        change.change, f"{describe(change.base)} → {describe(change.head)}")
    return f"{_CHANGE_MARKS[change.change]} {name}{op} {change.change} {shapes}: {deltas(change)}"


def deltas(change) -> str:
    parts = [f"{signed(change.params_delta, 'count')} params"]
    if change.bytes_delta is not None:
        parts.append(signed(change.bytes_delta, "bytes"))
    if change.macs_delta:
        parts.append(f"{signed(change.macs_delta, 'count')} MACs")
    return ", ".join(parts)


def ops_line(diff) -> str:
    """"Conv 4 → 5, Relu 3 → 4": the op types whose counts changed."""
    return ", ".join(f"{op} {base} → {head}" for op, (base, head) in diff.ops.items())


def signed(value: int, kind: str) -> str:
    from bloatguard.units import format_amount

    return ("+" if value > 0 else "-" if value < 0 else "±") + format_amount(abs(value), kind)
