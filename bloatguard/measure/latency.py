"""CPU latency (BG004): onnxruntime for ONNX, LiteRT for TFLite; absolute medians and paired
base/head comparisons.

Why the protocol looks like this (docs/architecture.md, "Latency"): CI machines are shared, so an absolute number
varies by tens of percent between runs and a pull request cannot be judged by comparing today's
head median with yesterday's base median. Instead base and head are loaded side by side in one
child process with identical session options and timed in *rounds*; each round times a block of
runs of each model (tens of milliseconds), in random order, and contributes one head/base ratio.
Whatever slowed the machine during a round slowed both sides of it. The verdict
(bloatguard.measure.stats) needs a median ratio above the minimum effect AND a significant
one-sided sign test after Holm's correction over every model compared in the run, and a flagged
regression is measured again in a fresh process (new sessions, new memory layout) before it
counts.

Each measurement runs in a child (`python -m bloatguard.measure.latency`, job as JSON on stdin)
with a timeout and an address-space limit: a model file is untrusted input to native code, and a
hang, a crash or a 16 GB allocation must become a note for that model, not a dead linter.
onnxruntime is imported only in that child.
"""

from __future__ import annotations

import os
import platform
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from bloatguard.isolate import stage

if TYPE_CHECKING:
    from bloatguard.config import Config, LatencyConfig
    from bloatguard.facts import LatencyComparison, LatencyInfo, ModelFacts
    from bloatguard.measure.feeds import FeedPlan
    from bloatguard.result import ModelResult

_MEMORY_HEADROOM = 2 * 2**30  # interpreter, onnxruntime, arenas and thread stacks
_NOT_RUNNABLE = ("pytorch", "safetensors")
# The runtime that times each runnable format (TFLite with LiteRT: `pip install bloatguard[tflite]`).
RUNTIMES = {"onnx": "onnxruntime", "tflite": "litert"}


class MeasurementError(Exception):
    """The child could not measure; the message is the note shown to the user."""


# --- the linter side ----------------------------------------------------------------------------

@dataclass
class _Side:
    label: str  # how messages name this model ("models/a.onnx", "base of models/a.onnx")
    path: Path
    plan: "FeedPlan"
    nbytes: int  # the model's bytes, external data included: they set the memory limit
    facts: "ModelFacts | None" = None  # where this side's peak memory is stored
    runtime: str = "onnxruntime"  # RUNTIMES


@dataclass
class _Job:
    result: "ModelResult"
    head: _Side
    base: _Side | None = None  # None: absolute measurement of the head only
    wants_base: bool = False  # a comparison was due (modified/renamed), whether or not it ran
    outcome: dict[str, Any] | None = None
    paired: Any = None  # stats.PairedResult of the measurement that is reported
    screening: Any = None  # the first PairedResult, when a confirmation replaced it
    confirmed: bool | None = None  # None: no confirmation was needed (or possible)
    verdict: str | None = None
    p_value: float | None = None  # Holm-adjusted, in the direction of the ratio
    comparisons: int = 0  # models compared in this run (the Holm family)
    notes: list[str] = field(default_factory=list)
    time: bool = True  # False: only peak memory is due (same bytes as the base, no latency budget)
    memory_sides: list[_Side] = field(default_factory=list)  # each measured in a child of its own


def attach_latency(results: list["ModelResult"], config: "Config",
                   progress: Callable[[int, int, str], None] | None = None) -> None:
    """Measure every ONNX model that needs it and store the numbers in its facts:
    measured["latency_ms"] (median), latency (distribution, threads, machine, or "error"), and
    for modified/renamed models latency_comparison (ratio, ci, p_value, verdict).
    `progress(index, total, text)` hears of each model as it is timed."""
    settings = config.latency
    jobs = _plan_jobs(results, config)
    timed = [job for job in jobs if job.time]
    for index, job in enumerate(timed):
        if progress:
            what = "vs base" if job.base else "absolute"
            progress(index, len(timed), f"latency: {job.result.path} ({what})")
        _run_job(job, settings)
    _decide(jobs, settings, progress)
    for job in jobs:
        if job.time:
            _store(job, settings)
    _attach_peak_memory(jobs, settings, progress)


