"""GitHub-flavoured markdown: the pull-request report (job summary and sticky comment)."""

from __future__ import annotations

from typing import Any

from bloatguard.engine import ModelResult, summarize
from bloatguard.rule import Severity
from bloatguard.units import format_amount

COLUMNS = (("file_size", "file size", "bytes"), ("params", "params", "count"),
           ("macs", "MACs", "count"))
ICONS = {Severity.ERROR: "❌", Severity.WARNING: "⚠️", Severity.INFO: "ℹ️"}


def _cell(result: ModelResult, key: str, kind: str) -> str:
    after = result.facts.metrics().get(key) if result.facts else None
    if result.base is None:
        return format_amount(after, kind)
    before = result.base.metrics().get(key)
    if result.facts is None:
        return f"~~{format_amount(before, kind)}~~"
    if before is None or after is None or before == after:
        return format_amount(after, kind)
    percent = f" ({(after - before) / before * 100:+.1f}%)" if before else ""
    return f"{format_amount(before, kind)} → **{format_amount(after, kind)}**{percent}"


def _icon(result: ModelResult) -> str:
    severities = {finding.severity for finding in result.findings}
    for severity in (Severity.ERROR, Severity.WARNING):
        if severity in severities:
            return ICONS[severity]
    return "✅"


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(results: list[ModelResult], **_: Any) -> str:
    summary = summarize(results)
    lines = [f"### bloatguard: {summary['errors']} error(s), {summary['warnings']} warning(s) "
             f"in {summary['models']} model(s)", ""]
    if not results:
        return "\n".join(lines + ["No model files found.", ""])
    show_status = any(result.status for result in results)
    header = ["", "model", *(["status"] if show_status else []), *(label for _, label, _ in COLUMNS)]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for result in results:
        row = [_icon(result), f"`{_escape(result.path)}`", *([result.status or ""] if show_status else []),
               *(_cell(result, key, kind) for key, _, kind in COLUMNS)]
        lines.append("| " + " | ".join(row) + " |")
    with_findings = [result for result in results if result.findings]
    if with_findings:
        lines += ["", "#### Findings", ""]
        for result in with_findings:
            lines.append(f"**`{_escape(result.path)}`**")
            for finding in result.findings:
                lines.append(f"- {ICONS[finding.severity]} **{finding.code}** {finding.rule}: "
                             f"{_escape(finding.message)}")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"
