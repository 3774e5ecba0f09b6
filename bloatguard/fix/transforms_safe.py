"""Output-equivalent ONNX transforms (applied by plain `bloatguard fix`).

Each transform edits a ModelProto in place (weights loaded) and returns a list of short
descriptions of what it changed; an empty list means there was nothing to do. They re-check
their own preconditions rather than trusting the hint: a hint says *that* something is worth
trying, the transform decides *whether* it is exactly equivalent here. The verifier then
proves it on real onnxruntime runs before anything is written.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from bloatguard.fix import onnx_edit as edit
from bloatguard.graph import STANDARD_DOMAINS, ModelGraph, attribute, constant_value, subgraphs

# --- remove-dead-weights ----------------------------------------------------------------------

def remove_dead(model, params: dict[str, Any] | None = None) -> list[str]:
    """Remove nodes whose outputs reach no graph output, initializers nothing reads (except
    those that double as graph inputs: removing them would change the signature), and
    model-local functions no node calls. Repeats until nothing changes: removing a dead node
    can orphan the weights it read."""
    changes: list[str] = []
    while True:
        graph = ModelGraph(model)
        dead = []
        for scope in graph.live_scopes():
            if scope.graph is None:
                continue  # function bodies: their outputs are the function's, all live
            live = graph.live_nodes(scope)
            dead += [(scope, node) for node in scope.nodes if id(node) not in live]
        unused = []
        for scope in graph.live_scopes():
            if scope.graph is None:
                continue
            read = graph.names_read(scope)
            unused += [(scope, name) for name in scope.initializers
                       if name not in read and name not in scope.inputs]
        if not dead and not unused:
            break
        for scope, node in dead:
            edit.remove_nodes(scope.graph, [node])
            changes.append(f"removed dead node {edit.label(scope, node)}")
        for scope, name in unused:
            edit.drop_initializer(scope.graph, name)
            changes.append(f"removed unused initializer {scope.prefix}{name}")
    called = {(node.domain, node.op_type) for scope in ModelGraph(model).scopes()
              for node in scope.nodes}
    for index in reversed(range(len(model.functions))):
        function = model.functions[index]
        if (function.domain, function.name) not in called:
            del model.functions[index]
            changes.append(f"removed uncalled function {function.domain}.{function.name}")
    if changes:
        edit.prune_value_info(model)
    return changes


# --- deduplicate-weights ----------------------------------------------------------------------

def deduplicate(model, params: dict[str, Any] | None = None) -> list[str]:
    """Store byte-identical tensors once. The kept copy is a main-graph initializer (visible
    from every subgraph, with no node-order constraint); a copy that lives only in subgraphs
    is hoisted there under a fresh name. Readers of the other copies are renamed to it."""
    if model.ir_version < 4:
        return []  # main-graph initializers would have to become graph inputs
    from onnx import numpy_helper

    min_bytes = (params or {}).get("min_bytes", 1000)
    scopes = edit.graph_scopes(model)
    main = scopes[0]
    groups: dict[tuple, list[tuple]] = {}
    for scope in scopes:
        for kind, name, tensor in _stored(scope):
            if name in scope.inputs or any(v.name == name for v in edit.graph_of(scope).output):
                continue
            array = numpy_helper.to_array(tensor)
            if array.nbytes < max(min_bytes, 1) or array.dtype == object:
                continue
            digest = hashlib.blake2b(np.ascontiguousarray(array).tobytes(), digest_size=16).digest()
            groups.setdefault((tensor.data_type, tuple(tensor.dims), digest), []).append(
                (scope, kind, name, tensor))
    namer = edit.Namer(model)
    changes, hoisted = [], []
    for copies in groups.values():
        if len(copies) < 2:
            continue
        copies.sort(key=lambda c: (c[0] is not main, c[1] != "initializer"))
        scope, kind, name, tensor = copies[0]
        if scope is main and kind == "initializer":
            keep, rest = name, copies[1:]
        elif scope is main:  # a main-graph Constant: becomes an initializer of the same name
            keep, rest = name, copies[1:]
            edit.remove_nodes(main.graph, [n for n in main.graph.node
                                           if n.op_type == "Constant" and n.output[:1] == [name]])
            _append_initializer(main.graph, tensor, name)
        else:  # only in subgraphs: hoist one copy into the main graph
            keep, rest = namer(f"{name}_shared"), copies
            _append_initializer(main.graph, tensor, keep)
            hoisted.append(keep)
        for scope, kind, name, _ in rest:
            if not edit.rename_reads(scope.graph, name, keep):
                continue  # a nested subgraph outputs it directly: leave this copy
            _remove_stored(scope.graph, kind, name)
            changes.append(f"{scope.prefix}{name} now reads the identical tensor {keep}")
    # A hoisted copy nobody ended up reading (every rename refused) is dead weight we made.
    edit.drop_if_unread(model, hoisted)
    if changes:
        edit.prune_value_info(model)
    return changes


def _stored(scope):
    for tensor in scope.graph.initializer:
        yield "initializer", tensor.name, tensor
    for node in scope.graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value":
                    yield "constant", node.output[0], attr.t


def _append_initializer(graph, tensor, name: str) -> None:
    copy = graph.initializer.add()
    copy.CopyFrom(tensor)
    copy.name = name


def _remove_stored(graph, kind: str, name: str) -> None:
    if kind == "initializer":
        edit.drop_initializer(graph, name)
    else:
        edit.remove_nodes(graph, [n for n in graph.node
                                  if n.op_type == "Constant" and n.output[:1] == [name]])


# --- fold-batchnorm ---------------------------------------------------------------------------

def fold_batchnorm(model, params: dict[str, Any] | None = None) -> list[str]:
    """Fold an inference BatchNormalization into the Conv, ConvTranspose (group 1) or Gemm
    right before it, when only the BatchNorm reads the layer's output and every parameter is
    a constant. The layer gets new weights (the old ones may be shared) and writes the
    BatchNorm's output; y = s * (W x + b - mean) + beta with s = gamma / sqrt(var + eps)."""
    changes = []
    namer = edit.Namer(model)
    for scope in edit.graph_scopes(model):
        graph = edit.graph_of(scope)
        for bn in list(graph.node):
            if bn.op_type != "BatchNormalization" or bn.domain not in STANDARD_DOMAINS:
                continue
            folded = _fold_one(model, scope, bn, namer)
            if folded:
                changes.append(folded)
    if changes:
        edit.prune_value_info(model)
    return changes


