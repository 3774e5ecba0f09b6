"""`bloatguard merge`: combine the JSON reports of sharded runs into one set of results.

A large repository is checked in parallel CI jobs, each with `--shard K/N --output-format json`;
a final job merges their reports and renders one summary, comment and exit code. The reports are
turned back into `ModelResult`s, so every writer (and the exit code) works on a merged run exactly
as on a single one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bloatguard.diff import LayerChange, LayerDiff
from bloatguard.errors import BloatguardError
from bloatguard.facts import ModelFacts, ValueInfo
from bloatguard.metrics import METRICS
from bloatguard.result import ModelResult
from bloatguard.rule import Finding

SUPPORTED_VERSION = 1
# Keys of the JSON `latency` object that come from the base/head comparison.
_COMPARISON_ONLY = ("ratio", "ci", "p_value", "verdict", "confirmed")


class ReportedFacts(ModelFacts):
    """Facts as a JSON report recorded them. The metrics are the recorded numbers, not derived
    from tensors (a report does not list tensors), so they survive a round trip unchanged."""

    def __init__(self, path: str, format: str, metrics: dict[str, Any],
                 latency: dict[str, Any] | None = None, base_latency_ms: float | None = None,
                 **fields: Any) -> None:
        super().__init__(path=path, format=format, file_size=metrics.get("file_size") or 0, **fields)
        self.recorded = dict(metrics)
        self.measured = {metric.key: metrics.get(metric.key) for metric in METRICS
                         if metric.derive is None and metrics.get(metric.key) is not None}
        if latency is not None:
            self._restore_latency(latency, base_latency_ms)

    def _restore_latency(self, latency: dict[str, Any], base_ms: float | None) -> None:
        """Undo bloatguard.measure.latency.report_json: the report folds the base/head comparison
        into the `latency` object; the writers read them as two."""
        self.latency = {key: value for key, value in latency.items()  # type: ignore[assignment]
                        if key not in _COMPARISON_ONLY}
        if "ratio" in latency:
            self.latency_comparison = {  # type: ignore[assignment]
                **{key: latency.get(key) for key in (*_COMPARISON_ONLY, "rounds")},
                "head_median_ms": latency.get("median_ms"), "base_median_ms": base_ms}

    def metrics(self) -> dict[str, Any]:
        return dict(self.recorded)

    @property
    def params(self) -> int | None:
        return self.recorded.get("params")

    @property
    def params_by_dtype(self) -> dict[str, int]:
        return dict(self.recorded.get("params_by_dtype") or {})

    @property
    def weight_bytes(self) -> int | None:
        return self.recorded.get("weight_bytes")


def _value(entry: dict[str, Any]) -> ValueInfo:
    shape = entry.get("shape")
    return ValueInfo(entry["name"], entry["dtype"], None if shape is None else tuple(shape))


def model_result(entry: dict[str, Any]) -> ModelResult:
    """The inverse of bloatguard.report.json.model_json."""
    if not isinstance(entry.get("path"), str):
        raise ValueError("a model's path must be a string")
    findings = [Finding.from_json(finding) for finding in entry.get("findings", [])]
    unreadable = next((f for f in findings if f.code == "BG000"), None)
    base = entry.get("base")
    facts = None
    if entry.get("metrics") is not None:
        facts = ReportedFacts(
            entry["path"], entry.get("format", "unknown"), entry["metrics"],
            latency=entry.get("latency"),
            base_latency_ms=(base or {}).get("metrics", {}).get("latency_ms"),
            notes=list(entry.get("notes", [])),
            inputs=[_value(v) for v in entry.get("inputs", [])],
            outputs=[_value(v) for v in entry.get("outputs", [])],
            opsets=dict(entry.get("opsets", {})),
            unreadable=(unreadable.details.get("cause") or unreadable.message) if unreadable else None,
            remedy=(unreadable.details.get("remedy") or "") if unreadable else "")
        if isinstance(entry.get("macs_formula"), dict):  # undo report.json: MACs of symbolic dims
            facts.macs_formula = entry["macs_formula"]
        if (entry.get("memory") or {}).get("peak"):  # undo report.json: where the static peak is
            facts.activation_peak = entry["memory"]["peak"]
    return ModelResult(
        path=entry["path"], facts=facts, status=entry.get("status"),
        base=ReportedFacts(base["path"], entry.get("format", "unknown"), base["metrics"])
        if base else None,
        reference=ReportedFacts(entry["path"], entry.get("format", "unknown"),
                                entry["reference"]["metrics"]) if entry.get("reference") else None,
        reference_name=(entry.get("reference") or {}).get("ref"),
        base_path=base["path"] if base else None, findings=findings, diff=_diff(entry))


def _diff(entry: dict[str, Any]) -> LayerDiff | None:
    """Undo report.json: the changed layers and op counts."""
    if "diff" not in entry:
        return None
    return LayerDiff([LayerChange.from_json(change) for change in entry["diff"]],
                     {str(op): (int(counts["base"]), int(counts["head"]))
                      for op, counts in (entry.get("op_changes") or {}).items()})


def load_report(path: Path) -> list[ModelResult]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BloatguardError(f"{path}: cannot read the report ({exc.strerror or exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BloatguardError(f"{path}: not a JSON report ({exc})") from None
    if not isinstance(document, dict) or document.get("version") != SUPPORTED_VERSION:
        raise BloatguardError(f"{path}: not a bloatguard JSON report of version "
                              f"{SUPPORTED_VERSION} (`bloatguard check --output-format json`)")
    try:
        return [model_result(entry) for entry in document["models"]]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BloatguardError(f"{path}: malformed model entry ({type(exc).__name__}: {exc})") from None


def merge_reports(paths: list[Path]) -> list[ModelResult]:
    """Every model of every report, in the order one unsharded run reports them (by path, models
    deleted since the base last). A model in two reports means the shards overlapped."""
    if not paths:
        raise BloatguardError("merge needs at least one JSON report")
    results: list[ModelResult] = []
    origin: dict[str, Path] = {}
    for path in paths:
        for result in load_report(path):
            if result.path in origin:
                raise BloatguardError(
                    f"{result.path} is in both {origin[result.path]} and {path}: were all shards "
                    "run with the same --shard N, paths and working directory?")
            origin[result.path] = path
            results.append(result)
    results.sort(key=lambda result: (result.status == "deleted", result.path))
    return results
