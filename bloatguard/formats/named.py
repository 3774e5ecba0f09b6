"""The handle of a weights-only model (PyTorch state dicts, safetensors): the weight view from
the tensors' names and shapes, and where raw tensor bytes lie for the rules that read values.

A state dict has no graph, so a layer weight is recognised the way torch names and lays it out
(bloatguard.hygiene): a 2-D+ tensor named `*weight*`/`*kernel`, minus position tables; its
output channels are axis 0 (torch's `[out, in, ...]`).
"""

from __future__ import annotations

from bloatguard.facts import ModelFacts, RawTensor, WeightUse, WeightView

# Low-bit matrices are what a quantized state dict looks like.
LOW_BIT = {"int8", "uint8", "int4", "uint4", "int2", "uint2", "float8e4m3fn", "float8e4m3fnuz",
           "float8e5m2", "float8e5m2fnuz", "float4e2m1"}
# The ONNX op each guess stands for (bloatguard.hygiene.guess_layer_op), and its kind.
_KINDS = {"Conv": "conv", "MatMul": "matmul", "Gather": "embedding", "LSTM": "recurrent"}


class NamedWeights:
    """`raw`: the tensors whose bytes lie in the file as little-endian arrays (validated by the
    reader), or None when values are not to be read (PyTorch: never unpickled)."""

    def __init__(self, toolchain: str = "torch", raw: list[RawTensor] | None = None) -> None:
        self.toolchain = toolchain
        self.raw_tensors = raw
        self._view: WeightView | None = None

    def weight_view(self, facts: ModelFacts) -> WeightView:
        if self._view is None:
            self._view = named_view(facts, self.toolchain)
        return self._view


def named_view(facts: ModelFacts, toolchain: str) -> WeightView:
    from bloatguard.hygiene import guess_layer_op, named_like_layer_weight

    view = WeightView(toolchain=toolchain, from_graph=False, stored_noun="tensor",
                      quantized=any(t.dtype in LOW_BIT and len(t.shape) >= 2 for t in facts.tensors))
    for tensor in facts.tensors:
        if named_like_layer_weight(tensor.name, tensor.shape):
            op = guess_layer_op(tensor.name, tensor.shape)
            axis = 0 if op in ("Conv", "MatMul") else None
            view.uses[(tensor.where, tensor.name)] = [WeightUse(kind=_KINDS[op], op=op,
                                                                channel_axis=axis)]
    return view
