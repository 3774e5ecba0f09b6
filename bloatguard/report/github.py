"""GitHub Actions workflow commands: one annotation per finding, on the model file.

GitHub turns at most 10 error, 10 warning and 10 notice commands per step into annotations; the
rest stay in the log only. So this writer emits the first 10 of each kind, and when findings are
left over it opens with one notice that counts them (`overflow_markdown` lists them for the job
summary). Model files are binary, so annotations carry a file but no line.

Everything interpolated into a command is escaped, so a model path or message cannot end the
command early or start a new one: a newline in a file name is data, not a second command.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from bloatguard.report import repo_relative
from bloatguard.report.markdown import ICONS, code, text
from bloatguard.result import ModelResult
from bloatguard.rule import Finding, Severity

LIMIT = 10  # annotations of each kind GitHub shows per step
SUMMARY_LIMIT = 1_000_000  # bytes GitHub accepts in one step's summary (1 MiB, with headroom)
COMMANDS = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "notice"}


def escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def command(kind: str, message: str, **properties: str | None) -> str:
    """`::kind key=value,...::message`, escaped."""
    props = ",".join(f"{key}={escape_property(value)}" for key, value in properties.items()
                     if value is not None)
    return f"::{kind}{' ' + props if props else ''}::{escape_data(message)}"


def split(results: list[ModelResult]) -> tuple[list[tuple[ModelResult, Finding]],
                                                list[tuple[ModelResult, Finding]]]:
    """(findings to annotate, findings beyond GitHub's limits), in report order."""
    findings = [(result, finding) for result in results for finding in result.findings]
    for notice_limit in (LIMIT, LIMIT - 1):  # the overflow notice itself takes one notice slot
        shown: list[tuple[ModelResult, Finding]] = []
        rest: list[tuple[ModelResult, Finding]] = []
        counts: Counter = Counter()
        for item in findings:
            kind = "notice" if item[1].accepted is not None else COMMANDS[item[1].severity]
            counts[kind] += 1
            (shown if counts[kind] <= (notice_limit if kind == "notice" else LIMIT) else rest).append(item)
        if not rest:
            break
    return shown, rest


def annotation(result: ModelResult, finding: Finding) -> str:
    if finding.accepted is not None:  # shown, but it does not fail the run: a notice
        return command("notice", f"accepted ({finding.accepted['reason']}): {finding.message}",
                       file=repo_relative(result.path), title=f"{finding.code} {finding.rule}")
    return command(COMMANDS[finding.severity], finding.message, file=repo_relative(result.path),
                   title=f"{finding.code} {finding.rule}")


def render(results: list[ModelResult], *, unmatched=(), **_: Any) -> str:
    shown, rest = split(results)
    lines = [command("warning", table.message, file=repo_relative(str(table.config)),
                     title="bloatguard config") for table in unmatched]
    if rest:
        lines.append(command("notice", f"{len(rest)} more bloatguard finding(s) are not annotated "
                                       f"(GitHub shows {LIMIT} per kind per step); the job summary "
                                       "lists them", title="bloatguard"))
    lines += [annotation(result, finding) for result, finding in shown]
    return "".join(line + "\n" for line in lines)


def overflow_markdown(results: list[ModelResult]) -> str:
    """The findings `render` could not annotate, as markdown for $GITHUB_STEP_SUMMARY."""
    _, rest = split(results)
    if not rest:
        return ""
    lines = ["#### bloatguard findings not shown as annotations", ""]
    lines += [f"- {ICONS[finding.severity]} {code(result.path)} **{text(finding.code)}** "
              f"{text(finding.rule)}: {text(finding.message)}" for result, finding in rest]
    return "\n".join(lines) + "\n"


def append_summary(path: Path | None, markdown: str) -> None:
    if path is None or not markdown:
        return
    from bloatguard.untrusted import printable

    markdown = printable(markdown)
    data = markdown.encode("utf-8")
    if len(data) > SUMMARY_LIMIT:
        cut = data[:SUMMARY_LIMIT].decode("utf-8", errors="ignore")
        markdown = cut[:cut.rfind("\n") + 1] + "\n*(report truncated: over GitHub's 1 MiB summary limit)*\n"
    with open(path, "a", encoding="utf-8") as out:
        out.write(markdown + "\n")
