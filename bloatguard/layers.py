"""A model's layers with their weights, in any format: what `bloatguard show` lists and what the
base/head layer diff (bloatguard.diff) compares.

Formats with a graph name their layers themselves (ModelFacts.layers: nodes, with MACs). For the
others (PyTorch state dicts, safetensors, GGUF) a layer is a module: the tensors that share a name
up to their last component (`encoder.layer.3.attention.self.query.weight` and `….bias` make
`encoder.layer.3.attention.self.query`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bloatguard.facts import ModelFacts, TensorInfo


@dataclass
class LayerRow:
    """One layer and the stored tensors it owns."""

    name: str
    op: str
    tensors: list[TensorInfo] = field(default_factory=list)
    macs: int | None = None
    activation_bytes: int | None = None  # its outputs' bytes; only `show` measures them
    count: int = 1  # how many layers (or tensors) a grouped row stands for

    @property
    def params(self) -> int:
        return sum(tensor.numel for tensor in self.tensors)

    @property
    def weight_bytes(self) -> int | None:
        sizes = [tensor.nbytes for tensor in self.tensors]
        return None if None in sizes else sum(size for size in sizes if size is not None)

    @property
    def dtypes(self) -> list[str]:
        return sorted({tensor.dtype for tensor in self.tensors})

    def largest(self) -> TensorInfo | None:
        """The tensor that says what the layer is (its weight matrix, not its bias)."""
        return max(self.tensors, key=lambda tensor: tensor.numel, default=None)


def layer_rows(facts: ModelFacts) -> list[LayerRow]:
    """The layers of a model, each stored tensor in exactly one, so that the rows add up to the
    model's params and weight bytes (and MACs, where the graph gives them)."""
    by_key = {(tensor.where, tensor.name): tensor for tensor in facts.tensors}
    layers = facts.layer_table()
    if layers:
        return [LayerRow(layer.name, layer.op, [by_key[key] for key in layer.weights if key in by_key],
                         layer.macs, layer.activation_bytes) for layer in layers]
    rows: dict[str, LayerRow] = {}
    for tensor in facts.tensors:
        module = module_of(tensor.name)
        row = rows.get(module)
        if row is None:
            # No op: formats without a graph say only what a weight's name and shape suggest,
            # and only while the model is open; a row must read the same from the cache.
            row = rows[module] = LayerRow(module, "")
        row.tensors.append(tensor)
    return list(rows.values())


_SEPARATOR = re.compile(r"[./]")


def module_of(name: str) -> str:
    """`encoder.layer.3.query.weight` -> `encoder.layer.3.query`; `dense_1/kernel:0` ->
    `dense_1`; a name of one component is its own module."""
    parts = _SEPARATOR.split(name)
    if len(parts) < 2:
        return name
    return name[: len(name) - len(parts[-1]) - 1]

