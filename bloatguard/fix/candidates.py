"""Which candidates to try, from the fix hints of a model's findings.

A candidate is a sequence of steps applied to the original model. Safe steps become one
candidate each, and the ones that pass verification are then chained into one more (the "all
safe fixes" candidate, usually the one kept). Each unsafe step becomes one candidate applied on top of the safe graph fixes that
passed verification, so quantization sees folded BatchNorms and no dead weights.

Steps that only change how weights are stored (sparse layout, narrower dtypes with a Cast)
are kept out of the base for unsafe candidates: onnxruntime's quantizers only quantize weights
stored as dense initializers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bloatguard.rule import Finding

# Order in which safe steps are chained: renames first, then folds that create new weights,
# then storage changes, and dead-weight removal last (it also collects what folds orphaned).
SAFE_ORDER = ("strip-dropout-identity", "fold-batchnorm", "fold-constants", "prune-channels",
              "deduplicate-weights", "remove-dead-weights", "narrow-dtypes", "prune-weights")
STORAGE_ONLY = {"narrow-dtypes", "prune-weights"}
# Quantization kinds tried for a BG101 finding, whatever it recommends: the naive dynamic
# quantization is always measured too, so the table shows why it was (or was not) kept.
QUANT_ORDER = ("quantize-static", "quantize-dynamic", "quantize-matmulnbits", "convert-fp16")

# 4-bit blocks of 32 weights (BG101 estimates with onnxruntime's default of 128): a few % more
# bytes, a cosine of 0.992 instead of 0.986 on a random-weight transformer; accuracy level 4
# computes in int8 on CPU, faster than float32 (11-14 ms vs 18 ms there) where level 0 is not.
NBITS = {"block_size": 32, "accuracy_level": 4}


@dataclass
class Step:
    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    safe: bool = True

    @property
    def storage_only(self) -> bool:
        return self.kind in STORAGE_ONLY


@dataclass
class Candidate:
    id: str  # a slug, unique per model: names the candidate's directory
    label: str  # what the table shows
    steps: list[Step]
    safe: bool
    interface: str | None = None  # how it changes the model's interface, said in the report

    @property
    def kinds(self) -> list[str]:
        return [step.kind for step in self.steps]


@dataclass
class Plan:
    safe: list[Step] = field(default_factory=list)
    unsafe: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def plan(findings: list[Finding], model_format: str, *, unsafe: bool, only: set[str] | None,
         prune_sparsity: float = 0.5) -> Plan:
    """The steps worth trying for a model with these findings."""
    from bloatguard.fix import applicable

    result = Plan()
    hints = [(f, f.fix) for f in findings if f.fix is not None]
    wanted = lambda kind: only is None or kind in only  # noqa: E731
    if model_format == "pytorch":
        if unsafe and wanted("prune-weights"):
            result.unsafe.append(Step("prune-weights", {"sparsity": prune_sparsity}, safe=False))
        elif not unsafe:
            result.notes.append("PyTorch state dicts have no safe fix: magnitude pruning needs "
                                "--unsafe-fixes")
        return result
    seen: set[tuple] = set()
    for finding, hint in hints:
        if not applicable(hint.kind, model_format):
            result.notes.append(f"{finding.code} suggests {hint.kind}, which needs a human "
                                "(bloatguard fix has no transform for it)")
            continue
        for step in _steps(finding, hint):
            key = (step.kind, step.safe, repr(sorted(step.params.items())))
            if key in seen or not wanted(step.kind):
                continue
            seen.add(key)
            if step.safe:
                result.safe.append(step)
            elif unsafe:
                result.unsafe.append(step)
            else:
                result.notes.append(f"{finding.code} {hint.kind} is an unsafe fix: run with "
                                    "--unsafe-fixes to try it")
    result.safe.sort(key=lambda s: SAFE_ORDER.index(s.kind))
    result.notes = list(dict.fromkeys(result.notes))
    return result


def _steps(finding: Finding, hint) -> list[Step]:
    kind, details = hint.kind, hint.details
    if kind == "fold-constants":
        return [Step(kind, {"nodes": details.get("nodes", [])})]
    if kind == "deduplicate-weights":
        return [Step(kind, {"min_bytes": 1000})]
    if kind in ("remove-dead-weights", "fold-batchnorm", "strip-dropout-identity"):
        return [Step(kind)]
    if kind == "prune-channels":
        # Exactly zero channels with a zero bias go safely; near-zero ones (and a nonzero
        # bias folded into the next layer) only with --unsafe-fixes.
        tolerance = finding.details.get("tolerance") or 1e-3
        return [Step(kind), Step(kind, {"tolerance": tolerance}, safe=False)]
    if kind == "prune-weights":
        params = {"tensors": details.get("tensors", [])}
        if hint.safe:
            return [Step(kind, params)]
        return [Step(kind, {**params, "tolerance": details.get("tolerance", 1e-3)}, safe=False)]
    if kind == "narrow-dtypes":
        params = {"from": details.get("from"), "to": details.get("to"),
                  "tensors": details.get("tensors", [])}
        return [Step(kind, params, safe=hint.safe)]
    if kind == "remove-features":
        return [Step(kind, {"features": details.get("features", [])}, safe=False)]
    if kind in QUANT_ORDER:
        kinds = {kind, "quantize-dynamic"} | {a["kind"] for a in details.get("also", [])}
        kinds |= {a["kind"] for a in details.get("alternatives", [])}
        steps = []
        for quant in QUANT_ORDER:
            if quant in kinds:
                params = NBITS if quant == "quantize-matmulnbits" else {}
                steps.append(Step(quant, dict(params), safe=False))
        return steps
    return []


def single_candidates(plan_: Plan) -> list[Candidate]:
    """One candidate per safe step, each applied to the original alone."""
    return [Candidate(id=f"safe-{index}-{step.kind}", label=step.kind, steps=[step], safe=True)
            for index, step in enumerate(plan_.safe)]


def combined(steps: list[Step]) -> Candidate:
    """The safe steps that passed on their own, chained in SAFE_ORDER."""
    return Candidate(id="safe-all", label="all safe fixes", steps=list(steps), safe=True)


def unsafe_candidates(plan_: Plan, base: list[Step]) -> list[Candidate]:
    """One candidate per unsafe step, on top of `base` (the safe graph fixes that passed)."""
    out = []
    for index, step in enumerate(plan_.unsafe):
        label = step.kind + ("" if step.kind != "narrow-dtypes" else f" {step.params.get('from')}")
        if step.kind in ("prune-channels", "prune-weights") and "tolerance" in step.params:
            label += " (near-zero)"
        if base:
            label += " + safe fixes"
        interface = None
        if step.kind == "remove-features":
            interface = "removes model inputs or input columns: callers must feed the new inputs"
        out.append(Candidate(id=f"unsafe-{index}-{step.kind}", label=label,
                             steps=[*base, step], safe=False, interface=interface))
    return out
