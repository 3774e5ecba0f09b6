"""The format-neutral weight view (bloatguard.facts.WeightView) that BG101, BG103, BG105 and
BG106 read: readers fill it, the rules never ask which format a model is.

A made-up format whose handle supplies only a view and raw arrays gets every one of those
rules' findings; the ONNX reader's view says what kind of layer each weight feeds.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from bloatguard.facts import DeadCode, ModelFacts, RawTensor, TensorInfo, WeightUse, WeightView

import factories

pytestmark = pytest.mark.usefixtures("debug_mode")

RULES = Path(__file__).resolve().parent.parent / "rules"
NEUTRAL_RULES = ("unquantized_layers", "dead_weights", "wide_dtypes", "prunable_weights")


@pytest.mark.parametrize("module", NEUTRAL_RULES)
def test_the_weight_rules_never_branch_on_a_format(module):
    """No comparison with `format`, no ONNX graph: what a rule knows of the model comes from
    the facts and the neutral view."""
    tree = ast.parse((RULES / f"{module}.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            names = {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}
            assert "format" not in names, ast.unparse(node)
        if isinstance(node, ast.Attribute):
            assert node.attr not in ("onnx_graph", "handle", "proto"), ast.unparse(node)
        if isinstance(node, ast.ImportFrom):
            assert node.module not in ("bloatguard.graph",) and "formats" not in (node.module or "")


class MadeUpHandle:
    """What a reader of a new format provides: the view, and where raw arrays lie."""

    def __init__(self, view: WeightView, raw: list[RawTensor]) -> None:
        self.view, self.raw_tensors = view, raw

    def weight_view(self, facts):
        return self.view


def made_up_model(tmp_path: Path) -> ModelFacts:
    """A file of raw float32 arrays: a conv kernel with two zero output channels, a matmul
    weight, a float64 table and an int64 table that fits int32; the view says what feeds what."""
    rng = np.random.default_rng(0)
    conv = rng.standard_normal((64, 32, 3, 3)).astype(np.float32)
    conv[[2, 5]] = 0
    matmul = rng.standard_normal((256, 128)).astype(np.float32)
    table = rng.standard_normal((64, 64))
    ids = np.arange(2048, dtype=np.int64)
    arrays = {"conv.k": conv, "fc.w": matmul, "table": table, "ids": ids}
    path = tmp_path / "model.madeup"
    offsets, blob = {}, b""
    for name, array in arrays.items():
        offsets[name] = len(blob)
        blob += array.tobytes()
    path.write_bytes(blob)
    tensors = [TensorInfo(name, str(a.dtype), a.shape, where="buffer") for name, a in arrays.items()]
    view = WeightView(
        toolchain="madeup", from_graph=True, stored_noun="buffer",
        uses={("buffer", "conv.k"): [WeightUse("conv", "CONV", "op 0", channel_axis=0)],
              ("buffer", "fc.w"): [WeightUse("matmul", "DENSE", "op 1", channel_axis=1)]},
        unused=[("buffer", "leftover", 4096)],
        dead=DeadCode(nodes=["DENSE op 7"], node_count=1, weights=["buffer:head"], wasted_bytes=512),
        float64_ops=["CAST op 3"])
    raw = [RawTensor(name, "buffer", str(a.dtype), a.shape, offsets[name]) for name, a in arrays.items()]
    facts = ModelFacts(path=str(path), format="madeup", file_size=len(blob), tensors=tensors)
    facts.file = path
    facts.handle = MadeUpHandle(view, raw)
    return facts


def run(facts: ModelFacts, code: str):
    from bloatguard.config import Config
    from bloatguard.engine import run_rules
    from bloatguard.registry import find_rule

    (outcome,) = run_rules(facts, None, Path(facts.path), Config(), [find_rule(code)])
    assert not outcome.failed, facts.notes
    return outcome.findings


def test_a_new_format_gets_every_weight_rule_from_its_view(tmp_path):
    facts = made_up_model(tmp_path)
    (bg101,) = run(facts, "BG101")
    assert bg101.details["by_op"] == {"CONV": 64 * 32 * 9 * 4, "DENSE": 256 * 128 * 4}
    assert [w["layer"] for w in bg101.details["weights"]] == ["op 1", "op 0"]  # by size
    # An unknown toolchain gets the plain int8 estimate and no fix hint.
    assert bg101.fix is None and bg101.details["bytes_saved"] == (64 * 32 * 9 + 256 * 128) * 3

    unused, dead = run(facts, "BG103")
    assert unused.message == "1 buffer(s) are never used (4.1 KB): leftover"
    assert dead.details == {"nodes": ["DENSE op 7"], "node_count": 1, "weights": ["buffer:head"],
                            "wasted_bytes": 512}

    float64, int64 = run(facts, "BG105")
    assert float64.details["nodes"] == ["CAST op 3"] and float64.details["weights_count"] == 1
    assert int64.details["values_read"] is True and int64.details["bytes_saved"] == 2048 * 4

    (channels,) = run(facts, "BG106")
    assert [(layer["name"], layer["channels"], layer["op"]) for layer in channels.details["layers"]] \
        == [("conv.k", [2, 5], "CONV")]


def test_no_view_no_weight_findings(tmp_path):
    facts = made_up_model(tmp_path)
    facts.handle = None  # restored from a cache without its model, say
    for code in ("BG101", "BG103", "BG106"):
        assert run(facts, code) == []


def test_onnx_view_says_which_kind_of_layer_each_weight_feeds(tmp_path):
    rng = np.random.default_rng(0)
    weights = {"dw": rng.standard_normal((8, 1, 3, 3)), "pw": rng.standard_normal((16, 8, 1, 1)),
               "fc": rng.standard_normal((16, 4)), "emb": rng.standard_normal((100, 16)),
               "wt": rng.standard_normal((4, 16))}
    nodes = [helper.make_node("Conv", ["x", "dw"], ["a"], group=8, name="depthwise"),
             helper.make_node("Conv", ["a", "pw"], ["b"], name="pointwise"),
             helper.make_node("GlobalAveragePool", ["b"], ["c"]),
             helper.make_node("Flatten", ["c"], ["d"]),
             helper.make_node("Transpose", ["wt"], ["wt_t"]),
             helper.make_node("MatMul", ["d", "fc"], ["e"], name="head"),
             helper.make_node("Gemm", ["d", "wt"], ["f"], transB=1, name="gemm"),
             helper.make_node("Gather", ["emb", "ids"], ["g"], name="lookup")]
    path = factories.build(
        nodes, [factories.info("x", [1, 8, 8, 8]), factories.info("ids", [3], TensorProto.INT64)],
        [factories.info("e", [1, 4]), factories.info("f", [1, 4]), factories.info("g", [3, 16])],
        [numpy_helper.from_array(w.astype(np.float32), name) for name, w in weights.items()],
        tmp_path / "m.onnx")
    from bloatguard.formats import read_model

    facts = read_model(path)
    view = facts.weight_view()
    assert view.toolchain == "onnxruntime" and view.from_graph and not view.quantized
    kinds = {name: [(u.kind, u.op, u.layer, u.channel_axis) for u in view("initializer", name)]
             for name in weights}
    assert kinds == {"dw": [("depthwise", "Conv", "Conv depthwise", 0)],
                     "pw": [("conv", "Conv", "Conv pointwise", 0)],
                     "fc": [("matmul", "MatMul", "MatMul head", 1)],
                     "emb": [("embedding", "Gather", "Gather lookup", None)],
                     "wt": [("matmul", "Gemm", "Gemm gemm", 0)]}
    assert view.unused == [] and view.dead is not None  # the Transpose of wt reaches nothing
    assert view.dead.nodes == ["Transpose wt_t"] and view.dead.wasted_bytes == 0


def test_state_dict_view_from_names(tmp_path):
    from safetensors.numpy import save_file

    from bloatguard.formats import read_model

    save_file({"conv.weight": np.zeros((8, 4, 3), np.float32), "lstm.weight_ih_l0": np.zeros((16, 4), np.float32),
               "tok_embeddings.weight": np.zeros((10, 4), np.float32), "fc.bias": np.zeros(8, np.float32),
               "q.weight": np.zeros((4, 4), np.int8)}, str(tmp_path / "m.safetensors"))
    view = read_model(tmp_path / "m.safetensors").weight_view()
    assert view.toolchain == "torch" and not view.from_graph and view.quantized  # an int8 matrix
    assert {name: [(u.kind, u.op, u.channel_axis) for u in uses]
            for (_, name), uses in view.uses.items()} == {
        "conv.weight": [("conv", "Conv", 0)], "lstm.weight_ih_l0": [("recurrent", "LSTM", None)],
        "tok_embeddings.weight": [("embedding", "Gather", None)], "q.weight": [("matmul", "MatMul", 0)]}
