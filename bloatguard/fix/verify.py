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
    # Declared output semantics, by output name: {"axis", "slices": [[start, stop], ...],
    # "metric": "cosine" | "max-error" | "top1"} ([fix."<glob>".outputs.<name>]).
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def for_model(cls, display: str, facts: ModelFacts, configured: dict[str, Any],
                  overrides: dict[str, float]) -> Thresholds:
        """Defaults, then the model's [fix."<glob>"] settings, then the command line. Output
        semantics that cannot apply to this model are a ConfigError, not a silent no-op."""
        merged = {**configured, **overrides}
        thresholds = cls(tolerance=merged.get("tolerance", 1e-4),
                         min_cosine=merged.get("min-cosine", 0.99),
                         min_top1=merged.get("min-top1", 0.95), max_error=merged.get("max-error"),
                         outputs=merged.get("outputs", {}))
        _check_declared_outputs(display, facts, thresholds)
        return thresholds


def _check_declared_outputs(display: str, facts: ModelFacts, thresholds: Thresholds) -> None:
    from bloatguard.errors import ConfigError

    if facts.format != "onnx":
        return  # a state dict has no outputs: its fidelity is measured on the weights
    shapes = {value.name: value.shape for value in facts.outputs}
    for name, declared in thresholds.outputs.items():
        where = f"{display}: [tool.bloatguard.fix.\"<glob>\".outputs.{name}]"
        if name not in shapes:
            raise ConfigError(f"{where}: the model has no output {name!r} (outputs: "
                              f"{', '.join(map(repr, shapes)) or 'none'}); fix the name")
        shape, axis = shapes[name], declared["axis"]
        if shape is not None and axis >= len(shape):
            raise ConfigError(f"{where}: axis {axis}, but the output has rank {len(shape)}")
        size = shape[axis] if shape is not None else None
        beyond = [pair for pair in declared["slices"] if isinstance(size, int) and pair[1] > size]
        if beyond:
            raise ConfigError(f"{where}: slice {beyond[0]} ends beyond axis {axis} of size {size}")
        if declared["metric"] == "max-error" and thresholds.max_error is None:
            raise ConfigError(f"{where}: metric \"max-error\" needs a bound: set max-error in "
                              "the model's [tool.bloatguard.fix] table or pass --max-error")


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

    # What a check can rely on once an earlier one passed: a viable candidate was built, and
    # `measure` read every built one back; `latency` times every timeable one.

    @property
    def built_path(self) -> Path:
        assert self.path is not None, f"{self.id} was not built"
        return self.path

    @property
    def built_facts(self) -> ModelFacts:
        assert self.facts is not None, f"{self.id} was not read back"
        return self.facts

    @property
    def timed(self) -> dict[str, Any]:
        assert self.latency is not None, f"{self.id} was not timed"
        return self.latency

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
    size, was = evaluation.built_facts.file_size, original.file_size
    if size > was:
        evaluation.reject(f"larger than the original ({_bytes(size)} > {_bytes(was)})")
    elif size > 0.99 * was and not evaluation.candidate.safe:
        evaluation.reject(f"saves less than 1 % ({_bytes(was - size)}): not worth changing "
                          "the outputs")


# --- I/O signature ----------------------------------------------------------------------------

