"""Static peak activation memory (BG005): the most bytes of intermediate tensors an inference
holds at once, from the graph alone, for the configured input shapes.

Runs in the MACs child on the model `measure.compute` has already shape-inferred (and folded),
so it costs one walk over the nodes. The walk follows the file's node order, which ONNX requires
to be topological:

- a tensor is alive from the node that produces it (a graph input: from the start) until the
  last node that reads it, a subgraph's reference to it from an outer scope included; a graph
  output stays alive to the end;
- at each node the live tensors are summed, the node's inputs and outputs among them; the peak
  is the largest sum, at the first node that reaches it;
- stored weights (initializers, `Constant` nodes, inputs with an initializer) are not counted,
  nor a `DequantizeLinear` of a stored weight, which runtimes fuse into the int8 kernel;
- tensors computed from weights alone (a `Cast` of a float16 weight, `ConstantOfShape`) are
  *computed constants*: runtimes fold them once at load and hold them as long as the session
  lives, so they are counted at every node. Storing weights narrower behind such a `Cast` does
  not save memory at run time, and the figure says so;
- an `If` whose condition is known only at run time counts the costlier branch that can run;
  a `Loop`/`Scan` body is counted once (one iteration's tensors), with a note.

A tensor whose shape stays unknown makes the figure unknown, with notes that name it, exactly as
for MACs: the policy for symbolic dims (batch 1, configured shapes) was applied before inference.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Iterator

from bloatguard.facts import dtype_nbytes
from bloatguard.graph import STANDARD_DOMAINS, dtype_name, subgraphs
from bloatguard.lifetimes import DETAIL_TENSORS, peak_note

# Per-tensor "unknown size" notes beyond this are summarized in one line.
MAX_UNKNOWN_NOTES = 2
_HINT = "set them under [tool.bloatguard.inputs]"
_DEQUANTIZE = frozenset({"DequantizeLinear"})
# Ops whose first output has the size and type of their first input.
_SAME_SIZE = frozenset({"Identity", "Dropout", "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Neg",
                        "Abs", "Exp", "Log", "Sqrt", "Reciprocal", "Softmax", "LogSoftmax", "Elu",
                        "Selu", "HardSigmoid", "Softplus", "Erf", "Clip"})
# ai.onnx.ml ops whose first output has their first input's shape: the output dtype (None: the
# input's). onnx's shape inference covers few of these.
_ML_SAME_SHAPE = {"Scaler": "float32", "Normalizer": "float32", "Binarizer": None, "Imputer": None}
# ai.onnx.ml models that map each input row to one output row.
_ML_ROWS = frozenset({"LinearClassifier", "LinearRegressor", "SVMClassifier", "SVMRegressor",
                      "TreeEnsembleClassifier", "TreeEnsembleRegressor", "TreeEnsemble",
                      "LabelEncoder", "CategoryMapper", "OneHotEncoder"})
# Ops whose outputs differ from run to run even without inputs: never constants.
_RANDOM = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                     "Multinomial", "Bernoulli"})

# How a name's value arises. Only VARYING tensors (they depend on the model's inputs) are the
# per-inference activations walked here; COMPUTED constants are counted for the whole inference.
WEIGHT, COMPUTED, VARYING = "weight", "computed", "varying"


@dataclass
class MemoryResult:
    """`activation_memory` in bytes, None when some tensor's size is unknown (the notes say
    which). `peak`: where the peak is, for reports and `details` (JSON-compatible)."""

    activation_memory: int | None
    notes: list[str] = field(default_factory=list)
    peak: dict[str, Any] | None = None


def unknown(reason: str) -> MemoryResult:
    return MemoryResult(None, [f"activation memory not counted: {reason}"])


def peak_activation_memory(model, *, user_dims: set[str] | frozenset = frozenset(),
                           branches: Mapping[str, list[str]] | None = None) -> MemoryResult:
    """The static peak of a shape-inferred ModelProto.

    `user_dims`: symbolic dim names the author wrote on the inputs (named in notes); `branches`:
    for an If (keyed by its first output), the branches that can run with these input shapes,
    as the MAC counter found them; an If not listed may take either branch."""
    walker = _Walker(user_dims, branches or {})
    main = walker.scope(model.graph, None, "")
    notes = walker.notes
    if walker.unknown:
        notes = []  # which branch was costlier matters little when the sum is unknown
        for text in walker.unknown[:MAX_UNKNOWN_NOTES]:
            notes.append(f"activation memory unknown: {text}; {_HINT}")
        rest = len(walker.unknown) - MAX_UNKNOWN_NOTES
        if rest > 0:
            notes.append(f"activation memory unknown for {rest} more tensors")
        return MemoryResult(None, notes)
    if walker.dead:
        shown = ", ".join(repr(n) for n in walker.dead[:3])
        more = f" and {len(walker.dead) - 3} more" if len(walker.dead) > 3 else ""
        notes.append(f"activation memory leaves out outputs that nothing reads and whose size "
                     f"is unknown: {shown}{more}")
    if walker.strings:
        shown = ", ".join(repr(n) for n in walker.strings[:3])
        more = f" and {len(walker.strings) - 3} more" if len(walker.strings) > 3 else ""
        notes.append(f"activation memory leaves out string and non-tensor values, whose size "
                     f"depends on their contents: {shown}{more}")
    constants = sum(walker.constants.values())
    total = main.bytes + constants
    peak: dict[str, Any] = {"bytes": total, "node": main.node, "op": main.op,
                            "graph": main.graph or "main graph",
                            "tensors": [[name, size] for name, size in main.tensors[:DETAIL_TENSORS]],
                            "computed_constants": constants,
                            "computed_constant_count": len(walker.constants)}
    notes.append(peak_note(peak, main.tensors))
    return MemoryResult(total, notes, peak)


# --- the walk -----------------------------------------------------------------------------------

@dataclass
class _Peak:
    """The peak of one scope: bytes of varying tensors alive there, the node (label) and scope
    where it occurs, and those tensors, largest first."""

    bytes: int = 0
    node: str = ""
    op: str = ""
    graph: str = ""
    tensors: list[tuple[str, int]] = field(default_factory=list)


class _Scope:
    """Names visible in one graph: their kind (weight, computed, varying) and type, chained to
    the enclosing scope's."""

    def __init__(self, graph, outer: "_Scope | None") -> None:
        self.outer = outer
        self.kinds: dict[str, str] = {}
        self.types: dict[str, Any] = {}
        self.shapes: dict[str, Any] = {}  # _Walker.shape's answers in this scope
        self.producers = {name: node for node in graph.node for name in node.output if name}
        for value in [*graph.input, *graph.output, *graph.value_info]:
            self.types[value.name] = value.type
        stored = {t.name for t in graph.initializer} | {s.values.name for s in graph.sparse_initializer}
        for name in stored:
            self.kinds[name] = WEIGHT
        for value in graph.input:
            if value.name not in stored:
                self.kinds[value.name] = VARYING

    def kind(self, name: str) -> str | None:
        return self._visible("kinds", name)

    def producer(self, name: str):
        return self._visible("producers", name)

    def type(self, name: str):
        return self._visible("types", name)

    def _visible(self, table: str, name: str) -> Any:
        """`name` in this scope's `table`, else in the nearest enclosing scope's that has it."""
        scope: _Scope | None = self
        while scope is not None:
            entries = getattr(scope, table)
            if name in entries:
                return entries[name]
            scope = scope.outer
        return None


