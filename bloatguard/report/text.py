"""The terminal report: one table per model, then its findings and notes, then a summary."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bloatguard.metrics import METRICS
from bloatguard.report import TOP_CHANGES, amount, change_line, change_summary, drift, ops_line
from bloatguard.result import ModelResult, summarize
from bloatguard.units import format_amount
from bloatguard.untrusted import one_line

if TYPE_CHECKING:
    from bloatguard.facts import LatencyComparison, ModelFacts


def _delta(before: Any, after: Any, kind: str) -> str:
    if before is None or after is None:
        return "-"
    delta = after - before
    if delta == 0:
        return "0"
    sign = "+" if delta > 0 else "-"
    percent = f" ({delta / before * 100:+.1f}%)" if before else ""
    return f"{sign}{format_amount(abs(delta), kind)}{percent}"


def model_table(result: ModelResult, budgets: dict[str, Any]) -> str:
    from tabulate import tabulate

    metrics = result.facts.metrics() if result.facts else {}
    base = result.base.metrics() if result.base is not None else None
    headers = ["metric", *(["base", "head", "delta"] if base else ["value"]), "budget"]
    rows = []
    for metric in METRICS:
        key, kind = metric.key, metric.kind
        value = metrics.get(key)
        if value is None and (base is None or base.get(key) is None) and metric.optional:
            continue
        budget = budgets.get(metric.budget_key("limit")) if metric.stem else None
        row = [metric.label]
        if base:
            comparison = result.facts.latency_comparison if result.facts else None
            delta = (_paired(comparison) if key == "latency_ms" and comparison
                     else _delta(base.get(key), value, kind))
            row += [amount(result.base, key, base.get(key), kind),
                    amount(result.facts, key, value, kind), delta]
        else:
            row.append(amount(result.facts, key, value, kind))
        row.append(format_amount(budget, kind) if budget is not None else "")
        rows.append(row)
    return tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)


def _paired(comparison: LatencyComparison) -> str:
    from bloatguard.measure.latency import describe_comparison

    return describe_comparison(comparison)


def _latency_line(facts) -> str:
    """Where the latency was measured, and how strong the comparison's evidence is."""
    info = facts.latency
    if not info or "error" in info:
        return ""
    threads = f"{info['threads']} thread{'s' if info['threads'] != 1 else ''}"
    line = f"latency: median of {info['runs']} runs, {threads}, on {info['machine']}"
    comparison = facts.latency_comparison
    if comparison:
        line += (f"; head/base ratio from {comparison['rounds']} interleaved rounds, "
                 f"p = {comparison['p_value']:.2g}")
    return line


def _diff_lines(diff) -> list[str]:
    """What changed since the base, largest first: the top layers, the rest counted, op counts."""
    top = TOP_CHANGES["text"]
    lines = [f"  what changed: {change_summary(diff)}"]
    lines += [one_line(f"    {change_line(change)}") for change in diff.changes[:top]]
    if len(diff.changes) > top:
        lines.append(f"    … and {len(diff.changes) - top} more (--output-format json lists all)")
    if diff.ops:
        lines.append(one_line(f"    ops: {ops_line(diff)}"))
    return lines


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _one_line(facts) -> str:
    metrics = facts.metrics()
    return (f"{format_amount(metrics['file_size'], 'bytes')}, {format_amount(metrics['params'], 'count')} "
            f"params, {format_amount(metrics['macs'], 'count')} MACs")


def _format_lines(facts: ModelFacts) -> list[str]:
    """What only this format reports (facts.extra["format_metrics"]: a GGUF's bits per weight,
    architecture, context length and bytes by GGML type; a sparse TFLite's stored params), as
    JSON's `metrics` has it."""
    metrics = facts.extra.get("format_metrics") or {}
    plain = [f"{key.replace('_', ' ')} {value}" for key, value in metrics.items()
             if value is not None and not isinstance(value, dict)]
    lines = [", ".join(plain)] if plain else []
    by_type = metrics.get("bytes_by_dtype")
    if by_type:
        total = sum(by_type.values()) or 1
        lines.append("bytes by type: " + ", ".join(
            f"{dtype} {format_amount(size, 'bytes')} ({size / total:.0%})" for dtype, size in by_type.items()))
    return lines


