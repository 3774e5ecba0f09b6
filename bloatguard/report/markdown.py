"""GitHub-flavoured markdown: the pull-request report (job summary and sticky comment)."""

from __future__ import annotations

import re
from typing import Any

from bloatguard.diff import describe
from bloatguard.metrics import METRICS
from bloatguard.report import TOP_CHANGES, amount, change_summary, drift, signed
from bloatguard.result import ModelResult, summarize
from bloatguard.rule import Severity
from bloatguard.units import format_amount
from bloatguard.untrusted import one_line

COLUMNS = tuple(metric for metric in METRICS if metric.column)
ICONS = {Severity.ERROR: "❌", Severity.WARNING: "⚠️", Severity.INFO: "ℹ️"}


def _cell(result: ModelResult, key: str, kind: str) -> str:
    after = result.facts.metrics().get(key) if result.facts else None
    if result.base is None or (after is None and result.base.metrics().get(key) is None):
        return text(amount(result.facts, key, after, kind))
    before = result.base.metrics().get(key)
    if result.facts is None:
        return f"~~{format_amount(before, kind)}~~"
    if before == after or before is None:
        return format_amount(after, kind)
    if after is None:  # measured on the base, unknown on the head: show both, say so
        return f"{format_amount(before, kind)} → ?"
    percent = f" ({(after - before) / before * 100:+.1f}%)" if before else ""
    return f"{format_amount(before, kind)} → **{format_amount(after, kind)}**{percent}"


def _measured(result: ModelResult, key: str) -> bool:
    return any(facts is not None and facts.metrics().get(key) is not None
               for facts in (result.facts, result.base))


def _latency_cell(result: ModelResult, key: str = "latency_ms", kind: str = "ms") -> str:
    """The head's median and, against a base, the paired ratio: "1.2 ms ×1.12 [1.08, 1.16]
    regression". The ratio comes from interleaved rounds, not from the two medians."""
    cell = _cell(result, key, kind)
    comparison = result.facts.latency_comparison if result.facts else None
    if comparison:
        from bloatguard.measure.latency import describe_comparison

        described = describe_comparison(comparison)
        cell = f"{format_amount(comparison['head_median_ms'], 'ms')} " + (
            f"**{described}**" if comparison["verdict"] == "regression" else described)
    return cell


# Metrics whose cell says more than base → head.
_CELLS = {"latency_ms": _latency_cell}


def _icon(result: ModelResult) -> str:
    severities = {finding.severity for finding in result.findings if finding.accepted is None}
    for severity in (Severity.ERROR, Severity.WARNING):
        if severity in severities:
            return ICONS[severity]
    return "✅"


def _escape(text: str) -> str:
    """Trusted markdown (rule docs) made safe for one table cell or list item."""
    return text.replace("|", "\\|").replace("\n", " ")


# Everything a model file or a pull request can choose (file names, tensor and global names in
# messages) reaches a comment the bot posts. It is rendered inert: no emphasis, links, mentions,
# HTML or line breaks, and code spans that no backtick in the text can close.
_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()#+!|~<>])")


def text(value: str) -> str:
    """Untrusted prose as plain text in markdown."""
    value = _MARKDOWN_PUNCTUATION.sub(r"\\\1", one_line(value).replace("&", "&amp;"))
    value = value.replace("@", "@\u2060")  # a word joiner: no @mention, no e-mail autolink
    value = re.sub(r"(?i)(https?|ftp):(?=//)", "\\1:\u2060", value)  # no URL autolink
    return re.sub(r"(?i)\bwww\.", "www\u2060.", value)


def code(value: str) -> str:
    """Untrusted text as an inline code span (inert by nature) that nothing inside can close:
    the fence is one backtick longer than the longest run of backticks in the text. `|` is
    escaped, which GitHub's tables need inside code spans too."""
    value = one_line(value).replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall("`+", value)), default=0) + 1)
    pad = " " if value.startswith("`") or value.endswith("`") else ""
    return f"{fence}{pad}{value}{pad}{fence}"


