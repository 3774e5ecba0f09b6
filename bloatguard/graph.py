"""Graph questions the hygiene rules share: who produces and who consumes a value, which nodes
reach an output, which values are constants. Works on the weightless ModelProto of the ONNX reader.

Subgraphs (`If` branches, `Loop`/`Scan` bodies) may read any name of the scopes around them
without declaring it, so every answer here counts such outer-scope references as uses; a linter
that forgets this reports the weights of silero-vad's `If` branches as unused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator

from bloatguard.facts import dtype_nbytes
from bloatguard.opgraph import live_ops, readers_of

if TYPE_CHECKING:
    from onnx import FunctionProto, GraphProto, NodeProto, TensorProto

    from bloatguard.facts import ModelFacts, WeightView

STANDARD_DOMAINS = ("", "ai.onnx")
# Standard ops that run a graph held in an attribute.
STD_OPS_WITH_GRAPHS = frozenset({"If", "Loop", "Scan", "SequenceMap"})


def dtype_name(data_type: int) -> str:
    """An ONNX TensorProto data type as bloatguard names dtypes ("float32", "int64", ...)."""
    import onnx

    try:
        name = onnx.TensorProto.DataType.Name(data_type).lower()
    except ValueError:
        return f"unknown({data_type})"
    return {"float": "float32", "double": "float64", "undefined": "unknown"}.get(name, name)


def node_label(node) -> str:
    """"MatMul fc1": op type and name (or first output); exporters that name a node after its
    op type (skl2onnx's "TreeEnsembleClassifier") get it once."""
    name = node.name or (node.output[0] if node.output else "")
    return node.op_type if name in ("", node.op_type) else f"{node.op_type} {name}"


def tensor_array(tensor):
    """The value of a TensorProto whose data the proto holds (a small Constant, an attribute);
    None when it does not (the reader skips large tensor data) or cannot be decoded."""
    from onnx import numpy_helper

    try:
        return numpy_helper.to_array(tensor)
    except Exception:  # data not in the proto, or a dtype numpy lacks
        return None


def subgraphs(node) -> list:
    """The graphs held in a node's attributes (If branches, Loop/Scan bodies)."""
    return [graph for _, graph in _labelled_subgraphs(node)]


def _labelled_subgraphs(node) -> Iterator[tuple[str, GraphProto]]:
    """(attribute name, with [index] for a list, graph) of a node that can run a graph. A graph
    attribute on any other standard op would never run, so it is no scope of the model (the
    reader still counts the weights it stores); and skipping is what keeps this fast."""
    if node.domain in STANDARD_DOMAINS and node.op_type not in STD_OPS_WITH_GRAPHS:
        return
    for attribute in node.attribute:
        if attribute.HasField("g"):
            yield attribute.name, attribute.g
        for index, graph in enumerate(attribute.graphs):
            yield f"{attribute.name}[{index}]", graph


def tensor_nbytes(tensor) -> int:
    size = 1
    for dim in tensor.dims:
        size *= int(dim)
    return dtype_nbytes(dtype_name(tensor.data_type), size) or 0


@dataclass(eq=False)
class Scope:
    """One graph (the main graph, a subgraph or a function body) and what it defines."""

    prefix: str  # where it lives, as in formats.onnx.scopes()
    graph: GraphProto | None  # None for a function body
    nodes: list
    inputs: list[str]
    outputs: list[str]
    initializers: dict[str, TensorProto]  # name -> tensor (sparse: its values)
    parent: Scope | None = None
    owner: NodeProto | FunctionProto | None = None  # the node holding this subgraph; a function
    children: list[Scope] = field(default_factory=list)
    _lookup: tuple | None = field(default=None, repr=False)

    def constant_lookup(self) -> tuple[dict[str, NodeProto], set[str]]:
        """(output name -> Constant node, every name defined here), built once: the rules ask
        about one weight at a time, and rescanning the scope for each made that quadratic.
        A snapshot, like the rules' view of the model: nothing edits a scope they read."""
        if self._lookup is None:
            constants: dict[str, NodeProto] = {}
            for node in self.nodes:
                if node.op_type == "Constant" and node.output:
                    constants.setdefault(node.output[0], node)  # the first, as a scan finds
            self._lookup = (constants, self.defined())
        return self._lookup

    def defined(self) -> set[str]:
        names = set(self.inputs) | set(self.initializers)
        for node in self.nodes:
            names.update(o for o in node.output if o)
        return names

    def producers(self) -> dict[str, NodeProto]:
        return {out: node for node in self.nodes for out in node.output if out}

    def walk(self) -> Iterator[Scope]:
        yield self
        for child in self.children:
            yield from child.walk()


def _graph_scope(graph, prefix: str, parent: Scope | None = None, owner=None) -> Scope:
    initializers = {t.name: t for t in graph.initializer}
    initializers.update({s.values.name: s.values for s in graph.sparse_initializer})
    scope = Scope(prefix, graph, list(graph.node), [v.name for v in graph.input],
                  [v.name for v in graph.output], initializers, parent, owner)
    return _with_children(scope)


def _with_children(scope: Scope) -> Scope:
    """The scope with a child scope for each subgraph of its nodes, labelled as the reader
    labels them (formats.onnx.scopes), so that weights found here match the reader's."""
    for node in scope.nodes:
        for name, sub in _labelled_subgraphs(node):
            scope.children.append(
                _graph_scope(sub, f"{scope.prefix}{node_label(node)}/{name}/", scope, node))
    return scope


def model_scopes(model) -> list[Scope]:
    """The main graph's scope tree, then one tree per model-local function."""
    roots = [_graph_scope(model.graph, "")]
    for function in model.functions:
        roots.append(_with_children(Scope(f"function {function.name}/", None, list(function.node),
                                          list(function.input), list(function.output), {},
                                          owner=function)))
    return roots


# --- uses and liveness -------------------------------------------------------------------------

class ModelGraph:
    """A model's scopes plus memoized use information. Build one per model and check."""

    def __init__(self, model) -> None:
        self.model = model
        self.roots = model_scopes(model)
        self._outer: dict[int, frozenset[str]] = {}  # id(GraphProto) -> names; model outlives us
        self._live: dict[int, set[int]] = {}
        self._readers: dict[int, dict[str, list]] = {}

    def scopes(self) -> Iterator[Scope]:
        for root in self.roots:
            yield from root.walk()

    def outer_names(self, graph) -> frozenset[str]:
        """Names a subgraph reads without defining them: references to the enclosing scopes."""
        cached = self._outer.get(id(graph))
        if cached is None:
            defined = {v.name for v in graph.input} | {t.name for t in graph.initializer}
            defined |= {s.values.name for s in graph.sparse_initializer}
            read = {v.name for v in graph.output}
            for node in graph.node:
                defined.update(o for o in node.output if o)
                read.update(self.node_uses(node))
            cached = self._outer[id(graph)] = frozenset(read - defined)
        return cached

    def node_uses(self, node) -> list[str]:
        """Every name a node reads: its inputs and the outer-scope names of its subgraphs."""
        names = [name for name in node.input if name]
        for graph in subgraphs(node):
            names.extend(self.outer_names(graph))
        return names

    def names_read(self, scope: Scope) -> set[str]:
        """Names read anywhere in a scope: by its nodes (subgraphs included) and as outputs."""
        read = set(scope.outputs)
        for node in scope.nodes:
            read.update(self.node_uses(node))
        return read

    def consumers(self, scope: Scope) -> dict[str, list]:
        """name -> nodes of the scope that read it, directly or from inside their subgraphs."""
        found = self._readers.get(id(scope))
        if found is None:
            found = self._readers[id(scope)] = readers_of(scope.nodes, self.node_uses)
        return found

    def live_nodes(self, scope: Scope) -> set[int]:
        """ids of the nodes whose outputs reach one of the scope's outputs.

        A node without outputs cannot be judged (a custom op may act through side effects), so
        it is kept alive; a subgraph body counts as used as a whole when its node is live.
        """
        if id(scope) in self._live:
            return self._live[id(scope)]
        silent = [node for node in scope.nodes if not any(node.output)]
        live = {id(node) for node in live_ops(scope.outputs, scope.producers(), silent,
                                                         self.node_uses)}
        self._live[id(scope)] = live
        return live


    def live_scopes(self) -> Iterator[Scope]:
        """The main graph, the functions some node calls, and the subgraphs of live nodes
        (a dead node's bodies are dead with it)."""
        called = {(node.domain, node.op_type) for scope in self.scopes() for node in scope.nodes}
        stack = [self.roots[0]]
        # roots[1:] are the model's functions (model_scopes), each owned by its FunctionProto
        stack += [root for root in self.roots[1:]
                  if root.owner is not None and (root.owner.domain, root.owner.name) in called]
        while stack:
            scope = stack.pop()
            yield scope
            live = self.live_nodes(scope)
            stack.extend(child for child in scope.children if id(child.owner) in live)


def count_nodes(node) -> int:
    """A node plus every node of its subgraphs."""
    return 1 + sum(count_nodes(inner) for graph in subgraphs(node) for inner in graph.node)


# --- constants ---------------------------------------------------------------------------------

def initializer_constants(scope: Scope) -> set[str]:
    """Initializers that are constants. One that shares its name with a graph input is only a
    default the caller may override (IR < 4 exports list every weight as an input too), so only
    names that are not inputs count."""
    return set(scope.initializers) - set(scope.inputs)


def inherited_constants(scope: Scope) -> set[str]:
    """Constant names visible from the enclosing scopes (not shadowed here)."""
    names: set[str] = set()
    parent = scope.parent
    while parent is not None:
        names |= initializer_constants(parent) | constant_node_outputs(parent)
        parent = parent.parent
    return names - scope.defined()


def constant_node_outputs(scope: Scope) -> set[str]:
    return {node.output[0] for node in scope.nodes if node.op_type == "Constant" and node.output}


def constant_tensor(scope: Scope, name: str):
    """The TensorProto behind a constant name (initializer or Constant `value`), searching the
    enclosing scopes too; None when the value is not a stored tensor."""
    here: Scope | None = scope
    while here is not None:
        if name in here.initializers and name not in here.inputs:
            return here.initializers[name]
        constants, defined = here.constant_lookup()
        if name in constants:
            return constant_value(constants[name])
        if name in defined:
            return None  # defined here by something else: shadows outer scopes
        here = here.parent
    return None


def constant_value(node):
    """A Constant node's value as a TensorProto (`value`, or the scalar/list shorthands); None
    for sparse and string values."""
    from onnx import TensorProto, helper

    for attr in node.attribute:
        if attr.name == "value" and attr.HasField("t"):
            return attr.t
        if attr.name in ("value_int", "value_ints"):
            values = [attr.i] if attr.name == "value_int" else list(attr.ints)
            dims = [] if attr.name == "value_int" else [len(values)]
            return helper.make_tensor(node.output[0], TensorProto.INT64, dims, values)
        if attr.name in ("value_float", "value_floats"):
            values = [attr.f] if attr.name == "value_float" else list(attr.floats)
            dims = [] if attr.name == "value_float" else [len(values)]
            return helper.make_tensor(node.output[0], TensorProto.FLOAT, dims, values)
    return None


def attribute(node, name: str, default=None):
    from onnx import helper

    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


def reads_columns_linearly(readers, name: str) -> bool:
    """Whether every reader takes `name` as the left operand of a MatMul or Gemm (not
    transposed): the layout remove-features can cut input columns out of, together with the
    matching rows of the constant weights."""
    from bloatguard.opgraph import linear_column_reader

    # One predicate with BG102's, which asks it of the neutral op graph: hint and fix agree.
    return bool(readers) and all(
        linear_column_reader(reader.op_type, reader.domain, list(reader.input),
                             attribute(reader, "transA", 0) if reader.op_type == "Gemm" else 0,
                             name)
        for reader in readers)


# --- where weights go ----------------------------------------------------------------------------

# Ops that only move, reshape or re-type a value. Exporters put them between a weight and the
# layer that uses it: Transpose before Gemm/MatMul, Cast after fp16 storage, and silero-vad's
# LSTM weights pass through Slice -> Concat -> Unsqueeze (gate reordering). Value: the input
# positions that carry the data through (None: all of them).
PASS_THROUGH: dict[str, tuple[int, ...] | None] = {
    "Identity": (0,), "Cast": (0,), "CastLike": (0,), "Transpose": (0,), "Reshape": (0,),
    "Flatten": (0,), "Squeeze": (0,), "Unsqueeze": (0,), "Slice": (0,), "Split": (0,),
    "Concat": None, "Expand": (0,), "Tile": (0,),
}


@dataclass(frozen=True, eq=False)
class WeightUse:
    """A node that consumes a stored weight, directly or through PASS_THROUGH ops (`via`)."""

    node: NodeProto
    index: int  # the input position the weight arrives at
    scope: Scope
    via: tuple[str, ...] = ()

    @property
    def op(self) -> str:
        return self.node.op_type

    @property
    def label(self) -> str:
        return f"{self.scope.prefix}{node_label(self.node)}"


def stored_weights(scope: Scope) -> Iterator[tuple[str, str, str]]:
    """(where, tensor name, value name) of the tensors one scope stores, keyed like
    formats.onnx.stored_tensors (and so like ModelFacts.tensors and TensorValues)."""
    sparse = {s.values.name for s in scope.graph.sparse_initializer} if scope.graph else set()
    for name in scope.initializers:
        yield f"{scope.prefix}{'sparse' if name in sparse else 'initializer'}", name, name
    for node in scope.nodes:
        if node.op_type != "Constant" or not node.output:
            continue
        for attr in node.attribute:
            if attr.HasField("t"):
                yield f"{scope.prefix}constant", attr.t.name or node.output[0], node.output[0]
            elif attr.HasField("sparse_tensor"):
                yield (f"{scope.prefix}constant (sparse)",
                       attr.sparse_tensor.values.name or node.output[0], node.output[0])


class WeightUses:
    """For every stored weight, the nodes its value reaches. Names resolve the ONNX way: a node
    inside a subgraph reading a name its own scopes do not define reads the enclosing scope's."""

    def __init__(self, graph: ModelGraph) -> None:
        self._readers: dict[int, dict[str, list[tuple[NodeProto, int]]]] = {}
        self.uses: dict[tuple[str, str], list[WeightUse]] = {}
        for scope in graph.scopes():
            for where, name, value in stored_weights(scope):
                self.uses.setdefault((where, name), []).extend(self._follow(scope, value))

    def __call__(self, where: str, name: str) -> list[WeightUse]:
        return self.uses.get((where, name), [])

    def _readers_of(self, scope: Scope, name: str) -> Iterator[tuple[NodeProto, int, Scope]]:
        table = self._readers.get(id(scope))
        if table is None:
            table = self._readers[id(scope)] = {}
            for node in scope.nodes:
                for index, input_name in enumerate(node.input):
                    if input_name:
                        table.setdefault(input_name, []).append((node, index))
        for node, index in table.get(name, ()):
            yield node, index, scope
        for child in scope.children:
            _, defined = child.constant_lookup()
            if name not in defined:  # not shadowed: the child reads this scope's value
                yield from self._readers_of(child, name)

    def _follow(self, scope: Scope, value: str) -> list[WeightUse]:
        found: list[WeightUse] = []
        stack: list[tuple[Scope, str, tuple[str, ...]]] = [(scope, value, ())]
        seen: set[tuple[int, str]] = set()
        while stack:
            here, name, via = stack.pop()
            if (id(here), name) in seen:
                continue
            seen.add((id(here), name))
            for node, index, reader_scope in self._readers_of(here, name):
                positions = PASS_THROUGH.get(node.op_type, ()) if node.domain in STANDARD_DOMAINS else ()
                if positions is None or index in positions:
                    stack += [(reader_scope, out, (*via, node.op_type)) for out in node.output if out]
                else:
                    found.append(WeightUse(node, index, reader_scope, via))
        return found


# --- the neutral weight view (bloatguard.facts.WeightView) of an ONNX model -------------------------

# Layers whose weights quantization and pruning act on, the input positions holding those
# weights (Conv's bias, Gemm's C and the LSTM bias B are not matrices of the layer), and what
# kind of layer each is.
WEIGHT_INPUTS = {"MatMul": (0, 1), "Gemm": (0, 1), "Conv": (1,), "ConvTranspose": (1,),
                 "Gather": (0,), "LSTM": (1, 2), "GRU": (1, 2), "RNN": (1, 2)}
LAYER_KINDS = {"MatMul": "matmul", "Gemm": "matmul", "Conv": "conv", "ConvTranspose": "conv",
               "Gather": "embedding", "LSTM": "recurrent", "GRU": "recurrent", "RNN": "recurrent"}
# Any of these marks a model as quantized on purpose: the float layers left are kept so.
QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "MatMulInteger", "ConvInteger",
                 "MatMulNBits", "QGemm", "QAttention", "MatMulBnb4", "GatherBlockQuantized"}