def check_signature(evaluation: Evaluation, original: ModelFacts) -> str | None:
    """Same outputs (names, dtypes, compatible shapes); same inputs unless the candidate says
    it changes them (remove-features), and then only by dropping inputs or narrowing dims.
    Returns the difference that rejected the candidate, if any."""
    if not evaluation.viable or original.format != "onnx":
        return None
    facts = evaluation.built_facts
    problem = _values_differ("output", original.outputs, facts.outputs)
    if problem is None and not evaluation.candidate.interface:
        problem = _values_differ("input", original.inputs, facts.inputs)
    elif problem is None:
        problem = _inputs_narrowed(original.inputs, facts.inputs)
    if problem:
        evaluation.reject(f"changes the I/O signature: {problem}")
    elif evaluation.candidate.interface and evaluation.input_map:
        evaluation.notes.append(f"rewrites the input signature: {_describe_inputs(evaluation)}")
    return problem


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
             inputs_file: Path | None, thresholds: Thresholds, timeout: float) -> str | None:
    """Run the original and every viable candidate on the same inputs in one isolated child
    and judge each. Returns a model-level error (the original cannot run) or None."""
    from bloatguard.isolate import IsolationError, run_isolated

    viable = [e for e in evaluations if e.viable]
    if not viable:
        return None
    if original_facts.format == "pytorch":
        _state_dict_fidelity(viable, original, thresholds, timeout)
        return None
    job = {"original": str(original), "inputs": str(inputs_file), "outputs": thresholds.outputs,
           "candidates": [{"id": e.id, "path": str(e.path), "input_map": e.input_map}
                          for e in viable]}
    memory = _MEMORY_HEADROOM + 3 * (original_facts.file_size
                                     + sum(e.built_facts.file_size for e in viable))
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
    slices = [_judge_slice(name, output, entry, thresholds, evaluation.candidate.safe)
              for name, output in floats.items() for entry in output.get("slices", [])]
    worst_slice = min(slices, key=lambda v: (v.passed, v.entry["cosine"]), default=None)
    if worst_error is not None:
        parts.append(f"max err {worst_error[0]:.2g}")
    if worst_cosine is not None:
        parts.append(f"cos {_cosine(worst_cosine[0])}")
    if top1 is not None:
        parts.append(f"top-1 {top1[0]:.0%}")
    if equal is not None:
        parts.append(f"equal {equal[0]:.0%}")
    if worst_slice is not None:
        assert worst_cosine is not None  # slices are of float outputs, which all have a cosine
        result["worst_slice"] = worst_slice.to_json()
        # The table shows it where it tells more than the whole outputs do.
        if not worst_slice.passed or _cosine(worst_slice.entry["cosine"]) != _cosine(worst_cosine[0]):
            parts.append(f"worst slice {worst_slice.label} {worst_slice.figure}")
    evaluation.fidelity_summary = ", ".join(parts) or "no comparable outputs"
    skipped = [n for n, o in outputs.items() if o["kind"] == "skipped"]
    if skipped:
        evaluation.notes.append(f"outputs {skipped} are not tensors and were not compared")
    for verdict in _worst_failing_per_output(slices):
        whole = floats[verdict.output]
        evaluation.reject(f"slice {verdict.label}: {verdict.figure} {verdict.comparison} "
                          f"(judged at its own scale, {verdict.entry['scale']:.3g}; the whole "
                          f"output: cos {_cosine(whole['cosine'])}, max err "
                          f"{whole['max_error']:.2g})")
    if evaluation.candidate.safe:
        if worst_error is not None and not worst_error[0] <= thresholds.tolerance:
            evaluation.reject(f"outputs changed: max error {worst_error[0]:.2g} of the output "
                              f"scale > {thresholds.tolerance:.10g} (output {worst_error[1]!r})")
        if equal is not None and equal[0] < 1:
            evaluation.reject(f"output {equal[1]!r} changed in {1 - equal[0]:.1%} of its elements")
        return
    if worst_cosine is not None and not worst_cosine[0] >= thresholds.min_cosine:
        evaluation.reject(f"cosine similarity {_cosine_below(worst_cosine[0], thresholds.min_cosine)}"
                          f" < {thresholds.min_cosine:.10g} (output {worst_cosine[1]!r})")
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


