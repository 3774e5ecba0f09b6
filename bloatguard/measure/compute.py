"""Static compute: multiply-accumulates (MACs) of an ONNX model for given input shapes.

The convention is that of published tables (ResNet-50 at 224x224 is about 4.09 G MACs, VGG-19
about 19.6 G): only contractions are counted (Conv, ConvTranspose, Gemm, MatMul, two-operand
Einsum, their quantized and onnxruntime-fused forms, and LSTM/GRU/RNN). Pointwise ops, pooling
and normalization are not.

Shapes come from ONNX shape inference, helped by a small constant folder. Exporters compute pad
amounts, reshape targets and branch conditions at run time from `Shape` of intermediate tensors,
and ONNX's own data propagation neither follows those through Transpose/Cast/Reshape nor reaches
into `If` branches (a subgraph is inferred with the outer scope's types, not its values). So
`count_macs` alternates inference with folding: small integer computations whose inputs are known
are evaluated in numpy (fold_ops, falling back to onnx's reference implementations; never
onnxruntime), outer constants a branch reads are copied into it, `If` nodes whose condition
becomes known are replaced by the branch taken, and this repeats until nothing changes.

A model that cannot be fully counted gets `macs=None` and notes that say which node needed which
unknown dims, so the user knows what to put under `[tool.bloatguard.inputs]`.
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections import Counter
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from bloatguard.formats.onnx_wire import EMBEDDED_KEY
from bloatguard.graph import STANDARD_DOMAINS, STD_OPS_WITH_GRAPHS, constant_value, node_key, subgraphs
from bloatguard.graph import attribute as _attr
from bloatguard.measure import fold_ops

if TYPE_CHECKING:
    from bloatguard.measure.memory import MemoryResult

# Beyond this a count is not a measurement but a sign of absurd dims (or a corrupt model).
MAX_MACS = 10**18
# Tensors up to this many elements are shape arithmetic worth folding; larger ones are data.
FOLD_LIMIT = 4096
# Each round can unlock the next (a folded pad amount gives a Conv its shape, whose Shape gives
# an If its condition...); real exports settle in 2-4 rounds.
MAX_ROUNDS = 10
# Per-node "MACs unknown" notes beyond this are summarized in one line.
MAX_NODE_NOTES = 2  # the summary line names the inputs to configure; more nodes are noise

_MS = "com.microsoft"
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL
_DATA_FIELDS = ("raw_data", "float_data", "int32_data", "string_data", "int64_data",
                "double_data", "uint64_data")
_HINT = "set them under [tool.bloatguard.inputs]"

Dims = tuple  # of int (known), str (symbolic name) or None (anonymous unknown)


@dataclass
class MacsResult:
    """MACs for one model. `macs` is None when some counted op's shape is unknown (the notes
    say which and why); `by_op` then still holds what could be counted."""

    macs: int | None
    notes: list[str] = field(default_factory=list)
    by_op: dict[str, int] = field(default_factory=dict)
    # MACs of each counted node, by its first output's name (unique in an ONNX model), for the
    # per-node profile (`bloatguard show`); a Loop body's nodes times the trip count.
    by_node: dict[str, int] = field(default_factory=dict, compare=False)
    # MACs as a formula of the input dims left symbolic (measure.symbolic), when `macs` is None
    # for want of their values: exact ("4050·height·width") and for people ("4.05K·height·width").
    formula: str | None = None
    formula_text: str | None = None


# How much counting fitting a MACs formula may add, in nodes counted (nodes times counts): in
# `check` (the pre-commit hook) little next to its one count, a few tens of ms; `show`, asked
# about one model, more. Nodes, not seconds: whether a model gets a formula must not depend on
# the machine's load.
CHECK_FORMULA_WORK = 500
SHOW_FORMULA_WORK = 200_000


def count_macs(model_proto: onnx.ModelProto,
               input_shapes: Mapping[str, Sequence[int]] | None = None) -> MacsResult:
    """MACs of one inference of `model_proto` with the given input shapes (by input name)."""
    return analyze(model_proto, input_shapes, memory=False, formula=0)[0]


def analyze(model_proto: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]] | None = None,
            *, memory: bool = True, formula: int = CHECK_FORMULA_WORK
            ) -> tuple[MacsResult, MemoryResult | None]:
    """MACs and (with `memory`) the static peak activation memory (bloatguard.measure.memory) of
    one inference, from one shape inference: inference is most of the cost of either. MACs
    that are unknown only for want of symbolic input dims' values are given as a formula of
    those dims when fitting it costs at most `formula` nodes counted."""
    from bloatguard.measure.memory import unknown as memory_unknown

    notes = _Notes()
    try:
        model = _working_copy(model_proto, notes)
        _fix_inputs(model, dict(input_shapes or {}), notes)
        user_dims = _input_dim_names(model.graph)
        shaped = _count_fast_or_folded(model, user_dims, notes)
    except _InferenceFailed as exc:
        notes.add(f"MACs not counted: shape inference failed ({exc})")
        return MacsResult(None, notes.items), memory_unknown(f"shape inference failed ({exc})")
    except Exception as exc:  # a bug here must not cost the user the rest of the report
        if os.environ.get("BLOATGUARD_DEBUG"):
            raise
        notes.add(f"MACs not counted: internal error ({type(exc).__name__}: {_first_line(exc)}); "
                  "please report this; set BLOATGUARD_DEBUG=1 for a traceback")
        return MacsResult(None, notes.items), memory_unknown("internal error, see the MACs note")
    macs = _macs_result(shaped)
    if formula and macs.macs is None and shaped.cost.unknown and not shaped.cost.invalid:
        _fit_formula(model_proto, model.graph, macs, formula)
    return macs, (_memory(shaped, user_dims) if memory else None)


_PLAIN_NAME = re.compile(r"[\w.:/-]{1,64}", re.ASCII)
# Counting once more for each point of the fit must stay cheap next to the one count `check` needs.
_FORMULA_SECONDS = 2.0


def _fit_formula(model_proto: onnx.ModelProto, graph, macs: MacsResult, work: int) -> None:
    """MACs as a formula of the inputs' symbolic dims (measure.symbolic), when every unknown
    input dim has a name and there are at most two names."""
    from bloatguard.measure import symbolic

    initializers = {t.name for t in graph.initializer}
    found = {value.name: _dims(value.type.tensor_type) for value in graph.input
             if value.name not in initializers and value.type.HasField("tensor_type")}
    if any(dims is None or None in dims for dims in found.values()):
        return  # an input without a shape, or an anonymous dim: nothing to name in a formula
    declared = {name: dims for name, dims in found.items() if dims is not None}  # all of them
    names = sorted({d for dims in declared.values() for d in dims if isinstance(d, str)})
    if not 1 <= len(names) <= symbolic.MAX_DIMS or not all(map(_PLAIN_NAME.fullmatch, names)):
        return  # names go into every report: only plain ones (batch, height, unk__214, ...)
    nodes = sum(len(scope.node) for scope in _graphs(graph))
    if nodes * symbolic.counts_needed(len(names)) > work:
        return  # `bloatguard show` fits larger models

    def count(values: dict[str, int]) -> int | None:
        shapes = {name: [values[d] if isinstance(d, str) else d for d in dims]
                  for name, dims in declared.items()}
        return analyze(model_proto, shapes, memory=False, formula=0)[0].macs

    fitted = symbolic.fit(names, count)
    if fitted is None:
        return
    coefficients, multiple = fitted
    macs.formula = symbolic.render(names, coefficients, exact=True)
    macs.formula_text = symbolic.render(names, coefficients, exact=False)
    macs.notes.append(f"MACs = {macs.formula_text} for symbolic {', '.join(names)} (fitted on "
                      f"multiples of {multiple}); budgets need values: {_HINT}")


def _macs_result(shaped: "_Shaped") -> MacsResult:
    counter, cost, notes = shaped.counter, shaped.cost, shaped.notes
    notes.add_uncounted_ops(counter.uncounted)
    by_op = dict(sorted(cost.by_op.items(), key=lambda item: (-item[1], item[0])))
    by_node = dict(cost.by_node)
    if cost.macs == 0 and (counter.uncounted or counter.unsupported):
        # Nothing was counted because nothing could be, not because nothing costs: unknown, not 0.
        notes.add("MACs unknown: every op that computes in this model lacks a MAC convention")
        return MacsResult(None, notes.items, by_op, by_node)
    if cost.invalid:
        notes.add(f"MACs not counted: the model cannot run with these input shapes "
                  f"({cost.invalid[0]})")
        return MacsResult(None, notes.items, by_op, by_node)
    if cost.unknown:
        notes.flush_unknown()
        _note_unknown_inputs(shaped.model.graph, notes)
        return MacsResult(None, notes.items, by_op, by_node)
    if cost.macs > MAX_MACS:
        notes.add(f"MACs not reported: the count {cost.macs:.3e} exceeds 10^18, which no real "
                  "model reaches; check the input shapes and the model's dims")
        return MacsResult(None, notes.items, by_op, by_node)
    return MacsResult(cost.macs, notes.items, by_op, by_node)


def profile(model_proto: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]] | None = None
            ) -> tuple[MacsResult, dict[str, int | None]]:
    """MACs (per node too), and the bytes of every value the graph computes (None where a dim
    stays unknown), from one shape inference: what `bloatguard show` lists per node."""
    notes = _Notes()
    try:
        model = _working_copy(model_proto, notes)
        _fix_inputs(model, dict(input_shapes or {}), notes)
        shaped = _count_fast_or_folded(model, _input_dim_names(model.graph), notes)
    except _InferenceFailed as exc:
        notes.add(f"MACs not counted: shape inference failed ({exc})")
        return MacsResult(None, notes.items), {}
    sizes: dict[str, int | None] = {}
    for graph in _graphs(shaped.model.graph):
        for value in [*graph.value_info, *graph.output]:
            tensor = value.type.tensor_type
            dims = _dims(tensor) if value.type.HasField("tensor_type") else None
            size = _ELEMENT_BYTES.get(tensor.elem_type)
            sizes[value.name] = (math.prod(dims) * size if dims is not None and size is not None
                                 and all(isinstance(d, int) for d in dims) else None)
    macs = _macs_result(shaped)
    if macs.macs is None and shaped.cost.unknown and not shaped.cost.invalid:
        _fit_formula(model_proto, model.graph, macs, SHOW_FORMULA_WORK)
    return macs, sizes


# Bytes per element of ONNX tensor types with a fixed size (TensorProto.DataType numbers).
_ELEMENT_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8,
                  14: 8, 15: 16, 16: 2, 17: 1, 18: 1, 19: 1, 20: 1}


def _memory(shaped: "_Shaped", user_dims: set[str]) -> MemoryResult:
    """The static peak on the model as counting left it; a model the fast path counted without
    folding is folded first when some tensor's size is still unknown (MACs may not need every
    shape that memory does)."""
    from bloatguard.measure.memory import peak_activation_memory
    from bloatguard.measure.memory import unknown as memory_unknown

    if shaped.cost.invalid:
        return memory_unknown(f"the model cannot run with these input shapes ({shaped.cost.invalid[0]})")
    try:
        result = peak_activation_memory(shaped.model, user_dims=user_dims,
                                        branches=shaped.counter.branches)
        if result.activation_memory is None and not shaped.folded:
            model = _resolve_shapes(shaped.model, shaped.declared)
            counter = _MacCounter(_Notes(), user_dims, _opset(model), model.ir_version)
            counter.graph(model.graph, None, None)  # which If branches can run, once folded
            result = peak_activation_memory(model, user_dims=user_dims, branches=counter.branches)
            shaped = _Shaped(model, counter, shaped.cost, shaped.notes, shaped.declared, True)
    except _InferenceFailed as exc:
        return memory_unknown(f"shape inference failed ({exc})")
    except Exception as exc:
        if os.environ.get("BLOATGUARD_DEBUG"):
            raise
        return memory_unknown(f"internal error ({type(exc).__name__}: {_first_line(exc)}); please "
                              "report this; set BLOATGUARD_DEBUG=1 for a traceback")
    if result.activation_memory is None:
        inputs = _Notes()
        _note_unknown_inputs(shaped.model.graph, inputs)
        result.notes += [note for note in inputs.items if note not in shaped.notes.items]
    return result


# --- notes ----------------------------------------------------------------------------------

class _Notes:
    """Deduplicated notes; per-node "unknown shape" notes are capped so a big model whose input
    is unresolved gets a readable message instead of one line per Conv."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self._unknown: list[str] = []

    def add(self, text: str) -> None:
        if text not in self.items:
            self.items.append(text)

    def unknown(self, text: str) -> None:
        if text not in self._unknown:
            self._unknown.append(text)

    def flush_unknown(self) -> None:
        for text in self._unknown[:MAX_NODE_NOTES]:
            self.add(text)
        rest = len(self._unknown) - MAX_NODE_NOTES
        if rest > 0:
            self.add(f"... and {rest} more nodes whose MACs are unknown")

    def add_uncounted_ops(self, uncounted: Counter) -> None:
        if uncounted:
            listed = ", ".join(f"{op} ({n})" for op, n in sorted(uncounted.items()))
            self.add(f"not counted (no known MAC formula outside the ai.onnx domain): {listed}")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""