_DOUBLE = 11  # onnx.TensorProto.DOUBLE
# Ops whose `dtype` attribute names the type they produce.
_DTYPE_ATTR_OPS = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                   "EyeLike", "Multinomial", "Bernoulli"}


def is_quantized_op(op: str) -> bool:
    return op in QUANTIZED_OPS or op.startswith(("QLinear", "DynamicQuantize"))


def layer_uses(uses: list[WeightUse]) -> list[WeightUse]:
    """The uses where a weight enters a layer as its weight."""
    return [u for u in uses if u.node.domain in STANDARD_DOMAINS
            and u.index in WEIGHT_INPUTS.get(u.op, ())]


def weight_view(facts: ModelFacts, model) -> WeightView:
    """The WeightView of an ONNX model (facts from formats.onnx, `model` its OnnxModel)."""
    from bloatguard.facts import WeightView

    graph: ModelGraph = model.graph
    uses: WeightUses = model.weight_uses
    view = WeightView(toolchain="onnxruntime", from_graph=True, stored_noun="initializer",
                      quantized=any(is_quantized_op(op) for op in facts.ops))
    for tensor in facts.tensors:
        layers = layer_uses(uses(tensor.where, tensor.name))
        if layers:
            view.uses[(tensor.where, tensor.name)] = [_neutral_use(use, tensor.shape) for use in layers]
    view.unused = unused_initializers(graph)
    view.dead = dead_code(graph)
    view.float64_ops = double_nodes(graph)
    return view


