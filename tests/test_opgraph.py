"""The format-neutral op graph (bloatguard.opgraph) that BG102 and BG104 read.

Those rules handle plain values, never a protobuf: a made-up format whose handle supplies an
OpGraph gets their findings, and the ONNX reader's view keeps the ONNX graph's scopes, labels
and constants.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from bloatguard.facts import ModelFacts, ValueInfo
from bloatguard.opgraph import Node, OpGraph, Scope, Tensor
from bloatguard.values import TensorValues

import factories

pytestmark = pytest.mark.usefixtures("debug_mode")

ROOT = Path(__file__).resolve().parent.parent
GRAPH_RULES = ("redundant_features", "unfused_ops")


@pytest.mark.parametrize("module", GRAPH_RULES)
def test_the_graph_rules_see_only_the_neutral_view(module):
    tree = ast.parse((ROOT / "rules" / f"{module}.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            assert node.attr not in ("onnx_graph", "handle", "proto", "format"), ast.unparse(node)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [alias.name for alias in node.names]
            for name in names:
                assert name.split(".")[0] != "onnx" and name not in ("bloatguard.graph",) \
                    and not name.startswith("bloatguard.formats"), ast.unparse(node)


def test_the_view_imports_no_format():
    tree = ast.parse((ROOT / "bloatguard" / "opgraph.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names}
    assert imported <= {"__future__", "dataclasses", "typing", "numpy", "bloatguard.facts"}


def _tensor(name: str, array: np.ndarray) -> Tensor:
    return Tensor(name, str(array.dtype), array.shape, lambda: array)


def _node(op: str, inputs: list[str], outputs: list[str], name: str = "", **attributes) -> Node:
    return Node(op, "", name, inputs, outputs, lambda: dict(attributes))


class MadeUpHandle:
    """What a reader of a format with an op graph provides for the graph rules."""

    def __init__(self, graph: OpGraph) -> None:
        self.graph = graph

    def op_graph(self, facts):
        return self.graph


def made_up_model() -> ModelFacts:
    """x[batch, 4] -> MatMul (rows 1 and 3 zero) -> Conv-like Gemm -> BatchNorm -> Identity."""
    weight = np.ones((4, 3), dtype=np.float32)
    weight[[1, 3]] = 0
    constants = {"w": weight, "g": np.ones((3, 3), np.float32), "b": np.zeros(3, np.float32),
                 **{k: np.ones(3, np.float32) for k in ("scale", "bias", "mean", "var")}}
    nodes = [_node("MatMul", ["x", "w"], ["h"], "mm"),
             _node("Gemm", ["h", "g", "b"], ["y"], "fc"),
             _node("BatchNormalization", ["y", "scale", "bias", "mean", "var"], ["z"], "bn"),
             _node("Identity", ["z"], ["out"], "copy")]
    main = Scope("", nodes, ["x"], ["out"], {k: _tensor(k, v) for k, v in constants.items()})
    facts = ModelFacts(path="model.madeup", format="madeup", file_size=1)
    facts.inputs = [ValueInfo("x", "float32", ("batch", 4))]
    facts.handle = MadeUpHandle(OpGraph(main, []))
    return facts


def run(facts: ModelFacts, code: str):
    from bloatguard.config import Config
    from bloatguard.engine import run_rules
    from bloatguard.registry import find_rule

    (outcome,) = run_rules(facts, None, Path(facts.path), Config(), [find_rule(code)])
    assert not outcome.failed, facts.notes
    return outcome.findings


def test_a_new_format_with_an_op_graph_gets_the_graph_rules():
    facts = made_up_model()
    (features,) = run(facts, "BG102")
    assert [(f["input"], f["index"]) for f in features.details["features"]] == [("x", 1), ("x", 3)]
    assert "zero weights in MatMul mm" in features.message
    assert features.fix is not None and features.fix.kind == "remove-features"

    batchnorm, copies = run(facts, "BG104")
    assert batchnorm.details["batchnorm"] == [{"node": "BatchNormalization bn", "into": "Gemm fc",
                                               "channels": 3, "params_saved": 12,
                                               "bytes_saved": 48}]
    assert copies.details["nodes"] == [{"node": "Identity copy", "op": "Identity"}]


def test_no_op_graph_no_graph_findings():
    facts = made_up_model()
    facts.handle = None  # a format without a graph, or facts restored without their model
    assert run(facts, "BG102") == [] and run(facts, "BG104") == []


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
