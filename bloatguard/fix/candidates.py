"""Which candidates to try, from the fix hints of a model's findings.

A candidate is a sequence of steps applied to the original model. Safe steps become one
candidate each, and the ones that pass verification are then chained into one more (the "all
safe fixes" candidate, usually the one kept). Each unsafe step becomes one candidate applied on
top of the safe graph fixes that passed verification, so quantization sees folded BatchNorms
and no dead weights.

Steps that only change how weights are stored (sparse layout, narrower dtypes with a Cast)
are kept out of the base for unsafe candidates: onnxruntime's quantizers only quantize weights
stored as dense initializers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bloatguard.fix.kinds import BY_NAME, SAFE_ORDER, applicable
from bloatguard.rule import Finding


@dataclass
class Step:
    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    safe: bool = True

    @property
    def storage_only(self) -> bool:
        return BY_NAME[self.kind].storage_only


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
        planned = BY_NAME[hint.kind].plan(hint.kind, hint.details, hint.safe)
        for step in (Step(kind, params, safe) for kind, params, safe in planned):
            key = (step.kind, step.safe, repr(sorted(step.params.items())))
            if key in seen or not wanted(step.kind):
                continue
            seen.add(key)
            if step.safe:
                result.safe.append(step)
            elif unsafe:
                result.unsafe.append(step)
            elif not hint.safe:  # a safe hint's near-zero variant is a bonus, not its point
                result.notes.append(f"{finding.code} {hint.kind} is an unsafe fix: run with "
                                    "--unsafe-fixes to try it")
    result.safe.sort(key=lambda s: SAFE_ORDER.index(s.kind))
    result.notes = list(dict.fromkeys(result.notes))
    return result


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
        out.append(Candidate(id=f"unsafe-{index}-{step.kind}", label=label,
                             steps=[*base, step], safe=False, interface=BY_NAME[step.kind].interface))
    return out
