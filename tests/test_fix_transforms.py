"""The transforms of `bloatguard fix`, one by one, on real onnxruntime runs: every safe
transform keeps the outputs (on the storage cases that trip peer tools too: Constant-node
weights, weights in If branches, torch exports with BatchNorm left unfused), and the lossy
ones keep the I/O signature and stay close."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from bloatguard.fix import transforms_quant as quant
from bloatguard.fix import transforms_safe as safe

import factories
from fix_models import (
    assert_same_outputs,
    const,
    conv_net,
    info,
    init,
    messy,
    rand,
    run,
    save,
    torch_bn_net,
    torch_export,
)


def ops(model) -> list[str]:
    found = []

    def walk(graph):
        for node in graph.node:
            found.append(node.op_type)
            for attr in node.attribute:
                if attr.HasField("g"):
                    walk(attr.g)

    walk(model.graph)
    return found


def apply(path: Path, *steps) -> tuple[onnx.ModelProto, list[str]]:
    model = onnx.load(str(path))
    changes = []
    for step, params in steps:
        changes += step(model, params)
    onnx.checker.check_model(model)
    return model, changes


# --- remove-dead-weights, deduplicate-weights ---------------------------------------------------

def test_dead_weights_and_duplicates_go_outputs_stay(tmp_path):
    path = messy(tmp_path / "m.onnx")
    feeds = [{"x": rand(1, 32, seed=s)} for s in range(3)]
    model, changes = apply(path, (safe.remove_dead, {}))
    assert sorted(changes) == sorted(["removed dead node Constant dead_scale", "removed dead node Mul dead_mul",
                                      "removed dead node Add dead_add", "removed unused initializer orphan",
                                      "removed unused initializer dead_bias"])
    assert_same_outputs(path, model, feeds, rtol=0)
    # The duplicate is BG103's other finding and another transform: untouched here.
    assert "Constant" in ops(model)

    model, changes = apply(path, (safe.deduplicate, {}), (safe.remove_dead, {}))
    assert changes[0] == "w_copy now reads the identical tensor w"
    assert ops(model) == ["MatMul", "MatMul"] and [t.name for t in model.graph.initializer] == ["w"]
    assert_same_outputs(path, model, feeds, rtol=0)


def test_duplicates_in_both_if_branches_are_hoisted(tmp_path):
    """The same 16x16 Constant weight in the then and else branch: stored once in the main
    graph, both branches read it from there."""
    w = np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32)

    def branch(name, extra):
        return helper.make_graph([const(f"{name}_w", w), helper.make_node("MatMul", ["x", f"{name}_w"], [f"{name}_m"]),
                                  helper.make_node(extra, [f"{name}_m"], [f"{name}_y"])],
                                 name, [], [info(f"{name}_y", [1, 16])])

    nodes = [helper.make_node("Greater", ["flag", "zero"], ["cond"]),
             helper.make_node("If", ["cond"], ["y"], then_branch=branch("then", "Relu"),
                              else_branch=branch("else", "Neg"))]
    path = save(nodes, [info("x", [1, 16]), info("flag", [], TensorProto.INT64)], [info("y", [1, 16])],
                [init("zero", np.array(0, np.int64))], tmp_path / "if.onnx")
    model, changes = apply(path, (safe.deduplicate, {}))
    names = [t.name for t in model.graph.initializer]
    assert len(changes) == 2 and len(names) == 2 and names[1].endswith("_w_shared")
    assert "Constant" not in ops(model)
    feeds = [{"x": rand(1, 16, seed=s) - 0.5, "flag": np.array(flag, np.int64)}
             for s, flag in ((0, 1), (1, 0))]
    assert_same_outputs(path, model, feeds, rtol=0)


def test_constant_node_weights_and_if_subgraphs_survive_every_safe_transform(tmp_path):
    """silero-vad style storage: weights as Constant nodes, only inside If branches."""
    path = factories.if_model(tmp_path / "if.onnx")
    model, changes = apply(path, (safe.strip_passthrough, {}), (safe.fold_batchnorm, {}),
                           (safe.deduplicate, {"min_bytes": 1}), (safe.remove_dead, {}))
    assert changes == []  # nothing is dead: the branch Constants are read from the branches
    feeds = [{"x": rand(1, 8), "sr": np.array(sr, np.int64)} for sr in (16000, 8000)]
    assert_same_outputs(path, model, feeds, rtol=0)
    mlp = factories.mlp(tmp_path / "mlp.onnx", weights_as="constant", sizes=(16, 64, 4))
    model, changes = apply(mlp, (safe.remove_dead, {}), (safe.deduplicate, {}))
    assert changes == []
    assert_same_outputs(mlp, model, [{"x": rand(2, 16)}], rtol=0)


# --- fold-batchnorm ------------------------------------------------------------------------------

def test_batchnorm_of_a_torch_export_is_folded(tmp_path):
    pytest.importorskip("torch")
    path = torch_export(torch_bn_net(), tmp_path / "bn.onnx", do_constant_folding=False)
    assert ops(onnx.load(str(path))).count("BatchNormalization") == 2
    model, changes = apply(path, (safe.fold_batchnorm, {}), (safe.strip_passthrough, {}))
    assert [c.split(" into ")[1].split()[0] for c in changes if "folded" in c] == ["Conv", "Gemm"]
    assert "BatchNormalization" not in ops(model)
    assert_same_outputs(path, model, [{"x": rand(2, 3, 8, 8, seed=s)} for s in range(3)])
    # The old Conv/Gemm weights and the BatchNorm vectors are gone with them.
    before = sum(t.ByteSize() for t in onnx.load(str(path)).graph.initializer)
    assert sum(t.ByteSize() for t in model.graph.initializer) < before


def test_batchnorm_folds_inside_an_if_branch_with_outer_weights(tmp_path):
    rng = np.random.default_rng(0)
    then = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"]),
         helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["t_y"], name="bn_in_if")],
        "then", [], [info("t_y", [1, 4, 2, 2])])
    other = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["e_y"])], "else", [],
                              [info("e_y", [1, 4, 2, 2])])
    nodes = [helper.make_node("Greater", ["flag", "zero"], ["cond"]),
             helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other)]
    inits = [init("w", rng.standard_normal((4, 3, 1, 1)).astype(np.float32)), init("zero", np.array(0, np.int64))]
    inits += [init(n, (rng.random(4) + 0.5).astype(np.float32)) for n in "sbmv"]
    path = save(nodes, [info("x", [1, 3, 2, 2]), info("flag", [], TensorProto.INT64)], [info("y", [1, 4, 2, 2])],
                inits, tmp_path / "m.onnx")
    model, changes = apply(path, (safe.fold_batchnorm, {}))
    assert len(changes) == 1 and "BatchNormalization" not in ops(model)
    # w is still read by the else branch: it stays; the BatchNorm vectors went.
    assert {t.name for t in model.graph.initializer} == {"w", "zero"}
    feeds = [{"x": rand(1, 3, 2, 2), "flag": np.array(f, np.int64)} for f in (0, 1)]
    assert_same_outputs(path, model, feeds)


def test_batchnorm_that_another_node_reads_is_left(tmp_path):
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1] * 4),
             helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["y"])]
    inits = [init("w", rng.standard_normal((4, 3, 3, 3)).astype(np.float32))]
    inits += [init(n, np.ones(4, np.float32)) for n in "sbmv"]
    path = save(nodes, [info("x", [1, 3, 4, 4])], [info("y", [1, 4, 4, 4]), info("c", [1, 4, 4, 4])],
                inits, tmp_path / "m.onnx")
    assert apply(path, (safe.fold_batchnorm, {}))[1] == []


# --- strip-dropout-identity, fold-constants ----------------------------------------------------

def test_dropout_and_identity_are_renamed_away(tmp_path):
    nodes = [helper.make_node("Dropout", ["x"], ["d"], name="drop"),
             helper.make_node("Identity", ["d"], ["i"], name="copy"),
             helper.make_node("Relu", ["i"], ["y"]),
             helper.make_node("Identity", ["x"], ["x_out"], name="needed"),  # input -> output
             helper.make_node("Neg", ["x"], ["n"]),
             helper.make_node("Identity", ["n"], ["z"], name="to_output")]  # producer renamed
    path = save(nodes, [info("x", [1, 4])], [info("y", [1, 4]), info("x_out", [1, 4]), info("z", [1, 4])],
                path=tmp_path / "m.onnx")
    model, changes = apply(path, (safe.strip_passthrough, {}))
    assert changes == ["removed Dropout drop", "removed Identity copy", "removed Identity to_output"]
    assert ops(model) == ["Relu", "Identity", "Neg"]
    assert [o.name for o in model.graph.output] == ["y", "x_out", "z"]
    assert_same_outputs(path, model, [{"x": rand(1, 4) - 0.5}], rtol=0)


def test_constant_subgraphs_are_folded_as_the_hint_names_them(tmp_path):
    w = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    nodes = [const("w_t", w.T.copy()),
             helper.make_node("Transpose", ["w_t"], ["w"], name="transpose_w"),
             helper.make_node("Mul", ["w", "two"], ["w2"], name="double_w"),
             helper.make_node("MatMul", ["x", "w2"], ["y"])]
    path = save(nodes, [info("x", [1, 4])], [info("y", [1, 8])], [init("two", np.float32(2))],
                tmp_path / "m.onnx")
    hint = {"nodes": ["Transpose transpose_w", "Mul double_w"]}
    model, changes = apply(path, (safe.fold_constants, hint))
    assert changes == ["folded Transpose transpose_w", "folded Mul double_w"]
    assert ops(model) == ["MatMul"] and [t.name for t in model.graph.initializer] == ["w2"]
    assert_same_outputs(path, model, [{"x": rand(1, 4)}], rtol=0)
    # Nodes the hint does not name are left alone (the rule decided they are not worth it).
    assert apply(path, (safe.fold_constants, {"nodes": []}))[1] == []


def test_folds_chain_where_results_are_stored_as_constant_nodes(tmp_path):
    # Before IR 4 a folded result is stored as a Constant node (an initializer would be an
    # input the caller may override); the next fold must find the node the previous one added.
    w = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    nodes = [const("w_t", w.T.copy()), const("two", np.float32(2)),
             helper.make_node("Transpose", ["w_t"], ["w"], name="transpose_w"),
             helper.make_node("Mul", ["w", "two"], ["w2"], name="double_w"),
             helper.make_node("MatMul", ["x", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "g", [info("x", [1, 4])], [info("y", [1, 8])])
    path = tmp_path / "ir3.onnx"
    onnx.save(helper.make_model(graph, ir_version=3, opset_imports=[helper.make_opsetid("", 8)]), str(path))
    model, changes = apply(path, (safe.fold_constants, {"nodes": ["Transpose transpose_w", "Mul double_w"]}))
    assert changes == ["folded Transpose transpose_w", "folded Mul double_w"]
    assert [n.op_type for n in model.graph.node if n.op_type != "Constant"] == ["MatMul"]
    assert_same_outputs(path, model, [{"x": rand(1, 4)}], rtol=0)


# --- prune-channels ------------------------------------------------------------------------------

def conv_pair(path: Path, *, bias_value=0.0, kernel2=3) -> Path:
    """Conv(8 out) -> Relu -> Conv; output channels 2 and 5 of the first Conv are zero."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    w1[[2, 5]] = 0
    b1 = rng.standard_normal(8).astype(np.float32)
    b1[[2, 5]] = bias_value
    w2 = rng.standard_normal((4, 8, kernel2, kernel2)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1] * 4, name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["y"], pads=[kernel2 // 2] * 4, name="conv2")]
    inits = [init("w1", w1), init("b1", b1), init("w2", w2), init("b2", np.zeros(4, np.float32))]
    return save(nodes, [info("x", [1, 3, 6, 6])], [info("y", [1, 4, 6, 6])], inits, path)


def test_zero_output_channels_and_their_consumer_inputs_are_removed(tmp_path):
    path = conv_pair(tmp_path / "m.onnx")
    model, changes = apply(path, (safe.prune_channels, {}))
    assert changes == ["removed 2 of 8 output channels of Conv conv1 and the matching inputs of Conv conv2"]
    shapes = {t.name: list(t.dims) for t in model.graph.initializer}
    assert sorted(shapes.values()) == [[4], [4, 6, 3, 3], [6], [6, 3, 3, 3]]
    assert_same_outputs(path, model, [{"x": rand(1, 3, 6, 6, seed=s)} for s in range(3)])


def test_zero_channels_with_a_bias_need_unsafe_mode(tmp_path):
    # A zero-weight channel with bias 0.7 outputs relu(0.7) everywhere: not removable exactly...
    path = conv_pair(tmp_path / "m.onnx", bias_value=0.7, kernel2=1)
    assert apply(path, (safe.prune_channels, {}))[1] == []
    # ...but its constant folds into the consumer's bias: exact for an unpadded 1x1 consumer.
    model, changes = apply(path, (safe.prune_channels, {"tolerance": 1e-3}))
    assert len(changes) == 1
    assert_same_outputs(path, model, [{"x": rand(1, 3, 6, 6)}])


# --- storage: sparse, narrow dtypes, fp16 -------------------------------------------------------

def test_mostly_zero_weights_are_stored_sparse_and_int64_narrowed(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 64)).astype(np.float32)
    w[rng.random(w.shape) < 0.85] = 0
    table = np.arange(2048, dtype=np.int64).reshape(2048, 1) % 64
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node("Gather", ["h", "table"], ["g"], axis=1),
             helper.make_node("ReduceSum", ["g", "axes"], ["y"], keepdims=0)]
    path = save(nodes, [info("x", [1, 64])], [info("y", [1, 2048])],
                [init("w", w), init("table", table), init("axes", np.array([2], np.int64))], tmp_path / "m.onnx")
    model, changes = apply(path, (safe.sparse_weights, {"tensors": ["w"]}),
                           (safe.narrow_storage, {"from": "int64", "to": "int32", "tensors": ["table"]}))
    assert changes == [f"stored w sparsely ({np.count_nonzero(w)} of 4096 nonzero)", "stored table as int32"]
    assert model.ByteSize() < onnx.load(str(path)).ByteSize() * 0.6
    assert_same_outputs(path, model, [{"x": rand(1, 64)}], rtol=1e-6)


