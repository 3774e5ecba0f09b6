"""ONNX reader: ModelFacts from the graph structure, without reading weight bytes.

Counts every stored tensor wherever exporters put it: initializers, sparse initializers,
`Constant` nodes (Paddle and some TF exporters store every weight that way), tensor attributes of
other nodes, the float tables of `ai.onnx.ml` operators, and all of these again inside `If`/`Loop`/
`Scan` subgraphs and model-local functions.
"""

from __future__ import annotations

import functools
import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, NamedTuple

from bloatguard.errors import UnreadableModel
from bloatguard.facts import ModelFacts, TensorInfo, ValueInfo, WeightView
from bloatguard.formats.onnx_wire import EMBEDDED_KEY, read_structure
from bloatguard.graph import dtype_name, node_label

if TYPE_CHECKING:
    from onnx import GraphProto, NodeProto, TensorProto

    from bloatguard.graph import ModelGraph, Scope
    from bloatguard.opgraph import OpGraph

_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL
# The ai.onnx ops with graph attributes (tests/test_compute.py checks this against onnx's schemas).
# Analyses of what runs (MACs, the hygiene rules' graph) look for subgraphs only in these.
_EXTERNAL_KEYS = {"location", "offset", "length", "checksum", "basepath"}


class OnnxModel:
    """The handle rules get for an ONNX model: the weightless proto, and the analyses of it the
    rules share, each built once per model on first use."""

    def __init__(self, proto) -> None:
        self.proto = proto
        self._view: WeightView | None = None
        self._op_graph: OpGraph | None = None

    @functools.cached_property
    def graph(self):
        """bloatguard.graph.ModelGraph: scopes, uses and liveness."""
        from bloatguard.graph import ModelGraph

        return ModelGraph(self.proto)

    @functools.cached_property
    def weight_uses(self):
        """bloatguard.graph.WeightUses: the nodes each stored weight reaches."""
        from bloatguard.graph import WeightUses

        return WeightUses(self.graph)

    def layers(self, facts: ModelFacts, macs_by_node: dict[str, int] | None,
               value_bytes: dict[str, int | None] | None = None) -> list:
        """bloatguard.facts.Layer for each node that reads weights or computes."""
        from bloatguard.graph import model_layers

        return model_layers(facts, self.graph, self.weight_uses, macs_by_node, value_bytes)

    def weight_view(self, facts: ModelFacts):
        """bloatguard.facts.WeightView of this model, built once."""
        if self._view is None:
            from bloatguard.graph import weight_view

            self._view = weight_view(facts, self)
        return self._view

    def op_graph(self, facts: ModelFacts) -> OpGraph:
        """The format-neutral bloatguard.opgraph.OpGraph of this model, built once on first
        use (only the rules that read the graph's structure ask for it)."""
        if self._op_graph is None:
            self._op_graph = neutral_graph(self.graph)
        return self._op_graph


# --- the neutral op graph (bloatguard.opgraph) -------------------------------------------------

# Attributes of standard ops that name an element type by its TensorProto number; the view
# gives them as dtype names, so a rule compares dtypes without ONNX's numbering.
_DTYPE_ATTRIBUTES = ("to", "dtype", "output_dtype")


def neutral_graph(graph: ModelGraph) -> OpGraph:
    """The OpGraph of a ModelGraph: the same scopes, labels and subgraphs (so that the rules'
    labels match the weight view's), with plain values in place of protos."""
    from bloatguard.opgraph import OpGraph

    main, *functions = (_neutral_scope(root, None, None) for root in graph.roots)
    for scope, root in zip(functions, graph.roots[1:]):
        owner = root.owner  # the FunctionProto: a node calls it by (domain, name)
        scope.function = (owner.domain, owner.name) if owner is not None else None
    return OpGraph(main, functions)


def _neutral_scope(scope: Scope, parent, owner):
    from bloatguard.opgraph import Node
    from bloatguard.opgraph import Scope as NeutralScope

    neutral = NeutralScope(scope.prefix, [], list(scope.inputs), list(scope.outputs),
                           {name: _neutral_tensor(t, name) for name, t in scope.initializers.items()},
                           parent, owner)
    nodes: dict[int, Node] = {}
    for proto in scope.nodes:
        # A slice copies a repeated field into a list twice as fast as list() does.
        node = Node(proto.op_type, proto.domain, proto.name, proto.input[:], proto.output[:],
                    functools.partial(_neutral_attributes, proto))
        nodes[id(proto)] = node
        neutral.nodes.append(node)
    for child in scope.children:  # in node order, as graph._with_children built them
        node = nodes[id(child.owner)]
        sub = _neutral_scope(child, neutral, node)
        node.subgraphs.append(sub)
        neutral.children.append(sub)
    return neutral