@dataclass
class SliceVerdict:
    """One slice of one output, judged at its own scale."""

    output: str
    label: str  # output0[:, 4:84, :]
    entry: dict[str, Any]  # the child's figures: axis, start, stop, metric, cosine, max_error...
    figure: str  # what was judged, as the table shows it: "cos 0.0000"
    comparison: str  # "< 0.99" when it failed
    passed: bool

    def to_json(self) -> dict[str, Any]:
        return {"output": self.output, "label": self.label, "passed": self.passed,
                **{k: self.entry[k] for k in ("axis", "start", "stop", "metric", "cosine",
                                              "max_error", "scale")},
                **({"top1": self.entry["top1"]} if "top1" in self.entry else {})}


def _judge_slice(output: str, figures: dict[str, Any], entry: dict[str, Any],
                 thresholds: Thresholds, safe: bool) -> SliceVerdict:
    """Safe candidates keep every slice within the tolerance of its own scale; unsafe ones
    meet the slice's metric (cosine unless configured), and --max-error when given."""
    label = slice_label(output, figures["rank"], entry["axis"], entry["start"], entry["stop"])
    error = entry["max_error"]
    if safe:
        checks = [(f"max err {error:.2g}", error <= thresholds.tolerance,
                   f"> {thresholds.tolerance:.10g}")]
    elif entry["metric"] == "top1":
        agree = entry["top1"]
        checks = [(f"top-1 {agree:.1%}", agree >= thresholds.min_top1, f"< {thresholds.min_top1:.0%}")]
    elif entry["metric"] == "max-error":
        checks = []  # the bound below
    else:
        cosine, bar = entry["cosine"], thresholds.min_cosine
        checks = [(f"cos {_cosine(cosine) if cosine >= bar else _cosine_below(cosine, bar)}",
                   cosine >= bar, f"< {bar:.10g}")]
    bound = thresholds.max_error
    if not safe and bound is not None:
        checks.append((f"max err {error:.2g}", error <= bound, f"> {bound:.10g}"))
    failed = [check for check in checks if not check[1]]
    figure, _, comparison = (failed or checks or [(f"max err {error:.2g}", True, "")])[0]
    return SliceVerdict(output, label, entry, figure, comparison if failed else "", not failed)


def _worst_failing_per_output(verdicts: list[SliceVerdict]) -> list[SliceVerdict]:
    worst: dict[str, SliceVerdict] = {}
    for verdict in verdicts:
        if verdict.passed:
            continue
        known = worst.get(verdict.output)
        if known is None or verdict.entry["cosine"] < known.entry["cosine"]:
            worst[verdict.output] = verdict
    return list(worst.values())


def _cosine(value: float) -> str:
    # Four decimals hide what matters near 1: 0.99995 is not 1.0000.
    return f"{value:.4f}" if value < 0.9999 or value == 1 else f"{value:.6f}"


def _cosine_below(value: float, bound: float) -> str:
    """A cosine that failed `bound`, with the decimals it takes to show it is below: under a
    bar such as 0.99999999, 0.9999999958 must not print as 1.000000."""
    for decimals in range(4, 13):
        text = f"{value:.{decimals}f}"
        if float(text) < bound:
            return text
    return repr(value)


def timeout_for(facts: ModelFacts) -> float:
    """Seconds for one isolated build or fidelity run: generous, growing with the model."""
    return 300.0 + facts.file_size / 2**20 * 5


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
    results: dict[str, dict[str, Any]] = {}
    for candidate in job["candidates"]:
        try:
            runner = session(candidate["path"])
            produced = [o.name for o in runner.get_outputs()]
            if sorted(produced) != sorted(names):
                raise ValueError(f"outputs {produced} instead of {names}")
            feeds = candidate_feeds(arrays, candidate["input_map"])
            totals = {name: _Totals(job["outputs"].get(name)) for name in names}
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
    """Running comparison of one output over all samples: the whole output, and its slices."""

    def __init__(self, declared: dict[str, Any] | None = None) -> None:
        self.kind: str | None = None
        self.max_abs = 0.0
        self.scale = 0.0
        self.dot = self.ref_sq = self.got_sq = 0.0
        self.agree = self.rows = 0
        self.equal = self.total = 0
        self.slices = _Slices(declared)

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
            self.slices.add(r, c, finite, same_special)
        else:
            self.kind = self.kind or "exact"
            self.equal += int(np.sum(want == got))
            self.total += want.size

    def result(self) -> dict[str, Any]:
        if self.kind == "float":
            relative = (0.0 if self.max_abs == 0 else self.max_abs / self.scale if self.scale
                        else float("inf"))
            return {"kind": "float", "max_error": relative, "max_abs": self.max_abs,
                    "scale": self.scale, "cosine": _cosine_of(self.dot, self.ref_sq, self.got_sq),
                    "top1": self.agree / self.rows if self.rows else None,
                    "rank": self.slices.rank, "slices": self.slices.result()}
        if self.kind == "exact":
            return {"kind": "exact", "equal": self.equal / self.total if self.total else 1.0}
        return {"kind": "skipped"}


