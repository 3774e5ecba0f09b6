from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator

from bloatguard.facts import DTYPE_SIZES
from bloatguard.hygiene import capped, listing, parse_bool
from bloatguard.opgraph import Node, OpGraph, Scope, Tensor
from bloatguard.rule import Finding, Fix, Option, Rule, RuleContext
from bloatguard.units import human_bytes, human_count

# Ops whose output stays what they read: removable by renaming.
_PASS_THROUGH = ("Dropout", "Identity")
_FOLDS_INTO = ("Conv", "ConvTranspose", "Gemm")
# Never reported as foldable: nondeterministic ops; Q/DQ pairs, which quantized formats keep on
# purpose; ops whose folded result is larger than what they read (folding grows the file); and
# control flow, whose bodies may read values that are not constant.
_NEVER_FOLD = {
    "Constant", *_PASS_THROUGH,
    "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
    "Bernoulli",
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear",
    "ConstantOfShape", "Expand", "Tile", "Range", "EyeLike", "Resize", "Upsample",
    "If", "Loop", "Scan",
}
# Integer shape arithmetic (Shape -> Gather -> Unsqueeze -> Concat -> Reshape) that exporters leave
# on constants: folding it saves microseconds and no bytes, so it is left out unless configured.
_SHAPE_OPS = {"Shape", "Size", "Gather", "Unsqueeze", "Squeeze", "Concat", "Slice", "Cast",
              "Equal", "Not", "And", "Or", "Less", "Greater", "Add", "Sub", "Mul", "Div", "Neg",
              "Reshape", "Flatten", "Min", "Max", "Abs", "ReduceProd", "Where", "Mod"}
_SMALL_INT = 64  # elements: an integer tensor this small is shape data, not a weight


@dataclass
class _Found:
    batchnorm: list[dict] = field(default_factory=list)
    passthrough: list[dict] = field(default_factory=list)
    training: list[str] = field(default_factory=list)
    foldable: list[dict] = field(default_factory=list)


