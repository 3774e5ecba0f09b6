"""`bloatguard compare BASE CANDIDATE`: the verifier of `bloatguard fix`, applied to two models
a user made elsewhere (their own quantization pipeline, a re-export, a pruned checkpoint).

The candidate is judged exactly as a lossy `fix` candidate is (bloatguard.fix.verify): size,
parameters and MACs read by the same readers as `check`, the I/O signature, fidelity on the
same inputs (samples, else random inputs that respect the base's inputs), per output and per
output slice, latency timed interleaved with the base in one child, and the base's budgets.
Size is reported, not judged: a re-export may keep its size and still be worth checking.

Exit codes: 0 the candidate passes every threshold; 1 it does not (each reason is listed);
2 the comparison could not be made (a file that cannot be read, a usage or config error, a
base onnxruntime cannot run, latency that could not be measured).

Imports stay light at module level: `bloatguard --help` builds this parser.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXIT_PASS, EXIT_FAIL, EXIT_ERROR = 0, 1, 2
_RUNNABLE = ("onnx", "pytorch")  # a graph to run, or a state dict whose weights compare


def add_parser(subcommands) -> argparse.ArgumentParser:
    from bloatguard.fix.options import add_verification_options

    compare = subcommands.add_parser(
        "compare", help="verify a model made elsewhere against its base, as fix verifies its own",
        description="Judge CANDIDATE (your own quantization, pruning or re-export of BASE) with "
                    "the verifier of `bloatguard fix`: size, params, MACs, I/O signature, output "
                    "fidelity per output and per output slice, latency interleaved with BASE, "
                    "budgets. Exit 0 when it passes, 1 when it does not, 2 on error.")
    compare.add_argument("base", type=Path, metavar="BASE", help="the model as it was")
    compare.add_argument("candidate", type=Path, metavar="CANDIDATE", help="the changed model")
    compare.add_argument("--samples", type=Path, metavar="FILE.npz",
                         help="inputs for the fidelity check (default: BASE's "
                              "[tool.bloatguard.samples], else random inputs)")
    compare.add_argument("--config", type=Path, metavar="FILE",
                         help="config file (default: found from BASE, as for check); BASE's "
                              "input shapes, samples, fix thresholds and budgets apply")
    add_verification_options(compare, candidates="models", unsafe="")
    compare.add_argument("--output-format", choices=("text", "json"), default="text")
    return compare


@dataclass
class Comparison:
    base: str  # display paths
    candidate: str
    base_facts: Any  # ModelFacts
    evaluation: Any  # fix.verify.Evaluation of the candidate
    notes: list[str] = field(default_factory=list)
    signature_change: str | None = None  # how the candidate's I/O differ, when they do

    @property
    def passed(self) -> bool:
        return self.evaluation.accepted


def run(args: argparse.Namespace) -> int:
    from bloatguard import config as config_files
    from bloatguard.errors import BloatguardError
    from bloatguard.fix.options import latency_settings, threshold_options

    for path, role in ((args.base, "BASE"), (args.candidate, "CANDIDATE")):
        if not path.is_file():
            raise BloatguardError(f"{path}: no such file ({role})")
    if args.samples is not None and not args.samples.is_file():
        raise BloatguardError(f"{args.samples}: samples file not found (--samples)")
    # BASE's settings apply to both models: found from BASE, as `check BASE` finds them.
    config = config_files.load(args.config or config_files.find_config_file(args.base))
    latency = latency_settings(config, args.latency_budget) if args.latency else None
    # The user's own file: a link they made is followed here, once (samples.load opens no links).
    comparison = compare(args.base, args.candidate, config,
                         samples=args.samples.resolve() if args.samples is not None else None,
                         overrides=threshold_options(args), latency=latency)
    if args.output_format == "json":
        from bloatguard.fix.verify import dumps

        sys.stdout.write(dumps(to_json(comparison)) + "\n")
    else:
        sys.stdout.write(render(comparison))
    return EXIT_PASS if comparison.passed else EXIT_FAIL


def compare(base: Path, candidate: Path, config, *, samples: Path | None,
            overrides: dict[str, float], latency) -> Comparison:
    """Verify `candidate` against `base`; `latency`: LatencyConfig, or None not to time them.
    Raises BloatguardError when the comparison cannot be made."""
    from bloatguard.engine import display_path
    from bloatguard.fix import verify
    from bloatguard.fix.candidates import Candidate
    from bloatguard.fix.inputs import check_shapes

    base_facts, candidate_facts = _read(base, candidate, config)
    shown = display_path(base)
    if base_facts.format == "onnx":
        check_shapes(base_facts, base, config, shown)
    thresholds = verify.Thresholds.for_model(shown, base_facts, config.resolve(base).fix, overrides)
    evaluation = verify.Evaluation(Candidate("candidate", display_path(candidate), [], safe=False),
                                   path=candidate, facts=candidate_facts)
    comparison = Comparison(shown, display_path(candidate), base_facts, evaluation)
    comparison.signature_change = verify.check_signature(evaluation, base_facts)
    with tempfile.TemporaryDirectory(prefix="bloatguard-compare-") as workspace:
        _run_both(comparison, base, config, samples, Path(workspace), thresholds, latency)
    verify.check_budgets(evaluation, base_facts, config.resolve(base).budgets)
    return comparison


def _read(base: Path, candidate: Path, config):
    """Both models' facts, MACs counted with BASE's configured input shapes for both."""
    from bloatguard.engine import MacsBatch, display_path, measure
    from bloatguard.errors import BloatguardError

    batch = MacsBatch()
    facts = [measure(base, config, display_path(base), macs=batch),
             measure(candidate, config, display_path(candidate), settings_path=base, macs=batch)]
    batch.run()
    for one, role in zip(facts, ("BASE", "CANDIDATE")):
        if one.unreadable:
            raise BloatguardError(f"{one.path}: cannot read the model ({role}): {one.unreadable}")
        if one.unsafe_globals:
            raise BloatguardError(f"{one.path}: an unsafe pickle (BG900); bloatguard will not "
                                  f"load it ({role})")
    formats = [one.format for one in facts]
    if formats[0] != formats[1] or formats[0] not in _RUNNABLE:
        raise BloatguardError(f"compare needs two ONNX models or two PyTorch state dicts; "
                              f"{facts[0].path} is {formats[0]}, {facts[1].path} is {formats[1]}")
    return facts


def _run_both(comparison: Comparison, base: Path, config, samples: Path | None, workspace: Path,
              thresholds, latency) -> None:
    """Fidelity, then latency: onnxruntime runs both models in isolated children."""
    from bloatguard.errors import BloatguardError
    from bloatguard.fix import verify
    from bloatguard.fix.inputs import InputError, prepare

    facts, evaluation = comparison.base_facts, comparison.evaluation
    inputs = None
    if facts.format == "onnx":
        try:
            inputs = prepare(facts, base, config, samples, workspace)
        except InputError as exc:
            raise BloatguardError(f"{comparison.base}: cannot make inputs to compare the models "
                                  f"with: {exc}") from None
        comparison.notes += [f"fidelity inputs: {inputs.source}", *inputs.notes]
        if inputs.random:
            comparison.notes.append("fidelity is measured on random inputs: give real ones with "
                                    "--samples FILE.npz or [tool.bloatguard.samples]")
    error = verify.fidelity([evaluation], base, facts, inputs.fidelity if inputs else None,
                            thresholds, verify.timeout_for(facts))
    if error:
        raise BloatguardError(f"{comparison.base}: {error}")
    if facts.format != "onnx":
        comparison.notes.append("latency is not measured for PyTorch state dicts (no runnable graph)")
    elif latency is None:
        comparison.notes.append("latency not measured (--no-latency)")
        evaluation.latency_note = "not measured"
    else:
        assert inputs is not None  # prepared above for every ONNX model
        note = verify.latency([evaluation], base, facts, inputs.plan, latency)
        if evaluation.timeable and evaluation.latency is None:
            raise BloatguardError(f"{comparison.candidate}: {note}")


# --- reports --------------------------------------------------------------------------------

def _metrics(comparison: Comparison) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every metric the registry declares, for both models; latency from this run's
    interleaved timing (the medians of the same rounds as the ratio)."""
    evaluation = comparison.evaluation
    base, candidate = comparison.base_facts.metrics(), evaluation.facts.metrics()
    if evaluation.latency:
        base["latency_ms"] = evaluation.latency["reference_ms"]
        candidate["latency_ms"] = evaluation.latency["median_ms"]
    return base, candidate