def _cosine_of(dot: float, ref_sq: float, got_sq: float) -> float:
    if ref_sq == 0 and got_sq == 0:
        return 1.0
    if ref_sq == 0 or got_sq == 0:
        return 0.0
    return min(1.0, dot / (ref_sq ** 0.5 * got_sq ** 0.5))


# --- fidelity per slice -----------------------------------------------------------------------
#
# One cosine over a whole output hides a destroyed part of it: a detector head [1, 4+C, N]
# mixes box coordinates (up to ~320) with class scores (<= 1), and a quantizer that zeroes every
# score still scores a cosine of 0.9995, dominated by the boxes. So every float output is also
# compared per slice along each non-batch axis of moderate size (channels, classes), each slice
# at its own scale: cosine is scale-free, and the max error is relative to the slice's own
# largest magnitude.
#
# Slices of one index each would judge noise: a class absent from the samples scores ~1e-4,
# and any rounding of it is a large relative change that matters to nobody. So by default
# the indices are grouped into contiguous bands by scale: indices whose largest magnitude is
# within BAND of the axis's largest, and the runs of smaller ones between them (the 80 score
# channels of the head above are one run, [4:84], whatever each class scores). An output
# whose indices share one scale has no slices beyond the whole output. Configured output
# semantics replace the bands of their axis with the slices the user named.

MAX_SLICES = 1024  # a longer axis holds positions (anchors, tokens, pixels), not channels
BAND = 20.0  # an index under 1/BAND of its axis's largest magnitude is on a smaller scale
NEGLIGIBLE = 1e-6  # a slice this small next to the output's largest value is numerically zero


