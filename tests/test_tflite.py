"""TFLite/LiteRT: exact params (dense and stored), bytes and MACs read statically through the
verifying flatbuffer reader; the weight rules through the neutral view; hostile files are BG000;
MediaPipe's published face models as the real-world check."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import published
import tflite_models as tm
from tflite_models import Op, T, every_layer, randn

pytestmark = pytest.mark.usefixtures("debug_mode")


def read(path: Path):
    from bloatguard.formats import read_model

    return read_model(path)


def run_rule(path: Path, code: str, **options):
    from bloatguard.config import Config
    from bloatguard.engine import apply_rules, measure
    from bloatguard.registry import find_rule
    from bloatguard.result import ModelResult

    rule = find_rule(code)
    config = Config(rules={rule.name: {k.replace("_", "-"): rule.options[k.replace("_", "-")].parse(v)
                                       for k, v in options.items()}})
    result = ModelResult(path=str(path), facts=measure(path, config))
    assert result.facts.unreadable is None, result.facts.unreadable
    apply_rules(result, path, config, [rule])
    return result.findings


EVERY_LAYER_MACS = {
    "CONV_2D": 1 * 6 * 6 * 16 * (3 * 3 * 3),  # output elements x kernel x input channels
    "DEPTHWISE_CONV_2D": 1 * 4 * 4 * 16 * (3 * 3),
    "TRANSPOSE_CONV": (1 * 4 * 4 * 16) * (8 * 2 * 2),  # input elements x Cout x kernel
    "FULLY_CONNECTED": 10 * 200,
    "BATCH_MATMUL": (2 * 4 * 3) * 5,  # adj_x: K is A's second-to-last dim
    "UNIDIRECTIONAL_SEQUENCE_LSTM": 7 * (4 * 8 * 4 + 4 * 8 * 8),  # steps x weight matrices
}


def test_params_bytes_and_macs_of_every_counted_layer(tmp_path):
    facts = read(every_layer(tmp_path / "m.tflite"))
    assert facts.format == "tflite" and facts.unreadable is None
    params = 16 * 27 + 9 * 16 + 4 + 8 * 4 * 16 + 10 * 200 + 30 + 4 * 32 + 4 * 64
    assert facts.params == params == 3506
    assert facts.params_by_dtype == {"float32": params - 4, "int32": 4}
    assert facts.weight_bytes == params * 4
    assert facts.macs_by_op == EVERY_LAYER_MACS
    assert facts.macs == sum(EVERY_LAYER_MACS.values()) == 30856
    assert facts.ops["CONV_2D"] == 1 and len(facts.inputs) == 3
    view = facts.weight_view()
    kinds = {name: [(u.kind, u.op, u.channel_axis) for u in uses] for (_, name), uses in view.uses.items()}
    assert kinds["conv/w"] == [("conv", "CONV_2D", 0)]
    assert kinds["dw/w"] == [("depthwise", "DEPTHWISE_CONV_2D", 3)]
    assert kinds["fc/w"] == [("matmul", "FULLY_CONNECTED", 0)]
    assert kinds["bmm/b"] == [("matmul", "BATCH_MATMUL", 2)]
    assert kinds["lstm/r0"] == [("recurrent", "UNIDIRECTIONAL_SEQUENCE_LSTM", None)]
    assert "tconv/shape" not in kinds


def test_float16_weights_behind_dequantize(tmp_path):
    facts = read(tm.mlp(tmp_path / "m.tflite", (64, 256, 10), dtype="float16"))
    assert facts.params_by_dtype == {"float16": 64 * 256 + 256 * 10, "float32": 256 + 10}
    assert facts.weight_bytes == (64 * 256 + 256 * 10) * 2 + (256 + 10) * 4
    assert facts.macs == 64 * 256 + 256 * 10
    (use,) = facts.weight_view()("buffer", "dense0/w")
    assert use.via == ("DEQUANTIZE",) and use.channel_axis == 0


def test_buffers_are_counted_once_across_subgraphs_and_signatures(tmp_path):
    weight = randn(32, 16)
    main = [T("x", [1, 16]), T("w", [32, 16], data=weight), T("y", [1, 32])]
    other = [T("x2", [4, 16]), T("w2", [32, 16], buffer_number=1), T("y2", [4, 32])]  # w's buffer
    path = tm.model(tmp_path / "m.tflite", main, [Op("FULLY_CONNECTED", [0, 1, -1], [2])], [0], [2],
                    more_subgraphs=[(other, [Op("FULLY_CONNECTED", [0, 1, -1], [2])], [0], [2])],
                    signatures=[("encode", 0), ("decode", 1)])
    facts = read(path)
    assert facts.params == 32 * 16  # one buffer, two tensors
    # Both subgraphs are entry points (signatures): 1 x 32 x 16 + 4 x 32 x 16.
    assert facts.macs == 32 * 16 + 4 * 32 * 16
    assert "signatures: encode (subgraph 0), decode (subgraph 1)" in facts.notes


def test_control_flow_bodies_are_noted_not_counted(tmp_path):
    main = [T("x", [1, 16]), T("w", [8, 16], data=randn(8, 16)), T("y", [1, 8])]
    body = [T("a", [1, 16]), T("v", [4, 16], data=randn(4, 16)), T("b", [1, 4])]
    facts = read(tm.model(tmp_path / "m.tflite", main, [Op("FULLY_CONNECTED", [0, 1, -1], [2])], [0], [2],
                          more_subgraphs=[(body, [Op("FULLY_CONNECTED", [0, 1, -1], [2])], [0], [2])]))
    assert facts.macs == 8 * 16 and facts.params == 8 * 16 + 4 * 16
    assert any(note.startswith("2 subgraphs: MACs count the entry subgraph(s) 'graph0'")
               and "hold 64 MACs, not included" in note for note in facts.notes)


def test_sparse_tensor_dense_params_and_stored_values(tmp_path):
    values = randn(40)  # 40 nonzeros of a [32, 64] weight
    tensors = [T("x", [1, 64]), T("w", [32, 64], data=values, sparse=True), T("dense", [32, 64]),
               T("y", [1, 32])]
    path = tm.model(tmp_path / "s.tflite", tensors,
                    [Op("DENSIFY", [1], [2]), Op("FULLY_CONNECTED", [0, 2, -1], [3])], [0], [3])
    facts = read(path)
    assert facts.params == 32 * 64 and facts.weight_bytes == 40 * 4
    assert facts.metrics()["params_stored"] == 40
    assert any("1 sparse tensor(s): params count their 2048 dense elements; 40 values are stored"
               in note for note in facts.notes)
    assert facts.macs == 32 * 64
    (use,) = facts.weight_view()("buffer", "w")
    assert use.via == ("DENSIFY",) and use.kind == "matmul"


def test_custom_ops_are_listed_with_unknown_cost(tmp_path):
    tensors = [T("x", [1, 4]), T("y", [1, 4])]
    facts = read(tm.model(tmp_path / "c.tflite", tensors, [Op("custom:TFLite_Detection_PostProcess", [0], [1])],
                          [0], [1]))
    assert facts.ops == {"TFLite_Detection_PostProcess": 1}
    assert facts.macs is None  # nothing but a custom op: unknown, never 0
    assert any(note.startswith("custom ops TFLite_Detection_PostProcess: their cost is unknown")
               for note in facts.notes)


def test_dynamic_batch_is_unknown_in_the_inputs(tmp_path):
    tensors = [T("x", [1, 16], signature=[-1, 16]), T("w", [4, 16], data=randn(4, 16)), T("y", [1, 4])]
    facts = read(tm.model(tmp_path / "d.tflite", tensors, [Op("FULLY_CONNECTED", [0, 1, -1], [2])], [0], [2]))
    assert facts.inputs[0].shape == (None, 16)
    assert facts.macs == 64  # the converter's concrete shape (batch 1)


# --- activation memory (BG005) ----------------------------------------------------------------

def test_activation_memory_of_a_residual_chain_is_exact(tmp_path):
    # x[1,64] -> FC a[1,256] -> RELU r[1,256] -> FC b[1,64] -> ADD(x) y[1,64]: x stays alive
    # until the ADD. The first FC holds x + a (320 floats), the RELU x + a + r (576: the peak),
    # the second FC x + r + b (384), the ADD x + b + y (192).
    tensors = [T("x", [1, 64]), T("w1", [256, 64], data=randn(256, 64)), T("a", [1, 256]),
               T("r", [1, 256]), T("w2", [64, 256], data=randn(64, 256, seed=1)), T("b", [1, 64]),
               T("y", [1, 64])]
    ops = [Op("FULLY_CONNECTED", [0, 1, -1], [2]), Op("RELU", [2], [3]),
           Op("FULLY_CONNECTED", [3, 4, -1], [5]), Op("ADD", [5, 0], [6])]
    facts = read(tm.model(tmp_path / "r.tflite", tensors, ops, [0], [6]))
    assert facts.measured["activation_memory"] == (64 + 256 + 256) * 4
    peak = facts.activation_peak
    assert (peak["node"], peak["op"]) == ("RELU r", "RELU")
    assert peak["tensors"] == [["a", 1024], ["r", 1024], ["x", 256]]
    assert "activation memory peaks at RELU r (2.3 KB alive: 'a' 1.02 KB, 'r' 1.02 KB, 'x' 256 B)" \
        in facts.notes


def test_float16_weights_dequantized_once_count_as_computed_constants(tmp_path):
    # DEQUANTIZE of a constant runs once and its float32 result is kept: 64x256 + 256x10
    # floats held for the whole run, on top of the largest live activations (x + y0 at the
    # first FC: 64 + 256 floats; y0 + y1 at the second: 256 + 10).
    facts = read(tm.mlp(tmp_path / "m.tflite", (64, 256, 10), dtype="float16"))
    constants = (64 * 256 + 256 * 10) * 4
    assert facts.measured["activation_memory"] == constants + (64 + 256) * 4
    assert facts.activation_peak["computed_constant_count"] == 2


def test_activation_memory_budget_on_a_tflite_model(tmp_path, run_cli, monkeypatch):
    tm.mlp(tmp_path / "m.tflite", (64, 256, 10))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bloatguard.toml").write_text('[budgets."m.tflite"]\nmax-activation-memory = "1 KB"\n')
    code, out, _ = run_cli("check", "m.tflite", "--output-format", "json")
    [model] = json.loads(out)["models"]
    assert model["metrics"]["activation_memory"] == (64 + 256) * 4
    [finding] = [f for f in model["findings"] if f["code"] == "BG005"]
    assert code == 1 and finding["details"]["peak"]["node"] == "FULLY_CONNECTED y0"


# --- rules --------------------------------------------------------------------------------------

def test_bg101_recommends_full_integer_quantization(tmp_path):
    path = tm.mlp(tmp_path / "m.tflite", (256, 512, 10))
    (finding,) = run_rule(path, "BG101")
    assert finding.details["by_op"] == {"FULLY_CONNECTED": 512 * 256 * 4}
    assert finding.details["bytes_saved"] == 512 * 256 * 3
    assert "representative_dataset" in finding.message and "dynamic-range" in finding.message
    assert finding.fix is None
    assert finding.details["weights"][0]["layer"] == "FULLY_CONNECTED y0"
    # float16 weights (behind DEQUANTIZE) still halve again as int8.
    (half,) = run_rule(tm.mlp(tmp_path / "h.tflite", (256, 512, 10), dtype="float16"), "BG101",
                       min_weight_bytes="64 KB")
    assert half.details["by_dtype"] == {"float16": 512 * 256 * 2}


def test_bg101_quiet_on_int8_weights(tmp_path):
    tensors = [T("x", [1, 256]), T("w", [512, 256], "int8", np.ones((512, 256), np.int8)),
               T("w2", [10, 512], data=randn(10, 512)), T("h", [1, 512]), T("y", [1, 10])]
    path = tm.model(tmp_path / "q.tflite", tensors,
                    [Op("FULLY_CONNECTED", [0, 1, -1], [3]), Op("FULLY_CONNECTED", [3, 2, -1], [4])], [0], [4])
    assert run_rule(path, "BG101", min_weight_bytes="1 KB") == []


def test_bg103_unused_buffers_duplicates_and_dead_ops(tmp_path):
    weight = randn(64, 64)
    tensors = [T("x", [1, 64]), T("w", [64, 64], data=weight), T("w_copy", [64, 64], data=weight.copy()),
               T("h", [1, 64]), T("y", [1, 64]), T("dead_w", [32, 64], data=randn(32, 64)),
               T("dead_out", [1, 32]), T("orphan", [16], data=np.ones(16, np.float32))]
    ops = [Op("FULLY_CONNECTED", [0, 1, -1], [3]), Op("FULLY_CONNECTED", [3, 2, -1], [4]),
           Op("FULLY_CONNECTED", [0, 5, -1], [6])]
    path = tm.model(tmp_path / "m.tflite", tensors, ops, [0], [4], extra_buffers=[bytes(2048)])
    unused, dead, duplicates = run_rule(path, "BG103")
    assert unused.message == "2 buffer(s) are never used (2.11 KB): buffer 5, orphan"
    assert dead.details == {"nodes": ["FULLY_CONNECTED dead_out"], "node_count": 1,
                            "weights": ["buffer:dead_w"], "wasted_bytes": 32 * 64 * 4}
    assert duplicates.details["duplicates"][0]["tensors"] == ["buffer:w", "buffer:w_copy"]
    assert duplicates.details["wasted_bytes"] == 64 * 64 * 4


def test_bg105_float64_and_int64_weights(tmp_path):
    tensors = [T("x", [1, 64], "float64"), T("w", [64, 64], "float64", randn(64, 64, dtype=np.float64)),
               T("y", [1, 64], "float64"), T("ids", [2048], "int64", np.arange(2048, dtype=np.int64)),
               T("i", [3], "int32"), T("g", [3], "int64")]
    path = tm.model(tmp_path / "w.tflite", tensors,
                    [Op("FULLY_CONNECTED", [0, 1, -1], [2]), Op("GATHER", [3, 4], [5])], [0, 4], [2, 5])
    float64, int64 = run_rule(path, "BG105")
    assert float64.details["bytes"] == 64 * 64 * 8 and float64.details["nodes"] == ["FULLY_CONNECTED y"]
    assert float64.details["inputs"] == ["x"] and float64.details["outputs"] == ["y"]
    assert int64.details["bytes_saved"] == 2048 * 4 and int64.details["values_read"] is True


def test_bg106_zero_output_channels_in_tflite_layouts(tmp_path):
    conv = randn(16, 3, 3, 8)
    conv[[2, 9]] = 0  # [Cout, KH, KW, Cin]: output channels on axis 0
    depthwise = randn(1, 3, 3, 16)
    depthwise[..., 5] = 0  # [1, KH, KW, Cout]: on axis 3
    tensors = [T("x", [1, 8, 8, 8]), T("conv/w", [16, 3, 3, 8], data=conv), T("a", [1, 6, 6, 16]),
               T("dw/w", [1, 3, 3, 16], data=depthwise), T("y", [1, 4, 4, 16])]
    path = tm.model(tmp_path / "c.tflite", tensors, [Op("CONV_2D", [0, 1, -1], [2]),
                                                      Op("DEPTHWISE_CONV_2D", [2, 3, -1], [4])], [0], [4])
    (finding,) = run_rule(path, "BG106", min_elements=64)
    layers = {layer["name"]: (layer["axis"], layer["channels"]) for layer in finding.details["layers"]}
    assert layers == {"conv/w": (0, [2, 9]), "dw/w": (3, [5])}


# --- hostile files ------------------------------------------------------------------------------

# What each hostile file of tflite_models.hostile() must be refused for.
HOSTILE_CAUSES = {
    "tflite_root_beyond.tflite": "the root table points outside the file",
    "tflite_vtable_beyond.tflite": "the vtable of the root table points outside the file",
    "tflite_amplified.tflite": "more than 4000000 steps",
    "tflite_rank_1000.tflite": "the shape of 'x' has 1000 elements (at most 64 expected)",
    "tflite_buffers_2g.tflite": "buffers points outside the file",
    "tflite_subgraphs_2g.tflite": "subgraphs points outside the file",
    "tflite_missing_tensor.tflite": "names tensor 7 of 2",
    "tflite_missing_buffer.tflite": "names buffer 40 of 1",
    "tflite_shape_lies.tflite": "declares shape [1000, 1000] (float32, 4000000 bytes) but its buffer "
                                "holds 128 bytes",
    "tflite_external_beyond.tflite": "a buffer's external data points outside the file",
}


def _hostile_cases(tmp_path: Path) -> dict[str, tuple[bytes, str]]:
    good = tm.mlp(tmp_path / "seed.tflite").read_bytes()
    cases = {"truncated": (good[:len(good) // 2], "points outside the file")}
    for name, data in tm.hostile(tmp_path).items():
        cases[name] = (data, HOSTILE_CAUSES[name])
    return cases


def test_hostile_files_are_unreadable_with_the_cause(tmp_path, run_cli):
    for case, (data, cause) in _hostile_cases(tmp_path).items():
        path = tmp_path / case.replace(" ", "_") / "m.tflite"
        path.parent.mkdir()
        path.write_bytes(data)
        facts = read(path)
        assert facts.unreadable is not None and cause in facts.unreadable, (case, facts.unreadable)
        code, out, err = run_cli("check", path, "--output-format", "json", "--no-cache")
        assert code == 2 and "Traceback" not in err, (case, err)
        assert [f["code"] for f in json.loads(out)["models"][0]["findings"]] == ["BG000"]
        assert err.startswith(f"bloatguard: {path}: "), err


def test_every_truncation_of_a_model_is_a_clean_verdict(tmp_path):
    data = every_layer(tmp_path / "m.tflite").read_bytes()
    for cut in range(0, len(data), 7):
        path = tmp_path / "cut.tflite"
        path.write_bytes(data[:cut] or b"\x00")
        facts = read(path)
        assert facts.unreadable is None or "internal error" not in facts.unreadable, (cut, facts.unreadable)


# --- published models --------------------------------------------------------------------------

def _independent_counts(path: Path) -> tuple[int, int]:
    """Params and CONV_2D + DEPTHWISE_CONV_2D MACs of subgraph 0, counted with the `tflite`
    package (generated from the official schema), as a second opinion."""
    import tflite

    model = tflite.Model.GetRootAs(path.read_bytes(), 0)
    graph = model.Subgraphs(0)
    seen, params = set(), 0
    for i in range(graph.TensorsLength()):
        tensor = graph.Tensors(i)
        if model.Buffers(tensor.Buffer()).DataLength() and tensor.Buffer() not in seen:
            seen.add(tensor.Buffer())
            params += math.prod(tensor.ShapeAsNumpy().tolist()) if tensor.ShapeLength() else 1
    macs = 0
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        out = math.prod(graph.Tensors(op.Outputs(0)).ShapeAsNumpy().tolist())
        w = graph.Tensors(op.Inputs(1)).ShapeAsNumpy().tolist() if op.InputsLength() > 1 else []
        if builtin == tflite.BuiltinOperator.CONV_2D:
            macs += out * math.prod(w[1:])
        elif builtin == tflite.BuiltinOperator.DEPTHWISE_CONV_2D:
            macs += out * w[1] * w[2]
    return params, macs


# file -> (file size, params, MACs), as measured; the independent count must agree.
FACE_MODELS = {
    "face_detection_short_range.tflite": (229032, 101478, 30760960),
    "face_detection_full_range.tflite": (1083984, 514139, 105671232),
    "face_detection_full_range_sparse.tflite": (680736, 508328, 117188352),
    "face_landmark.tflite": (2439440, 604709, 34979040),
    "iris_landmark.tflite": (2640568, 651308, 53667328),
}


def test_mediapipe_face_models():
    files = {path.name: path for path in published.published(published.FACE_DETECTION, "*.tflite")}
    for name, (size, params, macs) in FACE_MODELS.items():
        facts = read(files[name])
        assert (facts.file_size, facts.params, facts.macs) == (size, params, macs), name
        assert _independent_counts(files[name]) == (params, macs), name
    # The sparse variant: 46 CONV_2D kernels stored as CSR (DENSIFY at load).
    sparse = read(files["face_detection_full_range_sparse.tflite"])
    assert sparse.metrics()["params_stored"] == 184512 and sparse.weight_bytes == 369064
    assert sparse.ops["DENSIFY"] == 46
    # float16 weights behind DEQUANTIZE (the converter's float16 quantization).
    short = read(files["face_detection_short_range.tflite"])
    assert short.params_by_dtype == {"float16": 101390, "int32": 88} and short.ops["DEQUANTIZE"] == 74
    # face_landmark keeps float32: one 1.62 MB CONV_2D kernel is two thirds of its weights.
    (bg101,) = run_rule(files["face_landmark.tflite"], "BG101")
    assert bg101.details["weights"][0]["name"] == "conv2d_20/Kernel"
    assert bg101.details["bytes_saved"] == bg101.details["weights"][0]["bytes"] * 3 // 4 == 1213056
    assert run_rule(files["face_landmark.tflite"], "BG103") == []
    assert run_rule(files["face_landmark.tflite"], "BG105") == []
    # Activation memory (BG005): every model's shapes are static, so every figure is known; the
    # short-range detector's 74 DEQUANTIZE results (float32 copies of its float16 weights) and
    # the sparse one's 46 DENSIFY results are computed constants held for the whole run.
    memory = {name: (read(files[name]).measured["activation_memory"],
                     read(files[name]).activation_peak["computed_constant_count"])
              for name in FACE_MODELS}
    # face_landmark peaks at a CONV_2D holding three [1, 96, 96, 16] float32 tensors.
    assert memory["face_landmark.tflite"] == (3 * 96 * 96 * 16 * 4, 0)
    assert memory["face_detection_short_range.tflite"][1] == 74
    assert memory["face_detection_full_range_sparse.tflite"][1] >= 46


def test_following_weights_to_their_layers_is_bounded(tmp_path, monkeypatch):
    """Many weights sharing one long chain of layout ops would cost weights x chain length:
    the walk has a budget, and running out is an error the rule reports, not a hang."""
    from bloatguard.formats import tflite

    monkeypatch.setattr(tflite, "FOLLOW_BUDGET", 3)
    facts = read(tm.mlp(tmp_path / "m.tflite", dtype="float16"))  # weights behind DEQUANTIZE
    with pytest.raises(ValueError, match="more than 3 steps"):
        facts.weight_view()