def render(results: list[ModelResult], *, unmatched=(), **_: Any) -> str:
    summary = summarize(results)
    lines = [f"### bloatguard: {summary['errors']} error(s), {summary['warnings']} warning(s) "
             f"in {summary['models']} model(s)", ""]
    lines += [f"- {ICONS[Severity.WARNING]} {text(table.message)}" for table in unmatched]
    if unmatched:
        lines.append("")
    if not results:
        return "\n".join(lines + ["No model files found.", ""])
    show_status = any(result.status for result in results)
    # Optional metrics (latency, peak memory) get a column only when some model has them.
    columns = [metric for metric in COLUMNS
               if not metric.optional or any(_measured(result, metric.key) for result in results)]
    header = ["", "model", *(["status"] if show_status else []), *(metric.label for metric in columns)]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for result in results:
        row = [_icon(result), code(result.path), *([result.status or ""] if show_status else []),
               *(_CELLS.get(metric.key, _cell)(result, metric.key, metric.kind) for metric in columns)]
        lines.append("| " + " | ".join(row) + " |")
    drifted = [(result, line) for result in results if (line := drift(result))]
    if drifted:  # the config's drift reference: cumulative growth, whatever this change's base
        lines += ["", f"Drift since {code(str(drifted[0][0].reference_name))}:", ""]
        lines += [f"- {code(result.path)}: {line}" for result, line in drifted]  # our own figures
    lines += _unmeasured_section(results, columns)
    lines += _diff_section([result for result in results if result.diff])
    standing = [(result, [f for f in result.findings if f.accepted is None]) for result in results]
    with_findings = [result for result, findings in standing if findings]
    lines += _finding_section("Findings", [(r, f) for r, f in standing if f])
    accepted = [(result, [f for f in result.findings if f.accepted is not None]) for result in results]
    lines += _finding_section("Accepted regressions", [(r, f) for r, f in accepted if f])
    lines += _suggestions(with_findings)
    return "\n".join(lines).rstrip() + "\n"


def _unmeasured_section(results: list[ModelResult], columns) -> list[str]:
    """Why a `-` in the table is unknown, not zero: per model and metric, the notes that say
    so (the text report prints every note; a PR comment keeps these collapsed)."""
    entries = []
    for result in results:
        facts = result.facts
        if facts is None or facts.unreadable:
            continue  # a deleted model is struck through; an unreadable one has its BG000
        for metric in columns:
            if metric.optional or facts.metrics().get(metric.key) is not None:
                continue
            reasons = [note for note in facts.notes if _about(note, metric.label)][:2]
            entries.append(f"- {code(result.path)}: {metric.label}: "
                           + (text("; ".join(reasons)) if reasons else "not measured"))
    if not entries:
        return []
    return ["", f"<details><summary>{len(entries)} unknown figure{'s' if len(entries) != 1 else ''} "
            "(unknown, not zero)</summary>", "", *entries, "", "</details>"]


def _about(note: str, label: str) -> bool:
    """Whether a note is about a metric: "MACs unknown: ...", "activation memory not counted:
    ...", "... compute (MACs) and activation memory are not measured"."""
    return label in note if label[0].isupper() else label in note.lower()


