"""Verify candidates against the original, in the same run: size, params and MACs (the same
readers and counters as `bloatguard check`), the I/O signature, output fidelity on sample or
random inputs, latency (interleaved with the original, as BG004 compares base and head), and
the configured budgets. Each check that fails adds a reason; a candidate with no reason is
accepted, and the smallest accepted one wins.

onnxruntime runs only in children: fidelity in a forked child (bloatguard.isolate), latency in
the BG004 measuring process. A crash or hang there rejects candidates with the reason; it
never takes the fix down, and never lets an unverified candidate through.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bloatguard.config import BUDGET_KEYS, Config, LatencyConfig
from bloatguard.facts import ModelFacts, ValueInfo
from bloatguard.fix.candidates import Candidate
from bloatguard.units import format_amount

_MEMORY_HEADROOM = 2 * 2**30


@dataclass
class Thresholds:
    """When outputs count as unchanged (safe) or close enough (unsafe). CLI options."""

    tolerance: float = 1e-4  # safe: max |difference| relative to the output's largest |value|
    min_cosine: float = 0.99  # unsafe: cosine similarity of every float output
    min_top1: float = 0.95  # unsafe: top-1 agreement of classifier-like outputs, and the
    #                         share of equal elements of integer outputs (labels)
    max_error: float | None = None  # unsafe: optional bound like the safe tolerance


@dataclass
class Evaluation:
    """One candidate and everything measured about it."""

    candidate: Candidate
    path: Path | None = None
    changes: list[str] = field(default_factory=list)
    input_map: dict[str, Any] = field(default_factory=dict)
    facts: ModelFacts | None = None
    fidelity: dict[str, Any] | None = None  # the child's metrics, or {"error": ...}
    fidelity_summary: str = ""
    latency: dict[str, Any] | None = None  # ratio, ci, p, verdict, median_ms
    latency_note: str = ""
    reasons: list[str] = field(default_factory=list)  # why rejected; empty = accepted
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None  # "nothing to change"
    winner: bool = False

    @property
    def id(self) -> str:
        return self.candidate.id

    @property
    def viable(self) -> bool:
        """Built, and not rejected yet: worth the next (more expensive) check."""
        return self.path is not None and not self.reasons and self.skipped is None

    @property
    def timeable(self) -> bool:
        """Built and run by onnxruntime: worth timing even when its fidelity already failed,
        so the table shows what every candidate would cost."""
        return (self.path is not None and self.skipped is None and self.facts is not None
                and not self.facts.unreadable and self.fidelity is not None
                and "error" not in self.fidelity)

    @property
    def accepted(self) -> bool:
        return self.viable and self.fidelity is not None and "error" not in self.fidelity

    def reject(self, reason: str) -> None:
        if reason not in self.reasons:
            self.reasons.append(reason)


# --- size, params, MACs -----------------------------------------------------------------------

def measure(evaluations: list[Evaluation], original: Path, config: Config) -> None:
    """Facts of every built candidate, MACs counted in one isolated batch."""
    from bloatguard.engine import MacsBatch
    from bloatguard.engine import measure as read

    batch = MacsBatch()
    for evaluation in evaluations:
        if evaluation.path is None:
            continue
        evaluation.facts = read(evaluation.path, config, evaluation.candidate.label,
                                settings_path=original, macs=batch)
    batch.run()
    for evaluation in evaluations:
        if evaluation.facts is not None and evaluation.facts.unreadable:
            evaluation.reject(f"the result does not read back: {evaluation.facts.unreadable}")


def check_size(evaluation: Evaluation, original: ModelFacts) -> None:
    """Never larger; and a lossy candidate must save at least 1 %, or it changes outputs for
    nothing (a state dict pruned but stored dense, say)."""
    if not evaluation.viable:
        return
    size, was = evaluation.facts.file_size, original.file_size
    if size > was:
        evaluation.reject(f"larger than the original ({_bytes(size)} > {_bytes(was)})")
    elif size > 0.99 * was and not evaluation.candidate.safe:
        evaluation.reject(f"saves less than 1 % ({_bytes(was - size)}): not worth changing "
                          "the outputs")


# --- I/O signature ----------------------------------------------------------------------------

def check_signature(evaluation: Evaluation, original: ModelFacts) -> None:
    """Same outputs (names, dtypes, compatible shapes); same inputs unless the candidate says
    it changes them (remove-features), and then only by dropping inputs or narrowing dims."""
    if not evaluation.viable or original.format != "onnx":
        return
    facts = evaluation.facts
    problem = _values_differ("output", original.outputs, facts.outputs)
    if problem is None and not evaluation.candidate.interface:
        problem = _values_differ("input", original.inputs, facts.inputs)
    elif problem is None:
        problem = _inputs_narrowed(original.inputs, facts.inputs)
    if problem:
        evaluation.reject(f"changes the I/O signature: {problem}")
    elif evaluation.candidate.interface and evaluation.input_map:
        evaluation.notes.append(f"rewrites the input signature: {_describe_inputs(evaluation)}")


def _values_differ(kind: str, before: list[ValueInfo], after: list[ValueInfo]) -> str | None:
    old, new = {v.name: v for v in before}, {v.name: v for v in after}
    if list(old) != list(new):
        return f"{kind}s {list(old)} became {list(new)}"
    for name, value in old.items():
        changed = new[name]
        if value.dtype != changed.dtype:
            return f"{kind} {name!r} is {changed.dtype}, was {value.dtype}"
        if value.shape is None or changed.shape is None:
            continue
        if len(value.shape) != len(changed.shape) or any(
                (isinstance(a, int) or isinstance(b, int)) and a != b
                for a, b in zip(value.shape, changed.shape)):
            return f"{kind} {name!r} has shape {list(changed.shape)}, was {list(value.shape)}"
    return None


def _inputs_narrowed(before: list[ValueInfo], after: list[ValueInfo]) -> str | None:
    """What remove-features may do to the inputs: drop some, shrink dims; nothing else."""
    old = {v.name: v for v in before}
    for value in after:
        was = old.get(value.name)
        if was is None:
            return f"new input {value.name!r}"
        if was.dtype != value.dtype or (was.shape is not None and value.shape is not None
                                        and len(was.shape) != len(value.shape)):
            return f"input {value.name!r} changed type or rank"
    return None


def _describe_inputs(evaluation: Evaluation) -> str:
    from bloatguard.hygiene import listing

    parts = []
    for name, change in evaluation.input_map.items():
        if change == "drop":
            parts.append(f"input {name!r} removed")
            continue
        dropped = [i for i in range(change["width"]) if i not in set(change["keep"])]
        parts.append(f"input {name!r} loses columns {listing(map(str, dropped), limit=10)} of "
                     f"axis {change['axis']} ({len(change['keep'])} of {change['width']} kept)")
    return "; ".join(parts)


# --- fidelity ---------------------------------------------------------------------------------

def fidelity(evaluations: list[Evaluation], original: Path, original_facts: ModelFacts,
             inputs_file: Path, thresholds: Thresholds, timeout: float) -> str | None:
    """Run the original and every viable candidate on the same inputs in one isolated child
    and judge each. Returns a model-level error (the original cannot run) or None."""
    from bloatguard.isolate import IsolationError, run_isolated

    viable = [e for e in evaluations if e.viable]
    if not viable:
        return None
    if original_facts.format == "pytorch":
        return _state_dict_fidelity(viable, original, thresholds, timeout)
    job = {"original": str(original), "inputs": str(inputs_file),
           "candidates": [{"id": e.id, "path": str(e.path), "input_map": e.input_map}
                          for e in viable]}
    memory = _MEMORY_HEADROOM + 3 * (original_facts.file_size
                                     + sum(e.facts.file_size for e in viable))
    try:
        answer = run_isolated(_fidelity_child, job, timeout=timeout, memory=memory)
    except IsolationError as exc:
        if len(viable) == 1:
            viable[0].reject(f"fidelity not measured: onnxruntime {exc}")
            return None
        # One candidate may have crashed onnxruntime: retry each alone to find it.
        for evaluation in viable:
            fidelity([evaluation], original, original_facts, inputs_file, thresholds, timeout)
        return None
    if "error" in answer:
        for evaluation in viable:
            evaluation.reject(f"cannot be verified: {answer['error']}")
        return answer["error"]
    for evaluation in viable:
        _judge_fidelity(evaluation, answer["results"][evaluation.id], thresholds)
    return None


def _judge_fidelity(evaluation: Evaluation, result: dict[str, Any], thresholds: Thresholds) -> None:
    evaluation.fidelity = result
    if "error" in result:
        evaluation.fidelity_summary = "failed"
        evaluation.reject(f"onnxruntime cannot run it: {result['error']}")
        return
    outputs = result["outputs"]
    floats = {n: o for n, o in outputs.items() if o["kind"] == "float"}
    exact = {n: o for n, o in outputs.items() if o["kind"] == "exact"}
    parts = []
    worst_error = max(((o["max_error"], n) for n, o in floats.items()), default=None)
    worst_cosine = min(((o["cosine"], n) for n, o in floats.items()), default=None)
    top1 = min(((o["top1"], n) for n, o in floats.items() if o.get("top1") is not None), default=None)
    equal = min(((o["equal"], n) for n, o in exact.items()), default=None)
    if worst_error is not None:
        parts.append(f"max err {worst_error[0]:.2g}")
    if worst_cosine is not None:
        parts.append(f"cos {_cosine(worst_cosine[0])}")
    if top1 is not None:
        parts.append(f"top-1 {top1[0]:.0%}")
    if equal is not None:
        parts.append(f"equal {equal[0]:.0%}")
    evaluation.fidelity_summary = ", ".join(parts) or "no comparable outputs"
    skipped = [n for n, o in outputs.items() if o["kind"] == "skipped"]
    if skipped:
        evaluation.notes.append(f"outputs {skipped} are not tensors and were not compared")
    if evaluation.candidate.safe:
        if worst_error is not None and not worst_error[0] <= thresholds.tolerance:
            evaluation.reject(f"outputs changed: max error {worst_error[0]:.2g} of the output "
                              f"scale > {thresholds.tolerance:.10g} (output {worst_error[1]!r})")
        if equal is not None and equal[0] < 1:
            evaluation.reject(f"output {equal[1]!r} changed in {1 - equal[0]:.1%} of its elements")
        return
    if worst_cosine is not None and not worst_cosine[0] >= thresholds.min_cosine:
        evaluation.reject(f"cosine similarity {_cosine(worst_cosine[0])} < "
                          f"{thresholds.min_cosine:.10g} (output {worst_cosine[1]!r})")
    if top1 is not None and top1[0] < thresholds.min_top1:
        evaluation.reject(f"top-1 agreement {top1[0]:.1%} < {thresholds.min_top1:.0%} "
                          f"(output {top1[1]!r})")
    if equal is not None and equal[0] < thresholds.min_top1:
        evaluation.reject(f"output {equal[1]!r} equal in only {equal[0]:.1%} of elements < "
                          f"{thresholds.min_top1:.0%}")
    if thresholds.max_error is not None and worst_error is not None \
            and not worst_error[0] <= thresholds.max_error:
        evaluation.reject(f"max error {worst_error[0]:.2g} of the output scale > "
                          f"{thresholds.max_error:.10g} (output {worst_error[1]!r})")


def _cosine(value: float) -> str:
    # Four decimals hide what matters near 1: 0.99995 is not 1.0000.
    return f"{value:.4f}" if value < 0.9999 or value == 1 else f"{value:.6f}"


def _fidelity_child(job: dict[str, Any]) -> dict[str, Any]:
    import logging
    import warnings

    import onnxruntime as ort

    from bloatguard.fix.inputs import candidate_feeds

    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    with np.load(job["inputs"], allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    count = min((a.shape[0] for a in arrays.values()), default=1)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1

    def session(path: str):
        return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])

    try:
        reference = session(job["original"])
        names = [o.name for o in reference.get_outputs()]
        expected = [reference.run(None, _sample(arrays, i)) for i in range(count)]
    except Exception as exc:  # onnxruntime raises its own exception types
        return {"error": f"onnxruntime cannot run the original model: {_first_line(exc)}"}
    results = {}
    for candidate in job["candidates"]:
        try:
            runner = session(candidate["path"])
            produced = [o.name for o in runner.get_outputs()]
            if sorted(produced) != sorted(names):
                raise ValueError(f"outputs {produced} instead of {names}")
            feeds = candidate_feeds(arrays, candidate["input_map"])
            totals = {name: _Totals() for name in names}
            for i in range(count):
                got = dict(zip(produced, runner.run(None, _sample(feeds, i))))
                for name, want in zip(names, expected[i]):
                    totals[name].add(name, want, got[name])
            results[candidate["id"]] = {"outputs": {n: t.result() for n, t in totals.items()}}
        except Exception as exc:
            results[candidate["id"]] = {"error": _first_line(exc)}
    return {"results": results}


def _sample(arrays: dict[str, np.ndarray], index: int) -> dict[str, np.ndarray]:
    """Sample `index` of every input; np.array keeps a scalar input's sample a 0-d array
    (onnxruntime rejects numpy scalars)."""
    return {name: np.array(array[index]) for name, array in arrays.items()}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


class _Totals:
    """Running comparison of one output over all samples."""

    def __init__(self) -> None:
        self.kind = None
        self.max_abs = 0.0
        self.scale = 0.0
        self.dot = self.ref_sq = self.got_sq = 0.0
        self.agree = self.rows = 0
        self.equal = self.total = 0

    def add(self, name: str, want, got) -> None:
        want, got = _as_array(want), _as_array(got)
        if want is None or got is None:
            self.kind = "skipped"
            return
        if want.shape != got.shape:
            raise ValueError(f"output {name!r} has shape {list(got.shape)} instead of "
                             f"{list(want.shape)}")
        if want.dtype.kind in "fc":
            self.kind = "float"
            r, c = want.astype(np.float64), got.astype(np.float64)
            finite = np.isfinite(r) & np.isfinite(c)
            same_special = (~np.isfinite(r)) & ((r == c) | (np.isnan(r) & np.isnan(c)))
            if np.any(~finite & ~same_special):
                self.max_abs = float("inf")
            if finite.any():
                self.max_abs = max(self.max_abs, float(np.max(np.abs(r[finite] - c[finite]))))
                self.scale = max(self.scale, float(np.max(np.abs(r[finite]))))
                self.dot += float(np.sum(r[finite] * c[finite]))
                self.ref_sq += float(np.sum(r[finite] ** 2))
                self.got_sq += float(np.sum(c[finite] ** 2))
            if r.ndim == 2 and r.shape[-1] >= 2:  # [batch, classes]: classifier-like scores
                self.agree += int(np.sum(np.argmax(r, -1) == np.argmax(c, -1)))
                self.rows += r.shape[0]
        else:
            self.kind = self.kind or "exact"
            self.equal += int(np.sum(want == got))
            self.total += want.size

    def result(self) -> dict[str, Any]:
        if self.kind == "float":
            if self.ref_sq == 0 and self.got_sq == 0:
                cosine = 1.0
            elif self.ref_sq == 0 or self.got_sq == 0:
                cosine = 0.0
            else:
                cosine = self.dot / (self.ref_sq ** 0.5 * self.got_sq ** 0.5)
            relative = (0.0 if self.max_abs == 0 else self.max_abs / self.scale if self.scale
                        else float("inf"))
            return {"kind": "float", "max_error": relative, "max_abs": self.max_abs,
                    "scale": self.scale, "cosine": min(1.0, cosine),
                    "top1": self.agree / self.rows if self.rows else None}
        if self.kind == "exact":
            return {"kind": "exact", "equal": self.equal / self.total if self.total else 1.0}
        return {"kind": "skipped"}


def _as_array(value):
    """onnxruntime returns arrays, or lists of dicts for ZipMap outputs (scikit-learn
    probabilities): those become a [rows, classes] table in key order."""
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        keys = sorted(value[0])
        try:
            return np.asarray([[row[k] for k in keys] for row in value], dtype=np.float64)
        except (KeyError, TypeError, ValueError):
            return None
    try:
        array = np.asarray(value)
    except Exception:
        return None
    return array if array.dtype.kind in "biufc" else None


def _state_dict_fidelity(viable: list[Evaluation], original: Path, thresholds: Thresholds,
                         timeout: float) -> None:
    """State dicts have no graph to run: fidelity is measured on the weights themselves."""
    from bloatguard.fix.transforms_torch import run_in_subprocess

    for evaluation in viable:
        try:
            result = run_in_subprocess("compare", str(original), str(evaluation.path),
                                       timeout=timeout, memory=_MEMORY_HEADROOM + 4 * (
                                           evaluation.facts.file_size + original.stat().st_size))
        except RuntimeError as exc:
            evaluation.reject(f"cannot be verified: {exc}")
            continue
        evaluation.fidelity = result
        if "error" in result:
            evaluation.fidelity_summary = "failed"
            evaluation.reject(f"changes the state dict: {result['error']}")
            continue
        evaluation.fidelity_summary = (f"weights cos {_cosine(result['min_cosine'])}, "
                                       f"rel err {result['max_relative_error']:.2g}")
        evaluation.notes.append("a state dict has no graph to run: fidelity is measured on "
                                "the pruned weights, not on outputs")
        if result["min_cosine"] < thresholds.min_cosine:
            evaluation.reject(f"weight cosine similarity {_cosine(result['min_cosine'])} < "
                              f"{thresholds.min_cosine:.10g}")
        if result["sparse"]:
            evaluation.candidate.interface = (
                f"{len(result['sparse'])} weights are stored as sparse CSR tensors: call "
                "t.to_dense() on them before model.load_state_dict()")
            evaluation.notes.append(evaluation.candidate.interface)
    return None


# --- latency ----------------------------------------------------------------------------------

def latency(evaluations: list[Evaluation], original: Path, original_facts: ModelFacts,
            plan, settings: LatencyConfig) -> str | None:
    """Time the original and every candidate that runs, interleaved in one child; a candidate
    whose slowdown is both large (min-effect) and significant (sign test at alpha) is
    re-measured in a fresh child and rejected if that confirms it. Returns a note when
    nothing could be timed."""
    from bloatguard.measure.latency import MeasurementError, compare_files
    from bloatguard.measure.stats import REGRESSION

    viable = [e for e in evaluations if e.timeable]
    if not viable:
        return None
    if original_facts.format != "onnx":
        for evaluation in viable:
            evaluation.latency_note = "n/a"
        return "latency is not measured for PyTorch state dicts (no runnable graph)"

    def run(batch: list[Evaluation]) -> dict[str, Any]:
        models = [("original", original, plan, original_facts.file_size)]
        models += [(e.candidate.label, e.path, _candidate_plan(plan, e.input_map),
                    e.facts.file_size) for e in batch]
        return compare_files(models, settings)

    try:
        measured = run(viable)
    except MeasurementError as exc:
        for evaluation in viable:
            evaluation.latency_note = "not measured"
            if not evaluation.candidate.safe:
                # An unsafe candidate is only worth keeping if it is not slower: unproven.
                evaluation.reject(f"latency could not be measured: {exc}")
        return f"latency not measured: {exc}"
    reference_ms = measured["reference_ms"]
    _store_latency(viable, measured, settings)
    flagged = [e for e in viable if e.latency["verdict"] == REGRESSION]
    if flagged:
        # A slowdown must survive a second, independent measurement before it rejects.
        try:
            again = run(flagged)
            _store_latency(flagged, again, settings, confirmation=True)
        except MeasurementError:
            pass
    for evaluation in viable:
        evaluation.latency["reference_ms"] = reference_ms
        if evaluation.latency["verdict"] == REGRESSION:
            info = evaluation.latency
            evaluation.reject(f"slower: x{info['ratio']:.2f} [{info['ci'][0]:.2f}, "
                              f"{info['ci'][1]:.2f}] of the original's latency, p = "
                              f"{info['p_value']:.2g}")
    return None


def _store_latency(batch: list[Evaluation], measured: dict[str, Any], settings: LatencyConfig,
                   confirmation: bool = False) -> None:
    for evaluation, variant in zip(batch, measured["variants"]):
        result = variant["paired"]
        evaluation.latency = {
            "ratio": round(result.ratio, 4), "ci": [round(result.ci[0], 4), round(result.ci[1], 4)],
            "p_value": result.p_regression if result.ratio >= 1 else result.p_improvement,
            "verdict": result.verdict(min_effect=settings.min_effect, alpha=settings.alpha),
            "rounds": result.rounds, "median_ms": variant["median_ms"],
            "reference_ms": measured["reference_ms"], "confirmed": confirmation or None,
        }


def _candidate_plan(plan, input_map: dict[str, Any]):
    """The original's feed plan, as a candidate that removed inputs or columns expects it."""
    from dataclasses import replace

    from bloatguard.measure.feeds import FeedPlan

    if not input_map:
        return plan
    feeds = []
    for feed in plan.feeds:
        change = input_map.get(feed.name)
        if change == "drop":
            continue
        if isinstance(change, dict):
            shape = list(feed.shape)
            shape[change["axis"]] = len(change["keep"])
            feed = replace(feed, shape=tuple(shape), source="random", value=None, sample=None)
        feeds.append(feed)
    return FeedPlan(feeds=feeds, notes=list(plan.notes))


