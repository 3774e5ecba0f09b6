"""The lifetime walk behind activation memory (BG005), for graphs that are plain lists of ops.

A tensor is alive from the op that writes it (a graph input: from the start) to the last op
that reads it (a graph output: to the end); at each op the live tensors are summed, the op's
inputs and outputs among them, and the peak is the largest sum, at the first op reaching it.
TFLite's reader walks its subgraphs with this; the ONNX walk (measure.memory), which also has
nested subgraphs and If branches to weigh, follows the same rules and shares the note.

Nothing here imports a format or a runtime: readers below `measure` may use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Tensors named in a peak's note; the structured details keep more.
NOTE_TENSORS = 3
DETAIL_TENSORS = 10


@dataclass
class Step:
    """One op in execution order: how reports name it, its type, what it reads and writes."""

    label: str
    op: str
    reads: list[str]
    writes: list[str]


@dataclass
class Peak:
    """The most bytes alive at once, the step where (None: before any step, or no steps) and
    the tensors alive there, largest first."""

    bytes: int
    step: Step | None
    tensors: list[tuple[str, int]]


def walk(steps: list[Step], sizes: dict[str, int], inputs: list[str], outputs: list[str]) -> Peak:
    """The peak over `steps` of the tensors in `sizes` (the ones to count: weights and values
    of unknown size are the caller's to leave out)."""
    born = {name: -1 for name in inputs if name in sizes}
    for index, step in enumerate(steps):
        for name in step.writes:
            if name in sizes and name not in born:
                born[name] = index
    last: dict[str, int] = {}
    for index, step in enumerate(steps):
        for name in step.reads:
            last[name] = index
    end = len(steps) - 1
    for name in outputs:
        last[name] = end
    lives = []
    for name, start in born.items():
        stop = max(last.get(name, start), start)
        if stop < max(start, 0):
            continue  # an input nothing reads: never held while an op runs
        lives.append((max(start, 0), stop, name))
    if not steps:
        return Peak(0, None, [])
    delta = [0] * (len(steps) + 1)
    for start, stop, name in lives:
        delta[start] += sizes[name]
        delta[stop + 1] -= sizes[name]
    running, best, best_index = 0, -1, 0
    for index in range(len(steps)):
        running += delta[index]
        if running > best:
            best, best_index = running, index
    alive = sorted(((name, sizes[name]) for start, stop, name in lives if start <= best_index <= stop),
                   key=lambda item: (-item[1], item[0]))
    return Peak(best, steps[best_index], alive)


def peak_note(peak: dict[str, Any], tensors: list[tuple[str, int]]) -> str:
    """`activation memory peaks at Relu 'relu' (12.6 MB alive: 'c1' 4.19 MB, ...)`, from a
    peak's details (bytes, node, graph, computed_constants, computed_constant_count)."""
    from bloatguard.units import format_amount

    shown = [f"{name!r} {format_amount(size, 'bytes')}" for name, size in tensors[:NOTE_TENSORS]]
    if len(tensors) > NOTE_TENSORS:
        shown.append(f"{len(tensors) - NOTE_TENSORS} more")
    if peak["computed_constants"]:
        count = peak["computed_constant_count"]
        shown.append(f"{count} computed constant{'s' if count != 1 else ''} "
                     f"{format_amount(peak['computed_constants'], 'bytes')}")
    where = f"at {peak['node']}" if peak["node"] else "before any node runs"
    if peak["graph"] != "main graph":
        where += f" in {peak['graph']}"
    alive = f": {', '.join(shown)}" if shown else ""
    return f"activation memory peaks {where} ({format_amount(peak['bytes'], 'bytes')} alive{alive})"
