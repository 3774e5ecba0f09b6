"""`bloatguard fix PATH...`: the CLI and the per-model flow.

For each model: check it (the hints come from the same rules as `bloatguard check`), plan
candidates, build them in isolated children, verify them against the original, keep the
smallest that passes, and write it atomically (unless --dry-run). Every candidate tried is
listed with its verdict, so a fix that was not applied is always explained.

Exit codes: 0 when nothing needed fixing, or fixes were applied (or reported with --dry-run);
1 with --exit-non-zero-on-fix when a file was rewritten (the pre-commit convention: the hook
changed files, so the commit must be retried with them); 2 when a model could not be read,
verified inputs could not be made, or a write was refused or failed.

Imports stay light at module level: `bloatguard --help` builds this parser.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bloatguard.fix.options import add_verification_options, latency_settings, nonnegative, share, threshold_options

EXIT_OK, EXIT_FIXED, EXIT_ERROR = 0, 1, 2


def add_parser(subcommands) -> argparse.ArgumentParser:
    fix = subcommands.add_parser(
        "fix", help="apply the fixes the findings suggest, verified before they are kept",
        description="Try the fixes the findings suggest on a copy of each model, verify each "
                    "candidate against the original (size, MACs, I/O signature, output fidelity, "
                    "latency, budgets) and keep the smallest that passes. Safe fixes keep the "
                    "outputs; quantization, pruning and feature removal need --unsafe-fixes.")
    fix.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="model files or directories")
    fix.add_argument("--unsafe-fixes", action="store_true",
                     help="also try fixes that change outputs or the interface (quantization, "
                          "fp16, pruning, removing input features)")
    fix.add_argument("--dry-run", action="store_true",
                     help="print the candidate table and write nothing")
    fix.add_argument("--samples", type=Path, metavar="FILE.npz",
                     help="inputs for fidelity checks and static-quantization calibration "
                          "(default: [tool.bloatguard.samples], else random inputs)")
    fix.add_argument("--output", type=Path, metavar="PATH",
                     help="write the fixed model here (a directory with several models) "
                          "instead of replacing the original")
    fix.add_argument("--force", action="store_true",
                     help="overwrite files whose current bytes git does not have (untracked, or "
                          "changed and not staged)")
    fix.add_argument("--config", type=Path, metavar="FILE", help="config file (as for check)")
    fix.add_argument("--only", action="append", metavar="KINDS",
                     help="only try these fix kinds (comma-separated, e.g. quantize-static)")
    add_verification_options(fix, candidates="candidates", unsafe="unsafe fixes: ")
    fix.add_argument("--tolerance", type=nonnegative, metavar="X",
                     help="safe fixes: largest output change, relative to the output's largest "
                          "magnitude (default: 1e-4, or tolerance in [tool.bloatguard.fix.\"<glob>\"])")
    fix.add_argument("--prune-sparsity", type=share, default=0.5, metavar="X",
                     help="share of weights magnitude pruning zeroes in a state dict (default: 0.5)")
    fix.add_argument("--output-format", choices=("text", "json"), default="text")
    fix.add_argument("--exit-non-zero-on-fix", action="store_true",
                     help="exit 1 when a file was rewritten (for the pre-commit hook)")
    return fix


@dataclass
class Options:
    unsafe: bool
    dry_run: bool
    force: bool
    samples: Path | None
    output: Path | None
    only: set[str] | None
    latency: bool
    latency_settings: Any  # LatencyConfig: [tool.bloatguard.latency] with --latency-budget
    thresholds: dict[str, float]  # from the CLI; merged with the config per model
    prune_sparsity: float


@dataclass
class Outcome:
    path: str
    status: str  # clean | fixed | would-fix | unfixed | error
    message: str
    report: str = ""
    data: dict[str, Any] = field(default_factory=dict)


def run(args: argparse.Namespace) -> int:
    from bloatguard.app import load_config
    from bloatguard.discover import discover
    from bloatguard.errors import BloatguardError
    from bloatguard.fix.kinds import APPLICABLE

    only = None
    if args.only:
        only = {kind.strip() for value in args.only for kind in value.split(",") if kind.strip()}
        unknown = sorted(only - APPLICABLE)
        if unknown:
            raise BloatguardError(f"--only: unknown fix kinds {unknown}; known: "
                                  + ", ".join(sorted(APPLICABLE)))
    if args.samples is not None and not args.samples.is_file():
        raise BloatguardError(f"{args.samples}: samples file not found (--samples)")
    config = load_config(args.config, args.paths)
    models = discover(args.paths, config)
    if args.output is not None and not args.output.is_dir() and not args.output.parent.is_dir():
        raise BloatguardError(f"--output {args.output}: the directory {args.output.parent} does "
                              "not exist; create it first")
    if args.output is not None and len(models) > 1 and not args.output.is_dir():
        raise BloatguardError("--output names one file; with several models, give an existing "
                              "directory")
    options = Options(
        unsafe=args.unsafe_fixes, dry_run=args.dry_run, force=args.force,
        # The user's own file: a link they made is followed here, once (samples.load opens no links).
        samples=args.samples.resolve() if args.samples is not None else None,
        output=args.output, only=only, latency=args.latency,
        latency_settings=latency_settings(config, args.latency_budget),
        thresholds=threshold_options(args), prune_sparsity=args.prune_sparsity)
    if not models:
        print("bloatguard fix: no model files found", file=sys.stderr)
        return EXIT_OK
    outcomes = []
    for path in models:
        outcome = fix_model(path, config, options)
        outcomes.append(outcome)
        if args.output_format == "text":
            sys.stdout.write(outcome.report + f"  => {outcome.message}\n\n")
            sys.stdout.flush()
        if outcome.status == "error":
            print(f"bloatguard: {outcome.path}: {outcome.message}", file=sys.stderr)
    if args.output_format == "json":
        from bloatguard.fix.verify import dumps

        sys.stdout.write(dumps({"version": 1, "models": [o.data for o in outcomes]}) + "\n")
    if any(o.status == "error" for o in outcomes):
        return EXIT_ERROR
    if args.exit_non_zero_on_fix and any(o.status == "fixed" for o in outcomes):
        return EXIT_FIXED
    return EXIT_OK


def _target(path: Path, output: Path | None) -> Path:
    if output is None:
        return path
    return output / path.name if output.is_dir() else output


def fix_model(path: Path, config, options: Options) -> Outcome:
    """Check, plan, build, verify, choose and (unless a dry run) write one model."""
    from bloatguard import engine
    from bloatguard.fix import candidates as plans
    from bloatguard.fix import write
    from bloatguard.fix.inputs import check_shapes

    display = engine.display_path(path)
    target = _target(path, options.output)
    if not options.dry_run:
        write.clean_stale(target.parent)
    [result] = engine.check([path], config, engine.Selection(), latency=False)
    facts = result.facts
    assert facts is not None  # a file on disk is measured (None is a model deleted since a base)
    base = {"path": display, "format": facts.format, "original": facts.metrics()}
    if facts.unreadable:
        return _error(display, f"cannot read the model: {facts.unreadable}", base)
    if facts.unsafe_globals:
        return _error(display, "the file is an unsafe pickle (BG900): bloatguard will not load "
                      "it to fix it", base)
    budgets = config.resolve(path).budgets
    if facts.format not in ("onnx", "pytorch"):
        return _done(display, "clean", f"bloatguard fix has no transforms for {facts.format} "
                     "files", base, facts, targets=_targets(facts, budgets, [], options))
    if facts.format == "onnx":
        check_shapes(facts, path, config, display)
    plan = plans.plan(result.findings, facts.format, unsafe=options.unsafe, only=options.only,
                      prune_sparsity=options.prune_sparsity)
    if not plan.safe and not plan.unsafe:
        return _done(display, "clean", "nothing to fix", base, facts, plan.notes,
                     targets=_targets(facts, budgets, [], options))
    if not options.dry_run and not options.force:
        for file in [target, *_data_files(target)]:
            reason = write.uncommitted(file)
            if reason:
                return _error(display, f"refusing to overwrite {engine.display_path(file)}: it "
                              f"{reason}; commit or stage it first, or pass --force", base)
    workspace = Path(tempfile.mkdtemp(prefix="bloatguard-fix-"))
    try:
        return _evaluate(path, display, target, facts, plan, config, options, workspace, base)
    finally:
        shutil.rmtree(workspace, ignore_errors=True)


def _data_files(target: Path) -> list[Path]:
    if target.suffix.lower() != ".onnx" or not target.is_file():
        return []
    from bloatguard.formats.onnx import external_locations

    return [target.parent / location for location in external_locations(target)]


def _evaluate(path, display, target, facts, plan, config, options, workspace, base) -> Outcome:
    from bloatguard.fix import candidates as plans
    from bloatguard.fix import verify
    from bloatguard.fix.inputs import InputError, prepare

    notes = list(plan.notes)
    inputs = None
    timeout = verify.timeout_for(facts)
    thresholds = verify.Thresholds.for_model(display, facts, config.resolve(path).fix,
                                             options.thresholds)
    if facts.format == "onnx":
        try:
            inputs = prepare(facts, path, config, options.samples, workspace)
        except InputError as exc:
            return _error(display, f"cannot make inputs to verify candidates with: {exc}", base)
        notes.append(f"fidelity inputs: {inputs.source}")
        notes += inputs.notes
        if not inputs.random:
            notes.append("fidelity is measured on the calibration samples")
    # Phase 1: every safe step alone, so a step that fails is found and left out of the rest.
    singles = [verify.Evaluation(c) for c in plans.single_candidates(plan)]
    _verify_batch(singles, path, facts, inputs, config, thresholds, workspace, timeout)
    passed = [e.candidate.steps[0] for e in singles if e.accepted]
    # Phase 2: all passing safe steps chained, and the unsafe candidates on top of the safe
    # graph fixes (not the storage-only ones: quantizers need dense initializers).
    later = []
    if len(passed) > 1:
        later.append(verify.Evaluation(plans.combined(passed)))
    graph_fixes = [step for step in passed if not step.storage_only]
    unsafe = plans.unsafe_candidates(plan, graph_fixes)
    if unsafe and inputs is not None and inputs.random and any(
            s.kind == "quantize-static" for c in unsafe for s in c.steps):
        notes.append(inputs.warning)
        print(f"bloatguard: {display}: {inputs.warning}", file=sys.stderr)
    later += [verify.Evaluation(c) for c in unsafe]
    _verify_batch(later, path, facts, inputs, config, thresholds, workspace, timeout)
    evaluations = singles + later
    # Latency: everything still standing, timed together against the original.
    if options.latency and facts.format == "onnx":
        assert inputs is not None  # prepared for every ONNX model
        note = verify.latency(evaluations, path, facts, inputs.plan, options.latency_settings)
        if note:
            notes.append(note)
        note = verify.peak_memory(evaluations, path, facts, inputs.plan, options.latency_settings)
        if note:
            notes.append(note)
        base["original"] = facts.metrics()  # now with the original's peak memory
    elif facts.format == "onnx":
        notes.append("latency not measured (--no-latency)")
        for evaluation in evaluations:
            evaluation.latency_note = "not measured"
    budgets = config.resolve(path).budgets
    for evaluation in evaluations:
        verify.check_budgets(evaluation, facts, budgets)
    winner = verify.choose(evaluations)
    verified = [(e.candidate.label, e.facts) for e in evaluations if e.accepted]
    targets = _targets(facts, budgets, verified, options)
    return _finish(display, target, facts, evaluations, winner, notes, options, base, targets)


def _verify_batch(batch, path, facts, inputs, config, thresholds, workspace, timeout) -> None:
    """Build the candidates, then the checks that need no timing: size, signature, fidelity."""
    from bloatguard.fix import verify

    if not batch:
        return
    for evaluation in batch:
        _build(evaluation, path, facts, inputs, workspace, timeout)
    verify.measure(batch, path, config)
    for evaluation in batch:
        verify.check_size(evaluation, facts)
        verify.check_signature(evaluation, facts)
    # A model-level failure (onnxruntime cannot run the original) is each candidate's reason.
    verify.fidelity(batch, path, facts, inputs.fidelity if inputs else None, thresholds, timeout)


def _build(evaluation, path: Path, facts, inputs, workspace: Path, timeout: float) -> None:
    from bloatguard.fix.build import BuildError, build
    from bloatguard.fix.kinds import BY_NAME

    steps = []
    for step in evaluation.candidate.steps:
        params = dict(step.params)
        if BY_NAME[step.kind].file_to_file and inputs is not None:
            # Static quantization calibrates on the samples; every quantizer runs its result
            # on the first one, to drop a variant onnxruntime cannot load or run.
            params["calibration"] = str(inputs.calibration)
        if step.kind == "quantize-static":
            params["calibration_source"] = ("RANDOM inputs (no samples given)" if inputs.random
                                            else inputs.source)
        if step.kind == "remove-features" and inputs is not None and not inputs.random:
            params["samples"] = str(inputs.calibration)
        steps.append({"kind": step.kind, "params": params})
    directory = workspace / evaluation.id
    try:
        built = build(path, directory, facts.format, steps, external=bool(facts.external_files),
                      timeout=timeout, memory=_memory(facts))
    except BuildError as exc:
        evaluation.reject(f"could not be built: {exc}")
        return
    per_step = built["changes"]
    evaluation.changes = [change for step in per_step for change in step]
    evaluation.input_map = built["input_map"]
    # An unsafe candidate is its last step (the safe fixes under it are rows of their own).
    own = per_step[-1:] if not evaluation.candidate.safe else per_step
    if not any(own):
        evaluation.skipped = "nothing to change: the transform found nothing it can do here"
        return
    if not evaluation.candidate.safe and len(per_step) > 1:
        # Lead with what this candidate adds; the safe fixes under it have their own rows.
        evaluation.changes = per_step[-1] + [f"after the safe fixes: {step}" for steps in per_step[:-1]
                                             for step in steps]
    evaluation.path = Path(built["path"])


def _targets(facts, budgets, verified, options: Options) -> list[dict[str, Any]]:
    """Distillation targets (bloatguard.fix.distill) for the size budgets the original breaks
    and no verified candidate meets; only with --unsafe-fixes, when every fix has been tried."""
    if not options.unsafe:
        return []
    from bloatguard.fix.distill import targets

    return targets(facts, budgets, verified)


def _finish(display, target, facts, evaluations, winner, notes, options, base,
            targets=()) -> Outcome:
    from bloatguard.engine import display_path
    from bloatguard.fix import table, verify, write
    from bloatguard.units import format_amount

    status, written = "unfixed", None
    if winner is not None and winner.candidate.interface:
        notes.append(f"NOTE: the kept candidate changes the interface: {winner.candidate.interface}")
    report = table.render(display, facts, evaluations, header_notes=notes, targets=targets)
    if winner is None:
        tried = [e for e in evaluations if not e.skipped]
        message = ("no candidate passed verification; nothing written" if tried
                   else "nothing to change")
        status = "unfixed" if tried else "clean"
    else:
        size = format_amount(winner.facts.file_size, "bytes")
        factor = facts.file_size / max(winner.facts.file_size, 1)
        smaller = (f"{factor:.2f}x smaller" if factor >= 1.5
                   else f"{1 - 1 / factor:.1%} smaller" if factor > 1 else "same size")
        change = f"{format_amount(facts.file_size, 'bytes')} -> {size}, {smaller}"
        if options.dry_run:
            status, message = "would-fix", f"dry run: would keep {winner.candidate.label} ({change}); nothing written"
        else:
            try:
                written_path = write.write_model(winner.path, target, expected_params=winner.facts.params,
                                                 model_format=facts.format)
            except (OSError, write.WriteError) as exc:
                failed = _error(display, f"could not write {display_path(target)}: {exc}; the "
                                "original is untouched", base)
                failed.report = report
                return failed
            written = display_path(written_path)
            status, message = "fixed", f"wrote {written} with {winner.candidate.label} ({change})"
    data = {**base, "status": status, "message": message, "written": written, "notes": notes,
            "candidates": [verify.to_json(e, facts) for e in evaluations],
            "distillation": list(targets)}
    return Outcome(display, status, message, report, data)


def _done(display, status, message, base, facts, notes=(), targets=()) -> Outcome:
    from bloatguard.fix import table

    report = table.render(display, facts, [], header_notes=list(notes), targets=targets)
    return Outcome(display, status, message, report,
                   {**base, "status": status, "message": message, "written": None,
                    "notes": list(notes), "candidates": [], "distillation": list(targets)})


def _error(display, message, base) -> Outcome:
    return Outcome(display, "error", message, "",
                   {**base, "status": "error", "message": message, "written": None,
                    "notes": [], "candidates": [], "distillation": []})


def _memory(facts) -> int:
    return 2 * 2**30 + 6 * facts.file_size