def _fold_one(model, scope, bn, namer) -> str | None:
    graph = scope.graph
    if attribute(bn, "training_mode", 0) or len([o for o in bn.output if o]) != 1:
        return None
    if attribute(bn, "spatial", 1) != 1:
        return None  # opset < 9 per-activation statistics
    producers = {out: node for node in graph.node for out in node.output if out}
    layer = producers.get(bn.input[0])
    if layer is None or layer.op_type not in ("Conv", "ConvTranspose", "Gemm") \
            or layer.domain not in STANDARD_DOMAINS:
        return None
    x = bn.input[0]
    if len(edit.readers(graph).get(x, [])) != 1 or _read_in_subgraphs(graph, x) \
            or any(v.name == x for v in graph.output):
        return None
    stats = [edit.constant_array(scope, name) for name in bn.input[1:5]]
    weight = edit.constant_array(scope, layer.input[1])
    bias_name = layer.input[2] if len(layer.input) > 2 and layer.input[2] else None
    bias = edit.constant_array(scope, bias_name) if bias_name else None
    if any(s is None or s.ndim != 1 for s in stats) or weight is None \
            or (bias_name and bias is None) or weight.dtype.kind != "f":
        return None
    # every statistic is an array here (checked above)
    gamma, beta, mean, var = (s.astype(np.float64) for s in stats if s is not None)
    s = gamma / np.sqrt(var + float(attribute(bn, "epsilon", 1e-5)))
    shift = beta - mean * s
    w = weight.astype(np.float64)
    if layer.op_type == "Conv":
        if w.shape[0] != s.size:
            return None
        new_w = w * s.reshape(-1, *([1] * (w.ndim - 1)))
        new_b = (bias.astype(np.float64) if bias is not None else 0) * s + shift
    elif layer.op_type == "ConvTranspose":
        if attribute(layer, "group", 1) != 1 or w.ndim < 3 or w.shape[1] != s.size:
            return None
        new_w = w * s.reshape(1, -1, *([1] * (w.ndim - 2)))
        new_b = (bias.astype(np.float64) if bias is not None else 0) * s + shift
    else:
        new = _fold_gemm(layer, w, bias, s, shift)
        if new is None:
            return None
        new_w, new_b = new
    dtype = weight.dtype
    w_name = namer(f"{layer.input[1]}_bnfold")
    b_name = namer(f"{bias_name or layer.output[0]}_bnfold")
    old = [name for name in [*layer.input[1:], *bn.input[1:5]] if name]
    old_weight = layer.input[1]
    edit.store(model, graph, w_name, new_w.astype(dtype), before=layer)
    edit.store(model, graph, b_name, np.asarray(new_b, dtype=dtype), before=layer)
    layer.input[1] = w_name
    if len(layer.input) > 2:
        layer.input[2] = b_name
    else:
        layer.input.append(b_name)
    if layer.op_type == "Gemm":
        edit.set_attribute(layer, "beta", 1.0)
    layer.output[0] = bn.output[0]
    edit.remove_nodes(graph, [bn])
    removed = edit.drop_if_unread(model, old)
    edit.reclaim_name(graph, layer, 1, old_weight, removed)
    edit.reclaim_name(graph, layer, 2, bias_name, removed)
    return f"folded {edit.label(scope, bn)} into {edit.label(scope, layer)}"