# --- preparing the model --------------------------------------------------------------------

def _working_copy(model_proto: onnx.ModelProto, notes: _Notes) -> onnx.ModelProto:
    """A copy we may rewrite: big tensor data dropped (inference needs dims only, and the
    serialized model must stay small and under protobuf's 2 GB), functions inlined so their
    nodes are counted where they are called."""
    model = onnx.ModelProto()
    model.CopyFrom(model_proto)
    for tensor in _all_tensors(model):
        if math.prod(tensor.dims) > FOLD_LIMIT:
            for name in _DATA_FIELDS:
                tensor.ClearField(name)
    if model.functions:
        try:
            from onnx import inliner

            model = inliner.inline_local_functions(model)
        except Exception as exc:
            notes.add(f"model-local functions could not be inlined ({_first_line(exc)}); "
                      "ops inside them are not counted")
    return model


def _all_tensors(model) -> Iterator[onnx.TensorProto]:
    def graph_tensors(graph):
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield sparse.values
        yield from nodes_tensors(graph.node)

    def nodes_tensors(nodes):
        for node in nodes:
            for attribute in node.attribute:
                if attribute.HasField("t"):
                    yield attribute.t
                yield from attribute.tensors
                if attribute.HasField("g"):
                    yield from graph_tensors(attribute.g)
                for graph in attribute.graphs:
                    yield from graph_tensors(graph)

    yield from graph_tensors(model.graph)
    for function in model.functions:
        yield from nodes_tensors(function.node)


