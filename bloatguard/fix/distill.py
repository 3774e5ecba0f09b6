"""The distillation target: when a model breaks a `max-params`, `max-macs` or `max-file-size`
budget and no verified candidate of `bloatguard fix --unsafe-fixes` meets it, how far the best
verified candidate is from the budget, and what a distilled student would have to be.

How a student's size follows from the teacher's, for the families a weight view shows:

- width: a layer's matrix (conv kernel, linear weight) scales with width^2, an embedding table
  (vocabulary x width) and the 1-D tensors (biases, norms) with width; MACs of convolutions and
  of transformer projections scale with width^2;
- depth, for models made of numbered repeated blocks (`layer.3.`, `layers.3.`, `h.3.`,
  `blocks.3.`, `blk.3.`: transformer layers): each block holds its share of the weights and of
  the MACs (which follow the matrix weights), and the rest (embeddings, head) stays.

Only numbers from the facts go in; nothing is trained. This module imports nothing heavy, so
`bloatguard check` could call it for a budget finding's hint too.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from bloatguard.facts import ModelFacts
from bloatguard.units import format_amount

# Budget key -> (metric key, noun for messages, how a student's value scales).
BUDGETS = {"max-params": ("params", "params", "params"),
           "max-macs": ("macs", "MACs", "macs"),
           "max-file-size": ("file_size", "bytes", "params")}
_BLOCK = re.compile(r"(?:^|[./_])(?:layers?|h|blocks?|blk)[._/](\d+)(?=[./_]|$)", re.IGNORECASE)
_TRAINING = ("Distillation needs training data and a training loop, which bloatguard does not "
             "run: train the student on the teacher's outputs, then verify it against this model "
             "with bloatguard compare.")


@dataclass
class Composition:
    """How a model's weights split between what scales with width and with depth."""

    linear: int = 0  # params that scale with width (embedding tables, 1-D tensors)
    quadratic: int = 0  # params that scale with width^2 (conv and matmul matrices)
    matrix_in_blocks: int = 0  # matrix elements inside numbered blocks (MAC proxy)
    matrix_total: int = 0
    params_in_blocks: int = 0
    blocks: int = 0  # numbered repeated blocks found
    family: str = "other"  # "transformer" | "convolutional" | "other"

    @property
    def total(self) -> int:
        return self.linear + self.quadratic


def composition(facts: ModelFacts, *, names_only: bool = False) -> Composition:
    """The model's composition from its tensors and weight view (names and layer labels carry
    the block numbers; torch exports name MatMul weights `onnx::MatMul_12` but keep the block
    in the node's name). `names_only`: from the tensors' names and shapes alone, as facts
    restored from the metric cache have them (no weight view), so that `check` says the same
    warm and cold: a 2-D+ tensor is a matrix unless named like an embedding table."""
    from bloatguard.facts import WeightUse
    from bloatguard.hygiene import guess_layer_op

    view = None if names_only else facts.weight_view()
    found = Composition()
    blocks: set[int] = set()
    conv = matrix = 0
    for tensor in facts.tensors:
        if view is not None:
            uses = view(tensor.where, tensor.name)
        elif len(tensor.shape) >= 2:
            op = guess_layer_op(tensor.name, tensor.shape)
            uses = [WeightUse(kind={"Gather": "embedding", "Conv": "conv"}.get(op, "matmul"), op=op)]
        else:
            uses = []
        kinds = {use.kind for use in uses}
        numel = tensor.numel
        is_matrix = bool(kinds & {"conv", "depthwise", "matmul", "recurrent"}) and "embedding" not in kinds
        if not uses and len(tensor.shape) >= 2:
            is_matrix = True  # a weight no recognised layer reads still scales like a matrix
        if is_matrix:
            found.quadratic += numel
            found.matrix_total += numel
            conv += numel if kinds & {"conv", "depthwise"} else 0
            matrix += numel if "matmul" in kinds else 0
        else:
            found.linear += numel
        names = [tensor.name, *(use.layer for use in uses if use.layer)]
        block = next((int(m.group(1)) for m in map(_BLOCK.search, names) if m), None)
        if block is not None:
            blocks.add(block)
            found.params_in_blocks += numel
            found.matrix_in_blocks += numel if is_matrix else 0
    found.blocks = len(blocks) if len(blocks) >= 2 else 0
    if not found.blocks:
        found.params_in_blocks = found.matrix_in_blocks = 0
    if found.blocks and matrix >= conv:
        found.family = "transformer"
    elif conv > matrix:
        found.family = "convolutional"
    return found


