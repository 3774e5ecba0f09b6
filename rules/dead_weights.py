from __future__ import annotations

import hashlib
from collections import defaultdict
from typing import Iterator

from bloatguard.graph import ModelGraph, Scope, count_nodes, node_label, subgraphs, tensor_nbytes
from bloatguard.hygiene import capped, listing
from bloatguard.rule import Finding, Fix, Option, Rule, RuleContext
from bloatguard.units import human_bytes, parse_size


class DeadWeights(Rule):
    """## What it does
    Finds bytes an ONNX model stores but never needs:

    - initializers that no node reads, in any scope (a name read from inside an `If`/`Loop`/`Scan`
      body counts as read: subgraphs may use the names of the graphs around them);
    - dead nodes: nodes whose outputs reach no graph output, with the `Constant` weights and the
      initializers that only they read;
    - identical tensors stored more than once (same dtype, shape and bytes; hashed one tensor at
      a time, so large models need no extra memory).

    ## Why is this bad?
    Every unused byte is downloaded, loaded and kept in memory by every user of the model, and
    it hides the model's real size from budgets and reviews. Leftovers of training graphs,
    half-removed heads and exporters that copy a shared weight for each use are common causes.

    ## Example
    A classifier exported with its auxiliary training head: the head's weights are initializers
    that no node reads, or the head's nodes are still there but feed no output.

    ## Use instead
    Remove what no output needs (`onnx.utils.extract_model`, onnx-simplifier, or
    `bloatguard fix`), and store a shared tensor once: every node may read the same initializer,
    and subgraphs may read an initializer of the main graph.

    ## Fix safety
    Safe (`remove-dead-weights`, `deduplicate-weights`): nothing that reaches an output changes.

    ## Options
    """

    code = "BG103"
    name = "dead-weights"
    summary = "Unused or duplicated weights and nodes that reach no output"
    options = {"min-bytes": Option(
        parse_size, 1000, "tensors smaller than this are not checked for duplicates (exporters "
        "repeat small shape constants such as `[0]` everywhere; that costs nothing).", '"1 KB"')}
    reads = frozenset({"model"})

    def check(self, ctx: RuleContext) -> Iterator[Finding]:
        graph = ctx.onnx_graph()
        if graph is None:
            return
        unused = _unused_initializers(graph)
        if unused:
            wasted = sum(nbytes for _, _, nbytes in unused)
            names = [name for _, name, _ in unused]
            yield self.finding(
                ctx, f"{len(unused)} initializer(s) are never used ({human_bytes(wasted)}): "
                f"{listing(names)}",
                details={"initializers": capped([{"name": n, "where": w, "bytes": b}
                                                  for w, n, b in unused]),
                         "count": len(unused), "wasted_bytes": wasted},
                fix=Fix("remove-dead-weights", safe=True, details={"initializers": names}))
        dead, dead_bytes, dead_weights = _dead_nodes(graph)
        if dead:
            count = sum(count_nodes(node) for _, node in dead)
            labels = [f"{scope.prefix}{node_label(node)}" for scope, node in dead]
            yield self.finding(
                ctx, f"{count} node(s) compute values that reach no output "
                f"({human_bytes(dead_bytes)} of weights only they use): {listing(labels)}",
                details={"nodes": capped(labels), "node_count": count,
                         "weights": capped(dead_weights), "wasted_bytes": dead_bytes},
                fix=Fix("remove-dead-weights", safe=True, details={"nodes": labels}))
        yield from self._duplicates(ctx)

    def _duplicates(self, ctx: RuleContext) -> Iterator[Finding]:
        import numpy as np

        values = ctx.values()
        if not values.available:
            return
        min_bytes = self.option(ctx, "min-bytes")
        groups: dict[tuple, list[str]] = defaultdict(list)
        sizes: dict[tuple, int] = {}
        for tensor in values:
            # Sparse values alone say nothing: the same values at other indices are another tensor.
            if "sparse" in tensor.where or tensor.array.nbytes < max(min_bytes, 1):
                continue
            array = np.ascontiguousarray(tensor.array)
            digest = hashlib.blake2b(memoryview(array).cast("B"), digest_size=16).hexdigest()
            key = (tensor.dtype, array.shape, digest)
            groups[key].append(f"{tensor.where}:{tensor.name}")
            sizes[key] = array.nbytes
        copies = [(key, names) for key, names in groups.items() if len(names) > 1]
        if not copies:
            return
        wasted = sum(sizes[key] * (len(names) - 1) for key, names in copies)
        extra = sum(len(names) - 1 for _, names in copies)
        sets = [{"tensors": names, "dtype": key[0], "shape": list(key[1]), "bytes": sizes[key]}
                for key, names in copies]
        yield self.finding(
            ctx, f"{extra} tensor(s) duplicate another stored tensor byte for byte "
            f"({human_bytes(wasted)} wasted): " + listing(" = ".join(n) for _, n in copies),
            details={"duplicates": capped(sets), "count": extra, "wasted_bytes": wasted},
            fix=Fix("deduplicate-weights", safe=True,
                    details={"duplicates": [names for _, names in copies]}))


def _unused_initializers(graph: ModelGraph) -> list[tuple[str, str, int]]:
    """(where, name, bytes) of initializers nothing reads, in scopes that can run at all."""
    unused = []
    for scope in graph.live_scopes():
        read = graph.names_read(scope)
        for name, tensor in scope.initializers.items():
            if name not in read:
                unused.append((f"{scope.prefix}initializer", name, tensor_nbytes(tensor)))
    return unused


def _dead_nodes(graph: ModelGraph) -> tuple[list, int, list[str]]:
    """Dead nodes per live scope, uncalled functions' bodies, and the weights only they hold."""
    dead: list[tuple[Scope, object]] = []
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
    return dead, wasted, weights


def _node_tensors(node) -> Iterator[object]:
    """Tensors stored in a node's attributes and in its subgraphs (initializers and Constants)."""
    for attribute in node.attribute:
        if attribute.HasField("t"):
            yield attribute.t
        yield from attribute.tensors
    for sub in subgraphs(node):
        yield from sub.initializer
        for inner in sub.node:
            yield from _node_tensors(inner)
