"""The format-neutral op graph (bloatguard.opgraph): the ONNX reader's view keeps the ONNX
graph's scopes, labels and constants, in plain values."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from bloatguard.values import TensorValues

import factories

pytestmark = pytest.mark.usefixtures("debug_mode")

ROOT = Path(__file__).resolve().parent.parent


def test_the_view_imports_no_format():
    tree = ast.parse((ROOT / "bloatguard" / "opgraph.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names}
    assert imported <= {"__future__", "dataclasses", "typing", "numpy", "bloatguard.facts"}


def test_onnx_view_keeps_scopes_labels_and_constants(tmp_path):
    """If branches are scopes of their node, labelled as the weight view labels them; strings
    are str, element types dtype names, Constant shorthands tensors."""
    from bloatguard.formats import read_model
    from bloatguard.graph import node_label

    facts = read_model(factories.if_model(tmp_path / "if.onnx"), "if.onnx")
    graph = facts.handle.op_graph(facts)
    assert graph is facts.handle.op_graph(facts)  # built once
    legacy = facts.handle.graph
    assert [s.prefix for s in graph.scopes()] == [s.prefix for s in legacy.scopes()]
    assert [[s.label(n) for n in s.nodes] for s in graph.scopes()] \
        == [[f"{s.prefix}{node_label(n)}" for n in s.nodes] for s in legacy.scopes()]
    (if_node,) = [n for n in graph.main.nodes if n.op == "If"]
    assert if_node.subgraphs == graph.main.children and "then_branch" not in if_node.attributes
    for branch in if_node.subgraphs:
        assert branch.parent is graph.main and branch.owner is if_node
        # The branches read the main graph's input without declaring it.
        assert graph.outer_names(branch) == {"x"}

    nodes = [helper.make_node("Constant", [], ["k"], value_ints=[2, 3]),
             helper.make_node("Cast", ["x"], ["c"], to=TensorProto.FLOAT16),
             helper.make_node("Reshape", ["c", "k"], ["out"]),
             helper.make_node("Dropout", ["x"], ["dead"], name="unused")]
    path = factories.build(nodes, [factories.info("x", [6])],
                           [factories.info("out", [2, 3], TensorProto.FLOAT16)], [],
                           tmp_path / "m.onnx")
    facts = read_model(path, "m.onnx")
    graph = facts.handle.op_graph(facts)
    main = graph.main
    assert main.nodes[1].attributes == {"to": "float16"}
    shape = main.constant("k")
    assert shape is not None and (shape.dtype, shape.shape) == ("int64", (2,))
    assert shape.inline().tolist() == [2, 3]
    assert main.constants() == {"k"} and main.constant("c") is None
    with TensorValues(facts) as values:  # made up by the view from value_ints: no proto behind it
        assert values.array(shape).tolist() == [2, 3]
    assert [n.op for n in main.nodes if n in graph.live_nodes(main)] == ["Constant", "Cast", "Reshape"]
    assert [n.op for n in graph.consumers(main)["x"]] == ["Cast", "Dropout"]


def test_onnx_strings_and_weights_read_from_the_file(tmp_path):
    """String attributes come as str; a weight the reader left in the file is read by
    TensorValues.array, not by the view itself."""
    from bloatguard.formats import read_model

    weight = np.arange(64 * 32, dtype=np.float32).reshape(64, 32)  # 8 KiB: kept out of the graph
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm"),
             helper.make_node("Normalizer", ["y"], ["out"], domain="ai.onnx.ml", norm="L2")]
    path = factories.build(nodes, [factories.info("x", [1, 64])], [factories.info("out", [1, 32])],
                           [factories.init("w", weight)], tmp_path / "w.onnx",
                           opsets=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)])
    facts = read_model(path, "w.onnx")
    graph = facts.handle.op_graph(facts)
    assert graph.main.nodes[1].attribute("norm") == "L2"
    tensor = graph.main.constant("w")
    assert tensor is not None and tensor.nbytes == weight.nbytes
    assert tensor.inline() is None or np.array_equal(tensor.inline(), weight)
    with TensorValues(facts) as values:
        assert np.array_equal(values.array(tensor), weight)