def _fold_gemm(layer, w, bias, s, shift):
    """Gemm: Y = alpha * A @ B' + beta * C; scale B' along N and fold into C."""
    if w.ndim != 2:
        return None
    trans_b = attribute(layer, "transB", 0)
    n = w.shape[0] if trans_b else w.shape[1]
    if n != s.size:
        return None
    new_w = w * (s.reshape(-1, 1) if trans_b else s.reshape(1, -1))
    beta = float(attribute(layer, "beta", 1.0))
    c = beta * bias.astype(np.float64) if bias is not None else np.zeros(n)
    try:
        new_c = c * s + shift  # broadcasts C of shape (), (N,), (1, N) or (M, N)
    except ValueError:
        return None
    return new_w, new_c


# --- strip-dropout-identity -------------------------------------------------------------------

def strip_passthrough(model, params: dict[str, Any] | None = None) -> list[str]:
    """Remove inference-mode Dropout and Identity nodes by renaming: their readers read the
    source instead, or, when they produce a graph output, the source's producer writes that
    output. Skipped when neither is possible (a graph input or an outer value passed straight
    to an output, a used Dropout mask)."""
    changes = []
    for scope in edit.graph_scopes(model):
        graph = edit.graph_of(scope)
        for node in list(graph.node):
            if node.op_type not in ("Dropout", "Identity") or node.domain not in STANDARD_DOMAINS \
                    or not node.input or not node.input[0]:
                continue
            if node.op_type == "Dropout" and not _inference_dropout(scope, node):
                continue
            if _strip_one(graph, node):
                changes.append(f"removed {edit.label(scope, node)}")
    if changes:
        edit.prune_value_info(model)
    return changes


def _inference_dropout(scope, node) -> bool:
    if len(node.output) > 1 and node.output[1]:
        mask = node.output[1]
        if edit.read_anywhere(scope.graph, mask):
            return False
    if len(node.input) >= 3 and node.input[2]:
        mode = edit.constant_array(scope, node.input[2])
        return mode is not None and not bool(np.any(mode))
    # No training_mode input: opset >= 12 defaults to inference, and runtimes run the older
    # opsets' Dropout (ratio/is_test attributes) as inference-only.
    return True


def _strip_one(graph, node) -> bool:
    source, target = node.input[0], node.output[0]
    outputs = {v.name for v in graph.output}
    if target not in outputs:
        if not edit.rename_reads(graph, target, source):
            return False
        edit.remove_nodes(graph, [node])
        return True
    producer = next((n for n in graph.node if source in n.output), None)
    if producer is None or source in outputs:
        return False  # a graph input, an initializer or an outer value: must be copied
    if edit.nested_output_uses(graph, source):
        return False
    edit.remove_nodes(graph, [node])
    producer.output[list(producer.output).index(source)] = target
    edit.rename_everywhere(graph, source, target)
    return True


# --- fold-constants ---------------------------------------------------------------------------