def _plan_jobs(results: list["ModelResult"], config: "Config") -> list[_Job]:
    """Which models to time and how; models that cannot be timed get their note here."""
    jobs = []
    not_runnable = [r.facts for r in results if r.facts is not None and not r.facts.unreadable
                    and r.facts.format in _NOT_RUNNABLE and not r.same_bytes]
    if not_runnable:  # one note for the run, not the same sentence under every checkpoint
        not_runnable[0].note(
            f"latency is not measured for PyTorch or safetensors files ({len(not_runnable)} in "
            "this run): they hold weights, not a runnable graph; export to ONNX to time them")
    for result in results:
        facts = result.facts
        if facts is None or facts.unreadable or facts.format not in RUNTIMES or result.status == "deleted":
            continue
        settings_path = result.settings_path or Path(result.path)
        resolved = config.resolve(settings_path)
        memory_budget = "max-peak-memory" in resolved.budgets
        if result.same_bytes and "max-latency" not in resolved.budgets and not memory_budget:
            continue  # same bytes as the base: nothing to compare and no budget to check
        head = _side(result.path, result.head_file or facts.file, facts, config, settings_path)
        if isinstance(head, str):
            _fail(facts, head)
            if memory_budget:  # BG005 says why it cannot check the budget
                facts.measured["peak_memory"] = None
                facts.note(f"peak memory not measured: {head}")
            continue
        job = _Job(result=result, head=head, memory_sides=[head],
                   time=not result.same_bytes or "max-latency" in resolved.budgets)
        base_facts = result.base
        if (result.status in ("modified", "renamed") and not result.same_bytes and base_facts is not None
                and not base_facts.unreadable and base_facts.format == facts.format):
            job.wants_base = True
            try:
                base_file = result.base_file() if result.base_file else None
            except OSError as exc:  # writing the base blob out failed (disk full, ...)
                base_file = None
                job.notes.append(f"latency not compared with the base: cannot write it out ({exc})")
            # Settings of the head's path apply to both sides: a comparison needs the same
            # inputs, threads and options on each.
            base = _side(f"the base version of {result.path}", base_file, base_facts, config,
                         settings_path)
            if isinstance(base, str):
                if base_file is not None or not job.notes:
                    job.notes.append(f"latency not compared with the base: {base}")
            else:
                job.base = base
                job.memory_sides.append(base)
        jobs.append(job)
    return jobs


def _side(label: str, path: Path | None, facts: "ModelFacts", config: "Config",
          settings_path: Path) -> _Side | str:
    """A model ready to be timed, or why it cannot be."""
    from bloatguard.measure.feeds import FeedError, plan_feeds

    if path is None or not Path(path).is_file():
        # Happens for a git blob whose metrics came from the cache: nothing wrote its bytes out.
        return (f"the file of {label} is not available to time (its metrics came from the "
                "cache; --no-cache works around it)")
    resolved = config.resolve(settings_path)
    latency = config.latency
    try:
        plan = plan_feeds(facts.inputs, shapes=resolved.inputs, pins=resolved.pins,
                          samples=resolved.samples, int_range=latency.int_range,
                          cap=latency.feed_cap)
    except FeedError as exc:
        return str(exc)
    for note in plan.notes:
        if note not in facts.notes:  # the MAC count may have said the same (batch 1)
            facts.note(f"latency: {note}")
    return _Side(label=label, path=Path(path), plan=plan, nbytes=facts.file_size, facts=facts,
                 runtime=RUNTIMES[facts.format])


def _fail(facts: "ModelFacts", reason: str) -> None:
    facts.note(f"latency not measured: {reason}")
    facts.latency = {"error": reason}
    facts.measured.pop("latency_ms", None)


def _run_job(job: _Job, settings: "LatencyConfig") -> None:
    sides = [job.head] if job.base is None else [job.base, job.head]
    try:
        job.outcome = measure_in_child(sides, settings)
    except MeasurementError as exc:
        if job.base is None:
            job.notes.append(str(exc))
            return
        # The pair failed; the head alone may still be measurable (the base may be the culprit).
        job.notes.append(f"latency not compared with the base: {exc}")
        job.base = None
        try:
            job.outcome = measure_in_child([job.head], settings)
        except MeasurementError as head_exc:
            job.notes.append(str(head_exc))
            return
    if job.base is not None:
        from bloatguard.measure.stats import paired

        base_rounds, head_rounds = (m["round_ms"] for m in job.outcome["models"])
        job.paired = paired(base_rounds, head_rounds)