def test_fp16_and_float64_storage_keep_types_and_stay_close(tmp_path):
    path = factories.mlp(tmp_path / "m.onnx", sizes=(16, 256, 8))
    model, changes = apply(path, (quant.convert_fp16, {}))
    # Biases (< 1024 elements) stay float32: a Cast node costs more than they would save.
    assert changes == ["stored w0 as float16", "stored w1 as float16"]
    assert model.ByteSize() < onnx.load(str(path)).ByteSize() * 0.65
    [want], [got] = run(path, {"x": rand(2, 16)}), run(model, {"x": rand(2, 16)})
    assert got.dtype == np.float32 and np.allclose(want, got, rtol=1e-2, atol=1e-2)
    doubles = factories.mlp(tmp_path / "d.onnx", sizes=(8, 16, 4), dtype=np.float64)
    model, changes = apply(doubles, (quant.narrow_float64, {}))
    assert changes == ["stored w0 as float32", "stored b0 as float32", "stored w1 as float32",
                       "stored b1 as float32"]
    x = np.random.default_rng(0).random((2, 8))
    [want], [got] = run(doubles, {"x": x}), run(model, {"x": x})
    assert got.dtype == np.float64 and np.allclose(want, got, rtol=1e-5)


# --- remove-features -----------------------------------------------------------------------------