def fold_constants(model, params: dict[str, Any] | None = None) -> list[str]:
    """Evaluate the nodes the hint names (computed only from constants) once, with onnx's
    reference evaluator, and store their results instead. The rule chose them: it leaves out
    ops whose results are larger than their inputs, random ops and Q/DQ pairs."""
    wanted = set((params or {}).get("nodes") or [])
    if not wanted:
        return []
    changes = []
    opsets = list(model.opset_import)
    for scope in edit.graph_scopes(model):
        graph = edit.graph_of(scope)
        for node in list(graph.node):
            if edit.label(scope, node) not in wanted or subgraphs(node):
                continue
            values = [edit.constant_array(scope, name) if name else None for name in node.input]
            if any(v is None for name, v in zip(node.input, values) if name):
                continue
            results = _evaluate(node, values, opsets, model.ir_version)
            if results is None:
                continue
            read = [name for name in node.input if name]
            for name, result in zip(node.output, results):
                if name:
                    edit.store(model, graph, name, result, before=node)
            edit.remove_nodes(graph, [node])
            edit.drop_if_unread(model, read)
            changes.append(f"folded {edit.label(scope, node)}")
    if changes:
        edit.prune_value_info(model)
    return changes


def _evaluate(node, values, opsets, ir_version):
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    names = [name for name in node.input if name]
    arrays = {name: v for name, v in zip(node.input, values) if name}
    inputs = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(arrays[name].dtype),
                                            list(arrays[name].shape)) for name in dict.fromkeys(names)]
    outputs = [helper.make_empty_tensor_value_info(name) for name in node.output if name]
    graph = helper.make_graph([node], "fold", inputs, outputs)
    tiny = helper.make_model(graph, opset_imports=opsets)
    tiny.ir_version = max(ir_version, 4)
    try:
        results = ReferenceEvaluator(tiny).run(None, arrays)
        # Round-trip through a TensorProto: proves the result can be stored as it is.
        return [numpy_helper.to_array(numpy_helper.from_array(np.asarray(r))) for r in results]
    except Exception:  # an op the reference evaluator lacks: leave the node alone
        return None


# --- weights as initializers (before onnxruntime's quantizers) --------------------------------

# Layers onnxruntime's quantizers quantize, and the inputs that hold their weights and biases.
_WEIGHT_INPUTS = {"Conv": (1, 2), "ConvTranspose": (1, 2), "MatMul": (1,), "Gemm": (1, 2)}
# Never folded on a weight's path: nondeterministic ops, and Q/DQ (a weight stored quantized on
# purpose stays so). Ops that grow what they read (Expand, Tile) are folded here, unlike BG104's
# folds: the quantizer stores their result in int8 right after.
_RANDOM_OR_QUANTIZED = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                        "Multinomial", "Bernoulli", "QuantizeLinear", "DequantizeLinear",
                        "DynamicQuantizeLinear"}


def weights_to_initializers(model, params: dict[str, Any] | None = None) -> list[str]:
    """Store the weights of Conv/ConvTranspose/MatMul/Gemm layers as initializers, the only
    place onnxruntime's quantizers look: weights computed from constants (a Transpose or an
    Identity of a Constant, say) are folded with `fold_constants`, then every `Constant` node
    becomes an initializer of the same name. Paddle and some TF exporters store every weight
    in a Constant node, and the quantizers then quantize nothing (or fail).

    Output-equivalent. From IR 4 on only: before that, an initializer must also be a graph
    input, which would change the signature."""
    if not weights_outside_initializers(model):
        return []
    changes = fold_constants(model, {"nodes": _weight_computations(model)})
    moved = _constants_to_initializers(model)
    if moved:
        changes.append(f"stored {len(moved)} Constant node value(s) as initializers, where "
                       "onnxruntime's quantizers look for weights")
    return changes


def weights_outside_initializers(model) -> bool:
    """Whether weights_to_initializers has anything to do. Reads the graph structure only, so
    it can decide on a model loaded without its (external) weight data."""
    if model.ir_version < 4:
        return False
    constant = any(node.op_type == "Constant" for scope in edit.graph_scopes(model)
                   for node in edit.graph_of(scope).node)
    return constant or bool(_weight_computations(model))