class UnfusedOps(Rule):
    """## What it does
    Finds work an inference graph does that could be done once, at export time:

    - `BatchNormalization` right after a `Conv`, `ConvTranspose` or `Gemm` whose output only it
      reads, with constant statistics: it can be folded into the layer's weights and bias;
    - `Dropout` (in inference mode) and `Identity` nodes, which only copy their input; an
      `Identity` that passes a value of an enclosing scope or a graph input through to a graph
      output is needed and is not reported;
    - nodes computed only from constants (initializers and `Constant` outputs, also those of
      enclosing scopes), such as a `Transpose` of a weight: the result can be stored instead.
      Integer shape arithmetic on small constants is left out by default (folding it saves no
      bytes), and so are ops whose folded result would be larger than their inputs
      (`ConstantOfShape`, `Expand`, `Tile`, `Range`, widening `Cast` of a stored weight) and
      `QuantizeLinear`/`DequantizeLinear`, which quantized formats keep on purpose.

    It also reports graphs exported in training mode (`BatchNormalization` with
    `training_mode=1`, active `Dropout`): their outputs depend on the batch and on chance.

    ## Why is this bad?
    Each unfused op costs a kernel launch and a pass over memory on every inference, and a
    BatchNorm keeps four vectors of parameters the folded layer does not need. Runtimes fold
    some of this at session start, but not all, not every runtime, and never in the file.

    ## Example
    `torch.onnx.export(model, ..., do_constant_folding=False)` keeps every `Conv` +
    `BatchNormalization` pair, and even the default export keeps a `BatchNorm1d` after a
    `Linear`. A graph exported with `training=TrainingMode.TRAINING` keeps `Dropout`.

    ## Use instead
    Export from `model.eval()` with `do_constant_folding=True`, fold BatchNorm into the layer
    before export (`torch.ao.quantization.fuse_modules`, or onnx-simplifier / onnxoptimizer's
    `fuse_bn_into_conv`), and strip `Dropout`/`Identity`.

    ## Fix safety
    Safe (`fold-batchnorm`, `strip-dropout-identity`, `fold-constants`): outputs are the same up
    to float rounding. A graph exported in training mode has no safe fix: re-export it in eval
    mode (`re-export-eval`), which changes its outputs on purpose.

    ## Options
    """

    code = "BG104"
    name = "unfused-ops"
    summary = "Foldable BatchNorm, Dropout/Identity and constant subgraphs left in the graph"
    options = {"fold-shape-ops": Option(parse_bool, False, "also report integer shape "
                                        "arithmetic computed only from constants.")}
    reads = frozenset({"model"})

    def check(self, ctx: RuleContext) -> Iterator[Finding]:
        graph = ctx.op_graph()
        if graph is None:
            return
        found = _Found()
        shape_ops = self.option(ctx, "fold-shape-ops")
        # Dead code is BG103's: here only what runs counts.
        for scope in graph.live_scopes():
            constants = scope.constants()
            live = graph.live_nodes(scope)
            nodes = [node for node in scope.nodes if node in live]
            _batchnorm(graph, scope, nodes, constants, found)
            _passthrough(graph, scope, nodes, constants, found)
            found.foldable += _foldable(scope, nodes, constants, shape_ops)
        yield from self._report(ctx, found)

    def _report(self, ctx: RuleContext, found: _Found) -> Iterator[Finding]:
        if found.batchnorm:
            params = sum(bn["params_saved"] for bn in found.batchnorm)
            saved = sum(bn["bytes_saved"] for bn in found.batchnorm)
            nodes = [bn["node"] for bn in found.batchnorm]
            yield self.finding(
                ctx, f"{len(nodes)} BatchNormalization node(s) could be folded into the "
                f"Conv/Gemm before them, saving {len(nodes)} node(s) and {human_count(params)} "
                f"parameters ({human_bytes(saved)}): {listing(nodes)}",
                details={"batchnorm": capped(found.batchnorm), "nodes_saved": len(nodes),
                         "params_saved": params, "bytes_saved": saved},
                fix=Fix("fold-batchnorm", safe=True, details={"nodes": nodes}))
        if found.passthrough:
            ops = Counter(item["op"] for item in found.passthrough)
            counts = " and ".join(f"{n} {op}" for op, n in sorted(ops.items()))
            nodes = [item["node"] for item in found.passthrough]
            yield self.finding(
                ctx, f"{counts} node(s) only copy their input in an inference graph; removing "
                f"them saves {len(nodes)} node(s): {listing(nodes)}",
                details={"nodes": capped(found.passthrough), "counts": dict(ops),
                         "nodes_saved": len(nodes)},
                fix=Fix("strip-dropout-identity", safe=True, details={"nodes": nodes}))
        if found.training:
            yield self.finding(
                ctx, f"the graph was exported in training mode: {listing(found.training)} "
                "use batch statistics or random masks; re-export from model.eval() with "
                "TrainingMode.EVAL",
                details={"nodes": capped(found.training), "count": len(found.training)},
                fix=Fix("re-export-eval", safe=False, details={"nodes": found.training}))
        if found.foldable:
            ops = Counter(item["op"] for item in found.foldable)
            nodes = [item["node"] for item in found.foldable]
            # Distinct weights, by name: the same weight sliced three times is one weight.
            weights = {name: size for item in found.foldable for name, size in item["weights"].items()}
            reads = (f"; they transform {len(weights)} stored weight(s) of "
                     f"{human_bytes(sum(weights.values()))} at run time") if weights else ""
            yield self.finding(
                ctx, f"{len(nodes)} node(s) compute only from constants ("
                + ", ".join(f"{n} {op}" for op, n in ops.most_common())
                + f"{reads}); fold them at export time to save {len(nodes)} node(s): "
                f"{listing(nodes, limit=3)}",
                details={"nodes": capped(found.foldable), "counts": dict(ops),
                         "nodes_saved": len(nodes),
                         "weight_bytes": sum(weights.values())},
                fix=Fix("fold-constants", safe=True, details={"nodes": nodes}))


def _batchnorm(graph: OpGraph, scope: Scope, nodes: list[Node], constants: set[str],
               found: _Found) -> None:
    producers = scope.producers()
    readers = graph.consumers(scope)
    for node in nodes:
        if node.op != "BatchNormalization" or not node.standard:
            continue
        if node.attribute("training_mode", 0) == 1:
            found.training.append(scope.label(node))
            continue
        x = node.inputs[0]
        layer = producers.get(x)
        if layer is None or layer.op not in _FOLDS_INTO or not layer.standard:
            continue
        # Folding rewrites the layer's weights: nothing else may read its output or weights
        # must be constants, and the BatchNorm's statistics too.
        if len(readers.get(x, [])) != 1 or x in scope.outputs:
            continue
        layer_params = [name for name in layer.inputs[1:] if name]
        if not all(name in constants for name in [*node.inputs[1:5], *layer_params]):
            continue
        scale = scope.constant(node.inputs[1])
        channels = scale.shape[0] if scale is not None and len(scale.shape) == 1 else 0
        width = DTYPE_SIZES.get(scale.dtype, 4) if scale is not None else 4
        has_bias = len(layer.inputs) > 2 and bool(layer.inputs[2])
        # Four vectors go; a layer without bias gains one.
        params = channels * (4 if has_bias else 3)
        found.batchnorm.append({"node": scope.label(node), "into": scope.label(layer),
                                "channels": channels, "params_saved": params,
                                "bytes_saved": int(params * width)})