class _Walker:
    def __init__(self, user_dims, branches: Mapping[str, list[str]]) -> None:
        self.user_dims = set(user_dims)
        self.branches = branches
        self.notes: list[str] = []
        self.unknown: list[str] = []
        self.strings: list[str] = []
        self.dead: list[str] = []  # outputs nothing reads whose size is unknown
        # Computed constants the input-dependent part of the graph reads (what a runtime keeps
        # after folding), over every scope walked: name -> bytes.
        self.constants: dict[str, int] = {}
        # Outputs of an If -> the types of the matching output of each branch that can run
        # (inference leaves an If's output unknown when its branches disagree); the final
        # state of a Loop or Scan -> its body's output type (inference leaves it shapeless).
        self.subgraph_types: dict[str, list[Any]] = {}
        self.cut = False  # the shape lookup under way reached the depth limit

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def scope(self, graph, outer: _Scope | None, where: str) -> _Peak:
        scope = _Scope(graph, outer)
        nodes = list(graph.node)
        # Read once: protobuf field access is most of a walk's cost on a large graph.
        nested = [bool(subgraphs(node)) for node in nodes]
        reads = [list(_reads(node)) if inner else [name for name in node.input if name]
                 for node, inner in zip(nodes, nested)]
        outputs = [[name for name in node.output if name] for node in nodes]
        for node, has_graphs, produced in zip(nodes, nested, outputs):
            self.classify(node, scope, has_graphs, produced)
        self.hold_constants(graph, reads, outputs, scope, where)
        born: dict[str, int] = {}  # varying tensor -> index of the node producing it (-1: input)
        for value in graph.input:
            if scope.kinds.get(value.name) == VARYING:
                born[value.name] = -1
        for index, produced in enumerate(outputs):
            for name in produced:
                if scope.kinds.get(name) == VARYING:
                    born[name] = index
        last: dict[str, int] = {}
        for index, names in enumerate(reads):
            for name in names:
                last[name] = index
        end = len(nodes) - 1
        for value in graph.output:
            last[value.name] = end
        sizes: dict[str, int] = {}
        lives: list[tuple[int, int, str]] = []  # (first, last node index) of each counted tensor
        for name, start in born.items():
            stop = max(last.get(name, start), start)
            if stop < max(start, 0):
                continue  # an input nothing reads: never held while a node runs
            size = self.nbytes(name, scope, where, dead=name not in last)
            if size is None:
                continue
            sizes[name] = size
            lives.append((max(start, 0), stop, name))
        if not nodes:  # a branch that only passes values through
            return _Peak(graph=where)
        # Bytes alive at each node, by a difference array over the lifetimes.
        delta = [0] * (len(nodes) + 1)
        for start, stop, name in lives:
            delta[start] += sizes[name]
            delta[stop + 1] -= sizes[name]
        running, best_cost, best_index = 0, -1, 0
        inner_peaks: dict[int, tuple[_Peak | None, list[str]]] = {}
        for index, node in enumerate(nodes):
            running += delta[index]
            cost = running
            if nested[index]:
                extra, inner, replaced = self.subgraph_cost(node, scope, where, sizes)
                inner_peaks[index] = (inner, replaced)
                cost += extra
            if cost > best_cost:
                best_cost, best_index = cost, index
        node = nodes[best_index]
        best = _Peak(best_cost, _label(node), node.op_type, where)
        inner, replaced = inner_peaks.get(best_index, (None, []))
        alive = [(name, sizes[name]) for start, stop, name in lives
                 if start <= best_index <= stop and name not in replaced]
        if inner is not None:  # the peak is inside a subgraph of this node: name the inner node
            alive += inner.tensors
            if inner.node:
                best.node, best.op = inner.node, inner.op
            best.graph = inner.graph
        best.tensors = sorted(alive, key=lambda item: (-item[1], item[0]))
        return best

    def classify(self, node, scope: _Scope, nested: bool, outputs: list[str]) -> None:
        """Each output's kind: a Constant is a weight; a node reading only weights and
        constants computes a constant; anything else varies with the inputs."""
        op = node.op_type
        if op == "Constant" and node.domain in STANDARD_DOMAINS:
            kind = WEIGHT
        elif op in _RANDOM or nested:
            kind = VARYING
        else:
            kinds = [scope.kind(name) for name in node.input if name]
            if any(k not in (WEIGHT, COMPUTED) for k in kinds):
                kind = VARYING
            elif op in _DEQUANTIZE and kinds and kinds[0] == WEIGHT:
                kind = WEIGHT  # fused into the quantized kernel: the int8 weight is what is held
            else:
                kind = COMPUTED
        for name in outputs:
            scope.kinds[name] = kind
        if nested and op in ("If", "Loop", "Scan") and node.domain in STANDARD_DOMAINS:
            self.note_subgraph_types(node)

    def note_subgraph_types(self, node) -> None:
        """Where inference leaves an output of `node` open, what its subgraphs say it is."""
        if node.op_type == "If":
            allowed = self.branches.get(node.output[0] if node.output else "")
            for attribute in node.attribute:
                if attribute.name in ("then_branch", "else_branch") and attribute.HasField("g") \
                        and (allowed is None or attribute.name in allowed):
                    for name, value in zip(node.output, attribute.g.output):
                        if name:
                            self.subgraph_types.setdefault(name, []).append(value.type)
            return
        body = next(iter(subgraphs(node)), None)
        if body is None:
            return
        if node.op_type == "Loop":  # inputs M, cond, states...; body outputs cond, states...
            states, offset = len(node.input) - 2, 1
        else:  # Scan: inputs states..., scan inputs; body outputs states..., scan outputs
            scanned = next((a.i for a in node.attribute if a.name == "num_scan_inputs"), 0)
            states, offset = len(node.input) - scanned, 0
        for index in range(max(states, 0)):
            if index < len(node.output) and node.output[index] and index + offset < len(body.output):
                self.subgraph_types.setdefault(node.output[index], []).append(
                    body.output[index + offset].type)

    def hold_constants(self, graph, reads: list[list[str]], outputs: list[list[str]],
                       scope: _Scope, where: str) -> None:
        """Record the computed constants that an input-dependent node (or a subgraph of one)
        reads, or that the graph returns: what a runtime keeps once it has folded them. The
        steps that only lead to other constants are released after folding."""
        read = [name for names, produced in zip(reads, outputs)
                if not produced or any(scope.kinds.get(out) != COMPUTED for out in produced)
                for name in names]
        read += [value.name for value in graph.output]
        for name in read:
            if name not in self.constants and scope.kind(name) == COMPUTED:
                size = self.nbytes(name, scope, where)
                if size is not None:
                    self.constants[name] = size

    def subgraph_cost(self, node, scope: _Scope, where: str,
                      sizes: dict[str, int]) -> tuple[int, _Peak | None, list[str]]:
        """What running `node`'s subgraphs adds to the live tensors at `node`: (bytes, the inner
        peak, outputs of `node` that the inner peak replaces rather than adds to)."""
        label = _label(node)
        if node.domain in STANDARD_DOMAINS and node.op_type == "If":
            allowed = self.branches.get(node.output[0] if node.output else "")
            peaks = {}
            for attribute in node.attribute:
                if attribute.name in ("then_branch", "else_branch") and attribute.HasField("g"):
                    if allowed is not None and attribute.name not in allowed:
                        continue
                    peaks[attribute.name] = self.scope(attribute.g, scope,
                                                       _inner(where, f"{attribute.name} of {label}"))
            if not peaks:
                return 0, None, []
            name, best = max(peaks.items(), key=lambda item: item[1].bytes)
            if len({p.bytes for p in peaks.values()}) > 1:
                from bloatguard.units import format_amount

                others = ", ".join(f"{n}: {format_amount(p.bytes, 'bytes')}"
                                   for n, p in peaks.items() if n != name)
                self.note(f"activation memory: {label} takes its branch at run time; counted the "
                          f"costlier one ({name}: {format_amount(best.bytes, 'bytes')}; {others})")
            # The branch's outputs become the If's: while it runs, its own tensors stand in
            # for the If's outputs, which the live set already counts.
            outputs = [name for name in node.output if name in sizes]
            held = sum(sizes[name] for name in outputs)
            if best.bytes <= held:
                return 0, None, []  # its outputs, already counted, are the most it holds
            return best.bytes - held, best, outputs
        peak = None
        for graph in subgraphs(node):
            inner = self.scope(graph, scope, _inner(where, f"body of {label}"))
            if peak is None or inner.bytes > peak.bytes:
                peak = inner
        kind = "iteration" if node.op_type in ("Loop", "Scan") else "run"
        self.note(f"activation memory: the body of {label} is counted once (one {kind}'s "
                  "tensors)")
        return (peak.bytes if peak else 0), peak, []

    def nbytes(self, name: str, scope: _Scope, where: str, dead: bool = False) -> int | None:
        """Bytes of a tensor; None when unknown (recorded, with the reason) or when it is a
        string or non-tensor value (recorded). An output nothing reads (`dead`) whose size is
        unknown is left out with a note rather than making the whole figure unknown."""
        size = self.size(name, scope)
        if isinstance(size, int):
            return size
        if size in ("string", "non-tensor"):
            if name not in self.strings:
                self.strings.append(name)
        elif dead:
            if name not in self.dead:
                self.dead.append(name)
        else:
            place = f" in {where}" if where else ""
            text = f"tensor {name!r}{place} {size}"
            if text not in self.unknown:
                self.unknown.append(text)
        return None


    def size(self, name: str, scope: _Scope) -> int | str:
        """Bytes of a value, or why they are unknown (a sentence's tail), or "string" /
        "non-tensor" for values whose size depends on their contents."""
        shape = self.shape(name, scope)
        if isinstance(shape, str):
            return shape
        dtype, dims = shape
        missing = [d for d in dims if isinstance(d, str)]
        if missing:
            return f"has unknown dims {missing}"
        size = dtype_nbytes(dtype, math.prod(dims))  # type: ignore[arg-type]
        return f"has dtype {dtype}, of unknown size" if size is None else size

    def shape(self, name: str, scope: _Scope, depth: int = 0) -> _Shape | str:
        """(dtype, dims) from the inferred type, unknown dims as strings that name them.
        Where inference left it open: from the If, Loop or Scan that produces it; from the
        input of an op that keeps the shape (the Identity after an If whose branches disagree);
        for `ai.onnx.ml` ops, which onnx infers little for, from their row-wise convention."""
        # Remembered per scope: a chain of shape-keeping ops with unknown dims is otherwise
        # walked back once for every tensor on it. An answer cut short by the depth limit is
        # not kept, so the order of the questions never changes an answer.
        if name in scope.shapes:
            return scope.shapes[name]
        if depth == 0:
            self.cut = False
        shape = self._shape(name, scope, depth)
        if not self.cut:
            scope.shapes[name] = shape
        return shape

    def _shape(self, name: str, scope: _Scope, depth: int) -> _Shape | str:
        shape = _type_shape(scope.type(name), self.user_dims)
        if not isinstance(shape, str) and _known(shape) or shape in ("string", "non-tensor"):
            return shape
        inner = [_type_shape(t, self.user_dims) for t in self.subgraph_types.get(name, ())]
        known = [s for s in inner if not isinstance(s, str) and _known(s)]
        if inner and len(known) == len(inner):
            # Branches that disagree: the largest, as for the branches' peaks.
            return max(known, key=lambda s: (dtype_nbytes(s[0], math.prod(s[1])) or 0))
        producer = scope.producer(name)
        if depth > 64:
            self.cut = True
            return shape
        if producer is None or not producer.input or not producer.input[0]:
            return shape
        source = self.shape(producer.input[0], scope, depth + 1)
        if isinstance(source, str) or not source[1]:
            return shape
        first = producer.output[0] == name
        op, domain = producer.op_type, producer.domain
        if domain in STANDARD_DOMAINS and op in _SAME_SIZE and first:
            return source
        if domain == "ai.onnx.ml" and op in _ML_SAME_SHAPE and first:
            return (_ML_SAME_SHAPE[op] or source[0], source[1])
        if domain == "ai.onnx.ml" and op in _ML_ROWS and not isinstance(shape, str) and shape[1]:
            # One output row per input row: the rows inference left open are the input's.
            return (shape[0], [source[1][0], *shape[1][1:]])
        return shape