def _neutral_use(use: WeightUse, shape: tuple[int, ...]):
    from bloatguard.facts import WeightUse as NeutralUse

    kind = LAYER_KINDS[use.op]
    if use.op == "Conv" and attribute(use.node, "group", 1) > 1 and len(shape) > 1 and shape[1] == 1:
        kind = "depthwise"
    groups = int(attribute(use.node, "group", 1)) if use.op in ("Conv", "ConvTranspose") else 1
    return NeutralUse(kind=kind, op=use.op, layer=use.label, index=use.index, via=use.via,
                      channel_axis=channel_axis(use, len(shape)), groups=groups)


def channel_axis(use: WeightUse, ndim: int) -> int | None:
    """The axis of a weight that indexes the layer's output channels, when the weight reaches
    the layer unchanged (a Transpose or Reshape on the way would move it)."""
    if set(use.via) - {"Cast", "Identity"} or ndim < 2:
        return None
    op, index = use.op, use.index
    if op == "Conv":
        return 0
    if op == "ConvTranspose":
        return 1 if attribute(use.node, "group", 1) == 1 else None
    if op == "MatMul":
        return ndim - 1 if index == 1 else ndim - 2
    if op == "Gemm" and ndim == 2:
        transposed = attribute(use.node, "transB" if index == 1 else "transA", 0)
        return (0 if transposed else 1) if index == 1 else (1 if transposed else 0)
    return None  # Gather rows are tokens, recurrent weights stack gates: no channel to prune