def _decide(jobs: list[_Job], settings: "LatencyConfig",
            progress: Callable[[int, int, str], None] | None) -> None:
    """Verdicts for every comparison of the run.

    p-values are corrected with Holm over all models compared (one test per model and
    direction), so a run over fifty models is not fifty chances of a false alarm. Flagged
    regressions are measured again in fresh processes and the confirmation's numbers are the
    ones reported and judged: the screening chose which models to re-measure, so its own numbers
    are biased towards large ratios, while the confirmation is independent of that choice."""
    from bloatguard.measure.stats import REGRESSION, holm, paired

    compared = [job for job in jobs if job.paired is not None]
    if not compared:
        return
    flagged = [job for job, p in zip(compared, holm([j.paired.p_regression for j in compared]))
               if job.paired.verdict(min_effect=settings.min_effect, alpha=settings.alpha,
                                     p_regression=p) == REGRESSION]
    for index, job in enumerate(flagged if settings.confirm else []):
        if progress:
            progress(index, len(flagged), f"latency: confirming {job.result.path}")
        assert job.base is not None  # a paired job has a base (_run_job)
        try:
            outcome = measure_in_child([job.base, job.head], settings)
        except MeasurementError as exc:
            job.notes.append(f"latency regression not re-measured ({exc}); reporting the first "
                             "measurement")
            continue
        job.screening, job.outcome = job.paired, outcome
        base_rounds, head_rounds = (m["round_ms"] for m in outcome["models"])
        job.paired = paired(base_rounds, head_rounds, seed=1)
    up = holm([job.paired.p_regression for job in compared])
    down = holm([job.paired.p_improvement for job in compared])
    for job, p_up, p_down in zip(compared, up, down):
        job.verdict = job.paired.verdict(min_effect=settings.min_effect, alpha=settings.alpha,
                                         p_regression=p_up, p_improvement=p_down)
        # Report the test in the direction the data point to.
        job.p_value = p_up if job.paired.ratio >= 1 else p_down
        job.comparisons = len(compared)
        if job.screening is not None:
            job.confirmed = job.verdict == REGRESSION


def _store(job: _Job, settings: "LatencyConfig") -> None:
    facts = job.result.facts
    assert facts is not None  # _plan_jobs makes jobs only for models with facts
    for note in job.notes:
        facts.note(note if note.startswith("latency") else f"latency not measured: {note}")
    if job.outcome is None:
        facts.latency = {"error": "; ".join(job.notes) or "not measured"}
        return
    models = job.outcome["models"]
    facts.measured["latency_ms"] = models[-1]["runs"]["median_ms"]
    facts.latency = _distribution(models[-1], job.outcome, settings)
    if job.paired is None:
        if job.wants_base:  # BG004 warns when a growth budget could not be checked
            facts.latency["comparison_error"] = "; ".join(
                note for note in job.notes if "compared" in note) or "not compared"
        return
    base = job.result.base
    # A paired job timed the base (_plan_jobs); _decide judged it.
    assert base is not None and job.p_value is not None and job.verdict is not None
    base.measured["latency_ms"] = models[0]["runs"]["median_ms"]
    base.latency = _distribution(models[0], job.outcome, settings)
    paired = job.paired
    comparison: LatencyComparison = {
        "ratio": round(paired.ratio, 4),
        "ci": [round(paired.ci[0], 4), round(paired.ci[1], 4)],
        "p_value": job.p_value,
        "verdict": job.verdict,
        "rounds": paired.rounds,
        "slower_rounds": paired.slower_rounds,
        "base_median_ms": models[0]["runs"]["median_ms"],
        "head_median_ms": models[-1]["runs"]["median_ms"],
        "runs_per_block": job.outcome["blocks"],  # [base, head]
        "min_effect": settings.min_effect,
        "alpha": settings.alpha,
        "comparisons": job.comparisons,
        "confirmed": job.confirmed,
    }
    if job.screening is not None:
        comparison["screening"] = {"ratio": round(job.screening.ratio, 4),
                                   "p_value": job.screening.p_regression,
                                   "rounds": job.screening.rounds}
    facts.latency_comparison = comparison
    if paired.rounds < _rounds_needed(settings.alpha, job.comparisons):
        facts.note(f"latency: only {paired.rounds} rounds fit in the time budget, too few for any "
                   f"verdict at alpha {settings.alpha:g} over {job.comparisons} comparison(s); raise "
                   "time-budget or min-rounds in [tool.bloatguard.latency]")


def _rounds_needed(alpha: float, comparisons: int) -> int:
    from bloatguard.measure.stats import min_rounds_for

    return min_rounds_for(alpha, comparisons)


def _distribution(model: dict[str, Any], outcome: dict[str, Any],
                  settings: "LatencyConfig") -> LatencyInfo:
    runs = model["runs"]
    return {
        "median_ms": runs["median_ms"], "p90_ms": runs["p90_ms"], "min_ms": runs["min_ms"],
        "iqr_ms": runs["iqr_ms"],
        # Relative spread: interquartile range / median. A few percent is a quiet machine.
        "spread": round(runs["iqr_ms"] / runs["median_ms"], 4) if runs["median_ms"] else None,
        "runs": runs["count"], "rounds": len(model["round_ms"]),
        "threads": settings.threads, "inter_op_threads": settings.inter_op_threads,
        "graph_optimization": settings.graph_optimization,
        "machine": outcome.get("machine") or machine(),
        "onnxruntime": outcome.get("onnxruntime"),
        **({"runtime": outcome["runtime"]} if outcome.get("runtime") else {}),
    }