def test_redundant_input_columns_are_cut_and_their_weights_folded(tmp_path):
    """Columns 1 (zero weights), 3 (constant 2.5 in the samples) and 4 (a copy of column 0)
    go; on the samples the outputs stay the same, and the unused input goes too."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 3)).astype(np.float32)
    w[1] = 0
    nodes = [helper.make_node("Gemm", ["x", "w", "c"], ["y"], transB=0, name="gemm")]
    path = save(nodes, [info("x", ["batch", 6]), info("unused", [1])], [info("y", ["batch", 3])],
                [init("w", w), init("c", np.ones(3, np.float32))], tmp_path / "m.onnx")
    x = rng.random((40, 6)).astype(np.float32)
    x[:, 3] = 2.5
    x[:, 4] = x[:, 0]
    np.savez(tmp_path / "samples.npz", x=x[None])
    model = onnx.load(str(path))
    params = {"features": [{"input": "x", "index": i} for i in (1, 3, 4)] + [{"input": "unused", "index": None}],
              "samples": str(tmp_path / "samples.npz")}
    changes = quant.remove_features(model, params)
    assert len(changes) == 2
    assert params["input_map"] == {"unused": "drop", "x": {"axis": 1, "keep": [0, 2, 5], "width": 6}}
    assert [v.name for v in model.graph.input] == ["x"]
    assert model.graph.input[0].type.tensor_type.shape.dim[1].dim_value == 3
    [want] = run(path, {"x": x, "unused": np.zeros(1, np.float32)})
    [got] = run(model, {"x": x[:, [0, 2, 5]]})
    assert np.allclose(want, got, rtol=1e-5, atol=1e-5)


def test_conv_net_factory_runs(tmp_path):
    path = conv_net(tmp_path / "c.onnx", channels=16, blocks=2, size=8)
    [boxes] = run(path, {"images": rand(1, 3, 8, 8)})
    assert boxes.shape == (1, 8, 8, 8)