class _AxisSums:
    """Per-index sums (and maxima) along one axis, over every sample."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.sums = {name: np.zeros(size) for name in ("dot", "ref_sq", "got_sq")}
        self.maxima = {name: np.zeros(size) for name in ("peak", "error")}

    def add(self, axis: int, name: str, terms: np.ndarray) -> None:
        others = tuple(i for i in range(terms.ndim) if i != axis)
        if name in self.sums:
            self.sums[name] += terms.sum(axis=others)
        else:
            np.maximum(self.maxima[name], terms.max(axis=others), out=self.maxima[name])

    @property
    def peak(self) -> np.ndarray:
        return self.maxima["peak"]

    def group(self, start: int, stop: int) -> dict[str, Any]:
        part = slice(start, stop)
        dot, ref_sq, got_sq = (float(self.sums[n][part].sum()) for n in ("dot", "ref_sq", "got_sq"))
        peak, error = float(self.peak[part].max()), float(self.maxima["error"][part].max())
        return {"cosine": _cosine_of(dot, ref_sq, got_sq),
                "max_error": 0.0 if error == 0 else error / peak if peak else float("inf"),
                "scale": peak}


class _Slices:
    """Slice figures of one float output. `declared`: the configured semantics, if any."""

    def __init__(self, declared: dict[str, Any] | None) -> None:
        self.declared = declared
        self.rank: int | None = None
        self.axes: dict[int, _AxisSums] = {}
        self.agree: dict[tuple[int, int], int] = {}  # declared top1 slices: agreeing rows
        self.rows: dict[tuple[int, int], int] = {}

    def add(self, r: np.ndarray, c: np.ndarray, finite: np.ndarray, same_special: np.ndarray) -> None:
        """Accumulate one sample. Zeroes the non-finite elements of `r` and `c` in place (the
        caller is done with them): an output can be large, so at most one temporary of its
        size exists at a time."""
        if self.rank is None:
            self.rank = r.ndim
            self.axes = {axis: _AxisSums(r.shape[axis]) for axis in self._axes(r.shape)}
        # A dynamic output (a different size per sample) cannot be sliced the same way twice.
        self.axes = {a: sums for a, sums in self.axes.items()
                     if r.ndim == self.rank and r.shape[a] == sums.size}
        if not self.axes:
            return
        with np.errstate(invalid="ignore"):
            self._reduce("error", np.where(finite, np.abs(r - c), np.where(same_special, 0.0, np.inf)))
        r[~finite] = 0.0
        c[~finite] = 0.0
        self._reduce("peak", np.abs(r))
        self._reduce("dot", r * c)
        self._reduce("ref_sq", r * r)
        self._reduce("got_sq", c * c)
        if self.declared and self.declared.get("metric") == "top1" and self.declared["axis"] in self.axes:
            self._top1(r, c, self.declared["axis"])

    def _reduce(self, name: str, terms: np.ndarray) -> None:
        for axis, sums in self.axes.items():
            sums.add(axis, name, terms)

    def _top1(self, r: np.ndarray, c: np.ndarray, axis: int) -> None:
        """Declared top1 slices: does the largest element along the axis stay the same one?"""
        assert self.declared is not None  # add() calls this only for a declared top1 metric
        for start, stop in self.declared["slices"]:
            if start >= r.shape[axis]:
                continue  # beyond a symbolic dim's size in this run: result() leaves it out
            part = [slice(None)] * r.ndim
            part[axis] = slice(start, stop)
            same = np.argmax(r[tuple(part)], axis) == np.argmax(c[tuple(part)], axis)
            self.agree[start, stop] = self.agree.get((start, stop), 0) + int(same.sum())
            self.rows[start, stop] = self.rows.get((start, stop), 0) + same.size

    def _axes(self, shape: tuple[int, ...]) -> list[int]:
        """Axis 0 is the batch (every exporter leads with it); the others are sliced when of
        moderate size, and a declared axis whatever its size."""
        axes = [axis for axis in range(1, len(shape)) if 2 <= shape[axis] <= MAX_SLICES]
        if self.declared and self.declared["axis"] < len(shape) and self.declared["axis"] not in axes:
            axes.append(self.declared["axis"])
        return axes

    def result(self) -> list[dict[str, Any]]:
        out = []
        top = max((float(sums.peak.max()) for sums in self.axes.values()), default=0.0)
        for axis, sums in sorted(self.axes.items()):
            declared = self.declared if self.declared and self.declared["axis"] == axis else None
            if declared:
                groups = [(start, stop) for start, stop in declared["slices"] if start < sums.size]
                metric = declared.get("metric", "cosine")
            else:
                groups, metric = _bands(sums.peak), "cosine"
            for start, stop in groups:
                figures = sums.group(start, min(stop, sums.size))
                if not declared and figures["scale"] <= NEGLIGIBLE * top:
                    continue  # numerically zero: the whole-output figures cover it
                entry = {"axis": axis, "start": start, "stop": min(stop, sums.size),
                         "metric": metric, "declared": declared is not None, **figures}
                if metric == "top1":
                    entry["top1"] = self.agree[start, stop] / max(self.rows[start, stop], 1)
                out.append(entry)
        return out


def _bands(peaks: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous runs of indices on the axis's largest scale and of those under 1/BAND of
    it; nothing when every index shares one scale (the whole output then says it all)."""
    top = float(peaks.max()) if peaks.size else 0.0
    if top == 0:
        return []
    small = peaks < top / BAND
    if not small.any():
        return []
    edges = [0, *(np.flatnonzero(small[1:] != small[:-1]) + 1).tolist(), len(peaks)]
    return list(zip(edges, edges[1:]))