def describe_comparison(comparison: LatencyComparison) -> str:
    """How reports show a paired comparison: "×1.12 [1.08, 1.16] regression"."""
    from bloatguard.measure.stats import BELOW_FLOOR

    low, high = comparison["ci"]
    verdict = comparison["verdict"]
    if verdict == BELOW_FLOOR:  # name the floor: "significant" alone reads like a regression
        verdict = f"significant, below the {comparison['min_effect']:.0%} effect floor"
    return f"×{comparison['ratio']:.2f} [{low:.2f}, {high:.2f}] {verdict}"


def report_json(facts: "ModelFacts | None") -> dict[str, Any] | None:
    """The JSON report's `latency` object: the head's distribution (median, p90, spread, threads,
    machine) and, with a base, the ratio, its interval, the p-value and the verdict."""
    if facts is None or facts.latency is None:
        return None
    info = facts.latency
    entry: dict[str, Any] = dict(info)
    comparison = facts.latency_comparison
    if comparison is not None:
        entry.update({key: comparison[key] for key in
                      ("ratio", "ci", "p_value", "verdict", "rounds", "confirmed")})
    return entry


def machine() -> str:
    """What an absolute number was measured on: CPU model and the CPUs this process may use."""
    name = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    name = name or platform.processor() or platform.machine() or "unknown CPU"
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{name}, {cpus} CPUs"


def measure_in_child(sides: list[_Side], settings: "LatencyConfig") -> dict[str, Any]:
    """Time one model (absolute) or a base/head pair (interleaved rounds) in a child process.
    Returns the child's result; raises MeasurementError with a readable reason."""
    from bloatguard.units import human_bytes

    budget_s = settings.time_budget_ms / 1000
    if len(sides) > 1 and settings.confirm:
        # The time budget covers a flagged pair's confirming re-measurement too, and each
        # child's start-up, loading and warm-up (about a tenth, for models of a few ms).
        budget_s *= 0.45
    timeout_s = (settings.timeout_ms / 1000 if settings.timeout_ms is not None
                 else 2 * budget_s + 60)
    memory = settings.memory_limit
    if memory is None:  # room for the weights (often copied once by onnxruntime) and the feeds
        memory = _MEMORY_HEADROOM + sum(3 * side.nbytes + 2 * side.plan.nbytes for side in sides)
    job = {
        "models": [{"label": side.label, "path": str(side.path),
                    "feeds": [feed.to_json() for feed in side.plan.feeds]} for side in sides],
        "threads": settings.threads, "inter_op_threads": settings.inter_op_threads,
        "graph_optimization": settings.graph_optimization, "warmup": settings.warmup,
        "time_budget_s": budget_s, "min_rounds": settings.min_rounds,
        "max_rounds": settings.max_rounds, "block_s": settings.block_ms / 1000,
        # Stop timing (with what has been collected) well before the parent's kill.
        "deadline_s": 0.8 * timeout_s, "memory_limit": memory, "seed": secrets.randbits(32),
        "runtime": sides[0].runtime,
    }
    from bloatguard.isolate import IsolationError, run_fresh

    try:
        # A fresh interpreter: timing measures this process alone, with nothing inherited.
        answer = run_fresh("bloatguard.measure.latency:_child_job", job, timeout=timeout_s,
                           memory=memory, env={"OMP_NUM_THREADS": str(settings.threads)})
    except IsolationError as exc:
        while_stage = f" while {exc.stage or 'starting'}"
        if str(exc).startswith("timed out"):
            raise MeasurementError(f"{exc}{while_stage} (timeout in [tool.bloatguard.latency]; a "
                                   "huge Loop trip count or input shape can cause this)") from None
        cause = (f"onnxruntime {exc}" if str(exc).startswith("crashed")
                 else f"the measuring process {exc}")
        tail = f": {exc.stderr}" if exc.stderr and not str(exc).startswith("crashed") else ""
        raise MeasurementError(f"{cause}{while_stage}{tail} (memory limit {human_bytes(memory)})") from None
    if "error" in answer:
        raise MeasurementError(answer["error"])
    return answer["result"]


# --- the child ----------------------------------------------------------------------------------

def _child_job(job: dict[str, Any]) -> dict[str, Any]:
    """The measuring child's work (run by bloatguard.isolate.run_fresh, under the memory cap):
    {"result": ...} or {"error": why}, in words for the user."""
    started = time.perf_counter()
    try:
        return {"result": _child_measure(job, started)}
    except MemoryError:
        return {"error": _out_of_memory(job)}
    except _ChildFailure as exc:
        return {"error": str(exc)}


class _ChildFailure(Exception):
    pass


def _out_of_memory(job: dict[str, Any]) -> str:
    from bloatguard.units import human_bytes

    return (f"ran out of memory: the measuring process is limited to "
            f"{human_bytes(job['memory_limit'])} of address space (memory-limit in "
            "[tool.bloatguard.latency])")