def width_for(share: float, comp: Composition, scaling: str) -> float | None:
    """The width multiplier w whose student keeps `share` of the metric: params follow
    linear*w + quadratic*w^2; MACs follow w^2."""
    if share >= 1:
        return 1.0
    if scaling == "macs" or not comp.total:
        return math.sqrt(share)
    lin, quad = comp.linear, comp.quadratic
    target = share * comp.total
    if quad == 0:
        return share
    return (-lin + math.sqrt(lin * lin + 4 * quad * target)) / (2 * quad)


def layers_for(share: float, comp: Composition, scaling: str) -> int | None:
    """How many of the numbered blocks a student may keep to hold `share` of the metric; None
    without blocks."""
    if not comp.blocks:
        return None
    if scaling == "macs":
        whole, inside = comp.matrix_total, comp.matrix_in_blocks
    else:
        whole, inside = comp.total, comp.params_in_blocks
    if not whole or not inside:
        return None
    per_block = inside / comp.blocks
    room = share * whole - (whole - inside)
    return max(0, min(comp.blocks, math.floor(room / per_block + 1e-9)))


def target(budget: str, limit: float, best_value: float, best_label: str | None,
           comp: Composition) -> dict[str, Any]:
    """The distillation target for one budget: the reduction still needed beyond the best
    verified candidate (`best_label` None: the model as it is, for `check`, where no fix has
    been verified), and the student's width (and depth) that gives it."""
    metric, noun, scaling = BUDGETS[budget]
    kind = "bytes" if metric == "file_size" else "count"
    factor = best_value / limit
    share = limit / best_value
    width = width_for(share, comp, scaling)
    layers = layers_for(share, comp, scaling)
    fitting = []
    if width is not None:
        fitting.append(f"a student at width x{width:.2f}")
    if layers:
        fitting.append(f"one with {layers} of {comp.blocks} layers")
    fits = " or ".join(fitting) + " would fit"
    if layers == 0:
        fits += (f" (no number of its {comp.blocks} layers would: what lies outside them is over "
                 "the budget on its own)")
    scale_note = ("MACs scale with width^2" if scaling == "macs" else
                  "params scale with width^2, embeddings and biases with width")
    # Two decimals just over 1: "1.0x fewer" would read as no reduction at all.
    times = f"{factor:.2f}x" if factor < 1.1 else f"{factor:.1f}x"
    if best_label is None:
        head = (f"to meet {budget} ({format_amount(limit, kind)}) without other fixes, a "
                f"distilled student needs {times} fewer {noun}: {fits} ({scale_note}")
    else:
        head = (f"{budget} ({format_amount(limit, kind)}) is out of reach of every verified "
                f"fix: needs {times} fewer {noun} than the best verified candidate "
                f"({best_label}, {format_amount(best_value, kind)}): {fits} ({scale_note}")
    tail = (" Run bloatguard fix --unsafe-fixes first: it says what the verified fixes reach."
            if best_label is None else "")
    text = (head
            + (f"; {comp.blocks} numbered {comp.family} layers found" if comp.blocks else "")
            + f"). {_TRAINING}{tail}")
    return {"budget": budget, "metric": metric, "limit": limit, "best_candidate": best_label,
            "best_value": best_value, "factor": round(factor, 4),
            "width": None if width is None else round(width, 4), "layers": layers,
            "layers_total": comp.blocks or None, "family": comp.family, "text": text}


def check_hint(facts: ModelFacts, budget: str, limit: float) -> dict[str, Any] | None:
    """The target `bloatguard check` can give for a broken size budget, before any fix is
    verified (for the budget finding's hint); None when the metric is unknown or within."""
    metric = BUDGETS[budget][0]
    value = facts.metrics().get(metric)
    if value is None or value <= limit or facts.unreadable:
        return None
    return target(budget, limit, value, None, composition(facts, names_only=True))


def targets(original: ModelFacts, budgets: dict[str, Any],
            verified: list[tuple[str, ModelFacts]]) -> list[dict[str, Any]]:
    """A target for each size budget the original breaks and no verified candidate (label,
    facts) meets; the best is the candidate with the least of that metric (the original
    when no candidate does better)."""
    found = []
    comp: Composition | None = None
    for budget, (metric, _, _) in BUDGETS.items():
        limit = budgets.get(budget)
        value = original.metrics().get(metric)
        if limit is None or value is None or value <= limit:
            continue
        best_label, best_value = "the original, unchanged", value
        for label, facts in verified:
            candidate = facts.metrics().get(metric)
            if candidate is not None and candidate < best_value:
                best_label, best_value = label, candidate
        if best_value <= limit:
            continue
        comp = comp or composition(original)
        found.append(target(budget, limit, best_value, best_label, comp))
    return found