def slice_label(output: str, rank: int, axis: int, start: int, stop: int) -> str:
    """`output0[:, 4:84, :]`: the slice in numpy's spelling."""
    parts = [f"{start}:{stop}" if a == axis else ":" for a in range(rank)]
    return f"{output}[{', '.join(parts)}]"


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
                                           evaluation.built_facts.file_size + original.stat().st_size))
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
                                "its weights, not on outputs")
        if result["min_cosine"] < thresholds.min_cosine:
            evaluation.reject(f"weight cosine similarity "
                              f"{_cosine_below(result['min_cosine'], thresholds.min_cosine)} < "
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
        models += [(e.candidate.label, e.built_path, _candidate_plan(plan, e.input_map),
                    e.built_facts.file_size) for e in batch]
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
    flagged = [e for e in viable if e.timed["verdict"] == REGRESSION]
    if flagged:
        # A slowdown must survive a second, independent measurement before it rejects.
        try:
            again = run(flagged)
            _store_latency(flagged, again, settings, confirmation=True)
        except MeasurementError:
            pass
    for evaluation in viable:
        evaluation.timed["reference_ms"] = reference_ms
        if evaluation.timed["verdict"] == REGRESSION:
            info = evaluation.timed
            evaluation.reject(f"slower: x{info['ratio']:.2f} [{info['ci'][0]:.2f}, "
                              f"{info['ci'][1]:.2f}] of the original's latency, p = "
                              f"{info['p_value']:.2g}")
    return None


def peak_memory(evaluations: list[Evaluation], original: Path, original_facts: ModelFacts,
                plan, settings: LatencyConfig) -> str | None:
    """Measure the peak memory of the original and of every candidate still accepted after
    latency (rejected ones cannot win, and each measurement is a fresh process), as `check`
    measures it, into their facts' measured["peak_memory"], so that `check_budgets` holds them
    to `max-peak-memory` and the table shows the change. Returns a note when the original
    could not be measured."""
    from bloatguard.measure.latency import peak_memory_of_files

    standing = [e for e in evaluations if e.accepted and e.timeable]
    if not standing or original_facts.format != "onnx":
        return None
    models = [("original", original, plan, original_facts.file_size)]
    models += [(e.candidate.label, e.built_path, _candidate_plan(plan, e.input_map),
                e.built_facts.file_size) for e in standing]
    found = peak_memory_of_files(models, settings)
    for facts, value in zip([original_facts] + [e.built_facts for e in standing], found):
        facts.measured["peak_memory"] = value if isinstance(value, int) else None
    for evaluation, value in zip(standing, found[1:]):
        if isinstance(value, str):
            evaluation.notes.append(f"peak memory not measured: {value}")
    return None if isinstance(found[0], int) else f"peak memory not measured: {found[0]}"


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
    after = _metrics(evaluation.built_facts, evaluation.latency)
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
    winner = min(accepted, key=lambda e: (e.built_facts.file_size, not e.candidate.safe,
                                          e.built_facts.macs if e.built_facts.macs is not None else 0))
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
        "activation_memory": facts.metrics().get("activation_memory") if facts else None,
        "peak_memory": facts.metrics().get("peak_memory") if facts else None,
        "latency": evaluation.latency, "fidelity": evaluation.fidelity,
        "fidelity_summary": evaluation.fidelity_summary,
        "verdict": ("skipped" if evaluation.skipped else "winner" if evaluation.winner
                    else "accepted" if evaluation.accepted else "rejected"),
        "reasons": evaluation.reasons if not evaluation.skipped else [evaluation.skipped],
        "interface": evaluation.candidate.interface, "notes": evaluation.notes,
    }


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, default=str)
