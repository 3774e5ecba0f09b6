"""Why a model grew: its layers on the base against its layers on the head.

Layers are matched by name first; then, for an export that renamed its nodes, by the names of the
weights they read; then by position, aligning the remaining layers' op types in model order.
Each matched layer whose weights or compute changed is `resized` (its main weight changed shape,
or its params or MACs changed) or `retyped` (same shape, another dtype: an int8 weight that became
float32 again); unmatched layers are `added` or `removed`. Then op counts.
"""

from __future__ import annotations

import difflib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bloatguard.facts import ModelFacts
from bloatguard.layers import LayerRow, layer_rows

CHANGES = ("added", "removed", "resized", "retyped")


@dataclass
class LayerChange:
    """One row of the diff, as JSON `models[].diff` spells it."""

    name: str
    op: str
    change: str  # one of CHANGES
    base: dict[str, Any] | None  # the layer on the base; None when added
    head: dict[str, Any] | None  # the layer on the head; None when removed
    params_delta: int
    bytes_delta: int | None
    macs_delta: int | None
    renamed_from: str | None = None  # the base's name, when matched under another name

    def to_json(self) -> dict[str, Any]:
        entry = {"name": self.name, "op": self.op, "change": self.change, "base": self.base,
                 "head": self.head, "params_delta": self.params_delta,
                 "bytes_delta": self.bytes_delta, "macs_delta": self.macs_delta}
        if self.renamed_from is not None:
            entry["renamed_from"] = self.renamed_from
        return entry

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> LayerChange:
        return cls(name=str(entry["name"]), op=str(entry["op"]), change=str(entry["change"]),
                   base=entry.get("base"), head=entry.get("head"),
                   params_delta=int(entry["params_delta"]), bytes_delta=entry.get("bytes_delta"),
                   macs_delta=entry.get("macs_delta"), renamed_from=entry.get("renamed_from"))

    @property
    def weight(self) -> tuple[int, int, int]:
        """How much this row explains, for ordering: the largest absolute delta first."""
        return (abs(self.params_delta), abs(self.macs_delta or 0), abs(self.bytes_delta or 0))


@dataclass
class LayerDiff:
    """Every changed layer, largest first, and the op types whose counts changed."""

    changes: list[LayerChange] = field(default_factory=list)
    ops: dict[str, tuple[int, int]] = field(default_factory=dict)  # op -> (base, head) counts

    def __bool__(self) -> bool:
        return bool(self.changes or self.ops)

    def ops_json(self) -> dict[str, dict[str, int]]:
        return {op: {"base": base, "head": head} for op, (base, head) in self.ops.items()}


def layer_diff(base: ModelFacts, head: ModelFacts) -> LayerDiff:
    """The changed layers between two versions of one model."""
    before, after = layer_rows(base), layer_rows(head)
    changes = []
    for old, new in _match(before, after):
        change = _compare(old, new)
        if change is not None:
            changes.append(change)
    changes.sort(key=lambda change: change.weight, reverse=True)
    ops = {op: (base.ops.get(op, 0), head.ops.get(op, 0))
           for op in sorted(set(base.ops) | set(head.ops)) if base.ops.get(op, 0) != head.ops.get(op, 0)}
    return LayerDiff(changes, ops)


