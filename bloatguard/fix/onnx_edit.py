"""Small, careful edits of an ONNX ModelProto that the transforms share.

ONNX names are SSA across a graph and its subgraphs: a subgraph may read any name of the graphs
around it without declaring it. So renaming a value means renaming its reads in nested
subgraphs too, and a value read as a subgraph *output* cannot be renamed to an outer name
(onnxruntime rejects "subgraph output is an outer scope value"): `rename_reads` refuses then.

Weights the transforms create are stored as initializers where the IR version allows it (IR >=
4; before that every initializer must also be a graph input, which would change the signature)
and as `Constant` nodes otherwise. Initializers matter beyond taste: onnxruntime's quantizers
only quantize weights stored as initializers.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bloatguard.graph import Scope, constant_value, model_scopes, node_label, subgraphs

if TYPE_CHECKING:
    from onnx import GraphProto


def graph_scopes(model) -> list[Scope]:
    """The main graph and every subgraph under it (model-local functions are left alone)."""
    return list(model_scopes(model)[0].walk())


def graph_of(scope: Scope) -> GraphProto:
    """The graph of a scope from graph_scopes: only a function body has none."""
    assert scope.graph is not None, scope.prefix
    return scope.graph


def label(scope: Scope, node) -> str:
    """How the rules name a node in their hints: `<scope prefix><op> <name>`."""
    return f"{scope.prefix}{node_label(node)}"


def defined_names(model) -> set[str]:
    """Every name defined anywhere in the model's graphs (for picking fresh names)."""
    names: set[str] = set()
    for scope in graph_scopes(model):
        names |= scope.defined()
        names |= {v.name for v in graph_of(scope).output}
    return names


class Namer:
    """Fresh value names that collide with nothing in the model."""

    def __init__(self, model) -> None:
        self.taken = defined_names(model)

    def __call__(self, base: str) -> str:
        for index in itertools.count():
            name = base if index == 0 else f"{base}_{index}"
            if name not in self.taken:
                self.taken.add(name)
                return name
        raise AssertionError  # unreachable


# --- reading ----------------------------------------------------------------------------------

def constant_array(scope: Scope, name: str) -> np.ndarray | None:
    """The value of a constant visible from `scope`: an initializer (not overridable by a graph
    input) or a `Constant` node output, here or in an enclosing graph; None otherwise. Reads
    the graphs as they are now, so constants an earlier edit stored are found."""
    from onnx import numpy_helper

    here: Scope | None = scope
    while here is not None:
        if name in here.inputs:
            return None  # a graph input (or an initializer it may override): not a constant
        if here.graph is not None:
            for tensor in here.graph.initializer:
                if tensor.name == name:
                    return numpy_helper.to_array(tensor)
        for node in here.graph.node if here.graph is not None else here.nodes:
            if node.op_type == "Constant" and node.output and node.output[0] == name:
                return constant_node_value(node)
            if name in node.output:
                return None  # computed at run time
        here = here.parent
    return None


def constant_node_value(node) -> np.ndarray | None:
    from onnx import numpy_helper

    tensor = constant_value(node)
    return None if tensor is None else numpy_helper.to_array(tensor)


def set_attribute(node, name: str, value) -> None:
    from onnx import helper

    for index, attr in enumerate(node.attribute):
        if attr.name == name:
            del node.attribute[index]
            break
    node.attribute.append(helper.make_attribute(name, value))


def readers(graph) -> dict[str, list]:
    """name -> nodes of `graph` that read it directly (not counting subgraphs)."""
    table: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            if name:
                table.setdefault(name, []).append(node)
    return table


def read_anywhere(graph, name: str) -> bool:
    """Whether `name` is read in `graph` or any graph nested in it, or is one of its outputs."""
    if any(v.name == name for v in graph.output):
        return True
    for node in graph.node:
        if name in node.input:
            return True
        if any(read_anywhere(sub, name) for sub in subgraphs(node)):
            return True
    return False


# --- renaming and removing --------------------------------------------------------------------

def nested_output_uses(graph, name: str) -> bool:
    """Whether a subgraph nested in `graph` lists `name` (an outer value) as an output."""
    for node in graph.node:
        for sub in subgraphs(node):
            if any(v.name == name for v in sub.output) or nested_output_uses(sub, name):
                return True
    return False


def rename_reads(graph, old: str, new: str) -> bool:
    """Make every reader of `old` in `graph` (and its subgraphs) read `new`. Returns False,
    changing nothing, when a nested subgraph lists `old` as an output (it cannot be pointed
    at an outer value)."""
    if nested_output_uses(graph, old):
        return False
    rename_everywhere(graph, old, new)
    return True


def rename_everywhere(graph, old: str, new: str) -> None:
    """Rename every read of `old` in `graph` and its subgraphs (no checks: see rename_reads)."""
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name == old:
                node.input[index] = new
        for sub in subgraphs(node):
            rename_everywhere(sub, old, new)