def _neutral_tensor(tensor, name: str | None = None):
    from bloatguard.graph import tensor_array
    from bloatguard.opgraph import Tensor

    return Tensor(name or tensor.name, dtype_name(tensor.data_type), tuple(int(d) for d in tensor.dims),
                  functools.partial(tensor_array, tensor), ref=tensor)


def _neutral_attributes(node) -> dict:
    """A node's attributes as plain values: strings decoded (losslessly), tensors as
    opgraph.Tensor. Graphs are the node's subgraphs instead; sparse tensors, type protos and
    references to a calling function's attributes (values unknown here) are left out."""
    from onnx import AttributeProto as A

    standard = node.domain in ("", "ai.onnx")
    values: dict = {}
    for attr in node.attribute:
        if attr.ref_attr_name:
            continue
        kind = attr.type
        if kind == A.INT:
            value = dtype_name(attr.i) if standard and attr.name in _DTYPE_ATTRIBUTES else attr.i
        elif kind == A.FLOAT:
            value = attr.f
        elif kind == A.STRING:
            value = attr.s.decode("utf-8", "surrogateescape")
        elif kind == A.INTS:
            value = list(attr.ints)
        elif kind == A.FLOATS:
            value = list(attr.floats)
        elif kind == A.STRINGS:
            value = [s.decode("utf-8", "surrogateescape") for s in attr.strings]
        elif kind == A.TENSOR:
            value = _neutral_tensor(attr.t)
        elif kind == A.TENSORS:
            value = [_neutral_tensor(t) for t in attr.tensors]
        elif kind == A.UNDEFINED:
            value = None
        else:
            continue
        values[attr.name] = value
    return values


def read_proto(path: Path):
    """The model's ModelProto without its bulk tensor data (see onnx_wire)."""
    import onnx
    from google.protobuf.message import DecodeError

    structure = read_structure(path)
    try:
        model = onnx.ModelProto.FromString(structure.model_bytes)
    except (DecodeError, ValueError, RuntimeError):
        raise UnreadableModel("not a valid ONNX protobuf (the file does not parse as a ModelProto)",
                              "re-export the model or restore the file from git") from None
    if not model.HasField("graph") or (not model.graph.node and not model.graph.initializer):
        raise UnreadableModel("parses as protobuf but holds no ONNX graph",
                              "check that this is an ONNX model, not another protobuf file")
    return model


def read(path: Path, display: str) -> ModelFacts:
    facts = ModelFacts(path=display, format="onnx", file_size=path.stat().st_size)
    model = read_proto(path)
    facts.handle = OnnxModel(model)
    facts.opsets = {(o.domain or "ai.onnx"): o.version for o in model.opset_import}

    # Walked once for the tensors, the attribute weights and the ops: the walk reads every
    # attribute of every node, most of reading a graph with many nodes.
    scope_list = list(scopes(model))
    external: dict[str, int] = {}
    for site in tensor_sites(model, scope_list):
        # Every tensor is checked (external data above all), whether it counts as a weight or not.
        info = _tensor_info(site.tensor, site.where, path, external)
        if site.counted:
            facts.tensors.append(info)
    for where, count, dtype in _attribute_weights(scope_list):
        facts.tensors.append(TensorInfo(name=where, dtype=dtype, shape=(count,), where=where))
    facts.file_size += sum(external.values())
    facts.external_files = sorted(external)

    facts.ops = Counter(node.op_type for _, node in _all_nodes(scope_list))
    initializer_names = {t.name for t in model.graph.initializer}
    facts.inputs = [_value_info(v) for v in model.graph.input if v.name not in initializer_names]
    facts.outputs = [_value_info(v) for v in model.graph.output]
    return facts


