"""What a check produced for each model, and what it adds up to: the types the engine fills and
every report writer, `merge` and the latency measurement read (below all of them, so that none
imports the engine for them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from bloatguard.diff import LayerDiff
from bloatguard.facts import ModelFacts
from bloatguard.rule import Finding, Severity


@dataclass
class ModelResult:
    path: str
    facts: ModelFacts | None  # None for a model deleted since the base
    base: ModelFacts | None = None
    status: str | None = None  # new / modified / renamed / deleted / unchanged, with --base
    base_path: str | None = None
    findings: list[Finding] = field(default_factory=list)
    # Where the model lives in the repository (settings are resolved for this path), and where
    # each side's bytes can be read for measurements that need a file (latency, fixes).
    settings_path: Path | None = None
    same_bytes: bool = False  # head and base are the same blob (unchanged, or a pure rename)
    head_file: Path | None = None
    base_file: Callable[[], Path | None] | None = field(default=None, repr=False)
    # The model at the config's drift reference ([drift] reference), for max-<metric>-drift.
    reference: ModelFacts | None = None
    reference_name: str | None = None
    # The layers that changed since the base (bloatguard.diff), for a model whose bytes changed.
    diff: LayerDiff | None = None


def summarize(results: list[ModelResult]) -> dict[str, int]:
    """Counts for the summary line and the exit code; accepted findings count apart."""
    findings = [f for r in results for f in r.findings]
    standing = [f for f in findings if f.accepted is None]
    return {
        "models": len(results),
        "errors": sum(f.severity is Severity.ERROR for f in standing),
        "warnings": sum(f.severity is Severity.WARNING for f in standing),
        "unreadable": sum(f.code == "BG000" for f in findings),
        "accepted": len(findings) - len(standing),
    }


def exit_code(results: list[ModelResult]) -> int:
    """2 when a model could not be evaluated, 1 for an error-level finding, else 0."""
    summary = summarize(results)
    if summary["unreadable"]:
        return 2
    return 1 if summary["errors"] else 0
