"""The JSON report (docs/architecture.md, "Contracts"): the contract for scripts, the Action and `bloatguard merge`."""

from __future__ import annotations

import json
from typing import Any

from bloatguard.result import ModelResult, summarize

REPORT_VERSION = 1


def model_json(result: ModelResult) -> dict[str, Any]:
    facts = result.facts
    shown = facts or result.base
    entry: dict[str, Any] = {
        "path": result.path,
        "format": shown.format if shown else "unknown",
        "status": result.status,
        "metrics": facts.metrics() if facts else None,
        "findings": [finding.to_json() for finding in result.findings],
        "notes": facts.notes if facts else [],
    }
    if facts and not facts.unreadable:
        entry["inputs"] = [value.to_json() for value in facts.inputs]
        entry["outputs"] = [value.to_json() for value in facts.outputs]
        entry["opsets"] = facts.opsets
    if facts is not None and facts.macs_formula:  # MACs of symbolic dims
        entry["macs_formula"] = facts.macs_formula  # {"exact", "text"}
    if facts is not None and facts.activation_peak:
        entry["memory"] = {"peak": facts.activation_peak}  # where the static peak is
    latency = _latency(facts)
    if latency is not None:
        entry["latency"] = latency
    if result.base is not None:
        entry["base"] = {"path": result.base_path or result.path, "metrics": result.base.metrics()}
    if result.reference is not None:  # [drift] reference: the model at that commit
        entry["reference"] = {"ref": result.reference_name, "metrics": result.reference.metrics()}
    if result.diff is not None:  # the layers that changed since the base (bloatguard.diff)
        entry["diff"] = [change.to_json() for change in result.diff.changes]
        entry["op_changes"] = result.diff.ops_json()
    return entry


def _latency(facts) -> dict[str, Any] | None:
    if facts is None or facts.latency is None:
        return None  # latency was off: keep the measurement module unimported
    from bloatguard.measure.latency import report_json

    return report_json(facts)


def render(results: list[ModelResult], *, unmatched=(), **_: Any) -> str:
    from bloatguard import __version__

    summary = summarize(results)
    document = {
        "version": REPORT_VERSION,
        "bloatguard": __version__,
        "models": [model_json(result) for result in results],
        "summary": {key: summary[key] for key in ("models", "errors", "warnings", "unreadable",
                                                   "accepted")},
        # Config tables that match no model (bloatguard.coverage): they enforce nothing.
        "config_warnings": [table.to_json() for table in unmatched],
    }
    return json.dumps(document, indent=2) + "\n"