def _fix_inputs(model, input_shapes: dict, notes: _Notes) -> None:
    """Configured shapes replace the declared ones; the other inputs' dims follow the policy
    latency's feeds follow too (measure.dims): a symbolic dim fixed on one input is fixed on
    every input using its name, an unknown leading dim is batch 1, the rest stays unknown."""
    from bloatguard.measure.dims import resolve_dims

    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    inputs = {v.name: v.type.tensor_type for v in graph.input
              if v.type.HasField("tensor_type")}
    for name in input_shapes:
        if name not in inputs:
            known = ", ".join(repr(n) for n in inputs if n not in initializers) or "none"
            notes.add(f"configured shape for {name!r} ignored: the model has no such input "
                      f"(inputs: {known})")
    declared: dict[str, list | None] = {}  # in input order; None: nothing to bind or resolve
    fixed: dict[str, list[int]] = {}
    for name, tensor_type in inputs.items():
        if name in input_shapes:
            applied, binding = _set_configured(name, tensor_type, input_shapes[name], notes)
            if applied:
                fixed[name] = list(input_shapes[name])
                declared[name] = binding
                continue
        if name not in initializers and tensor_type.HasField("shape"):
            for dim in tensor_type.shape.dim:
                if dim.HasField("dim_value") and dim.dim_value < 0:  # some exporters write -1
                    dim.Clear()
            shape_dims = _dims(tensor_type)
            assert shape_dims is not None  # it has a shape (checked above)
            declared[name] = list(shape_dims)
        else:
            declared[name] = None
    resolved, found = resolve_dims(declared, fixed)
    for name, dims in resolved.items():
        if name not in fixed:
            for dim, value in zip(inputs[name].shape.dim, dims):
                if isinstance(value, int) and not dim.HasField("dim_value"):
                    dim.dim_value = value  # (clears dim_param: they share a oneof)
    for note in found:
        notes.add(note)


def _set_configured(name: str, tensor_type, dims, notes: _Notes) -> tuple[bool, list | None]:
    """Replace the input's shape by the configured `dims`: (whether it was applied, the declared
    dims whose names the configured values bind, None when they do not fit together)."""
    dims = list(dims)
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in dims):
        notes.add(f"configured shape for {name!r} ignored: dims must be non-negative integers, "
                  f"got {dims}")
        return False, None
    declared = _dims(tensor_type) if tensor_type.HasField("shape") else None
    binding = None
    if declared is not None:
        if len(declared) != len(dims):
            notes.add(f"configured shape {dims} for {name!r} has rank {len(dims)}, the model "
                      f"declares rank {len(declared)}")
        elif any(isinstance(d, int) and d != c for d, c in zip(declared, dims)):
            notes.add(f"configured shape {dims} for {name!r} differs from the model's fixed dims "
                      f"{_show_dims(declared)}")
        else:
            binding = list(declared)
    tensor_type.ClearField("shape")
    tensor_type.shape.SetInParent()  # a present but empty shape is a scalar, not "unknown"
    for d in dims:
        tensor_type.shape.dim.add().dim_value = d
    return True, binding


def _input_dim_names(graph) -> set[str]:
    """Symbolic dim names the model's author wrote on the inputs; worth showing to users, unlike
    the unk__N names shape inference invents for intermediate tensors."""
    names = set()
    for value in graph.input:
        for dim in _dims(value.type.tensor_type) or ():
            if isinstance(dim, str):
                names.add(dim)
    return names


def _note_unknown_inputs(graph, notes: _Notes) -> None:
    initializers = {t.name for t in graph.initializer}
    missing = []
    for value in graph.input:
        if value.name in initializers or not value.type.HasField("tensor_type"):
            continue
        dims = _dims(value.type.tensor_type)
        if dims is None:
            missing.append(f"{value.name!r} (no shape)")
        elif any(not isinstance(d, int) for d in dims):
            missing.append(f"{value.name!r} {_show_dims(dims)}")
    if missing:
        notes.add(f"model inputs with unknown dims: {', '.join(missing)}; {_HINT}")


# --- shape tables and known values ------------------------------------------------------------

def _dims(tensor_type) -> Dims | None:
    if not tensor_type.HasField("shape"):
        return None
    out: list[int | str | None] = []
    for dim in tensor_type.shape.dim:
        if dim.HasField("dim_value") and dim.dim_value >= 0:
            out.append(int(dim.dim_value))
        elif dim.HasField("dim_param") and dim.dim_param:
            out.append(dim.dim_param)
        else:
            out.append(None)
    return tuple(out)


def _show_dims(dims: Sequence[int | str | None]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


_ML_SAME_SHAPE = frozenset({"Scaler", "Normalizer", "Binarizer", "Imputer"})


def _constant_dims(node) -> Dims | None:
    for attribute in node.attribute:
        if attribute.name == "value":
            return tuple(int(d) for d in attribute.t.dims)
        if attribute.name == "sparse_value":
            return tuple(int(d) for d in attribute.sparse_tensor.dims)
        if attribute.name in ("value_float", "value_int", "value_string"):
            return ()
        if attribute.name in ("value_floats", "value_ints", "value_strings"):
            return (len(attribute.floats) + len(attribute.ints) + len(attribute.strings),)
    return None


def _tensor_value(tensor) -> np.ndarray | None:
    """The values of a small tensor whose data is in the proto (not stripped, not external)."""
    if tensor.data_location == _EXTERNAL:
        return None
    if any(entry.key == EMBEDDED_KEY for entry in tensor.external_data):  # stripped by the reader
        return None
    numel = math.prod(tensor.dims)
    if numel > FOLD_LIMIT:
        return None
    try:
        array = numpy_helper.to_array(tensor)
    except Exception:
        return None
    return array if array.size == numel else None


def _constant_value(node) -> np.ndarray | None:
    tensor = constant_value(node)
    return None if tensor is None else _tensor_value(tensor)


class _ScopeValues(MutableMapping):
    """Values of one scope's small constants (initializers and `Constant` nodes) and of what
    folding computed there. Decoded on first use: a real graph holds hundreds of constants,
    mostly weights, and folding and counting read only the few that feed shape arithmetic."""

    def __init__(self, graph, ir_version: int) -> None:
        # From IR 4 on, an initializer that is also a graph input is only a default the caller
        # may override, so its value is not a constant.
        overridable = {v.name for v in graph.input} if ir_version >= 4 else set()
        self.sources: dict[str, Callable[[], np.ndarray | None]] = {}
        for tensor in graph.initializer:
            if tensor.name not in overridable:
                self.sources[tensor.name] = functools.partial(_tensor_value, tensor)
        for node in graph.node:
            if node.op_type == "Constant" and node.domain in STANDARD_DOMAINS and node.output:
                self.sources[node.output[0]] = functools.partial(_constant_value, node)
        self.known: dict[str, np.ndarray | None] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.known:
            source = self.sources.get(name)
            self.known[name] = None if source is None else source()
        value = self.known[name]
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name) -> bool:
        if name not in self.known and name not in self.sources:
            return False  # most lookups: activations, not constants
        try:
            self[name]
        except KeyError:
            return False
        return True

    def __setitem__(self, name: str, value: np.ndarray) -> None:
        self.known[name] = value

    def __delitem__(self, name: str) -> None:
        raise TypeError("scope values are never removed")

    def __iter__(self):
        return (name for name in {**self.sources, **self.known} if name in self)

    def __len__(self) -> int:
        return sum(1 for _ in self)