def _ort_failure(job: dict[str, Any], what: str, exc: BaseException) -> _ChildFailure:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if any(s in text for s in ("bad_alloc", "Failed to allocate", "std::bad_alloc", "MemoryError")):
        return _ChildFailure(f"{what}: {_out_of_memory(job)}")
    return _ChildFailure(f"{what}: {text[:400]}")


def _session_options(ort, job: dict[str, Any]):
    """The session options of every measurement (latency and peak memory alike)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = job["threads"]
    options.inter_op_num_threads = job["inter_op_threads"]
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = {
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[job["graph_optimization"]]
    # A spinning worker burns the CPU the other session (or a neighbour job) needs, and makes
    # times depend on how long the previous run's threads kept spinning.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


def _child_measure(job: dict[str, Any], started: float) -> dict[str, Any]:
    import gc
    import random
    import statistics

    import numpy as np

    rng = random.Random(job["seed"])
    if job.get("runtime") == "litert":
        runners, versions = _litert_runners(job, rng)
    else:
        runners, versions = _onnxruntime_runners(job, rng)
    models = job["models"]

    def run(index: int) -> float:
        label, runner, feeds = runners[index]
        start = time.perf_counter()
        _infer(job, label, runner, feeds)
        return time.perf_counter() - start

    stage("warming up")
    # Interleaved warm-up until every model ran `warmup` times and at least two blocks' worth
    # of time passed: caches, allocator arenas and CPU frequency settle before timing. A slow
    # model stops after two runs each once a fifth of the time budget is spent.
    warm: list[list[float]] = [[] for _ in runners]
    warm_start = time.perf_counter()
    while True:
        for index in range(len(runners)):
            warm[index].append(run(index))
        done, elapsed = min(len(w) for w in warm), time.perf_counter() - warm_start
        if done >= max(job["warmup"], 2) and elapsed >= 2 * job["block_s"]:
            break
        if done >= 2 and elapsed >= 0.2 * job["time_budget_s"]:
            break
    # The lower quartile of the settled half: a neighbour's burst during warm-up should not
    # shrink every block of the measurement.
    per_run = [float(np.percentile(w[len(w) // 2:], 25)) for w in warm]
    # Each model's block takes about block_s, so a round is a short stretch of machine time
    # shared evenly by both sides, and a round's median is not one lucky or unlucky run.
    blocks = [max(1, min(10_000, round(job["block_s"] / t))) if t > 0 else 1 for t in per_run]

    stage("timing")
    round_ms: list[list[float]] = [[] for _ in runners]
    runs: list[list[float]] = [[] for _ in runners]
    rounds_start = time.perf_counter()
    stopped = "max-rounds"
    gc.collect()
    gc.disable()  # a collection inside a block would be charged to whichever model ran
    try:
        while len(round_ms[0]) < job["max_rounds"]:
            done = len(round_ms[0])
            now = time.perf_counter()
            if done >= job["min_rounds"] and now - rounds_start >= job["time_budget_s"]:
                stopped = "time-budget"
                break
            if done and now - started >= job["deadline_s"]:
                stopped = "timeout"
                break
            order = list(range(len(runners)))
            rng.shuffle(order)
            for index in order:
                times = [run(index) for _ in range(blocks[index])]
                round_ms[index].append(statistics.median(times) * 1000)
                runs[index].extend(times)
    finally:
        gc.enable()

    def summary(times: list[float]) -> dict[str, Any]:
        ms = np.asarray(times) * 1000
        p25, median, p75, p90 = np.percentile(ms, [25, 50, 75, 90])
        return {"median_ms": round(float(median), 5), "p90_ms": round(float(p90), 5),
                "min_ms": round(float(ms.min()), 5), "iqr_ms": round(float(p75 - p25), 5),
                "count": int(ms.size)}

    return {
        "models": [{"label": model["label"], "round_ms": rounds, "runs": summary(times)}
                   for model, rounds, times in zip(models, round_ms, runs)],
        "blocks": blocks, "stopped": stopped, "elapsed_s": round(time.perf_counter() - started, 3),
        "machine": machine(), **versions,
    }


# --- peak memory (BG005) ------------------------------------------------------------------------

# Session creation and inference runs whose high-water mark is the peak: the first run sizes
# onnxruntime's arena and memory patterns, the second shows whether they keep growing.
PEAK_MEMORY_RUNS = 2
# A one-Relu model (IR 8, opset 17) that the child loads and runs before its baseline, so that
# the code pages, allocator set-up and thread pools every session pays once are not charged to
# the model. Built with onnx.helper; kept as bytes so the child need not import onnx.
_WARMUP_MODEL = (b'\x08\x08\x12\x00:3\n\x0c\n\x01x\x12\x01y"\x04Relu\x12\x01wZ\x0f\n\x01x\x12\n\n\x08\x08'
                 b'\x01\x12\x04\n\x02\x08\x01b\x0f\n\x01y\x12\n\n\x08\x08\x01\x12\x04\n\x02\x08\x01B\x04\n\x00\x10\x11')


def _attach_peak_memory(jobs: list[_Job], settings: "LatencyConfig",
                        progress: Callable[[int, int, str], None] | None) -> None:
    """Measure each side's peak memory in a fresh process of its own (the base's allocations
    must not inflate the head's high-water mark, nor the other way round) and store it in that
    side's facts as measured["peak_memory"], None with a note when it cannot be measured."""
    sides = [side for job in jobs for side in job.memory_sides if side.facts is not None]
    for index, side in enumerate(sides):
        assert side.facts is not None  # `sides` holds the sides with facts
        if progress:
            progress(index, len(sides), f"peak memory: {side.label}")
        try:
            side.facts.measured["peak_memory"] = measure_peak_memory(side, settings)
        except MeasurementError as exc:
            side.facts.measured["peak_memory"] = None
            side.facts.note(f"peak memory not measured: {exc}")