def remove_nodes(graph, doomed) -> None:
    """Remove the given NodeProtos (by identity) from a graph, in place: references to the
    other nodes stay valid (protobuf's upb backend keeps element wrappers stable)."""
    ids = {id(node) for node in doomed}
    for index in reversed(range(len(graph.node))):
        if id(graph.node[index]) in ids:
            del graph.node[index]


def drop_if_unread(model, names) -> list[str]:
    """Remove initializers and `Constant` nodes among `names` that nothing reads any more,
    in any graph. Returns what was removed. A transform calls this on the values it stopped
    reading, so it never removes weights that were dead before it ran (BG103's job)."""
    names = set(names)
    removed: list[str] = []
    for scope in reversed(graph_scopes(model)):  # inner graphs first: they may read outer names
        graph = graph_of(scope)
        candidates = names & (set(scope.initializers) | {n.output[0] for n in graph.node
                                                         if n.op_type == "Constant" and n.output})
        for name in candidates:
            if name in scope.inputs or read_anywhere(graph, name):
                continue
            drop_initializer(graph, name)
            remove_nodes(graph, [n for n in graph.node if n.op_type == "Constant" and n.output
                                 and n.output[0] == name])
            removed.append(name)
    return removed


def drop_initializer(graph, name: str) -> None:
    """Remove the (dense or sparse) initializer `name` from `graph`, if there."""
    for index, tensor in enumerate(graph.initializer):
        if tensor.name == name:
            del graph.initializer[index]
            return
    for index, sparse in enumerate(graph.sparse_initializer):
        if sparse.values.name == name:
            del graph.sparse_initializer[index]
            return


def prune_value_info(model) -> None:
    """Drop value_info entries of names no graph defines any more (stale shapes after a rename
    or a removal can mislead onnxruntime's shape inference)."""
    for scope in graph_scopes(model):
        graph = graph_of(scope)
        defined = scope.defined() | {v.name for v in graph.output}
        # Names of enclosing graphs may be annotated in a subgraph; keep those.
        here = scope.parent
        while here is not None:
            defined |= here.defined()
            here = here.parent
        for index in reversed(range(len(graph.value_info))):
            if graph.value_info[index].name not in defined:
                del graph.value_info[index]


def forget_shapes(graph, names) -> None:
    """Remove value_info annotations of these names (their shapes changed)."""
    names = set(names)
    for index in reversed(range(len(graph.value_info))):
        if graph.value_info[index].name in names:
            del graph.value_info[index]


# --- storing ----------------------------------------------------------------------------------

def store(model, graph, name: str, array: np.ndarray, before=None) -> None:
    """Store a tensor named `name` in `graph`: an initializer from IR 4 on, else a `Constant`
    node inserted before `before` (or first), which keeps the node order topological."""
    from onnx import helper, numpy_helper

    tensor = numpy_helper.from_array(np.ascontiguousarray(array), name)
    if model.ir_version >= 4:
        graph.initializer.append(tensor)
        return
    node = helper.make_node("Constant", [], [name], value=tensor)
    insert_node(graph, node, before)


def insert_node(graph, node, before=None) -> None:
    """Insert `node` right before `before` (first when None), in place."""
    position = 0
    if before is not None:
        position = next(i for i, n in enumerate(graph.node) if n is before)
    graph.node.insert(position, node)


def reclaim_name(graph, node, index: int, old: str | None, removed) -> None:
    """Give the tensor a transform stored for `node.input[index]` the name of the tensor it
    replaced, once that one is gone (`removed`): weight names are what users and tools map
    by, and a fix should not rename `conv1.weight` to `conv1.weight_bnfold` for nothing."""
    new = node.input[index]
    if not old or old not in removed or new == old:
        return
    for tensor in graph.initializer:
        if tensor.name == new:
            tensor.name = old
            break
    else:
        for other in graph.node:
            if other.op_type == "Constant" and other.output[:1] == [new]:
                other.output[0] = old
                for attr in other.attribute:
                    if attr.name == "value":
                        attr.t.name = old
                break
        else:
            return
    node.input[index] = old


# --- saving -----------------------------------------------------------------------------------

# Above this a protobuf cannot be serialized in one piece (2 GB limit, with headroom).
EXTERNAL_ABOVE = 1_500_000_000


def too_big_for_one_file(model) -> bool:
    return model.ByteSize() > EXTERNAL_ABOVE


def save(model, path: Path, external: bool) -> None:
    """Save a (candidate or intermediate) model, its weights in `<name>.data` next to it when
    the original kept external data or the protobuf would be too big for one piece."""
    import onnx

    if external or too_big_for_one_file(model):
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=f"{path.name}.data", size_threshold=1024)
    else:
        onnx.save_model(model, str(path))