class _Chain:
    """A scope's mapping in front of its enclosing scopes' chain: a ChainMap without the
    generic machinery, since folding silero looks names up some 20,000 times."""

    __slots__ = ("local", "outer")

    def __init__(self, local, outer: "_Chain | None" = None) -> None:
        self.local, self.outer = local, outer

    def __contains__(self, name) -> bool:
        return name in self.local or (self.outer is not None and name in self.outer)

    def __getitem__(self, name):
        if name in self.local:
            return self.local[name]
        if self.outer is not None:
            return self.outer[name]
        raise KeyError(name)

    def get(self, name, default=None):
        try:
            return self[name]
        except KeyError:
            return default

    def __setitem__(self, name, value) -> None:
        self.local[name] = value


class _ScopeShapes(Mapping):
    """Name -> dims for every value one scope declares or stores. Indexed on first lookup
    (many scopes never need one), and a name's dims decoded on its own first lookup: folding
    and counting read the dims of a few of a scope's values, not of all of them."""

    def __init__(self, graph) -> None:
        self.graph = graph
        self.sources: dict[str, Callable[[], Dims | None]] | None = None
        self.known: dict[str, Dims | None] = {}

    def _built(self) -> dict[str, Callable[[], Dims | None]]:
        if self.sources is None:
            self.sources = _shape_sources(self.graph)
        return self.sources

    def __getitem__(self, name: str):
        if name not in self.known:
            self.known[name] = self._built()[name]()
        return self.known[name]

    def __contains__(self, name) -> bool:
        return name in self._built()

    def __iter__(self):
        return iter(self._built())

    def __len__(self) -> int:
        return len(self._built())


def _shape_sources(graph) -> dict[str, Callable[[], Dims | None]]:
    """For each value `graph` declares or stores, a function returning its dims; a later
    source of a name (an initializer after its input) overrides an earlier one."""
    sources: dict[str, Callable[[], Dims | None]] = {}
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.type.HasField("tensor_type"):
            sources[value.name] = functools.partial(_dims, value.type.tensor_type)
    for tensor in graph.initializer:
        sources[tensor.name] = functools.partial(_stored_dims, tensor)
    for sparse in graph.sparse_initializer:
        sources[sparse.values.name] = functools.partial(_stored_dims, sparse)
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in STANDARD_DOMAINS and node.output:
            dims = _constant_dims(node)  # cheap, and whether the name is in the table at all
            if dims is not None:
                sources[node.output[0]] = functools.partial(_same, dims)
        elif (node.domain == "ai.onnx.ml" and node.op_type in _ML_SAME_SHAPE and node.input
              and node.output):
            # onnx infers no shapes for these; a linear model after a Scaler needs its batch.
            # Rare, and it depends on the entries so far: decided now, in this order.
            output, source = sources.get(node.output[0]), sources.get(node.input[0])
            if output is None or output() is None:
                dims = None if source is None else source()
                sources[node.output[0]] = functools.partial(_same, dims)
    return sources


def _stored_dims(tensor) -> Dims:
    return tuple(int(d) for d in tensor.dims)


def _same(dims: Dims | None) -> Dims | None:
    return dims


def _opset(model) -> int:
    for opset in model.opset_import:
        if opset.domain in STANDARD_DOMAINS:
            return opset.version
    return onnx.defs.onnx_opset_version()


def _label(node) -> str:
    name = node.name or (node.output[0] if node.output else "")
    return node.op_type if name in ("", node.op_type) else f"{node.op_type} {name!r}"


# --- shape resolution: inference + folding ------------------------------------------------------

@dataclass
class _Shaped:
    """A model after shape inference (and folding, when `folded`), with its MAC count."""

    model: onnx.ModelProto
    counter: "_MacCounter"
    cost: "_Cost"
    notes: _Notes
    declared: set[str]  # value infos the exporter wrote (kept across inference rounds)
    folded: bool


def _count_fast_or_folded(model, user_dims, notes: _Notes) -> _Shaped:
    """Count after one round of shape inference when that resolves every counted op (most
    exports: no folding needed, and folding costs more than the rest of a static check);
    otherwise fold constants until shapes resolve and count again. Graphs with an If always
    fold, since folding may decide the branch."""
    declared = {v.name for graph in _graphs(model.graph) for v in graph.value_info}
    inferred = _infer(model, declared)
    has_if = any(node.op_type == "If" for graph in _graphs(model.graph) for node in graph.node)
    if not has_if:
        trial = _Notes()
        trial.items = list(notes.items)
        counter = _MacCounter(trial, user_dims, _opset(inferred), inferred.ir_version)
        cost = counter.graph(inferred.graph, None, None)
        if not cost.unknown and not cost.invalid:
            return _Shaped(inferred, counter, cost, trial, declared, False)
    model = _resolve_shapes(inferred, declared)
    counter = _MacCounter(notes, user_dims, _opset(model), model.ir_version)
    return _Shaped(model, counter, counter.graph(model.graph, None, None), notes, declared, True)


def _resolve_shapes(model, declared: set[str]):
    """Fold `model` (inferred once already) and infer again, until a fold changes nothing."""
    for _ in range(MAX_ROUNDS):
        if not _Folder(model).fold():
            return model
        model = _infer(model, declared)  # shapes must match the graph as the fold left it
    return model


def _infer(model, declared: set[str]):
    # Value infos inferred in an earlier round may hold stale symbols for tensors a fold has
    # since made concrete; keep only what the exporter declared (onnx has no schemas for
    # com.microsoft ops, so their output shapes exist only there).
    for graph in _graphs(model.graph):
        kept = [v for v in graph.value_info if v.name in declared]
        if len(kept) != len(graph.value_info):
            graph.ClearField("value_info")
            graph.value_info.extend(kept)
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as exc:  # InferenceError, ValidationError, protobuf errors...
        raise _InferenceFailed(f"{type(exc).__name__}: {_first_line(exc)}") from exc


class _InferenceFailed(Exception):
    pass