def measure_peak_memory(side: _Side, settings: "LatencyConfig") -> int:
    """The resident memory (bytes) that creating one onnxruntime session of `side` and running
    it PEAK_MEMORY_RUNS times costs a fresh process beyond its baseline (interpreter, numpy and
    onnxruntime imported, a warm-up session created and dropped), with latency's session
    options. Raises MeasurementError with a readable reason."""
    from bloatguard.isolate import IsolationError, run_fresh
    from bloatguard.units import human_bytes

    memory = settings.memory_limit
    if memory is None:  # room for the weights, the feeds, and what the graph computes from them
        activation = side.facts.measured.get("activation_memory") if side.facts else None
        memory = (_MEMORY_HEADROOM + 3 * side.nbytes + 2 * side.plan.nbytes
                  + 2 * (activation if isinstance(activation, int) else 0))
    timeout_s = (settings.timeout_ms / 1000 if settings.timeout_ms is not None
                 else 2 * settings.time_budget_ms / 1000 + 60)
    job = {"path": str(side.path), "label": side.label, "runtime": side.runtime,
           "feeds": [feed.to_json() for feed in side.plan.feeds],
           "threads": settings.threads, "inter_op_threads": settings.inter_op_threads,
           "graph_optimization": settings.graph_optimization, "runs": PEAK_MEMORY_RUNS,
           "memory_limit": memory}
    try:
        answer = run_fresh("bloatguard.measure.latency:_memory_child", job, timeout=timeout_s,
                           memory=memory, env={"OMP_NUM_THREADS": str(settings.threads)})
    except IsolationError as exc:
        while_stage = f" while {exc.stage or 'starting'}"
        tail = f": {exc.stderr}" if exc.stderr and not str(exc).startswith("crashed") else ""
        raise MeasurementError(f"the measuring process {exc}{while_stage}{tail} (memory limit "
                               f"{human_bytes(memory)})") from None
    if "error" in answer:
        raise MeasurementError(answer["error"])
    return int(answer["result"]["peak_bytes"])


def _memory_child(job: dict[str, Any]) -> dict[str, Any]:
    """The peak-memory child's work: {"result": {...}} or {"error": why}."""
    try:
        return {"result": _child_peak(job)}
    except MemoryError:
        return {"error": _out_of_memory(job)}
    except _ChildFailure as exc:
        return {"error": str(exc)}


def _child_peak(job: dict[str, Any]) -> dict[str, Any]:
    import gc

    from bloatguard.measure.feeds import Feed, materialize

    load = (_load_litert if job.get("runtime") == "litert" else _load_onnxruntime)(job)
    gc.collect()
    reset = _reset_high_water_mark()
    before = _resident()
    label = job["label"]
    stage(f"loading {label}")
    run = load(job)
    stage(f"preparing inputs of {label}")
    try:
        feeds = materialize([Feed.from_json(feed) for feed in job["feeds"]])
    except MemoryError:
        raise
    except Exception as exc:
        raise _ChildFailure(f"cannot build the inputs of {label}: {type(exc).__name__}: {exc}") from None
    stage("running")
    for _ in range(job["runs"]):
        _infer(job, label, run, feeds)
    peak = _high_water_mark()
    if peak is None or before is None:
        raise _ChildFailure("this system reports no resident memory high-water mark "
                            "(/proc/self/status VmHWM)")
    if not reset:
        # The mark could not be reset: the imports' transient peak may hide part of the
        # session's, so the figure is a lower bound; say so rather than guess.
        raise _ChildFailure("the resident memory high-water mark cannot be reset on this system "
                            "(/proc/self/clear_refs), so the session's own peak cannot be told "
                            "from the process's start-up")
    return {"peak_bytes": max(0, peak - before), "baseline_bytes": before, "high_water_bytes": peak}