_Shape = tuple  # (dtype name, [int | str, ...])


def _type_shape(value_type, user_dims: set[str]) -> _Shape | str:
    """(dtype, dims) of a value's inferred type, unknown dims as strings naming them ("batch",
    "axis 1"); or why there is no shape; or "string"/"non-tensor"."""
    if value_type is None or value_type.WhichOneof("value") is None:
        return "has no inferred type"
    if value_type.WhichOneof("value") != "tensor_type":
        return "non-tensor"
    tensor_type = value_type.tensor_type
    elem_type = tensor_type.elem_type
    if elem_type == 0:
        return "has no inferred type"
    dtype = _DTYPES.get(elem_type) or _DTYPES.setdefault(elem_type, dtype_name(elem_type))
    if dtype == "string":
        return "string"
    if not tensor_type.HasField("shape"):
        return "has an unknown shape"
    dims: list[int | str] = []
    for axis, dim in enumerate(tensor_type.shape.dim):
        which = dim.WhichOneof("value")
        if which == "dim_value" and dim.dim_value >= 0:
            dims.append(dim.dim_value)
        else:
            symbol = dim.dim_param if which == "dim_param" else ""
            dims.append(symbol if symbol in user_dims else f"axis {axis}")
    return (dtype, dims)


_DTYPES: dict[int, str] = {}  # ONNX elem type -> bloatguard's dtype name


def _known(shape: _Shape) -> bool:
    return all(isinstance(d, int) for d in shape[1])


def _reads(node) -> Iterator[str]:
    """Names `node` reads: its inputs, and what its subgraphs read from outside themselves."""
    for name in node.input:
        if name:
            yield name
    for graph in subgraphs(node):
        yield from _free_names(graph)


def _free_names(graph) -> set[str]:
    """Names a subgraph reads from the scopes around it."""
    defined = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    defined |= {s.values.name for s in graph.sparse_initializer}
    free: set[str] = set()
    for node in graph.node:
        for name in _reads(node):
            if name not in defined:
                free.add(name)
        defined.update(name for name in node.output if name)
    free.update(v.name for v in graph.output if v.name not in defined)
    return free


def _inner(where: str, what: str) -> str:
    return f"{what} in {where}" if where else what


def _label(node) -> str:
    name = node.name or (node.output[0] if node.output else "")
    return node.op_type if name in ("", node.op_type) else f"{node.op_type} {name!r}"
