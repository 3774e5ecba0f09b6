"""JUnit XML, for CI systems that show test results (GitLab, Jenkins, Azure Pipelines, ...).

One test suite per model, one test case per model and rule. An error-level finding fails its
test case; an unreadable model (BG000) is a JUnit *error*, the test could not run; warnings and
notes pass and are printed in the test case's output. A model deleted since the base has its test
cases skipped: there is nothing left to check.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from bloatguard.result import ModelResult
from bloatguard.rule import Severity

# Characters XML 1.0 cannot carry at all, even escaped (a file name may contain them).
_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _text(value: str) -> str:
    return _INVALID_XML.sub("\ufffd", value)


def _rule_names(results: list[ModelResult], rules) -> list[tuple[str, str]]:
    """(code, name) of every rule that ran, plus any rule a finding names (a merged report may
    hold findings of rules not installed here)."""
    if rules is None:
        from bloatguard.registry import all_rules

        rules = all_rules()
    names = {rule.code: rule.name for rule in rules}
    for result in results:
        for finding in result.findings:
            names.setdefault(finding.code, finding.rule)
    return sorted(names.items())


def render(results: list[ModelResult], *, rules=None, unmatched=(), **_: Any) -> str:
    names = _rule_names(results, rules)
    root = ET.Element("testsuites", name="bloatguard")

    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for result in results:
        suite = ET.SubElement(root, "testsuite", name=_text(result.path))
        counts = dict.fromkeys(totals, 0)
        for code, name in names:
            case = ET.SubElement(suite, "testcase", name=f"{code} {name}",
                                 classname=_text(result.path), file=_text(result.path), time="0")
            counts["tests"] += 1
            if result.facts is None:
                ET.SubElement(case, "skipped", message="model deleted since the base")
                counts["skipped"] += 1
                continue
            findings = [finding for finding in result.findings if finding.code == code]
            accepted = [f.accepted for f in findings if f.accepted is not None]
            findings = [f for f in findings if f.accepted is None]
            if accepted and not findings:
                ET.SubElement(case, "skipped", message=_text("accepted: " + "; ".join(
                    str(a["reason"]) for a in accepted)))
                counts["skipped"] += 1
                continue
            failing = [f for f in findings if f.severity is Severity.ERROR]
            if failing:
                kind = "error" if code == "BG000" else "failure"
                element = ET.SubElement(case, kind, type=code, message=_text(failing[0].message))
                element.text = _text("\n".join(f.message for f in failing))
                counts["errors" if kind == "error" else "failures"] += 1
            others = [f for f in findings if f.severity is not Severity.ERROR]
            if others:
                ET.SubElement(case, "system-out").text = _text(
                    "\n".join(f"{f.severity.value}: {f.message}" for f in others))
        for key, value in counts.items():
            suite.set(key, str(value))
            totals[key] += value
    if unmatched:  # config tables that apply to nothing: warnings, which pass with output
        suite = ET.SubElement(root, "testsuite", name="config", tests=str(len(unmatched)),
                              failures="0", errors="0", skipped="0")
        for table in unmatched:
            case = ET.SubElement(suite, "testcase", name=_text(table.table), classname="config",
                                 file=_text(str(table.config)), time="0")
            ET.SubElement(case, "system-out").text = _text(f"warning: {table.message}")
        totals["tests"] += len(unmatched)
    for key, value in totals.items():
        root.set(key, str(value))
    root.set("time", "0")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