def _value_info(value) -> ValueInfo:
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        return ValueInfo(value.name, kind or "unknown", None)
    tensor_type = value.type.tensor_type
    if not tensor_type.HasField("shape"):
        return ValueInfo(value.name, dtype_name(tensor_type.elem_type), None)
    dims: list[int | str | None] = []
    for dim in tensor_type.shape.dim:
        if dim.HasField("dim_value") and dim.dim_value >= 0:
            dims.append(dim.dim_value)
        elif dim.HasField("dim_param"):
            dims.append(dim.dim_param or None)
        else:
            dims.append(None)
    return ValueInfo(value.name, dtype_name(tensor_type.elem_type), tuple(dims))


def scopes(model) -> Iterator[tuple[str, GraphProto | None, Iterable[NodeProto]]]:
    """(prefix, graph or None, nodes) for the main graph, every subgraph and every function."""
    yield from _nested("", model.graph, model.graph.node)
    for function in model.functions:
        yield from _nested(f"function {function.name}/", None, function.node)


def _nested(prefix: str, graph, nodes) -> Iterator[tuple[str, GraphProto | None, Iterable[NodeProto]]]:
    yield prefix, graph, nodes
    # Every attribute of every node, even where the op allows no graph: what a file stores is
    # counted, valid or not. Labels are built only for the few attributes that hold a graph.
    for node in nodes:
        for attribute in node.attribute:
            if attribute.HasField("g"):
                label = f"{prefix}{node_label(node)}/{attribute.name}"
                yield from _nested(f"{label}/", attribute.g, attribute.g.node)
            for index, graph in enumerate(attribute.graphs):
                label = f"{prefix}{node_label(node)}/{attribute.name}"
                yield from _nested(f"{label}[{index}]/", graph, graph.node)


def _all_nodes(scope_list) -> Iterator[tuple[str, NodeProto]]:
    """Every node of these scopes (`scopes(model)`) with a label of where it lives."""
    for prefix, _, nodes in scope_list:
        for node in nodes:
            yield prefix, node


class TensorSite(NamedTuple):
    where: str  # a label of where it lives, as in ModelFacts.tensors
    tensor: TensorProto
    counted: bool  # a stored weight (parameters), or only a place the format allows a tensor


def stored_tensors(model) -> Iterator[tuple[str, TensorProto]]:
    """(where, TensorProto) for every weight tensor the model stores."""
    return ((site.where, site.tensor) for site in tensor_sites(model) if site.counted)


def tensor_sites(model, scope_list: list | None = None) -> Iterator[TensorSite]:
    """Every TensorProto the ONNX format lets a model hold: the stored weights, and the places
    that are not weights but may still name external data (sparse indices, lists of sparse
    attribute values, functions' default attribute values, the graphs of training_info).
    `scope_list`: `list(scopes(model))`, when the caller has it already."""
    yield from _sites_in(list(scopes(model)) if scope_list is None else scope_list, counted=True)
    for function in model.functions:
        yield from _default_sites(f"function {function.name}/", function.attribute_proto)
    for index, info in enumerate(model.training_info):
        for name in ("initialization", "algorithm"):
            if info.HasField(name):
                graph = getattr(info, name)
                prefix = f"training_info[{index}].{name}/"
                yield from _sites_in(list(_nested(prefix, graph, graph.node)), counted=False)


def _sites_in(scope_list, *, counted: bool) -> Iterator[TensorSite]:
    """The tensors of these scopes: their initializers first, then their nodes' attributes."""
    for prefix, graph, _ in scope_list:
        if graph is None:
            continue
        for tensor in graph.initializer:
            yield TensorSite(f"{prefix}initializer", tensor, counted)
        for sparse in graph.sparse_initializer:
            yield TensorSite(f"{prefix}sparse", sparse.values, counted)
            yield TensorSite(f"{prefix}sparse indices", sparse.indices, False)
    for prefix, _, nodes in scope_list:
        for node in nodes:
            for attribute in node.attribute:
                kind = "constant" if node.op_type == "Constant" else f"attribute of {node.op_type}"
                yield from _attribute_sites(f"{prefix}{kind}", attribute, node,
                                            counted and not _fill_value(node, attribute))


def _fill_value(node, attribute) -> bool:
    """ConstantOfShape's `value`: the one element it fills its output with, a setting like an
    attribute's number, not a stored weight (exports hold one per dynamic shape computation)."""
    return (node.op_type == "ConstantOfShape" and node.domain in ("", "ai.onnx")
            and attribute.name == "value")