def _diff_section(changed: list[ModelResult]) -> list[str]:
    """Per changed model, a collapsible table of the layers that changed, largest first: why the
    totals above moved. Names come from the model files, so every cell is a code span."""
    if not changed:
        return []
    top = TOP_CHANGES["markdown"]
    lines = ["", "#### What changed", ""]
    for result in changed:
        diff = result.diff
        assert diff is not None  # `changed` holds the results with a diff
        lines += [f"<details><summary><code>{_html(result.path)}</code>: {change_summary(diff)}"
                  "</summary>", ""]
        if diff.changes:
            lines += ["| layer | op | change | base | head | Δ params | Δ bytes | Δ MACs |",
                      "|---|---|---|---|---|---|---|---|"]
            for change in diff.changes[:top]:
                name = code(change.name) + (f" (was {code(change.renamed_from)})"
                                            if change.renamed_from else "")
                lines.append("| " + " | ".join([
                    name, code(change.op) if change.op else "", change.change,
                    code(describe(change.base)), code(describe(change.head)),
                    signed(change.params_delta, "count"), _signed_or_dash(change.bytes_delta, "bytes"),
                    _signed_or_dash(change.macs_delta, "count")]) + " |")
            if len(diff.changes) > top:
                lines.append(f"| … {len(diff.changes) - top} more (JSON report lists all) "
                             "| | | | | | | |")
            lines.append("")
        if diff.ops:
            lines += ["Op counts: " + ", ".join(f"{code(op)} {base} → {head}"
                                                for op, (base, head) in diff.ops.items()), ""]
        lines.append("</details>")
    return lines


def _signed_or_dash(value: int | None, kind: str) -> str:
    return "-" if value is None else signed(value, kind)


def _html(value: str) -> str:
    """Untrusted text inside our own HTML: escaped, on one line, no @mention."""
    import html

    return html.escape(one_line(value)).replace("@", "@\u2060")


def _finding_section(title: str, groups: list) -> list[str]:
    """A heading, then per model its findings; an accepted one with its reason and expiry."""
    if not groups:
        return []
    lines = ["", f"#### {title}", ""]
    for result, findings in groups:
        lines.append(f"**{code(result.path)}**")
        for finding in findings:
            # Code and rule name too: a merged report's JSON could say anything.
            line = (f"- {ICONS[finding.severity]} **{text(finding.code)}** {text(finding.rule)}: "
                    f"{text(finding.message)}")
            if finding.accepted is not None:
                accepted = finding.accepted
                until = f", until {accepted['expires']}" if accepted.get("expires") else ""
                line += f" — accepted ({text(str(accepted['source']))}{until}): {text(str(accepted['reason']))}"
            lines.append(line)
            if isinstance(finding.details.get("distillation"), dict):
                lines.append(f"  - distillation target: {text(str(finding.details['distillation']['text']))}")
        lines.append("")
    return lines


def _suggestions(results: list[ModelResult]) -> list[str]:
    """What to do about the findings: each rule's advice (the "Use instead" of its docs), then
    the `bloatguard fix` commands for the models that have automatic fixes."""
    from bloatguard.fix import applicable, shell_path
    from bloatguard.registry import find_rule
    from bloatguard.report import doc_section

    advice: dict[str, list[str]] = {}
    for result in results:
        for finding in result.findings:
            models = advice.setdefault(finding.code, [])
            if result.path not in models:
                models.append(result.path)
    lines = []
    for rule_code, models in sorted(advice.items()):
        rule = find_rule(rule_code)
        use_instead = doc_section(rule, "Use instead") if rule else ""
        if rule is not None and use_instead:
            where = ", ".join(code(path) for path in models)
            lines.append(f"- **{rule.code}** {rule.name} ({where}): {_escape(use_instead)}")
    for result in results:
        model_format = facts.format if (facts := result.facts or result.base) else ""
        # Only kinds `bloatguard fix` can apply to this format: a hint that does nothing misleads.
        fixes = [finding.fix for finding in result.findings
                 if finding.fix is not None and applicable(finding.fix.kind, model_format)]
        for safe, flag, verb in ((True, "", "applies"), (False, " --unsafe-fixes", "tries")):
            kinds = sorted({fix.kind for fix in fixes if fix.safe is safe})
            if kinds:
                command = f"bloatguard fix{flag} {shell_path(result.path)}"
                note = ("output-equivalent" if safe else "changes outputs; kept only if it meets "
                        "every budget and the fidelity check")
                lines.append(f"- {code(command)} {verb} {', '.join(kinds)} ({note})")
    return ["#### Fix suggestions", "", *lines, ""] if lines else []