def render(comparison: Comparison) -> str:
    from tabulate import tabulate

    from bloatguard.metrics import METRICS
    from bloatguard.units import format_amount

    evaluation = comparison.evaluation
    before, after = _metrics(comparison)
    rows = []
    for metric in METRICS:
        was, now = before.get(metric.key), after.get(metric.key)
        if was is None and now is None:
            continue
        change = _change(metric, was, now, evaluation)
        rows.append([metric.label, format_amount(was, metric.kind) if was is not None else "-",
                     format_amount(now, metric.kind) if now is not None else "-", change])
    table = tabulate(rows, headers=["metric", "base", "candidate", "change"], tablefmt="simple",
                     disable_numparse=True)
    lines = [f"{comparison.base} -> {comparison.candidate}"]
    lines += ["  " + line for line in table.splitlines()]
    lines += [f"  {note}" for note in comparison.notes]
    lines.append(f"  I/O signature: {_signature(comparison)}")
    lines.append(f"  fidelity: {evaluation.fidelity_summary or 'not measured'}")
    lines += [f"  {note}" for note in evaluation.notes]
    if comparison.passed:
        lines.append("  => PASS: the candidate meets every threshold")
    else:
        lines += [f"  - {reason}" for reason in evaluation.reasons]
        lines.append(f"  => FAIL: {len(evaluation.reasons)} check(s) failed")
    return "\n".join(lines) + "\n"