def unused_initializers(graph: ModelGraph) -> list[tuple[str, str, int]]:
    """(where, name, bytes) of initializers nothing reads, in scopes that can run at all."""
    unused = []
    for scope in graph.live_scopes():
        read = graph.names_read(scope)
        for name, tensor in scope.initializers.items():
            if name not in read:
                unused.append((f"{scope.prefix}initializer", name, tensor_nbytes(tensor)))
    return unused


def dead_code(graph: ModelGraph):
    """Dead nodes per live scope, uncalled functions' bodies, and the weights only they hold;
    None when every node is live."""
    from bloatguard.facts import DeadCode

    dead: list[tuple[Scope, NodeProto]] = []
    weights: list[str] = []
    wasted = 0
    scopes = list(graph.live_scopes())
    for root in graph.roots[1:]:
        if root not in scopes:
            dead += [(root, node) for node in root.nodes]
    for scope in scopes:
        live = graph.live_nodes(scope)
        dead += [(scope, node) for node in scope.nodes if id(node) not in live]
        # Initializers read, but only by dead nodes, go with them.
        readers = graph.consumers(scope)
        for name, tensor in scope.initializers.items():
            if readers.get(name) and all(id(n) not in live for n in readers[name]) \
                    and name not in scope.outputs:
                weights.append(f"{scope.prefix}initializer:{name}")
                wasted += tensor_nbytes(tensor)
    for scope, node in dead:
        for tensor in _node_tensors(node):
            weights.append(f"{scope.prefix}{node_label(node)}")
            wasted += tensor_nbytes(tensor)
    if not dead:
        return None
    return DeadCode(nodes=[f"{scope.prefix}{node_label(node)}" for scope, node in dead],
                    node_count=sum(count_nodes(node) for _, node in dead),
                    weights=weights, wasted_bytes=wasted)