def _graphs(graph) -> Iterator:
    """The graph and every subgraph nested in it."""
    yield graph
    for node in graph.node:
        for sub in _subgraphs(node):
            yield from _graphs(sub)


def _subgraphs(node) -> list:
    """`subgraphs(node)`, with the test it starts with made here: nearly every node is a plain
    standard op, and the walks over every node run several times per shape-inference round."""
    if node.domain in STANDARD_DOMAINS and node.op_type not in STD_OPS_WITH_GRAPHS:
        return []
    return subgraphs(node)


def _defined_names(graph) -> list[str]:
    names: list[str] = []
    for sub in _graphs(graph):
        names += [v.name for v in sub.input]
        names += [t.name for t in sub.initializer]
        names += [s.values.name for s in sub.sparse_initializer]
        for node in sub.node:
            names += [o for o in node.output if o]
    return names


# Ops evaluated when all their inputs are known small tensors: the arithmetic exporters use to
# compute shapes, pads, slice bounds and branch conditions. Nothing heavy, nothing random.
_FOLDABLE = frozenset({
    "Identity", "Cast", "CastLike", "Gather", "GatherElements", "Slice", "Concat", "Unsqueeze",
    "Squeeze", "Reshape", "Flatten", "Transpose", "Split", "Add", "Sub", "Mul", "Div", "Mod",
    "Neg", "Abs", "Floor", "Ceil", "Round", "Sqrt", "Pow", "Min", "Max", "Sign", "Clip",
    "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Not", "And", "Or", "Xor",
    "Where", "ConstantOfShape", "Range", "Expand", "Tile", "ReduceProd", "ReduceSum",
    "ReduceMin", "ReduceMax", "ReduceMean", "ArgMax", "ArgMin",
})
_BROADCASTING = frozenset({
    "Add", "Sub", "Mul", "Div", "Mod", "Pow", "Min", "Max", "Equal", "Less", "LessOrEqual",
    "Greater", "GreaterOrEqual", "And", "Or", "Xor", "Where",
})


class _Folder:
    """One folding pass over every scope of a shape-inferred model."""

    def __init__(self, model) -> None:
        self.opset = _opset(model)
        self.ir_version = model.ir_version
        self.model = model
        self._names: Counter | None = None
        self.changed = False

    def names(self) -> Counter:
        """Every name the model defines, with how often, as they were before this pass changed
        the graph: counted on first use, which `graph` makes come before its first change. A
        pass that changes nothing, as every model's last one, never needs them."""
        if self._names is None:
            self._names = Counter(_defined_names(self.model.graph))
        return self._names

    def fold(self) -> bool:
        self.graph(self.model.graph, None, None, None)
        return self.changed

    def graph(self, graph, outer_shapes, outer_values, outer_partial, nested: bool = False) -> None:
        shapes = _Chain(_ScopeShapes(graph), outer_shapes)
        values = _Chain(_ScopeValues(graph, self.ir_version), outer_values)
        # Shape outputs of tensors with some unknown dims: Gather of a known dim still folds.
        partial = _Chain({}, outer_partial)
        new_nodes, replaced = [], False
        for node in graph.node:
            if nested:
                local = self.localize(node, values)
                replaced |= bool(local)
                new_nodes.extend(local)
            replacement = self.node(node, shapes, values, partial)
            if replacement is None:
                for sub in _subgraphs(node):
                    self.graph(sub, shapes, values, partial, nested=True)
                new_nodes.append(node)
            else:
                replaced = True
                new_nodes.extend(replacement)
        if replaced:
            self.changed = True
            self.names()  # counted before the graph changes
            copies = [_copy_node(n) for n in new_nodes]  # clearing the field detaches the old ones
            graph.ClearField("node")
            graph.node.extend(copies)

    def localize(self, node, values) -> list:
        """Constant copies of the outer-scope constants `node` reads, under fresh local names.
        ONNX infers a subgraph with the outer scope's types but not its values, so a Pad or
        Reshape in a branch whose pads or target shape live outside gets no output shape."""
        copies = []
        for index, name in enumerate(node.input):
            # values.outer: a nested scope always has one, and a name not local is there or
            # nowhere. Asked first: most names are no outer constant, and asking the local
            # scope decodes its constants.
            if name and name in values.outer and name not in values.local:
                local = self.fresh_name(name)
                copies.append(helper.make_node(
                    "Constant", [], [local], value=numpy_helper.from_array(values[name], local)))
                values.local[local] = values[name]
                node.input[index] = local
        return copies

    def fresh_name(self, base: str) -> str:
        names = self.names()
        index = len(names)
        while f"{base}__local{index}" in names:
            index += 1
        name = f"{base}__local{index}"
        names[name] += 1
        return name

    def node(self, node, shapes, values, partial) -> list | None:
        if node.domain not in STANDARD_DOMAINS or not node.output:
            return None
        op = node.op_type
        if op == "If":
            cond = values.get(node.input[0])
            if cond is not None and cond.size == 1:
                return self.inline_if(node, bool(cond.reshape(-1)[0]))
            return None
        if op in ("Shape", "Size"):
            outputs = self.fold_shape(node, shapes.get(node.input[0]), partial)
        elif op == "Gather" and node.input[0] in partial and node.input[1] in values:
            outputs = self.fold_partial_gather(node, partial[node.input[0]], values[node.input[1]])
        elif op in _FOLDABLE and _inputs_known(node, values):
            outputs = self.evaluate(node, values)
        else:
            return None
        if outputs is None:
            return None
        for name, array in zip(node.output, outputs):
            values[name] = array
        return [helper.make_node("Constant", [], [name], value=numpy_helper.from_array(array, name))
                for name, array in zip(node.output, outputs) if name]

    def fold_shape(self, node, dims, partial) -> list | None:
        if dims is None:
            return None
        if node.op_type == "Size":
            return [np.array(math.prod(dims), dtype=np.int64)] if _all_int(dims) else None
        start, end = _attr(node, "start", 0), _attr(node, "end", None)
        selected = list(dims)[start:end]  # Python slicing clamps exactly as Shape-15 does
        if _all_int(selected):
            return [np.array(selected, dtype=np.int64)]
        partial[node.output[0]] = selected
        return None

    def fold_partial_gather(self, node, dims: list, index: np.ndarray) -> list | None:
        if _attr(node, "axis", 0) != 0 or index.dtype.kind not in "iu":
            return None
        try:
            picked = np.asarray(np.array(dims, dtype=object)[index], dtype=object)
        except IndexError:
            return None
        if not _all_int(picked.reshape(-1).tolist()):
            return None
        return [picked.astype(np.int64)]

    def evaluate(self, node, values) -> list | None:
        feeds = {name: values[name] for name in node.input if name}
        if _output_size_bound(node, feeds) > FOLD_LIMIT:
            return None
        arrays = fold_ops.evaluate(node, [values[n] if n else None for n in node.input], self.opset)
        if arrays is None:
            arrays = _reference_evaluate(node, feeds, self.opset)
        if arrays is None or len(arrays) != len(node.output):
            return None
        if any(a.size > FOLD_LIMIT or a.dtype == object for a in arrays):
            return None
        return arrays

    def inline_if(self, node, cond: bool) -> list | None:
        """The nodes of the branch taken, in place of the If. Skipped when hoisting the branch's
        names into this scope could clash with a name defined elsewhere."""
        branch = _attr(node, "then_branch" if cond else "else_branch")
        if branch is None:
            return None
        hoisted = [t.name for t in branch.initializer]
        hoisted += [out for inner in branch.node for out in inner.output if out]
        if any(self.names()[name] > 1 for name in hoisted):
            return None
        nodes = [helper.make_node("Constant", [], [t.name], value=t) for t in branch.initializer]
        nodes += [helper.make_node("Constant", [], [s.values.name], sparse_value=s)
                  for s in branch.sparse_initializer]
        nodes += [_copy_node(n) for n in branch.node]
        nodes += [helper.make_node("Identity", [inner.name], [outer])
                  for inner, outer in zip(branch.output, node.output) if outer]
        return nodes


