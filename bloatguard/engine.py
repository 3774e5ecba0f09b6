"""The pipeline: find -> load -> measure -> rules. Reports and the CLI sit on top of this."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from bloatguard.config import Config
from bloatguard.facts import ModelFacts
from bloatguard.registry import all_rules, selector_matches
from bloatguard.rule import Finding, Rule, RuleContext, Severity


@dataclass
class ModelResult:
    path: str
    facts: ModelFacts
    base: ModelFacts | None = None
    status: str | None = None  # new / modified / renamed / deleted / unchanged, with --base
    base_path: str | None = None
    findings: list[Finding] = field(default_factory=list)


@dataclass
class Selection:
    """Which rules run: --select/--ignore on the command line win over the config's."""

    select: list[str] | None = None
    ignore: list[str] = field(default_factory=list)

    def rules(self, config: Config) -> list[Rule]:
        select = self.select if self.select is not None else config.select
        ignore = [*config.ignore, *self.ignore]
        return [rule for rule in all_rules()
                if (select is None or any(selector_matches(s, rule) for s in select))
                and not any(selector_matches(s, rule) for s in ignore)]


def display_path(path: Path) -> str:
    """Paths as the user typed them when relative to the working directory, else absolute."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)


def measure(path: Path, config: Config, display: str | None = None) -> ModelFacts:
    """Read a model and take the measurements every budget rule needs."""
    from bloatguard.formats import read_model

    facts = read_model(path, display or display_path(path))
    if facts.format == "onnx" and facts.handle is not None:
        _measure_macs(facts, config.resolve(path).inputs)
    elif not facts.unreadable and facts.format != "onnx":
        facts.note(f"{facts.format} files have no graph, so compute (MACs) is not measured")
    return facts


def _measure_macs(facts: ModelFacts, input_shapes: dict[str, list[int]]) -> None:
    from bloatguard.measure.compute import count_macs

    try:
        result = count_macs(facts.handle.proto, input_shapes)
    except Exception as exc:  # shape inference on exotic graphs must not sink the report
        if os.environ.get("BLOATGUARD_DEBUG"):
            raise
        facts.note(f"MACs not measured: {type(exc).__name__}: {exc}")
        return
    facts.macs = result.macs
    facts.extra["macs_by_op"] = result.by_op
    for note in result.notes:
        facts.note(note)


def apply_rules(result: ModelResult, path: Path, config: Config, rules: list[Rule]) -> None:
    settings = config.resolve(path)
    context = RuleContext(facts=result.facts, base=result.base, settings=settings, config=config)
    for rule in rules:
        if any(selector_matches(code, rule) for code in settings.ignored):
            continue
        result.findings.extend(rule.check(context))


def check(paths: list[Path], config: Config, selection: Selection,
          progress: Callable[[int, int, str], None] | None = None) -> list[ModelResult]:
    from bloatguard.discover import discover

    rules = selection.rules(config)
    results = []
    models = discover(paths, config)
    for index, path in enumerate(models):
        if progress:
            progress(index, len(models), display_path(path))
        result = ModelResult(path=display_path(path), facts=measure(path, config))
        apply_rules(result, path, config, rules)
        results.append(result)
    return results


def summarize(results: list[ModelResult]) -> dict[str, int]:
    findings = [f for r in results for f in r.findings]
    return {
        "models": len(results),
        "errors": sum(f.severity is Severity.ERROR for f in findings),
        "warnings": sum(f.severity is Severity.WARNING for f in findings),
        "unreadable": sum(f.code == "BG000" for f in findings),
    }


def exit_code(results: list[ModelResult]) -> int:
    """2 when a model could not be evaluated, 1 for an error-level finding, else 0."""
    summary = summarize(results)
    if summary["unreadable"]:
        return 2
    return 1 if summary["errors"] else 0