def _change(metric, was, now, evaluation) -> str:
    from bloatguard.fix.table import latency_cell, size_ratio
    from bloatguard.units import format_amount

    if metric.key == "latency_ms":
        return latency_cell(evaluation)
    if was is None or now is None:
        return "-"
    if now == was:
        return "same"
    if metric.key == "file_size" and now < was:
        return size_ratio(was, now)
    delta = f"{'+' if now > was else '-'}{format_amount(abs(now - was), metric.kind)}"
    return f"{delta} ({(now - was) / was:+.1%})" if was else delta


def _signature(comparison: Comparison) -> str:
    if comparison.signature_change:
        return f"changed: {comparison.signature_change}"
    if comparison.base_facts.format != "onnx":
        return "n/a (state dicts: the same tensor names, shapes and dtypes are checked)"
    return f"same ({_values(comparison.base_facts)})"


def _values(facts) -> str:
    def one(value) -> str:
        shape = "?" if value.shape is None else "[" + ", ".join(
            "?" if d is None else str(d) for d in value.shape) + "]"
        return f"{value.name} {value.dtype} {shape}"

    return (", ".join(map(one, facts.inputs)) + " -> " + ", ".join(map(one, facts.outputs)))


def to_json(comparison: Comparison) -> dict[str, Any]:
    evaluation = comparison.evaluation
    before, after = _metrics(comparison)
    return {
        "version": 1,
        "base": {"path": comparison.base, "format": comparison.base_facts.format,
                 "metrics": before},
        "candidate": {"path": comparison.candidate, "format": evaluation.facts.format,
                      "metrics": after},
        "verdict": "pass" if comparison.passed else "fail",
        "reasons": evaluation.reasons,
        "signature": {"same": comparison.signature_change is None,
                      "change": comparison.signature_change,
                      "inputs": [value.to_json() for value in evaluation.facts.inputs],
                      "outputs": [value.to_json() for value in evaluation.facts.outputs]},
        "fidelity": evaluation.fidelity, "fidelity_summary": evaluation.fidelity_summary,
        "latency": evaluation.latency,
        "notes": comparison.notes + evaluation.notes,
    }