def _reference_evaluate(node, feeds: dict, opset: int) -> list | None:
    """onnx's reference implementation of `node`, for what fold_ops does not cover (imported
    only then: the import alone costs more than folding a typical model)."""
    try:
        from onnx.reference import ReferenceEvaluator

        inputs = [onnx.ValueInfoProto(name=n) for n in dict.fromkeys(feeds)]
        outputs = [onnx.ValueInfoProto(name=n) for n in node.output if n]
        graph = helper.make_graph([node], "fold", inputs, outputs)
        results = ReferenceEvaluator(graph, opsets={"": opset}).run(None, feeds)
    except Exception:  # a node the reference cannot run is simply left unfolded
        return None
    if len(results) != len(outputs):
        return None
    by_name = dict(zip((o.name for o in outputs), (np.asarray(r) for r in results)))
    return [by_name.get(name, np.zeros(0)) for name in node.output]


def _copy_node(node):
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    return copy


def _all_int(dims) -> bool:
    return all(isinstance(d, int) and d >= 0 for d in dims)


def _inputs_known(node, values) -> bool:
    present = [name for name in node.input if name]
    return bool(present) and all(name in values for name in present)


def _output_size_bound(node, feeds: dict) -> int:
    """An upper bound on the elements a fold would produce, checked before running it so that a
    ConstantOfShape([100000, 1000]) is never materialized."""
    arrays = [feeds[name] for name in node.input if name]
    op = node.op_type
    try:
        if op == "ConstantOfShape":
            return math.prod(int(d) for d in arrays[0].reshape(-1))
        if op == "Expand":
            return math.prod(np.broadcast_shapes(arrays[0].shape, tuple(int(d) for d in arrays[1])))
        if op == "Tile":
            return arrays[0].size * math.prod(int(d) for d in arrays[1].reshape(-1))
        if op == "Range":
            start, limit, delta = (float(a.reshape(-1)[0]) for a in arrays[:3])
            return max(0, math.ceil((limit - start) / delta)) if delta else FOLD_LIMIT + 1
        if op in _BROADCASTING:
            return math.prod(np.broadcast_shapes(*(a.shape for a in arrays)))
        if op == "Gather":
            return arrays[0].size * max(arrays[1].size, 1)
    except (ValueError, OverflowError, IndexError, TypeError):
        return FOLD_LIMIT + 1
    return sum(a.size for a in arrays)


# --- counting ---------------------------------------------------------------------------------

@dataclass
class _Cost:
    """MACs of a scope. `unknown`: some counted op lacks dims. `invalid`: some op's shapes are
    inconsistent, so this scope cannot run with these inputs (e.g. the 8 kHz branch of a VAD fed
    a 16 kHz frame); an If then counts only the branches that can run."""

    macs: int = 0
    unknown: bool = False
    invalid: list[str] = field(default_factory=list)
    by_op: Counter = field(default_factory=Counter)
    by_node: Counter = field(default_factory=Counter)

    def add(self, other: "_Cost", times: int = 1) -> None:
        self.macs += other.macs * times
        self.unknown |= other.unknown
        self.invalid += other.invalid
        for op, macs in other.by_op.items():
            self.by_op[op] += macs * times
        for node, macs in other.by_node.items():
            self.by_node[node] += macs * times


class _UnknownShape(Exception):
    """A counted op needs dims that are not known; the message is the note's tail."""


class _Unsupported(Exception):
    """A counted op in a form bloatguard has no formula for; it is left out, with a note."""


class _InvalidShape(Exception):
    """A counted op whose shapes contradict each other: it would fail at run time."""


class _NodeShapes:
    """Dims of one node's inputs and outputs, raising _UnknownShape with a readable reason."""

    def __init__(self, node, table: Mapping, user_dims: set[str]) -> None:
        self.node = node
        self.table = table
        self.user_dims = user_dims

    def input(self, index: int) -> tuple[int, ...]:
        return self._known(self.node.input, index, "input")

    def output(self, index: int) -> tuple[int, ...]:
        return self._known(self.node.output, index, "output")

    def output_or_blame_input(self, out_index: int = 0, in_index: int = 0) -> tuple[int, ...]:
        """The output's dims; when unknown, the data input is usually why, and its name (often a
        model input) is what the user can act on."""
        try:
            return self.output(out_index)
        except _UnknownShape:
            self.input(in_index)
            raise

    def _known(self, names, index: int, role: str) -> tuple[int, ...]:
        name = names[index] if index < len(names) else ""
        if not name:
            raise _InvalidShape(f"has no {role} {index}")
        dims = self.table.get(name)
        if dims is None:
            raise _UnknownShape(f"{role} {name!r} has an unknown shape")
        unknown = [self._dim_name(i, d) for i, d in enumerate(dims) if not isinstance(d, int)]
        if unknown:
            raise _UnknownShape(f"{role} {name!r} has unknown dims {unknown}")
        return dims

    def _dim_name(self, axis: int, dim) -> str:
        return dim if isinstance(dim, str) and dim in self.user_dims else f"axis {axis}"