# --- budgets ----------------------------------------------------------------------------------

def check_budgets(evaluation: Evaluation, original: ModelFacts, budgets: dict[str, Any]) -> None:
    """A candidate must not break a configured limit the original meets, nor grow a metric
    whose limit the original already exceeds (it may still be over it: fixing is progress,
    and `check` keeps reporting the rest)."""
    if not evaluation.viable:
        return
    before = _metrics(original, None)
    after = _metrics(evaluation.facts, evaluation.latency)
    if evaluation.latency:
        before["latency_ms"] = evaluation.latency.get("reference_ms")
    for key, limit in budgets.items():
        spec = BUDGET_KEYS.get(key)
        if spec is None or spec.role != "limit":
            continue
        value, was = after.get(spec.metric), before.get(spec.metric)
        if value is None or value <= limit:
            continue
        if was is None or was <= limit:
            evaluation.reject(f"over {key}: {format_amount(value, spec.kind)} > "
                              f"{format_amount(limit, spec.kind)}")
        elif value > was:
            evaluation.reject(f"over {key} and worse than the original: "
                              f"{format_amount(value, spec.kind)} > {format_amount(was, spec.kind)}")


def _metrics(facts: ModelFacts, latency_info: dict[str, Any] | None) -> dict[str, Any]:
    metrics = facts.metrics()
    metrics["latency_ms"] = latency_info.get("median_ms") if latency_info else None
    return metrics


