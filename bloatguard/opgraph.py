"""A format-neutral view of a model's operator graph, for the rules that read its structure.

A reader whose format has an op graph fills this view from its own objects (the ONNX reader
from its ModelGraph: `formats.onnx.OnnxModel.op_graph`), and rules reach it through
`RuleContext.op_graph()`, so that they handle plain values, never a format's protobufs or
helper library. Scopes are the main graph and the graphs nested in it (`If` branches, loop
bodies) and the model-local functions; each lists its nodes in order and the names it declares.

Op names, domains and attribute names are ONNX's operator set, the vocabulary the rules'
patterns are written in ("Conv", "BatchNormalization", "ai.onnx.ml"); a reader of another
format maps its operators onto it.

Subgraphs may read any name of the scopes around them without declaring it, so every answer
here counts such outer-scope references as uses (as bloatguard.graph does for the ONNX protos).

This module imports nothing of a format and no library but numpy (and that only for the values
of small constants): it sits below the rules, next to facts.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Hashable, Iterable, Iterator, Mapping, TypeVar

from bloatguard.facts import dtype_nbytes

if TYPE_CHECKING:
    import numpy as np

STANDARD_DOMAINS = ("", "ai.onnx")  # the standard operator set, as ONNX spells its domain


@dataclass(eq=False)
class Tensor:
    """A constant of the graph (an initializer, a Constant's value, a tensor attribute): its
    dtype (as bloatguard names dtypes) and shape at once, its value only when asked.

    `inline()` decodes what the graph itself holds (readers keep small constants in it) and
    never reads the model's weights; `ref` is the reader's own object, for
    `bloatguard.values.TensorValues.array`, which reads a weight's bytes from the file."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    decode: Callable[[], np.ndarray | None] = field(repr=False)
    ref: Any = field(default=None, repr=False)

    @property
    def numel(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count

    @property
    def nbytes(self) -> int:
        return dtype_nbytes(self.dtype, self.numel) or 0

    def inline(self) -> np.ndarray | None:
        """The value when the graph holds it; None when it does not or it cannot be decoded."""
        return self.decode()


def literal(name: str, dtype: str, values: Any) -> Tensor:
    """A tensor given by a Python scalar or list (the `value_int(s)`/`value_float(s)` shorthands
    of a Constant)."""
    import numpy as np

    shape: tuple[int, ...] = (len(values),) if isinstance(values, list) else ()
    return Tensor(name, dtype, shape, lambda: np.asarray(values, dtype=dtype))


@dataclass(eq=False)
class Node:
    """One operator. Identity is the node: nodes hash by object, so sets of nodes are cheap.

    `attributes` holds plain Python values (int, float, str, lists of them, Tensor), decoded on
    first use: a tree ensemble's tables are long and most rules never look at them. Graph
    attributes are not attributes here but `subgraphs`: the scopes the node runs."""

    op: str
    domain: str
    name: str
    inputs: list[str]  # "" for an omitted optional input, as the format spells it
    outputs: list[str]
    decode_attributes: Callable[[], dict[str, Any]] = field(repr=False)
    subgraphs: list[Scope] = field(default_factory=list, repr=False)
    _attributes: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def attributes(self) -> dict[str, Any]:
        if self._attributes is None:
            self._attributes = self.decode_attributes()
        return self._attributes

    def attribute(self, name: str, default: Any = None) -> Any:
        return self.attributes.get(name, default)

    @property
    def standard(self) -> bool:
        """An operator of the format's standard set (not a custom or ML-domain one)."""
        return self.domain in STANDARD_DOMAINS

    @property
    def label(self) -> str:
        """"MatMul fc1": op and name (or first output); exporters that name a node after its
        op (skl2onnx's "TreeEnsembleClassifier") get it once."""
        name = self.name or (self.outputs[0] if self.outputs else "")
        return self.op if name in ("", self.op) else f"{self.op} {name}"

    def constant_value(self) -> Tensor | None:
        """A Constant node's value (`value`, or the scalar/list shorthands; the first of them,
        as a runtime reads it); None for sparse and string values."""
        for key, value in self.attributes.items():
            if key == "value" and isinstance(value, Tensor):
                return value
            if key in ("value_int", "value_ints"):
                return literal(self.outputs[0], "int64", value)
            if key in ("value_float", "value_floats"):
                return literal(self.outputs[0], "float32", value)
        return None


@dataclass(eq=False)
class Scope:
    """One graph (the main graph, a subgraph or a function body) and what it defines."""

    prefix: str  # where it lives ("If n/then_branch/"), as the reader labels tensors
    nodes: list[Node]
    inputs: list[str]
    outputs: list[str]
    initializers: dict[str, Tensor]
    parent: Scope | None = None
    owner: Node | None = None  # the node running this subgraph
    function: tuple[str, str] | None = None  # (domain, name) a node calls a function body by
    children: list[Scope] = field(default_factory=list)
    _defined: set[str] | None = field(default=None, repr=False)
    _constants: dict[str, Node] | None = field(default=None, repr=False)

    def defined(self) -> set[str]:
        """Every name the scope defines: inputs, initializers, node outputs (built once)."""
        if self._defined is None:
            names = set(self.inputs) | set(self.initializers)
            for node in self.nodes:
                names.update(o for o in node.outputs if o)
            self._defined = names
        return self._defined

    def producers(self) -> dict[str, Node]:
        return {out: node for node in self.nodes for out in node.outputs if out}

    def label(self, node: Node) -> str:
        return f"{self.prefix}{node.label}"

    def walk(self) -> Iterator[Scope]:
        yield self
        for child in self.children:
            yield from child.walk()

    # --- constants -----------------------------------------------------------------------------

    def initializer_constants(self) -> set[str]:
        """Initializers that are constants. One that shares its name with a graph input is only
        a default the caller may override (old exports list every weight as an input too)."""
        return set(self.initializers) - set(self.inputs)

    def constant_nodes(self) -> dict[str, Node]:
        """Output name -> Constant node (the first, as a scan finds), built once: rules ask
        about one name at a time, and rescanning the scope for each made that quadratic."""
        if self._constants is None:
            self._constants = {}
            for node in self.nodes:
                if node.op == "Constant" and node.outputs:
                    self._constants.setdefault(node.outputs[0], node)
        return self._constants

    def constants(self) -> set[str]:
        """Names whose value is fixed in this scope: its own constants and those of the
        enclosing scopes it does not shadow."""
        own = self.initializer_constants() | set(self.constant_nodes())
        inherited: set[str] = set()
        parent = self.parent
        while parent is not None:
            inherited |= parent.initializer_constants() | set(parent.constant_nodes())
            parent = parent.parent
        return own | (inherited - self.defined())

    def constant(self, name: str) -> Tensor | None:
        """The tensor behind a constant name (initializer or Constant value), searching the
        enclosing scopes too; None when the value is not a stored tensor."""
        here: Scope | None = self
        while here is not None:
            if name in here.initializers and name not in here.inputs:
                return here.initializers[name]
            node = here.constant_nodes().get(name)
            if node is not None:
                return node.constant_value()
            if name in here.defined():
                return None  # defined here by something else: shadows outer scopes
            here = here.parent
        return None


class OpGraph:
    """A model's scopes plus memoized use information: who reads a name, what is live."""

    def __init__(self, main: Scope, functions: list[Scope]) -> None:
        self.main = main
        self.functions = functions  # model-local function bodies, each with `function` set
        self._outer: dict[int, frozenset[str]] = {}
        self._live: dict[int, set[Node]] = {}
        self._readers: dict[int, dict[str, list[Node]]] = {}

    def scopes(self) -> Iterator[Scope]:
        for root in (self.main, *self.functions):
            yield from root.walk()

    def outer_names(self, scope: Scope) -> frozenset[str]:
        """Names a subgraph reads without defining them: references to the enclosing scopes."""
        cached = self._outer.get(id(scope))
        if cached is None:
            read = set(scope.outputs)
            for node in scope.nodes:
                read.update(self.node_uses(node))
            cached = self._outer[id(scope)] = frozenset(read - scope.defined())
        return cached

    def node_uses(self, node: Node) -> list[str]:
        """Every name a node reads: its inputs and the outer-scope names of its subgraphs."""
        names = [name for name in node.inputs if name]
        for sub in node.subgraphs:
            names.extend(self.outer_names(sub))
        return names

    def consumers(self, scope: Scope) -> dict[str, list[Node]]:
        """name -> nodes of the scope that read it, directly or from inside their subgraphs."""
        found = self._readers.get(id(scope))
        if found is None:
            found = self._readers[id(scope)] = readers_of(scope.nodes, self.node_uses)
        return found

    def live_nodes(self, scope: Scope) -> set[Node]:
        """The nodes whose outputs reach one of the scope's outputs.

        A node without outputs cannot be judged (a custom op may act through side effects), so
        it is kept alive; a subgraph counts as used as a whole when its node is live."""
        live = self._live.get(id(scope))
        if live is not None:
            return live
        silent = [node for node in scope.nodes if not any(node.outputs)]
        live = set(live_ops(scope.outputs, scope.producers(), silent, self.node_uses))
        self._live[id(scope)] = live
        return live

    def live_scopes(self) -> Iterator[Scope]:
        """The main graph, the functions some node calls, and the subgraphs of live nodes
        (a dead node's bodies are dead with it)."""
        called = {(node.domain, node.op) for scope in self.scopes() for node in scope.nodes}
        stack = [self.main, *(f for f in self.functions if f.function in called)]
        while stack:
            scope = stack.pop()
            yield scope
            live = self.live_nodes(scope)
            stack.extend(child for child in scope.children if child.owner in live)


def linear_column_reader(op: str, domain: str, inputs: list[str], trans_a: int, name: str) -> bool:
    """Whether a node takes `name` as the left operand of a MatMul or Gemm (not transposed):
    the layout remove-features can cut input columns out of, with the matching rows of the
    constant weights. Asked by BG102's hint here and by the fix (bloatguard.graph), so that
    the two agree."""
    return (op in ("MatMul", "Gemm") and domain in STANDARD_DOMAINS and bool(inputs)
            and inputs[0] == name and not (op == "Gemm" and trans_a))


def reads_columns_linearly(readers: list[Node], name: str) -> bool:
    """Whether there are readers of `name` and every one is a linear_column_reader."""
    return bool(readers) and all(
        linear_column_reader(node.op, node.domain, node.inputs, node.attribute("transA", 0), name)
        for node in readers)


# --- walks every graph format shares -----------------------------------------------------------
#
# The ONNX protos (graph.ModelGraph), this view and the TFLite reader describe operators their own
# way; they pass in how an operator's reads are found, so each walk is written once.

_Name = TypeVar("_Name", bound=Hashable)
_Op = TypeVar("_Op")


def live_ops(outputs: Iterable[_Name], producers: Mapping[_Name, _Op], silent: Iterable[_Op],
             reads: Callable[[_Op], Iterable[_Name]]) -> list[_Op]:
    """The operators whose results reach `outputs`, walking back through `producers` (name ->
    operator). `silent` operators, which have no outputs, are kept: a custom op may act through
    side effects, so it cannot be judged dead. Operators are told apart by identity (protobuf
    messages do not hash)."""
    live = {id(op): op for op in silent}
    stack = list(outputs) + [name for op in live.values() for name in reads(op)]
    seen: set[_Name] = set()
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        op = producers.get(name)
        if op is not None and id(op) not in live:
            live[id(op)] = op
            stack.extend(reads(op))
    return list(live.values())


def readers_of(ops: Iterable[_Op], reads: Callable[[_Op], Iterable[_Name]]) -> dict[_Name, list[_Op]]:
    """name -> the operators that read it, each listed once per name, in operator order."""
    found: dict[_Name, list[_Op]] = {}
    for op in ops:
        for name in dict.fromkeys(reads(op)):
            found.setdefault(name, []).append(op)
    return found
