"""SARIF 2.1.0, for GitHub code scanning (`github/codeql-action/upload-sarif`) and other viewers.

Every rule is described in `tool.driver.rules` from its docstring, so a viewer can show the
rule's documentation next to a result. Results point at the model file by a repository-relative
URI and carry no region: a model is binary, and a line number in it would mean nothing. Without a
region, code scanning cannot derive a fingerprint from the file's text, so each result carries
`partialFingerprints` built from what identifies it across runs (rule, file, which limit) and not
from its message, whose numbers change with every commit.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from typing import Any
from urllib.parse import quote

from bloatguard.report import doc_section, repo_relative
from bloatguard.result import ModelResult
from bloatguard.rule import Finding, Severity

SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
LEVELS = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}
FINGERPRINT = "bloatguardFinding/v1"


def rule_descriptor(rule) -> dict[str, Any]:
    doc = rule.documentation() or rule.summary
    return {
        "id": rule.code,
        "name": rule.name,
        "shortDescription": {"text": rule.summary},
        "fullDescription": {"text": doc_section(rule, "What it does") or rule.summary},
        # The docstrings are markdown already (ruff's section layout); `text` is for viewers
        # that cannot render it.
        "help": {"text": doc, "markdown": f"# {rule.code} {rule.name}\n\n{doc}"},
        "defaultConfiguration": {"level": LEVELS[rule.default_severity]},
        "properties": {"tags": ["bloatguard", "model"]},
    }


def _unknown_rule(finding: Finding) -> dict[str, Any]:
    """A descriptor for a finding whose rule is not installed here (a merged report)."""
    return {"id": finding.code, "name": finding.rule,
            "shortDescription": {"text": finding.rule},
            "defaultConfiguration": {"level": LEVELS[finding.severity]}}


def fingerprint(uri: str, finding: Finding, occurrence: int) -> str:
    # details["key"] names the budget (max-params vs max-params-increase); `occurrence`
    # separates several findings of one rule on one file, in the rule's deterministic order.
    identity = [finding.code, uri, str(finding.details.get("key", "")), str(occurrence)]
    # surrogateescape: a name that is not UTF-8 is identified by its bytes.
    return hashlib.sha256("\0".join(identity).encode("utf-8", "surrogateescape")).hexdigest()


def _justification(accepted: dict[str, Any]) -> str:
    until = f" (until {accepted['expires']})" if accepted.get("expires") else ""
    return f"{accepted['reason']}{until}; accepted by {accepted['source']}"


def render(results: list[ModelResult], *, rules=None, unmatched=(), **_: Any) -> str:
    from bloatguard import __version__
    from bloatguard.registry import all_rules

    descriptors = [rule_descriptor(rule) for rule in (rules if rules is not None else all_rules())]
    index = {descriptor["id"]: position for position, descriptor in enumerate(descriptors)}
    sarif_results = []
    for result in results:
        path = repo_relative(result.path)
        # A URI reference: spaces and the like percent-encoded, "/" kept, and the bytes of a name
        # that is not UTF-8 as themselves (%FF), not as their surrogate escapes.
        uri = quote(path, errors="surrogateescape")
        seen: Counter = Counter()
        for finding in result.findings:
            if finding.code not in index:
                index[finding.code] = len(descriptors)
                descriptors.append(_unknown_rule(finding))
            identity = (finding.code, finding.details.get("key"))
            seen[identity] += 1
            sarif_results.append({
                "ruleId": finding.code,
                "ruleIndex": index[finding.code],
                "level": LEVELS[finding.severity],
                "message": {"text": finding.message},
                "locations": [{"physicalLocation": {
                    "artifactLocation": {"uri": uri, "uriBaseId": "%SRCROOT%"}}}],
                "partialFingerprints": {FINGERPRINT: fingerprint(path, finding, seen[identity])},
                "properties": {"rule": finding.rule, "details": finding.details,
                               "fix": finding.fix.to_json() if finding.fix else None},
                # An accepted finding is suppressed, so code scanning does not reopen it.
                **({"suppressions": [{"kind": "external", "status": "accepted",
                                      "justification": _justification(finding.accepted)}]}
                   if finding.accepted is not None else {}),
            })
    log: dict[str, Any] = {
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "bloatguard", "version": __version__,
                                "semanticVersion": __version__, "rules": descriptors}},
            "results": sarif_results,
        }],
    }
    if unmatched:  # config tables that match no model: about the configuration, not a result
        log["runs"][0]["invocations"] = [{"executionSuccessful": True, "toolConfigurationNotifications": [{
            "level": "warning", "message": {"text": table.message},
            "locations": [{"physicalLocation": {"artifactLocation": {
                "uri": quote(repo_relative(str(table.config))), "uriBaseId": "%SRCROOT%"}}}],
        } for table in unmatched]}]
    return json.dumps(log, indent=2) + "\n"