def _weight_computations(model) -> list[str]:
    """Labels (as fold_constants takes them) of the nodes that compute a layer's weight or bias
    from constants only, in graph order."""
    labels: list[str] = []
    for scope in edit.graph_scopes(model):
        graph = edit.graph_of(scope)
        producers = {out: node for node in graph.node for out in node.output if out}
        constants = ({t.name for t in graph.initializer} - set(scope.inputs)) | {
            n.output[0] for n in graph.node if n.op_type == "Constant" and n.output}
        paths: dict[str, list | None] = {}

        def path_to(name: str) -> list | None:
            """The nodes computing `name` from constants (empty for a constant), or None."""
            if name in constants:
                return []
            if name not in paths:
                paths[name] = None  # a cycle in a malformed graph ends here
                node = producers.get(name)
                if node is not None and node.domain in STANDARD_DOMAINS and not subgraphs(node) \
                        and node.op_type not in _RANDOM_OR_QUANTIZED:
                    found: list | None = []
                    for source in filter(None, node.input):
                        before = path_to(source)
                        found = None if before is None or found is None else found + before
                    paths[name] = None if found is None else [*found, node]
            return paths[name]

        wanted: set[int] = set()
        for node in graph.node:
            if node.op_type not in _WEIGHT_INPUTS or node.domain not in STANDARD_DOMAINS:
                continue
            for index in _WEIGHT_INPUTS[node.op_type]:
                if index < len(node.input) and node.input[index]:
                    wanted |= {id(n) for n in path_to(node.input[index]) or []}
        labels += [edit.label(scope, node) for node in graph.node if id(node) in wanted]
    return labels


def _constants_to_initializers(model) -> list[str]:
    """Make every dense `Constant` node an initializer of its graph, under its output's name.
    Left alone: constants that are graph outputs (an initializer cannot be one everywhere)."""
    moved = []
    for scope in edit.graph_scopes(model):
        graph = edit.graph_of(scope)
        outputs = {v.name for v in graph.output}
        for node in list(graph.node):
            if node.op_type != "Constant" or node.domain not in STANDARD_DOMAINS \
                    or len(node.output) != 1 or node.output[0] in outputs:
                continue
            tensor = constant_value(node)
            if tensor is None:
                continue  # sparse or string values
            stored = graph.initializer.add()
            stored.CopyFrom(tensor)
            stored.name = node.output[0]
            edit.remove_nodes(graph, [node])
            moved.append(f"{scope.prefix}{node.output[0]}")
    return moved


# --- prune-channels ---------------------------------------------------------------------------

# Ops between a Conv and its consumer that act per element and map 0 to 0: a channel that is
# zero stays zero through them (and f(c) is computable for a constant channel c).
_ZERO_PRESERVING = {
    "Relu": lambda v, node: np.maximum(v, 0),
    "LeakyRelu": lambda v, node: np.where(v >= 0, v, v * attribute(node, "alpha", 0.01)),
    "Tanh": lambda v, node: np.tanh(v),
    "Identity": lambda v, node: v,
    "Dropout": lambda v, node: v,
}


def prune_channels(model, params: dict[str, Any] | None = None) -> list[str]:
    """Remove output channels of a Conv whose weights are zero, and the matching input channels
    of the Conv(s) that read it (through Relu-like ops).

    Safe mode (default) removes only channels that are exactly zero with a zero bias: they
    output zero everywhere, and a zero input channel contributes nothing. With
    `params["tolerance"]` (unsafe), near-zero channels also go, and a channel's constant
    activation f(bias) is folded into the consumer's bias; that is exact for unpadded
    consumers and approximate at the borders of padded ones, which the verifier measures."""
    params = params or {}
    tolerance = params.get("tolerance")
    changes = []
    namer = edit.Namer(model)
    for scope in edit.graph_scopes(model):
        for conv in list(edit.graph_of(scope).node):
            if conv.op_type == "Conv" and conv.domain in STANDARD_DOMAINS:
                done = _prune_conv(model, scope, conv, tolerance, namer)
                if done:
                    changes.append(done)
    if changes:
        edit.prune_value_info(model)
    return changes


