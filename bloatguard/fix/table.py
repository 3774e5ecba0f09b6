"""The candidate table `bloatguard fix` prints: every candidate tried, what it measured, and
the verdict with its reasons, so a rejected fix is always explained."""

from __future__ import annotations

import textwrap

from bloatguard.facts import ModelFacts
from bloatguard.fix.verify import Evaluation
from bloatguard.units import format_amount


def render(path: str, original: ModelFacts, evaluations: list[Evaluation], *,
           header_notes: list[str], targets=()) -> str:
    from tabulate import tabulate

    lines = [f"{path}: {format_amount(original.file_size, 'bytes')}, "
             f"{format_amount(original.params, 'count')} params, "
             f"{format_amount(original.macs, 'count')} MACs"]
    lines += [f"  {note}" for note in header_notes]
    if evaluations:
        rows = [_row(e, original) for e in evaluations]
        table = tabulate(rows, headers=["candidate", "fix", "size", "vs orig", "MACs", "act. mem",
                                        "peak mem", "latency", "fidelity", "verdict"],
                         tablefmt="simple", disable_numparse=True)
        lines += ["  " + line for line in table.splitlines()]
        for evaluation in evaluations:
            details = _details(evaluation)
            if details:
                lines.append(f"  {evaluation.candidate.label}:")
                lines += [f"    - {item}" for item in details]
    for target in targets:
        # bloatguard.fix.distill: what a distilled student would have to be.
        lines += textwrap.wrap(f"distillation target: {target['text']}", width=100,
                               initial_indent="  ", subsequent_indent="    ")
    return "\n".join(lines) + "\n"


def _row(evaluation: Evaluation, original: ModelFacts) -> list[str]:
    facts = evaluation.facts
    size = format_amount(facts.file_size, "bytes") if facts else "-"
    ratio = size_ratio(original.file_size, facts.file_size) if facts and facts.file_size else "-"
    macs = format_amount(facts.macs, "count") if facts and facts.macs is not None else "-"
    return [evaluation.candidate.label, "safe" if evaluation.candidate.safe else "unsafe", size,
            ratio, macs, _memory(facts, original, "activation_memory"),
            _memory(facts, original, "peak_memory"), latency_cell(evaluation),
            evaluation.fidelity_summary or "-", _verdict(evaluation)]


def _memory(facts: ModelFacts | None, original: ModelFacts, metric: str) -> str:
    """The candidate's static activation memory or measured peak memory, with its change when
    it grew: a fix that lowers the weights but adds a float32 copy of them (convert-fp16's
    Cast) must show it."""
    after = facts.metrics().get(metric) if facts else None
    before = original.metrics().get(metric)
    if after is None:
        return "-"
    cell = format_amount(after, "bytes")
    return cell + (f" (+{format_amount(after - before, 'bytes')})" if before and after > before else "")


def size_ratio(before: int, after: int) -> str:
    """`27% (3.6x smaller)`: the candidate's size as a share of the original's."""
    if not before or not after:
        return "-"
    factor = before / after
    return f"{after / before:.0%}" + (f" ({factor:.1f}x smaller)" if factor >= 1.5 else "")


def latency_cell(evaluation: Evaluation) -> str:
    info = evaluation.latency
    if not info:
        return evaluation.latency_note or "-"
    low, high = info["ci"]
    return f"x{info['ratio']:.2f} [{low:.2f}, {high:.2f}]"


def _verdict(evaluation: Evaluation) -> str:
    if evaluation.skipped:
        return "skipped"
    if evaluation.winner:
        return "WINNER"
    if evaluation.accepted:
        return "accepted"
    return "rejected"


def _details(evaluation: Evaluation) -> list[str]:
    items: list[str] = []
    if evaluation.skipped:
        items.append(evaluation.skipped)
    items += [f"rejected: {reason}" for reason in evaluation.reasons]
    items += evaluation.notes
    if evaluation.winner or (evaluation.accepted and len(evaluation.changes) <= 3):
        shown = evaluation.changes[:5]
        items += shown
        if len(evaluation.changes) > len(shown):
            items.append(f"... and {len(evaluation.changes) - len(shown)} more changes")
    return items