def _node_tensors(node) -> Iterator[TensorProto]:
    """Tensors stored in a node's attributes and in its subgraphs (initializers and Constants)."""
    for attr in node.attribute:
        if attr.HasField("t"):
            yield attr.t
        yield from attr.tensors
    for sub in subgraphs(node):
        yield from sub.initializer
        for inner in sub.node:
            yield from _node_tensors(inner)


def double_nodes(graph: ModelGraph) -> list[str]:
    """Labels of the nodes that produce float64: Cast to DOUBLE, random/EyeLike nodes with a
    double `dtype`, ConstantOfShape with a double value."""
    return [f"{scope.prefix}{node_label(node)}" for scope in graph.scopes() for node in scope.nodes
            if any(_makes_double(node, attr) for attr in node.attribute)]


def _makes_double(node, attr) -> bool:
    if node.op_type == "Cast" and attr.name == "to":
        return attr.i == _DOUBLE
    if node.op_type in _DTYPE_ATTR_OPS and attr.name == "dtype":
        return attr.i == _DOUBLE
    return node.op_type == "ConstantOfShape" and attr.name == "value" and attr.t.data_type == _DOUBLE


# --- layers: the per-layer profile and the base/head layer diff (bloatguard.layers) -------------

def node_key(node) -> str:
    """How MACs per node are keyed (bloatguard.measure.compute): the node's first output (outputs
    are unique in a model), else its name."""
    return next((name for name in node.output if name), node.name)