def _prune_conv(model, scope, conv, tolerance, namer) -> str | None:
    graph = scope.graph
    if attribute(conv, "group", 1) != 1 or len(conv.input) < 2:
        return None
    weight = edit.constant_array(scope, conv.input[1])
    has_bias = len(conv.input) > 2 and bool(conv.input[2])
    bias = edit.constant_array(scope, conv.input[2]) if has_bias else None
    if weight is None or weight.dtype.kind != "f" or weight.ndim < 3 or (has_bias and bias is None):
        return None
    out_channels = weight.shape[0]
    bias = bias if bias is not None else np.zeros(out_channels, weight.dtype)
    peaks = np.abs(weight.reshape(out_channels, -1)).max(axis=1)
    if tolerance is None:
        zero = (peaks == 0) & (bias == 0)
    else:
        rms = float(np.sqrt(np.mean(np.square(weight.astype(np.float64))))) or 1.0
        zero = peaks <= tolerance * rms
    if not zero.any() or zero.all():
        return None
    chain, consumers = _channel_chain(graph, conv)
    if chain is None:
        return None
    keep = np.flatnonzero(~zero)
    # The constant each removed channel carries into the consumers (0 in safe mode).
    constant = bias[zero].astype(np.float64)
    for node in chain:
        constant = _ZERO_PRESERVING[node.op_type](constant, node)
    consumer_weights = []
    for consumer in consumers:
        w = edit.constant_array(scope, consumer.input[1])
        c_has_bias = len(consumer.input) > 2 and bool(consumer.input[2])
        c_bias = edit.constant_array(scope, consumer.input[2]) if c_has_bias else None
        if w is None or w.ndim != weight.ndim or w.shape[1] != out_channels \
                or (c_has_bias and c_bias is None):
            return None
        consumer_weights.append((consumer, w, c_bias))
    if tolerance is None and np.any(constant != 0):
        return None
    old = [name for name in conv.input[1:] if name]
    renamed = [(conv, 1, conv.input[1])] + ([(conv, 2, conv.input[2])] if has_bias else [])
    edit.store(model, graph, w_name := namer(f"{conv.input[1]}_pruned"), weight[keep], before=conv)
    conv.input[1] = w_name
    if has_bias:
        edit.store(model, graph, b_name := namer(f"{conv.input[2]}_pruned"), bias[keep], before=conv)
        conv.input[2] = b_name
    for consumer, w, c_bias in consumer_weights:
        old += [name for name in consumer.input[1:] if name]
        renamed.append((consumer, 1, consumer.input[1]))
        if c_bias is not None:
            renamed.append((consumer, 2, consumer.input[2]))
        # Each removed channel held a constant: its contribution to every output channel is
        # that constant times the sum of the kernel (exact away from padded borders).
        spatial = tuple(range(2, w.ndim))
        extra = (w[:, zero].astype(np.float64).sum(axis=spatial) * constant).sum(axis=1)
        edit.store(model, graph, cw := namer(f"{consumer.input[1]}_pruned"), w[:, keep], before=consumer)
        consumer.input[1] = cw
        if np.any(extra != 0) or c_bias is not None:
            base = c_bias.astype(np.float64) if c_bias is not None else 0
            edit.store(model, graph, cb := namer(f"{consumer.output[0]}_bias"),
                       np.asarray(base + extra, dtype=w.dtype), before=consumer)
            if len(consumer.input) > 2:
                consumer.input[2] = cb
            else:
                consumer.input.append(cb)
    edit.forget_shapes(graph, [conv.output[0], *(n.output[0] for n in chain)])
    removed = edit.drop_if_unread(model, old)
    for node, index, name in renamed:
        edit.reclaim_name(graph, node, index, name, removed)
    return (f"removed {int(zero.sum())} of {out_channels} output channels of "
            f"{edit.label(scope, conv)} and the matching inputs of "
            + ", ".join(edit.label(scope, c) for c in consumers))


def _channel_chain(graph, conv):
    """(elementwise nodes after the Conv, consuming Convs), or (None, None) when the Conv's
    output goes anywhere else: a graph output, a subgraph, any other op."""
    outputs = {v.name for v in graph.output}
    table = edit.readers(graph)
    chain, value = [], conv.output[0]
    while True:
        if value in outputs or _read_in_subgraphs(graph, value):
            return None, None
        readers = table.get(value, [])
        if len(readers) == 1 and readers[0].op_type in _ZERO_PRESERVING \
                and readers[0].domain in STANDARD_DOMAINS and readers[0].input[0] == value:
            node = readers[0]
            if node.op_type == "Dropout" and (len(node.output) > 1 and node.output[1]):
                return None, None
            chain.append(node)
            value = node.output[0]
            continue
        if not readers or any(r.op_type != "Conv" or r.domain not in STANDARD_DOMAINS
                              or attribute(r, "group", 1) != 1 or r.input[0] != value
                              or list(r.input).count(value) != 1 for r in readers):
            return None, None
        return chain, readers


def _read_in_subgraphs(graph, name: str) -> bool:
    return any(edit.read_anywhere(sub, name) for node in graph.node for sub in subgraphs(node))


# --- prune-weights (exact zeros -> sparse storage) ---------------------------------------------