# --- choosing ---------------------------------------------------------------------------------

def choose(evaluations: list[Evaluation]) -> Evaluation | None:
    """The smallest accepted candidate; on a tie the safe one, then the one with fewer MACs."""
    accepted = [e for e in evaluations if e.accepted]
    if not accepted:
        return None
    winner = min(accepted, key=lambda e: (e.facts.file_size, not e.candidate.safe,
                                          e.facts.macs if e.facts.macs is not None else 0))
    winner.winner = True
    return winner


def _bytes(value: int) -> str:
    return format_amount(value, "bytes")


def to_json(evaluation: Evaluation, original: ModelFacts) -> dict[str, Any]:
    facts = evaluation.facts
    return {
        "candidate": evaluation.candidate.label, "id": evaluation.id,
        "safe": evaluation.candidate.safe, "steps": evaluation.candidate.kinds,
        "changes": evaluation.changes,
        "file_size": facts.file_size if facts else None,
        "size_ratio": round(facts.file_size / original.file_size, 4) if facts and original.file_size else None,
        "params": facts.params if facts else None, "macs": facts.macs if facts else None,
        "latency": evaluation.latency, "fidelity": evaluation.fidelity,
        "fidelity_summary": evaluation.fidelity_summary,
        "verdict": ("skipped" if evaluation.skipped else "winner" if evaluation.winner
                    else "accepted" if evaluation.accepted else "rejected"),
        "reasons": evaluation.reasons if not evaluation.skipped else [evaluation.skipped],
        "interface": evaluation.candidate.interface, "notes": evaluation.notes,
    }


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, default=str)