def _default_sites(prefix: str, attributes) -> Iterator[TensorSite]:
    """Tensors in a function's default attribute values, subgraphs included."""
    for attribute in attributes:
        where = f"{prefix}default {attribute.name}"
        yield from _attribute_sites(where, attribute, None, counted=False)
        graphs = [attribute.g] if attribute.HasField("g") else []
        for index, graph in enumerate([*graphs, *attribute.graphs]):
            scope_list = list(_nested(f"{where}[{index}]/", graph, graph.node))
            yield from _sites_in(scope_list, counted=False)


def _attribute_sites(where: str, attribute, node, counted: bool) -> Iterator[TensorSite]:
    """The tensors an attribute holds itself (its subgraphs are scopes of their own). Lists of
    sparse tensors and sparse indices never count as weights."""
    if attribute.HasField("t"):
        yield TensorSite(where, _named(attribute.t, node), counted)
    for tensor in attribute.tensors:
        yield TensorSite(where, _named(tensor, node), counted)
    if attribute.HasField("sparse_tensor"):
        sparse = attribute.sparse_tensor
        yield TensorSite(f"{where} (sparse)", _named(sparse.values, node), counted)
        yield TensorSite(f"{where} (sparse indices)", sparse.indices, False)
    for sparse in attribute.sparse_tensors:
        yield TensorSite(f"{where} (sparse)", sparse.values, False)
        yield TensorSite(f"{where} (sparse indices)", sparse.indices, False)


def _named(tensor, node):
    """An unnamed attribute tensor takes the name of the node's output (None: no node)."""
    if not tensor.name and node is not None and node.output:
        tensor.name = node.output[0]
    return tensor


def _attribute_weights(scope_list) -> Iterator[tuple[str, int, str]]:
    """Weights stored as plain attribute lists in these scopes (`scopes(model)`): Constant
    value_floats/value_ints, and the float tables (coefficients, thresholds, leaf weights) of
    ai.onnx.ml operators."""
    for prefix, node in _all_nodes(scope_list):
        for attribute in node.attribute:
            if node.op_type == "Constant" and attribute.name in ("value_float", "value_floats",
                                                                 "value_int", "value_ints"):
                count = len(attribute.floats) + len(attribute.ints) or 1
                dtype = "float32" if "float" in attribute.name else "int64"
                yield f"{prefix}{node.output[0]}", count, dtype
            elif node.domain == "ai.onnx.ml" and len(attribute.floats) > 0:
                yield f"{prefix}{node.name or node.op_type}.{attribute.name}", len(attribute.floats), "float32"


def _tensor_info(tensor, where: str, model_path: Path, external: dict[str, int]) -> TensorInfo:
    label = tensor.name or f"<{where}>"  # sparse indices have no name of their own
    shape = tuple(int(d) for d in tensor.dims)
    if any(d < 0 for d in shape):
        raise UnreadableModel(f"tensor {label!r} declares a negative dimension {shape}",
                              "re-export the model")
    info = TensorInfo(name=tensor.name, dtype=dtype_name(tensor.data_type), shape=shape, where=where)
    if tensor.data_location == _EXTERNAL:
        info.external = True
        entries = {e.key: e.value for e in tensor.external_data}
        location, size = _check_external(label, entries, model_path, info.nbytes)
        external[location] = size
    elif tensor.external_data and tensor.external_data[0].key != EMBEDDED_KEY:
        raise UnreadableModel(f"tensor {label!r} has external_data entries but is not "
                              "marked external", "re-export the model")
    else:
        _check_stored_size(tensor, info)
    return info


# Data fields whose size follows from the element count: field -> (bytes per element, dtypes).
# Varint-packed fields (int32_data, int64_data, uint64_data) cannot be sized without decoding.
_FIXED_WIDTH_FIELDS = {"float_data": (4, {"float32": 1, "complex64": 2}),
                       "double_data": (8, {"float64": 1, "complex128": 2})}