def model_layers(facts, graph: ModelGraph, uses: WeightUses, macs_by_node: dict[str, int] | None,
                 value_bytes: dict[str, int | None] | None = None) -> list:
    """The layers of an ONNX model (bloatguard.facts.Layer): every node that reads a stored
    weight or computes, in graph order, subgraphs after their owner. A weight belongs to the
    first node that computes with it, looking through layout ops and DequantizeLinear (a QDQ
    model's int8 weight, scale and zero point belong to the MatMul they feed). Weights no node
    reads, and those held in attributes, form layers named after where they are stored.

    `macs_by_node`: MACs by node_key, None when the model's MACs are unknown (every layer's
    MACs are then None too: partial counts would mislead a diff). `value_bytes`: the bytes of
    each value the graph computes (measure.compute.profile), for the layers' activation bytes."""
    from bloatguard.facts import Layer

    owners: dict[int, list[tuple[str, str]]] = {}
    leftover: dict[str, list[tuple[str, str]]] = {}
    for tensor in facts.tensors:
        key = (tensor.where, tensor.name)
        owner = _computing_reader(uses, uses(*key))
        if owner is not None:
            owners.setdefault(id(owner.node), []).append(key)
        else:
            unread = tensor.where.endswith(("initializer", "sparse", "constant"))
            leftover.setdefault("(read by no node)" if unread else tensor.where, []).append(key)
    layers = []
    for scope in graph.scopes():
        for node in scope.nodes:
            macs = None if macs_by_node is None else macs_by_node.get(node_key(node), 0)
            weights = owners.get(id(node), [])
            if weights or macs:
                name = f"{scope.prefix}{node.name or node_key(node)}"
                layer = Layer(name, node.op_type, weights, macs)
                if value_bytes is not None:
                    sizes = [value_bytes.get(out) for out in node.output if out]
                    layer.activation_bytes = (None if None in sizes
                                              else sum(size or 0 for size in sizes))
                layers.append(layer)
    for name, weights in leftover.items():
        layers.append(Layer(name, "", weights, None if macs_by_node is None else 0))
    return layers


def _computing_reader(uses: WeightUses, found: list[WeightUse]) -> WeightUse | None:
    """The first node that computes with a weight, through DequantizeLinear nodes."""
    seen: set[int] = set()
    while found:
        use = found[0]
        if use.op != "DequantizeLinear" or id(use.node) in seen or not use.node.output:
            return use
        seen.add(id(use.node))
        onward = uses._follow(use.scope, use.node.output[0])
        if not onward:
            return use
        found = onward
    return None