class _MacCounter:
    def __init__(self, notes: _Notes, user_dims: set[str], opset: int, ir_version: int) -> None:
        self.notes = notes
        self.user_dims = user_dims
        self.opset = opset
        self.ir_version = ir_version
        self.uncounted: Counter = Counter()  # ops of other domains, by name
        self.unsupported = 0  # ops with a formula that does not apply to this node
        # The branches of each If (by its first output) that can run with these input shapes:
        # the static memory walk follows the same ones.
        self.branches: dict[str, list[str]] = {}

    def graph(self, graph, outer_shapes, outer_values) -> _Cost:
        shapes = _Chain(_ScopeShapes(graph), outer_shapes)
        values = _Chain(_ScopeValues(graph, self.ir_version), outer_values)
        cost = _Cost()
        for node in graph.node:
            cost.add(self.node(node, shapes, values))
        return cost

    def node(self, node, shapes, values) -> _Cost:
        domain = "" if node.domain in STANDARD_DOMAINS else node.domain
        if domain == "" and node.op_type == "If":
            return self.if_node(node, shapes, values)
        if domain == "" and node.op_type in ("Loop", "Scan"):
            return self.loop_node(node, shapes, values)
        formula = _FORMULAS.get((domain, node.op_type))
        cost = _Cost()
        if formula is not None:
            try:
                macs = formula(node, _NodeShapes(node, shapes, self.user_dims))
            except _UnknownShape as exc:
                self.notes.unknown(f"MACs unknown: {_label(node)} {exc}; {_HINT}")
                return _Cost(unknown=True)
            except _Unsupported as exc:
                self.notes.add(f"not counted: {_label(node)} {exc}")
                self.unsupported += 1
                return _Cost()
            except _InvalidShape as exc:
                return _Cost(invalid=[f"{_label(node)} {exc}"])
            cost = _Cost(macs, by_op=Counter({node.op_type: macs}),
                         by_node=Counter({node_key(node): macs}))
        elif domain and not _is_pointwise(domain, node.op_type):
            self.uncounted[f"{domain}:{node.op_type}"] += 1
        for sub in _subgraphs(node):  # e.g. an onnxruntime contrib op with a body: count once
            self.notes.add(f"subgraph of {_label(node)} counted once")
            cost.add(self.graph(sub, shapes, values))
        return cost

    def if_node(self, node, shapes, values) -> _Cost:
        branches = {a.name: a.g for a in node.attribute if a.name in ("then_branch", "else_branch")}
        cond = values.get(node.input[0])
        key = node.output[0] if node.output else ""
        if cond is not None and cond.size == 1:  # known, but could not be inlined
            name = "then_branch" if bool(cond.reshape(-1)[0]) else "else_branch"
            self.branches[key] = [name]
            taken = branches.get(name)
            return _Cost() if taken is None else self.graph(taken, shapes, values)
        costs = {name: self.graph(g, shapes, values) for name, g in branches.items()}
        runnable = {name: c for name, c in costs.items() if not c.invalid}
        self.branches[key] = list(runnable)
        if not runnable:
            return _Cost(invalid=[i for c in costs.values() for i in c.invalid])
        for name, cost in costs.items():
            if cost.invalid:
                self.notes.add(f"{_label(node)}: {name} cannot run with these input shapes "
                               f"({cost.invalid[0]}); not counted")
        costs = runnable
        if any(c.unknown for c in costs.values()):
            return _Cost(unknown=True)
        name, best = max(costs.items(), key=lambda item: item[1].macs)
        others = [f"{n}: {c.macs:,}" for n, c in costs.items() if n != name]
        if any(c.macs != best.macs for c in costs.values()):
            self.notes.add(f"{_label(node)}: the condition is known only at run time; counted the "
                           f"costlier branch ({name}: {best.macs:,} MACs; {', '.join(others)})")
        return best

    def loop_node(self, node, shapes, values) -> _Cost:
        body = _attr(node, "body")
        cost = _Cost()
        body_cost = self.graph(body, shapes, values)
        trips = self.trip_count(node, shapes, values)
        if trips is None:
            self.notes.add(f"{_label(node)}: trip count known only at run time; counted one "
                           "iteration (a lower bound)")
            trips = 1
        cost.add(body_cost, trips)
        return cost

    def trip_count(self, node, shapes, values) -> int | None:
        if node.op_type == "Loop":
            limit = values.get(node.input[0]) if node.input and node.input[0] else None
            if limit is None or limit.size != 1:
                return None
            cond = node.input[1] if len(node.input) > 1 else ""
            cond_value = values.get(cond) if cond else np.array(True)
            if cond_value is None or not bool(cond_value.reshape(-1)[0]):
                self.notes.add(f"{_label(node)} may stop early; counted its maximum trip count")
            return max(int(limit.reshape(-1)[0]), 0)
        # Scan: the scan inputs are the last num_scan_inputs inputs; the trip count is their
        # length along the scan axis (opset 8 also iterates a leading batch axis).
        count = _attr(node, "num_scan_inputs", 0)
        if count < 1 or count > len(node.input):
            return None
        first = node.input[len(node.input) - count]
        dims = shapes.get(first)
        if self.opset < 9:
            return dims[0] * dims[1] if dims and len(dims) > 1 and _all_int(dims[:2]) else None
        axes = _attr(node, "scan_input_axes", None) or [0]
        if not dims or not -len(dims) <= axes[0] < len(dims):
            return None
        length = dims[axes[0]]
        return length if isinstance(length, int) else None


# com.microsoft ops that are pointwise or normalization: not counted by the convention, and not
# worth a "not counted" note either.
_MS_POINTWISE = re.compile(r"^(Bias|Fast|Quick)?(Gelu|Relu|Sigmoid|Softmax|Dropout|Add|Mul|Sub)|"
                           r"(Skip|Simplified)?LayerNormalization|QuantizeLinear|DequantizeLinear|"
                           r"DynamicQuantizeLinear|QLinear(Add|Mul|Sigmoid|LeakyRelu|Softmax|"
                           r"AveragePool|GlobalAveragePool|Concat)|NhwcMaxPool|Rotary|Gather")


# ai.onnx.ml ops that scale, encode or reshape features: no multiply-accumulates to count.
_ML_POINTWISE = frozenset({"Scaler", "Normalizer", "Binarizer", "Imputer", "OneHotEncoder",
                           "LabelEncoder", "ZipMap", "CastMap", "DictVectorizer",
                           "FeatureVectorizer", "ArrayFeatureExtractor", "CategoryMapper"})


def _is_pointwise(domain: str, op_type: str) -> bool:
    if domain == "ai.onnx.ml":
        return op_type in _ML_POINTWISE
    return domain == _MS and bool(_MS_POINTWISE.match(op_type))


# --- MAC formulas -------------------------------------------------------------------------------

def _conv(weight: int) -> Callable:
    def count(node, s: _NodeShapes) -> int:
        # N*Cout*prod(out spatial) * (Cin/group)*prod(kernel): the weight is [Cout, Cin/group, k...]
        # whatever the data layout, so the output's element count times weight[1:] is exact.
        out = s.output_or_blame_input(0, 0)
        w = s.input(weight)
        return math.prod(out) * math.prod(w[1:])
    return count


def _conv_transpose(node, s: _NodeShapes) -> int:
    # N*Cin*prod(in spatial) * (Cout/group)*prod(kernel); the weight is [Cin, Cout/group, k...].
    return math.prod(s.input(0)) * math.prod(s.input(1)[1:])


def _gemm(b: int) -> Callable:
    def count(node, s: _NodeShapes) -> int:
        a_dims, b_dims = s.input(0), s.input(b)
        if len(a_dims) != 2 or len(b_dims) != 2:
            raise _InvalidShape(f"has operands of rank {len(a_dims)} and {len(b_dims)}, not 2")
        m, k = reversed(a_dims) if _attr(node, "transA", 0) else a_dims
        n = b_dims[0] if _attr(node, "transB", 0) else b_dims[1]
        return m * n * k
    return count


def _matmul(b: int) -> Callable:
    def count(node, s: _NodeShapes) -> int:
        return _matmul_macs(s.input(0), s.input(b))
    return count