def _load_onnxruntime(job: dict[str, Any]):
    """Import onnxruntime and warm it up on a one-Relu model (its code pages, allocator and
    thread pools are not the model's); returns job -> the model's session.run."""
    stage("importing onnxruntime")
    import numpy as np
    import onnxruntime as ort

    stage("warming up onnxruntime")
    try:
        warmup = ort.InferenceSession(_WARMUP_MODEL, sess_options=_session_options(ort, job),
                                      providers=["CPUExecutionProvider"])
        warmup.run(None, {"x": np.zeros(1, dtype=np.float32)})
        del warmup
    except Exception:  # noqa: BLE001 - only a warm-up: the baseline is then a little lower
        pass

    def load(job: dict[str, Any]):
        try:
            return ort.InferenceSession(job["path"], sess_options=_session_options(ort, job),
                                        providers=["CPUExecutionProvider"]).run
        except MemoryError:
            raise
        except Exception as exc:  # onnxruntime raises its own exception types
            raise _ort_failure(job, f"onnxruntime cannot load {job['label']}", exc) from None

    return load


def _load_litert(job: dict[str, Any]):
    """Import LiteRT (before the baseline, like onnxruntime's warm-up); returns job -> the
    model's interpreter, allocated, as run(None, feeds)."""
    import random

    stage("importing LiteRT")
    try:
        import ai_edge_litert.interpreter  # noqa: F401 - imported now, not charged to the model
    except ImportError:
        raise _ChildFailure("LiteRT is not installed: `pip install bloatguard[tflite]` "
                            "(ai-edge-litert) measures TFLite models") from None

    def load(job: dict[str, Any]):
        # LiteRT binds the inputs to the interpreter: the runner is built with the job's feeds.
        model = {"label": job["label"], "path": job["path"], "feeds": job["feeds"]}
        runners, _ = _litert_runners({**job, "models": [model]}, random.Random(0))
        return runners[0][1]

    return load


