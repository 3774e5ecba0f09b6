"""`factorize-lowrank` (unsafe): replace a MatMul/Gemm weight W [K, N] by the two factors of its
truncated SVD at the rank BG107 found, A [K, r] and B [r, N], computed as two MatMuls:
`X @ W` becomes `(X @ A) @ B`, which holds r*(K+N) weights instead of K*N and costs as many
MACs per row. Nothing here judges the result: the verifier measures size, latency and fidelity
against the original and rejects a candidate that is slower or unfaithful.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bloatguard.fix import onnx_edit as edit
from bloatguard.graph import STANDARD_DOMAINS, Scope, attribute, subgraphs


def factorize_lowrank(model, params: dict[str, Any]) -> list[str]:
    """params["weights"]: [{"name", "where", "rank"}] from BG107's hint. A weight is factorized
    only when every node that reads it, in any graph, is a MatMul taking it as B or a Gemm
    taking it as B (transA = 0), and the factors hold fewer weights than it does."""
    from bloatguard.measure.lowrank import factors, lowrank_params

    changes: list[str] = []
    namer = edit.Namer(model)
    scopes = edit.graph_scopes(model)
    for wanted in params.get("weights", []):
        name, rank = wanted["name"], int(wanted["rank"])
        scope = _scope_of(scopes, wanted.get("where", "initializer"))
        if scope is None:
            continue
        weight = edit.constant_array(scope, name)
        readers = edit.readers(scope.graph).get(name, [])
        if weight is None or weight.ndim != 2 or weight.dtype.kind != "f" or not readers:
            continue
        if not all(_reads_as_b(node, name) for node in readers) or _read_nested(scope, name):
            continue
        k, n = weight.shape
        if rank <= 0 or lowrank_params(k, n, rank) >= k * n:
            continue
        left, right = factors(weight, rank)  # weight ~ left @ right
        first = readers[0]
        stored: dict[bool, tuple[str, str]] = {}
        for node in readers:
            transposed = node.op_type == "Gemm" and bool(attribute(node, "transB", 0))
            if transposed not in stored:
                # Gemm with transB reads W.T ~ right.T @ left.T: the same factors, transposed.
                pair = (right.T, left.T) if transposed else (left, right)
                names = (namer(f"{name}_lowrank_a"), namer(f"{name}_lowrank_b"))
                for stored_name, array in zip(names, pair):
                    edit.store(model, scope.graph, stored_name, np.ascontiguousarray(array),
                               before=first)
                stored[transposed] = names
            _split(model, scope, node, *stored[transposed], namer)
        removed = edit.drop_if_unread(model, [name])
        energy = _kept_energy(weight, left, right)
        changes.append(f"factorized {name} ({k}x{n}, {', '.join(sorted({r.op_type for r in readers}))}) "
                       f"into rank {rank} factors {k}x{rank} and {rank}x{n}: "
                       f"{lowrank_params(k, n, rank):,} weights instead of {k * n:,} "
                       f"({k * n / lowrank_params(k, n, rank):.1f}x fewer), keeping "
                       f"{energy:.2%} of its energy"
                       + ("" if name in removed else f"; {name} is still read elsewhere"))
    if changes:
        edit.prune_value_info(model)
    return changes


def _scope_of(scopes: list[Scope], where: str) -> Scope | None:
    prefix = where[: where.rfind("/") + 1]
    return next((scope for scope in scopes if scope.prefix == prefix), None)


def _reads_as_b(node, name: str) -> bool:
    if node.domain not in STANDARD_DOMAINS or len(node.input) < 2 or node.input[1] != name:
        return False
    if name == node.input[0] or (len(node.input) > 2 and name in node.input[2:]):
        return False
    if node.op_type == "MatMul":
        return True
    return node.op_type == "Gemm" and not attribute(node, "transA", 0)


def _read_nested(scope: Scope, name: str) -> bool:
    graph: Any = scope.graph
    return any(edit.read_anywhere(sub, name) for node in graph.node for sub in subgraphs(node))


def _split(model, scope: Scope, node, a_name: str, b_name: str, namer) -> None:
    """`node` (MatMul or Gemm reading the weight as B) becomes MatMul(X, A) -> node(., B)."""
    from onnx import helper

    hidden = namer(f"{node.output[0]}_lowrank")
    first = helper.make_node("MatMul", [node.input[0], a_name], [hidden],
                             name=namer(f"{node.name or node.output[0]}_lowrank"))
    edit.insert_node(scope.graph, first, before=node)
    node.input[0] = hidden
    node.input[1] = b_name
    if node.op_type == "Gemm":
        edit.set_attribute(node, "transB", 0)


def _kept_energy(weight: np.ndarray, left: np.ndarray, right: np.ndarray) -> float:
    w = weight.astype(np.float64)
    total = float(np.sum(w * w))
    if total == 0:
        return 1.0
    approx = left.astype(np.float64) @ right.astype(np.float64)
    return 1.0 - float(np.sum((w - approx) ** 2)) / total