def sparse_weights(model, params: dict[str, Any] | None = None) -> list[str]:
    """Store mostly-zero main-graph initializers as sparse initializers (COO, int64 indices,
    as ONNX requires) when that is smaller. The values stay exactly the same; onnxruntime
    densifies them at load. With `params["tolerance"]` (unsafe), weights with
    |w| <= tolerance * rms(w) are first set to zero."""
    from onnx import helper, numpy_helper

    params = params or {}
    names = set(params.get("tensors") or [])
    tolerance = params.get("tolerance")
    graph = model.graph
    inputs = {v.name for v in graph.input}
    changes = []
    for tensor in list(graph.initializer):
        if tensor.name in inputs or (names and tensor.name not in names):
            continue
        array = numpy_helper.to_array(tensor)
        if array.dtype.kind != "f" or array.size < 16:
            continue
        if tolerance is not None:
            rms = float(np.sqrt(np.mean(np.square(array.astype(np.float64)))))
            array = np.where(np.abs(array) <= tolerance * rms, 0, array).astype(array.dtype)
        flat = array.reshape(-1)
        nonzero = np.flatnonzero(flat)
        if nonzero.size * (array.itemsize + 8) + 64 >= array.nbytes:
            continue  # COO with int64 indices would not be smaller
        values = numpy_helper.from_array(flat[nonzero], tensor.name)
        indices = numpy_helper.from_array(nonzero.astype(np.int64), f"{tensor.name}_indices")
        sparse = helper.make_sparse_tensor(values, indices, list(array.shape))
        edit.drop_initializer(graph, tensor.name)
        graph.sparse_initializer.append(sparse)
        changes.append(f"stored {tensor.name} sparsely ({nonzero.size} of {array.size} nonzero)")
    return changes


# --- narrow-dtypes ----------------------------------------------------------------------------

def narrow_storage(model, params: dict[str, Any] | None = None) -> list[str]:
    """Store wide weights in a narrower type with a `Cast` back to the original type, so every
    node still reads exactly the type it read before (and the I/O signature is untouched).
    int64 -> int32 only when every value fits (then it is exact); float64 -> float32 and
    float32 -> float16 round the weights (unsafe: `convert-fp16`, float64 `narrow-dtypes`).
    onnxruntime folds these Casts at session start, so inference runs as before."""
    from onnx import helper, numpy_helper

    params = params or {}
    source, target = np.dtype(params.get("from", "int64")), np.dtype(params.get("to", "int32"))
    names = set(params.get("tensors") or [])
    min_elements = params.get("min_elements", 1024)
    changes = []
    namer = edit.Namer(model)
    to = helper.np_dtype_to_tensor_dtype(source)
    for scope in edit.graph_scopes(model):
        graph = edit.graph_of(scope)
        stored = [(t.name, t, None) for t in graph.initializer]
        stored += [(n.output[0], a.t, n) for n in graph.node if n.op_type == "Constant" and n.output
                   for a in n.attribute if a.name == "value"]
        for name, tensor, constant in stored:
            if name in scope.inputs or (names and name not in names and tensor.name not in names):
                continue
            if tensor.data_type != to:
                continue
            array = numpy_helper.to_array(tensor)
            if array.size < min_elements or not _fits(array, target):
                continue
            narrow_name = namer(f"{name}_{target.name}")
            cast = helper.make_node("Cast", [narrow_name], [name], to=to,
                                    name=namer(f"{name}_widen"))
            if constant is None:
                edit.drop_initializer(graph, name)
                edit.insert_node(graph, cast)
                edit.store(model, graph, narrow_name, array.astype(target), before=cast)
            else:
                node = helper.make_node("Constant", [], [narrow_name],
                                        value=numpy_helper.from_array(array.astype(target), narrow_name))
                edit.insert_node(graph, node, before=constant)
                edit.insert_node(graph, cast, before=constant)
                edit.remove_nodes(graph, [constant])
            changes.append(f"stored {scope.prefix}{name} as {target.name}")
    return changes


def _fits(array: np.ndarray, target: np.dtype) -> bool:
    if array.size == 0:
        return True
    if target.kind in "iu":
        info = np.iinfo(target)
        return int(array.min()) >= info.min and int(array.max()) <= info.max
    finite = np.isfinite(array)
    # Values beyond the narrow type's range would become inf: keep such a tensor as it is.
    return bool(np.all(np.abs(array[finite]) <= np.finfo(target).max))