def _passthrough(graph: OpGraph, scope: Scope, nodes: list[Node], constants: set[str],
                 found: _Found) -> None:
    producers = scope.producers()
    readers = graph.consumers(scope)
    for node in nodes:
        if node.op not in _PASS_THROUGH or not node.standard or not node.inputs:
            continue
        if node.op == "Dropout":
            mode = _dropout_training(scope, node, constants)
            if mode is None:
                continue  # training_mode is a runtime input: the caller decides
            if mode:
                found.training.append(scope.label(node))
                continue
            mask = node.outputs[1] if len(node.outputs) > 1 else ""
            if mask and (mask in readers or mask in scope.outputs):
                continue  # the mask is used; stripping needs more than a rename
        source, target = node.inputs[0], node.outputs[0]
        # Removing the node means renaming: either its readers read the source instead, or,
        # when it produces a graph output, the source's producer writes that output directly.
        # A graph input or a value of an enclosing scope cannot be renamed into an output.
        if target in scope.outputs and (source not in producers or source in scope.outputs):
            continue
        found.passthrough.append({"node": scope.label(node), "op": node.op})


def _dropout_training(scope: Scope, node: Node, constants: set[str]) -> bool | None:
    if len(node.inputs) < 3 or not node.inputs[2]:
        return False  # opset >= 12 default; earlier opsets are inference-only in every runtime
    name = node.inputs[2]
    if name not in constants:
        return None
    tensor = scope.constant(name)
    if tensor is None:
        return None
    value = tensor.inline()
    return None if value is None else bool(value.any())  # None: value not in the graph


def _foldable(scope: Scope, nodes: list[Node], constants: set[str], shape_ops: bool) -> list[dict]:
    """Nodes all of whose inputs are constants, propagating through foldable nodes."""
    known = set(constants)
    folded: list[Node] = []
    changed = True
    pending = [n for n in nodes if _can_fold(scope, n)]
    while changed:
        changed = False
        for node in list(pending):
            inputs = [name for name in node.inputs if name]
            if inputs and all(name in known for name in inputs):
                known.update(o for o in node.outputs if o)
                folded.append(node)
                pending.remove(node)
                changed = True
    if not shape_ops:
        by_output = {o: n for n in folded for o in n.outputs}
        folded = [n for n in folded if not _shape_arithmetic(scope, n, by_output)]
    return [{"node": scope.label(n), "op": n.op, "weights": _weights(scope, n)}
            for n in folded]


def _weights(scope: Scope, node: Node) -> dict[str, int]:
    """Stored weights (not small shape constants) a foldable node reads: name -> bytes."""
    weights = {}
    for name in node.inputs:
        tensor = scope.constant(name) if name else None
        if tensor is not None and not _small_int(tensor):
            weights[name] = tensor.nbytes
    return weights


def _can_fold(scope: Scope, node: Node) -> bool:
    if not node.standard or node.op in _NEVER_FOLD or node.subgraphs:
        return False
    if node.op == "Cast" and node.inputs:
        source = scope.constant(node.inputs[0])
        target = node.attribute("to")  # a dtype name
        if source is not None and target is not None:
            # A stored float16 weight cast up to float32 is compression, not waste.
            return DTYPE_SIZES.get(target, 0) <= DTYPE_SIZES.get(source.dtype, 0)
    return True


def _shape_arithmetic(scope: Scope, node: Node, by_output: dict[str, Node]) -> bool:
    """True for a shape op whose constant leaves are all small integer tensors."""
    if node.op not in _SHAPE_OPS:
        return False
    stack, seen = [node], set()
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        if current.op not in _SHAPE_OPS:
            return False
        for name in current.inputs:
            if not name:
                continue
            if name in by_output:
                stack.append(by_output[name])
                continue
            tensor = scope.constant(name)
            if tensor is None or not _small_int(tensor):
                return False
    return True


def _small_int(tensor: Tensor) -> bool:
    return tensor.dtype.startswith(("int", "uint", "bool")) and tensor.numel <= _SMALL_INT