def _matmul_macs(a: Sequence[int], b: Sequence[int]) -> int:
    """batch * M * N * K with numpy's rules: a 1-D left operand is a row, a 1-D right operand a
    column (each then dropped), and batch dims broadcast."""
    if not a or not b:
        raise _InvalidShape("has a scalar operand")
    k = a[-1]
    m, batch_a = (1, ()) if len(a) == 1 else (a[-2], tuple(a[:-2]))
    n, batch_b = (1, ()) if len(b) == 1 else (b[-1], tuple(b[:-2]))
    k_b = b[0] if len(b) == 1 else b[-2]
    if k != k_b:
        raise _InvalidShape(f"multiplies {_show_dims(a)} by {_show_dims(b)}: inner dims differ")
    try:
        batch = np.broadcast_shapes(batch_a, batch_b)
    except ValueError:
        raise _InvalidShape(f"has batch dims {list(batch_a)} and {list(batch_b)} that do not "
                            "broadcast") from None
    return math.prod(batch) * m * n * k


def _fused_matmul(node, s: _NodeShapes) -> int:
    if _attr(node, "transBatchA", 0) or _attr(node, "transBatchB", 0):
        raise _Unsupported("uses transBatchA/transBatchB, which bloatguard has no formula for")
    a, b = list(s.input(0)), list(s.input(1))
    if _attr(node, "transA", 0) and len(a) >= 2:
        a[-2], a[-1] = a[-1], a[-2]
    if _attr(node, "transB", 0) and len(b) >= 2:
        b[-2], b[-1] = b[-1], b[-2]
    return _matmul_macs(a, b)


def _matmul_nbits(node, s: _NodeShapes) -> int:
    # A [..., K] times a packed [N, K] weight: the weight's dims are in the attributes.
    k, n = _attr(node, "K", 0), _attr(node, "N", 0)
    return math.prod(s.input(0)[:-1]) * k * n


def _recurrent(node, s: _NodeShapes) -> int:
    # seq * batch * num_directions * gates*hidden * (input + hidden): W is
    # [num_directions, gates*hidden, input], R is [num_directions, gates*hidden, hidden].
    x, w, r = s.input(0), s.input(1), s.input(2)
    if len(x) != 3 or len(w) != 3 or len(r) != 3:
        raise _InvalidShape("has inputs that are not 3-D")
    seq, batch = (x[1], x[0]) if _attr(node, "layout", 0) else (x[0], x[1])
    return seq * batch * w[0] * w[1] * (w[2] + r[2])


def _einsum(node, s: _NodeShapes) -> int:
    """Two-operand Einsum (what exporters emit for batched matmuls): one MAC per point of the
    index space, i.e. the product of every distinct index's size."""
    present = [name for name in node.input if name]
    if len(present) != 2:
        raise _Unsupported(f"has {len(present)} operands; only two-operand Einsum is counted")
    equation = _attr(node, "equation", b"")
    equation = equation.decode() if isinstance(equation, bytes) else equation
    terms = equation.replace(" ", "").split("->")[0].split(",")
    if len(terms) != 2:
        raise _Unsupported(f"has equation {equation!r} that bloatguard cannot parse")
    sizes: dict[str, int] = {}
    ellipsis: list[tuple[int, ...]] = []
    for index, term in enumerate(terms):
        dims = s.input(index)
        letters = term.replace("...", "")
        if len(letters) > len(dims) or ("..." not in term and len(letters) != len(dims)):
            raise _InvalidShape(f"has equation {equation!r} that does not match its inputs")
        before = term.split("...")[0] if "..." in term else term
        rest = len(dims) - len(letters)
        ellipsis.append(tuple(dims[len(before):len(before) + rest]) if "..." in term else ())
        skipped = [d for i, d in enumerate(dims) if not len(before) <= i < len(before) + rest]
        for letter, size in zip(letters, skipped):
            sizes[letter] = max(sizes.get(letter, 1), size)
    try:
        broadcast = np.broadcast_shapes(*ellipsis)
    except ValueError:
        raise _InvalidShape("has '...' dims that do not broadcast") from None
    return math.prod(sizes.values()) * math.prod(broadcast)


_ML = "ai.onnx.ml"


def _coefficients(*attributes: str) -> Callable:
    """ai.onnx.ml linear models and SVMs: one multiply-accumulate per stored coefficient (and
    support-vector element: the kernel's dot product or distance) per sample."""
    def count(node, s: _NodeShapes) -> int:
        dims = s.input(0)
        samples = dims[0] if len(dims) == 2 else 1
        return samples * sum(len(_attr(node, name) or ()) for name in attributes)
    return count


def _trees(node, s: _NodeShapes) -> int:
    """Tree ensembles compare, they do not multiply: no MACs, and the note says what they cost."""
    modes = _attr(node, "nodes_modes") or []
    leaf = "LEAF"
    trees = len(set(_attr(node, "nodes_treeids") or [])) or len(_attr(node, "tree_roots") or [])
    branches = sum(1 for mode in modes if (mode.decode() if isinstance(mode, bytes) else mode) != leaf)
    if not modes:  # ai.onnx.ml 5 TreeEnsemble: every split node is a comparison
        branches = len(_attr(node, "nodes_splits") or [])
    raise _Unsupported(f"is a tree ensemble ({trees} trees, {branches} decision nodes): a sample "
                       "takes one comparison per level of each tree, not multiply-accumulates")


_FORMULAS: dict[tuple[str, str], Callable] = {
    ("", "Conv"): _conv(1),
    ("", "ConvInteger"): _conv(1),
    ("", "QLinearConv"): _conv(3),
    ("", "ConvTranspose"): _conv_transpose,
    ("", "Gemm"): _gemm(1),
    ("", "MatMul"): _matmul(1),
    ("", "MatMulInteger"): _matmul(1),
    ("", "QLinearMatMul"): _matmul(3),
    ("", "Einsum"): _einsum,
    ("", "LSTM"): _recurrent,
    ("", "GRU"): _recurrent,
    ("", "RNN"): _recurrent,
    (_MS, "FusedConv"): _conv(1),
    (_MS, "QLinearConv"): _conv(3),
    (_MS, "FusedGemm"): _gemm(1),
    (_MS, "QGemm"): _gemm(3),
    (_MS, "FusedMatMul"): _fused_matmul,
    (_MS, "MatMulNBits"): _matmul_nbits,
    (_MS, "MatMulIntegerToFloat"): _matmul(1),
    (_MS, "DynamicQuantizeMatMul"): _matmul(1),
    (_ML, "LinearClassifier"): _coefficients("coefficients"),
    (_ML, "LinearRegressor"): _coefficients("coefficients"),
    (_ML, "SVMClassifier"): _coefficients("support_vectors", "coefficients"),
    (_ML, "SVMRegressor"): _coefficients("support_vectors", "coefficients"),
    (_ML, "TreeEnsembleClassifier"): _trees,
    (_ML, "TreeEnsembleRegressor"): _trees,
    (_ML, "TreeEnsemble"): _trees,
}