def _check_stored_size(tensor, info: TensorInfo) -> None:
    """Declared dims must match the bytes actually stored: a tensor that claims 2^62 elements
    over 64 bytes of data is corrupt (or a lie meant to blow up whoever allocates it)."""
    from bloatguard.formats.onnx_wire import EMBEDDED_KEY

    def corrupt(stored: str) -> UnreadableModel:
        return UnreadableModel(f"tensor {tensor.name!r} declares shape {list(info.shape)} "
                               f"({info.dtype}) but stores {stored}", "re-export the model")

    embedded = next((e.value for e in tensor.external_data if e.key == EMBEDDED_KEY), None)
    if embedded is not None:
        field, _, length = embedded.split(":")
        stored_bytes = int(length)
    elif tensor.raw_data:
        field, stored_bytes = "raw_data", len(tensor.raw_data)
    elif tensor.float_data:
        field, stored_bytes = "float_data", 4 * len(tensor.float_data)
    elif tensor.double_data:
        field, stored_bytes = "double_data", 8 * len(tensor.double_data)
    elif tensor.int32_data or tensor.int64_data or tensor.uint64_data or tensor.string_data:
        return
    else:
        if info.numel:
            raise corrupt("no data")
        return
    if field == "raw_data":
        expected = info.nbytes
    elif field in _FIXED_WIDTH_FIELDS:
        width, per_dtype = _FIXED_WIDTH_FIELDS[field]
        if info.dtype not in per_dtype:
            raise corrupt(f"its values in {field}, which cannot hold {info.dtype}")
        expected = info.numel * width * per_dtype[info.dtype]
    else:
        return
    if expected is not None and stored_bytes != expected:
        raise corrupt(f"{stored_bytes} bytes ({expected} expected)")


def _check_external(name: str, entries: dict[str, str], model_path: Path,
                    nbytes: int | None) -> tuple[str, int]:
    """Validate an external data reference before anything reads it (docs/architecture.md, "Security")."""

    def bad(cause: str) -> UnreadableModel:
        return UnreadableModel(f"external data of tensor {name!r}: {cause}",
                               "keep external data files as plain files next to the model, "
                               "referenced by relative paths")

    unknown = set(entries) - _EXTERNAL_KEYS
    if unknown:
        raise bad(f"unknown keys {sorted(unknown)}")
    location = entries.get("location", "")
    if not location:
        raise bad("no location")
    if "\x00" in location or any(ord(c) < 32 for c in location):
        raise bad(f"location {location!r} contains control characters")
    if os.path.isabs(location) or location.startswith(("\\", "/")) or ":" in location:
        raise bad(f"location {location!r} is an absolute path")
    parts = location.replace("\\", "/").split("/")
    if ".." in parts:
        raise bad(f"location {location!r} leaves the model's directory")
    directory = model_path.parent.resolve()
    target = directory / location
    if target.is_symlink():
        raise bad(f"location {location!r} is a symbolic link")
    real = Path(os.path.realpath(target))
    if directory not in real.parents:
        raise bad(f"location {location!r} resolves outside the model's directory")
    try:
        stat = real.stat()
    except FileNotFoundError:
        raise UnreadableModel(f"external data file {location!r} of tensor {name!r} is missing",
                              "commit the data file next to the model (or run `git lfs pull`)") from None
    if not real.is_file():
        raise bad(f"location {location!r} is not a regular file")
    if stat.st_nlink != 1:
        raise bad(f"location {location!r} is a hard link")
    try:
        offset = int(entries.get("offset", "0"))
        # Without a length the tensor's own size is what will be read.
        implied = nbytes if nbytes is not None else stat.st_size - offset
        length = int(entries["length"]) if "length" in entries else implied
    except ValueError:
        raise bad("offset or length is not an integer") from None
    if offset < 0 or length < 0 or offset + length > stat.st_size:
        raise bad(f"offset {offset} + length {length} is outside {location!r} "
                  f"({stat.st_size} bytes)")
    if nbytes is not None and length < nbytes:
        raise bad(f"length {length} is shorter than the tensor's {nbytes} bytes")
    return location, stat.st_size


def external_locations(path: Path) -> list[str]:
    """Relative locations of the external data files an ONNX model names (unvalidated: callers
    fetch only plain relative paths and the reader validates everything before use)."""
    try:
        model = read_proto(path)
    except Exception:
        return []
    locations = set()
    for _, tensor, _ in tensor_sites(model):
        if tensor.data_location == _EXTERNAL:
            for entry in tensor.external_data:
                if entry.key == "location":
                    locations.add(entry.value)
    return sorted(locations)