def _dtype_line(facts: ModelFacts) -> str:
    by_dtype = facts.params_by_dtype
    total = sum(by_dtype.values())
    if not total:
        return ""
    parts = [f"{dtype} {format_amount(count, 'count')} ({count / total:.0%})"
             for dtype, count in by_dtype.items()]
    return "params by dtype: " + ", ".join(parts)


def _fix_suggestion(path: str, model_format: str, finding) -> str:
    """Which `bloatguard fix` command would apply a finding's fix, and what it would save."""
    from bloatguard.fix import shell_path, suggestion

    if finding.fix is None:
        return ""
    command = suggestion(finding.fix.kind, finding.fix.safe, model_format, shell_path(path))
    if command is None:
        return ""
    saved = finding.fix.details.get("bytes_saved")
    return f"fix: {command}" + (f" (saves about {format_amount(saved, 'bytes')})" if saved else "")


def _acceptance(finding) -> str:
    """"accepted: reason; until 2027-01-31; config" for a waived finding."""
    accepted = finding.accepted
    until = f"; until {accepted['expires']}" if accepted.get("expires") else ""
    return f"{accepted['reason']}{until}; {accepted['source']}"


def render(results: list[ModelResult], *, budgets_for=None, unmatched=(), **_: Any) -> str:
    out: list[str] = []
    for result in results:
        facts = result.facts
        shown = facts or result.base
        status = f" [{result.status}]" if result.status else ""
        renamed = f" (was {result.base_path})" if result.status == "renamed" else ""
        # Names from the repository and the model print on one line each, whatever they hold:
        # a newline in a file name must not start a line of its own (a workflow command in CI).
        out.append(one_line(f"{result.path} ({shown.format if shown else 'unknown'}){status}{renamed}"))
        if result.status == "unchanged" and facts is not None and not result.findings:
            out[-1] += f": {_one_line(facts)}"
            out.append("")
            continue
        if facts is None or not facts.unreadable:
            budgets = budgets_for(result) if budgets_for and facts else {}
            out.extend("  " + line for line in model_table(result, budgets).splitlines())
            if (line := drift(result)):
                out.append(one_line(f"  drift since {result.reference_name}: {line}"))
            if result.diff:
                out.extend(_diff_lines(result.diff))
            if facts and (line := _dtype_line(facts)):
                out.append("  " + line)
            if facts:
                out.extend(one_line("  " + line) for line in _format_lines(facts))
            if facts and (line := _latency_line(facts)):
                out.append("  " + line)
        for finding in (f for f in result.findings if f.accepted is None):
            out.append(one_line(f"  {finding.code} {finding.severity.value}: [{finding.rule}] "
                                f"{finding.message}"))
            if shown is not None and (line := _fix_suggestion(result.path, shown.format, finding)):
                out.append(one_line(f"    {line}"))
            if (target := finding.details.get("distillation")):
                out.append(one_line(f"    distillation target: {target['text']}"))
        for finding in (f for f in result.findings if f.accepted is not None):
            out.append(one_line(f"  accepted {finding.code} {finding.severity.value}: "
                                f"[{finding.rule}] {finding.message} ({_acceptance(finding)})"))
        for note in facts.notes if facts else []:
            out.append(one_line(f"  note: {note}"))
        out.append("")
    for table in unmatched:
        out.append(one_line(f"warning: {table.message}"))
    if unmatched:
        out.append("")
    summary = summarize(results)
    line = (f"{_plural(summary['models'], 'model')} checked: {_plural(summary['errors'], 'error')}, "
            f"{_plural(summary['warnings'], 'warning')}")
    if summary["unreadable"]:
        line += f", {summary['unreadable']} unreadable"
    if summary["accepted"]:
        line += f", {summary['accepted']} accepted"
    out.append(line)
    return "\n".join(out) + "\n"