def _proc_status(field_name: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _resident() -> int | None:
    return _proc_status("VmRSS")


def _high_water_mark() -> int | None:
    return _proc_status("VmHWM")


def _infer(job: dict[str, Any], label: str, run, feeds) -> None:
    """One inference, a runtime's failure turned into the one-line reason the user sees."""
    try:
        run(None, feeds)
    except MemoryError:
        raise
    except Exception as exc:
        raise _ort_failure(job, f"inference failed on {label} with generated inputs (pin "
                           "meaningful values in [tool.bloatguard.latency.values] or give a "
                           "samples file)", exc) from None


def _reset_high_water_mark() -> bool:
    """Set VmHWM to the current VmRSS (Linux >= 4.0: writing 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
    except OSError:
        return False
    peak, now = _high_water_mark(), _resident()
    return peak is not None and now is not None and peak <= now + 64 * 1024


def _onnxruntime_runners(job: dict[str, Any], rng) -> tuple[list, dict[str, Any]]:
    """(label, run(None, feeds), feeds) per model, in onnxruntime sessions; and the version."""
    from bloatguard.measure.feeds import Feed, materialize

    stage("importing onnxruntime")
    import onnxruntime as ort

    options = _session_options(ort, job)

    models = job["models"]
    sessions: list[Any] = [None] * len(models)
    load_order = list(range(len(models)))
    rng.shuffle(load_order)  # which session gets the fresher memory is left to chance
    for index in load_order:
        label = models[index]["label"]
        stage(f"loading {label}")
        try:
            sessions[index] = ort.InferenceSession(models[index]["path"], sess_options=options,
                                                   providers=["CPUExecutionProvider"])
        except MemoryError:
            raise
        except Exception as exc:  # onnxruntime raises its own exception types
            raise _ort_failure(job, f"onnxruntime cannot load {label}", exc) from None

    runners = []
    for model, session in zip(models, sessions):
        stage(f"preparing inputs of {model['label']}")
        try:
            feeds = materialize([Feed.from_json(feed) for feed in model["feeds"]])
        except MemoryError:
            raise
        except Exception as exc:  # a bad samples file, a pinned value out of the dtype's range
            raise _ChildFailure(f"cannot build the inputs of {model['label']}: "
                                f"{type(exc).__name__}: {exc}") from None
        runners.append((model["label"], session.run, feeds))

    return runners, {"onnxruntime": ort.__version__}


def _litert_runners(job: dict[str, Any], rng) -> tuple[list, dict[str, Any]]:
    """(label, run(None, feeds), feeds) per TFLite model, in LiteRT interpreters with the job's
    thread count (XNNPACK, as LiteRT runs on CPUs); and the runtime's version. A model whose
    custom ops the interpreter cannot resolve is a failure with that reason, not a crash."""
    from importlib import metadata

    from bloatguard.measure.feeds import Feed, materialize

    stage("importing LiteRT")
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise _ChildFailure("LiteRT is not installed: `pip install bloatguard[tflite]` "
                            "(ai-edge-litert) times TFLite models") from None
    models = job["models"]
    interpreters: list[Any] = [None] * len(models)
    load_order = list(range(len(models)))
    rng.shuffle(load_order)
    for index in load_order:
        label = models[index]["label"]
        stage(f"loading {label}")
        try:
            interpreter = Interpreter(model_path=models[index]["path"], num_threads=job["threads"])
            interpreter.allocate_tensors()
        except MemoryError:
            raise
        except Exception as exc:  # LiteRT raises RuntimeError/ValueError with its log text
            text = str(exc)
            if "custom op" in text.lower():
                first = next((line for line in text.splitlines() if "custom op" in line.lower()), text)
                raise _ChildFailure(f"LiteRT cannot run {label}: {first.strip()[:300]} (a custom op "
                                    "this interpreter does not have)") from None
            raise _ort_failure(job, f"LiteRT cannot load {label}", exc) from None
        interpreters[index] = interpreter
    runners = []
    for model, interpreter in zip(models, interpreters):
        stage(f"preparing inputs of {model['label']}")
        try:
            feeds = materialize([Feed.from_json(feed) for feed in model["feeds"]])
            runners.append((model["label"], _litert_run(interpreter, feeds), feeds))
        except MemoryError:
            raise
        except Exception as exc:
            raise _ChildFailure(f"cannot build the inputs of {model['label']}: "
                                f"{type(exc).__name__}: {exc}") from None
    return runners, {"onnxruntime": None,
                     "runtime": f"ai-edge-litert {metadata.version('ai-edge-litert')}"}


def _litert_run(interpreter, feeds: dict[str, Any]):
    """A runner with onnxruntime's call shape: sets the inputs (by tensor name, resizing a
    dynamic one to the feed's shape) and invokes the interpreter."""
    details = {detail["name"]: detail for detail in interpreter.get_input_details()}
    resized = False
    for name, array in feeds.items():
        if name not in details:
            raise ValueError(f"the interpreter has no input {name!r}")
        if tuple(details[name]["shape"]) != array.shape:
            interpreter.resize_tensor_input(details[name]["index"], list(array.shape))
            resized = True
    if resized:
        interpreter.allocate_tensors()
    slots = [(details[name]["index"], array) for name, array in feeds.items()]

    def run(_outputs, _feeds) -> None:
        for index, array in slots:
            interpreter.set_tensor(index, array)
        interpreter.invoke()

    return run


# --- comparing model files (bloatguard fix) ------------------------------------------------------

def peak_memory_of_files(models: list[tuple[str, Path, "FeedPlan", int]],
                         settings: "LatencyConfig") -> list[int | str]:
    """The peak memory (bytes) of each (label, path, feed plan, bytes incl. external data), each
    in a fresh process of its own as `check` measures it; the reason instead where it cannot
    be measured. For `bloatguard fix`, which holds its candidates to `max-peak-memory`."""
    found: list[int | str] = []
    for label, path, plan, nbytes in models:
        try:
            found.append(measure_peak_memory(_Side(label=label, path=Path(path), plan=plan,
                                                   nbytes=nbytes), settings))
        except MeasurementError as exc:
            found.append(str(exc))
    return found


def compare_files(models: list[tuple[str, Path, "FeedPlan", int]],
                  settings: "LatencyConfig") -> dict[str, Any]:
    """Time a model and variants of it in one child, with the same interleaved protocol as a
    base/head comparison: every round times a block of runs of each model, in random order,
    so each variant gets one ratio per round against the first model under the same machine
    conditions. `models` holds (label, path, feed plan, bytes incl. external data); the first
    is the reference. Returns {"reference_ms": median, "variants": [{"paired":
    stats.PairedResult, "median_ms": median}, ...], "outcome": the child's result}. p-values
    are not corrected for the number of variants; the caller decides. Raises
    MeasurementError."""
    from dataclasses import replace

    from bloatguard.measure.stats import paired

    sides = [_Side(label=label, path=Path(path), plan=plan, nbytes=nbytes)
             for label, path, plan, nbytes in models]
    # One child holds all models; a confirmation, if wanted, is the caller's second call.
    outcome = measure_in_child(sides, replace(settings, confirm=False))
    measured = outcome["models"]
    reference = measured[0]["round_ms"]
    return {"reference_ms": measured[0]["runs"]["median_ms"],
            "variants": [{"paired": paired(reference, model["round_ms"]),
                          "median_ms": model["runs"]["median_ms"]} for model in measured[1:]],
            "outcome": outcome}