def _match(before: list[LayerRow], after: list[LayerRow]
           ) -> list[tuple[LayerRow | None, LayerRow | None]]:
    """Pairs of (base layer, head layer); None on the side a layer is missing from."""
    pairs: list[tuple[LayerRow | None, LayerRow | None]] = []
    new_by_name = {row.name: row for row in after}
    matched_new: set[int] = set()
    rest_old = []
    for old in before:
        new = new_by_name.get(old.name)
        if new is not None and id(new) not in matched_new:
            pairs.append((old, new))
            matched_new.add(id(new))
        else:
            rest_old.append(old)
    rest_new = [row for row in after if id(row) not in matched_new]
    # Renamed nodes that still read the same weights.
    by_weights = _unique({_weight_names(row): row for row in rest_new if row.tensors},
                         [_weight_names(row) for row in rest_new if row.tensors])
    unmatched_old = []
    for old in rest_old:
        new = by_weights.get(_weight_names(old)) if old.tensors else None
        if new is not None and id(new) not in matched_new:
            pairs.append((old, new))
            matched_new.add(id(new))
        else:
            unmatched_old.append(old)
    unmatched_new = [row for row in rest_new if id(row) not in matched_new]
    # Renamed everything: align the op types of what is left, in model order.
    matcher = difflib.SequenceMatcher(None, [row.op for row in unmatched_old],
                                      [row.op for row in unmatched_new], autojunk=False)
    paired_old: set[int] = set()
    paired_new: set[int] = set()
    for block in matcher.get_matching_blocks():
        for offset in range(block.size):
            old, new = unmatched_old[block.a + offset], unmatched_new[block.b + offset]
            if old.op:  # module rows have no op to align on
                pairs.append((old, new))
                paired_old.add(id(old))
                paired_new.add(id(new))
    pairs += [(old, None) for old in unmatched_old if id(old) not in paired_old]
    pairs += [(None, new) for new in unmatched_new if id(new) not in paired_new]
    return pairs


def _weight_names(row: LayerRow) -> frozenset[str]:
    return frozenset(tensor.name for tensor in row.tensors)


def _unique(table: dict, keys: list) -> dict:
    """The entries of `table` whose key occurs once in `keys`: an ambiguous key matches nothing."""
    counts = Counter(keys)
    return {key: value for key, value in table.items() if counts[key] == 1}


def _compare(old: LayerRow | None, new: LayerRow | None) -> LayerChange | None:
    shown = new or old
    assert shown is not None
    params_delta = (new.params if new else 0) - (old.params if old else 0)
    bytes_delta = _delta(old.weight_bytes if old else 0, new.weight_bytes if new else 0)
    macs_delta = _delta(old.macs if old else 0, new.macs if new else 0)
    change: str | None
    if old is None:
        change = "added"
    elif new is None:
        change = "removed"
    else:
        change = _how_changed(old, new)
        if change is None:
            return None
    return LayerChange(
        name=shown.name, op=shown.op, change=change, base=_side(old), head=_side(new),
        params_delta=params_delta, bytes_delta=bytes_delta, macs_delta=macs_delta,
        renamed_from=old.name if old is not None and new is not None and old.name != new.name else None)


def _how_changed(old: LayerRow, new: LayerRow) -> str | None:
    """resized / retyped / None (unchanged), judged by the layer's main weight first."""
    old_main, new_main = old.largest(), new.largest()
    if old_main is not None and new_main is not None:
        if old_main.shape != new_main.shape:
            return "resized"
        if old_main.dtype != new_main.dtype:
            return "retyped"
    if (old.params, _shapes(old)) != (new.params, _shapes(new)) or (old_main is None) != (new_main is None):
        return "resized"
    if old.macs is not None and new.macs is not None and old.macs != new.macs:
        return "resized"  # same weights, other activations: its input grew
    if _dtypes(old) != _dtypes(new):
        return "retyped"
    return None


def _shapes(row: LayerRow) -> list[tuple[int, ...]]:
    return sorted(tensor.shape for tensor in row.tensors)


def _dtypes(row: LayerRow) -> list[str]:
    return sorted(tensor.dtype for tensor in row.tensors)


def _delta(old: int | None, new: int | None) -> int | None:
    return None if old is None or new is None else new - old


def _side(row: LayerRow | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {"params": row.params, "weight_bytes": row.weight_bytes, "macs": row.macs,
            "weights": [{"name": tensor.name, "dtype": tensor.dtype, "shape": list(tensor.shape)}
                        for tensor in row.tensors]}


def describe(side: dict[str, Any] | None) -> str:
    """A layer's main weight as `float32[64, 3, 3, 3]`, for the text and markdown rows."""
    if not side or not side.get("weights"):
        return "-"
    main = max(side["weights"], key=lambda weight: _numel(weight["shape"]))
    more = len(side["weights"]) - 1
    text = f"{main['dtype']}[{', '.join(str(dim) for dim in main['shape'])}]"
    return text + (f" +{more}" if more else "")


def _numel(shape: list[int]) -> int:
    total = 1
    for dim in shape:
        total *= int(dim)
    return total
