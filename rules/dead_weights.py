from __future__ import annotations

import hashlib
from collections import defaultdict
from typing import Iterator

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

    The same for TFLite, from the reader's weight view: buffers no tensor names (metadata buffers
    aside) or only tensors no operator reads, operators whose results reach no output of their
    subgraph, and byte-identical buffers. Formats without a graph (state dicts, safetensors,
    GGUF) cannot say what is read, and are not checked.

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
        view = ctx.weight_uses()
        if view is None or not view.from_graph:
            return  # without a graph, nothing says what is read
        unused = view.unused or []
        if unused:
            wasted = sum(nbytes for _, _, nbytes in unused)
            names = [name for _, name, _ in unused]
            yield self.finding(
                ctx, f"{len(unused)} {view.stored_noun}(s) are never used ({human_bytes(wasted)}): "
                f"{listing(names)}",
                details={"initializers": capped([{"name": n, "where": w, "bytes": b}
                                                  for w, n, b in unused]),
                         "count": len(unused), "wasted_bytes": wasted},
                fix=Fix("remove-dead-weights", safe=True, details={"initializers": names}))
        dead = view.dead
        if dead is not None:
            yield self.finding(
                ctx, f"{dead.node_count} node(s) compute values that reach no output "
                f"({human_bytes(dead.wasted_bytes)} of weights only they use): {listing(dead.nodes)}",
                details={"nodes": capped(dead.nodes), "node_count": dead.node_count,
                         "weights": capped(dead.weights), "wasted_bytes": dead.wasted_bytes},
                fix=Fix("remove-dead-weights", safe=True, details={"nodes": dead.nodes}))
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
            # array.data is memoryview(array), which numpy declares a Buffer only on Python 3.12+
            digest = hashlib.blake2b(array.data.cast("B"), digest_size=16).hexdigest()
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

