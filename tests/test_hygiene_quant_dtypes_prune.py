"""BG101 unquantized-layers, BG105 wide-dtypes, BG106 prunable-weights.

Every rule gets models that must trigger it and models that must not, on the storage layouts
real exports use (initializers, Constant nodes inside If branches, external data, state dicts,
safetensors), plus the published silero-vad and magika models, where what each rule reports is
explained, not just recorded.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import factories

# A rule that crashes must fail these tests, not pass every "finds nothing" assertion.
pytestmark = pytest.mark.usefixtures("debug_mode")

SILERO = Path(__import__("silero_vad").__file__).parent / "data"
MAGIKA = Path(__import__("magika").__file__).parent / "models" / "standard_v3_3" / "model.onnx"


def run_rule(path: Path, code: str, **options):
    """The findings of one rule on one model, with options spelled as in the config."""
    from bloatguard.config import Config
    from bloatguard.engine import apply_rules, measure
    from bloatguard.registry import find_rule
    from bloatguard.result import ModelResult

    rule = find_rule(code)
    parsed = {key.replace("_", "-"): rule.options[key.replace("_", "-")].parse(value)
              for key, value in options.items()}
    config = Config(rules={rule.name: parsed})
    result = ModelResult(path=str(path), facts=measure(path, config))
    assert result.facts.unreadable is None, result.facts.unreadable
    apply_rules(result, path, config, [rule])
    return result.findings


def only(findings, kind=None):
    assert len(findings) == 1, [f.message for f in findings]
    if kind:
        assert findings[0].fix is not None and findings[0].fix.kind == kind, findings[0].fix
    return findings[0]


# --- factories ------------------------------------------------------------------------------------

LAYOUTS = ["initializer", "constant", "if", "external"]


def single_layer(path: Path, weight: np.ndarray, op: str = "MatMul", *, layout="initializer",
                 **attrs) -> Path:
    """x -> op(x, W) -> y with W stored (`layout`) as an initializer, a Constant node, a Constant
    inside both branches of an If (the silero-vad layout), or in an external data file."""
    elem = helper.np_dtype_to_tensor_dtype(weight.dtype)
    if op == "Conv":
        x_shape, inputs = [1, weight.shape[1], 8, 8], ["x", "w"]
    elif op == "Gemm":
        x_shape = [1, weight.shape[1] if attrs.get("transB") else weight.shape[0]]
        inputs = ["x", "w"]
    else:
        x_shape, inputs = [1, weight.shape[0]], ["x", "w"]
    layer = helper.make_node(op, inputs, ["y"], name=f"layer_{op.lower()}", **attrs)
    tensor = numpy_helper.from_array(weight, "w")
    if layout == "if":
        def branch(name):
            return helper.make_graph(
                [helper.make_node("Constant", [], ["w"], value=tensor),
                 helper.make_node(op, inputs, [f"{name}_y"], name=f"{name}_{op.lower()}", **attrs)],
                name, [], [helper.make_tensor_value_info(f"{name}_y", elem, None)])
        nodes = [helper.make_node("If", ["flag"], ["y"], name="by_flag",
                                  then_branch=branch("then"), else_branch=branch("else"))]
        inits, extra_inputs = [], [helper.make_tensor_value_info("flag", TensorProto.BOOL, [])]
    elif layout == "constant":
        nodes, inits, extra_inputs = [helper.make_node("Constant", [], ["w"], value=tensor), layer], [], []
    else:
        nodes, inits, extra_inputs = [layer], [tensor], []
    graph = helper.make_graph(nodes, "single", [helper.make_tensor_value_info("x", elem, x_shape),
                                                *extra_inputs],
                              [helper.make_tensor_value_info("y", elem, None)], initializer=inits)
    return factories.save(helper.make_model(graph, opset_imports=factories.OPSET), path,
                          external=layout == "external")


def table_model(path: Path, table: np.ndarray, *, layout="initializer") -> Path:
    """An index table (e.g. int64 token ids) read by Gather; plus a small int64 shape constant."""
    elem = helper.np_dtype_to_tensor_dtype(table.dtype)
    tensor = numpy_helper.from_array(table, "table")
    shape = numpy_helper.from_array(np.array([-1], np.int64), "shape")
    gather = helper.make_node("Gather", ["table", "i"], ["g"])
    reshape = helper.make_node("Reshape", ["g", "shape"], ["y"])
    if layout == "if":
        def branch(name):
            return helper.make_graph(
                [helper.make_node("Constant", [], ["table"], value=tensor),
                 helper.make_node("Gather", ["table", "i"], [f"{name}_y"])],
                name, [], [helper.make_tensor_value_info(f"{name}_y", elem, None)])
        nodes = [helper.make_node("If", ["flag"], ["g"], then_branch=branch("then"),
                                  else_branch=branch("else")), reshape]
        inits = [shape]
    elif layout == "constant":
        nodes, inits = [helper.make_node("Constant", [], ["table"], value=tensor), gather, reshape], [shape]
    else:
        nodes, inits = [gather, reshape], [tensor, shape]
    graph = helper.make_graph(
        nodes, "table",
        [helper.make_tensor_value_info("i", TensorProto.INT64, [3]),
         helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", elem, None)], initializer=inits)
    return factories.save(helper.make_model(graph, opset_imports=factories.OPSET), path,
                          external=layout == "external")


def torch_export(path: Path, module, example) -> Path:
    return factories.torch_export(module.eval(), path, example)


def randn(*shape, dtype=np.float32, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# --- BG101 unquantized-layers ----------------------------------------------------------------------

def test_bg101_matmul_mlp_recommends_dynamic_int8(tmp_path):
    path = factories.mlp(tmp_path / "mlp.onnx", sizes=(256, 512, 10))
    finding = only(run_rule(path, "BG101"), "quantize-dynamic")
    assert "w0 (524 KB, MatMul)" in finding.message
    assert "w1" not in finding.message  # 512x10 floats = 20 KB, below min-weight-bytes
    assert finding.fix.safe is False
    assert finding.fix.details["op_types"] == ["MatMul"]
    assert finding.fix.details["bytes_saved"] == 256 * 512 * 3
    assert finding.fix.details["alternatives"] == [{"kind": "convert-fp16", "bytes_saved": 256 * 512 * 2}]
    assert finding.details["weights"][0]["layer"] == "MatMul matmul0"
    assert 0.9 < finding.details["share"] < 1


def test_bg101_conv_model_recommends_static_qdq_and_asks_for_samples(tmp_path):
    path = factories.conv_model(tmp_path / "conv.onnx", channels=(64, 128))
    finding = only(run_rule(path, "BG101"), "quantize-static")
    assert finding.fix.details["needs_samples"] is True
    assert "[tool.bloatguard.samples]" in finding.message
    assert finding.details["by_op"] == {"Conv": 128 * 64 * 9 * 4}


def test_bg101_large_transformer_matmul_recommends_4bit(tmp_path):
    path = factories.mlp(tmp_path / "big.onnx", sizes=(1024, 1024))  # 1M-element MatMul B
    finding = only(run_rule(path, "BG101"), "quantize-matmulnbits")
    assert finding.fix.details["bits"] == 4
    assert "4-bit weight-only quantization (MatMulNBits)" in finding.message
    assert only(run_rule(path, "BG101", nbits_min_elements="2M"), "quantize-dynamic")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_bg101_finds_weights_however_they_are_stored(tmp_path, layout):
    weight = randn(256, 128)
    path = single_layer(tmp_path / "m.onnx", weight, layout=layout)
    finding = only(run_rule(path, "BG101"), "quantize-dynamic")
    expected = 2 if layout == "if" else 1  # one copy per If branch
    assert finding.details["weights_count"] == expected
    if layout == "if":
        assert "w in If by_flag/then_branch" in finding.message
        assert {w["layer"] for w in finding.details["weights"]} == {
            "If by_flag/then_branch/MatMul then_matmul", "If by_flag/else_branch/MatMul else_matmul"}


def test_bg101_follows_weights_through_layout_ops(tmp_path):
    # fp16 storage -> Cast -> Transpose -> MatMul, as some exporters write it.
    weight = numpy_helper.from_array(randn(192, 256, dtype=np.float16), "w16")
    graph = helper.make_graph(
        [helper.make_node("Cast", ["w16"], ["w32"], to=TensorProto.FLOAT),
         helper.make_node("Transpose", ["w32"], ["wt"]),
         helper.make_node("MatMul", ["x", "wt"], ["y"], name="proj")],
        "cast", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 192])], initializer=[weight])
    path = factories.save(helper.make_model(graph, opset_imports=factories.OPSET), tmp_path / "c.onnx")
    finding = only(run_rule(path, "BG101"))
    assert finding.details["by_dtype"] == {"float16": 192 * 256 * 2}
    assert finding.details["weights"][0]["layer"] == "MatMul proj"
    assert any("expect float32" in note for note in finding.details["notes"])


def test_bg101_torch_exports_lstm_and_gemm(tmp_path):
    import torch

    lstm = torch_export(tmp_path / "lstm.onnx", torch.nn.LSTM(128, 256), (torch.zeros(5, 1, 128),))
    finding = only(run_rule(lstm, "BG101"), "quantize-dynamic")
    assert finding.details["by_op"] == {"LSTM": (1024 * 128 + 1024 * 256) * 4}

    linear = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.ReLU(), torch.nn.Linear(512, 10))
    gemm = torch_export(tmp_path / "gemm.onnx", linear, (torch.zeros(1, 256),))
    finding = only(run_rule(gemm, "BG101"), "quantize-dynamic")
    assert finding.details["by_op"] == {"Gemm": 512 * 256 * 4}
    # quantize_dynamic does not touch Gemm: the hint must say how to get there.
    assert any("Gemm" in note and "MatMul + Add" in note for note in finding.details["notes"])


def test_bg101_quiet_on_small_or_already_quantized_models(tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    small = factories.mlp(tmp_path / "small.onnx")
    assert run_rule(small, "BG101") == []
    assert only(run_rule(small, "BG101", min_weight_bytes="1 KiB"))  # the threshold is an option

    float_model = factories.mlp(tmp_path / "mlp.onnx", sizes=(256, 512, 10))
    quantized = tmp_path / "mlp.int8.onnx"
    quantize_dynamic(str(float_model), str(quantized), weight_type=QuantType.QInt8)
    assert "MatMulInteger" in {n.op_type for n in onnx.load(str(quantized)).graph.node}
    assert run_rule(quantized, "BG101") == []


def test_bg101_a_weight_behind_dequantizelinear_is_quantized(tmp_path):
    q = numpy_helper.from_array(np.random.default_rng(0).integers(-127, 127, (256, 256), dtype=np.int8), "wq")
    scale = numpy_helper.from_array(np.array(0.01, np.float32), "scale")
    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["wq", "scale"], ["w"]),
         helper.make_node("MatMul", ["x", "w"], ["y"])],
        "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 256])], initializer=[q, scale])
    path = factories.save(helper.make_model(graph, opset_imports=factories.OPSET), tmp_path / "qdq.onnx")
    assert run_rule(path, "BG101") == []


def test_bg101_min_share_ignores_models_dominated_by_other_tensors(tmp_path):
    # A 4 MB float lookup table added to the output dwarfs the one 128 KB MatMul weight.
    table = numpy_helper.from_array(randn(1024, 1024), "table")
    weight = numpy_helper.from_array(randn(128, 256), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "table"], ["y"])],
        "share", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1024, 128])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=[weight, table])
    path = factories.save(helper.make_model(graph, opset_imports=factories.OPSET), tmp_path / "t.onnx")
    assert run_rule(path, "BG101") == []  # 3% of the weights
    assert only(run_rule(path, "BG101", min_share="1%"))


def test_bg101_state_dicts_and_safetensors_are_judged_by_names_and_shapes(tmp_path):
    import torch
    from safetensors.numpy import save_file

    state = {"encoder.fc.weight": torch.randn(512, 256), "encoder.fc.bias": torch.randn(512),
             "encoder.norm.weight": torch.randn(512), "embed_positions.weight": torch.randn(1024, 64)}
    torch.save(state, tmp_path / "model.pt")
    finding = only(run_rule(tmp_path / "model.pt", "BG101"))
    assert [w["name"] for w in finding.details["weights"]] == ["encoder.fc.weight"]
    # No graph: nothing `bloatguard fix` can quantize, so no fix hint, and what applies instead.
    assert finding.fix is None and "no graph" in finding.message
    assert "torch.ao.quantization.quantize_dynamic" in finding.message
    assert "float16/bfloat16 (saves 262 KB)" in finding.message

    save_file({"conv.weight": randn(128, 64, 3, 3), "lstm.weight_ih_l0": randn(1024, 256),
               "pos_embedding": randn(4096, 64)}, str(tmp_path / "model.safetensors"))
    finding = only(run_rule(tmp_path / "model.safetensors", "BG101"))
    assert finding.details["by_op"] == {"Conv": 128 * 64 * 9 * 4, "LSTM": 1024 * 256 * 4}
    # A Conv without a graph still needs no calibration samples from the user: nothing runs it.
    assert finding.fix is None and "samples" not in finding.message

    int8 = {"fc.weight": torch.randint(-127, 127, (512, 256), dtype=torch.int8),
            "fc.scale": torch.tensor(0.01), "fc.bias": torch.randn(512)}
    torch.save(int8, tmp_path / "int8.pt")
    assert run_rule(tmp_path / "int8.pt", "BG101") == []


# --- BG105 wide-dtypes -----------------------------------------------------------------------------

def test_bg105_float64_model(tmp_path):
    path = factories.mlp(tmp_path / "f64.onnx", sizes=(64, 128, 4), dtype=np.float64)
    finding = only(run_rule(path, "BG105"), "narrow-dtypes")
    total = (64 * 128 + 128 + 128 * 4 + 4) * 8
    assert finding.details["bytes"] == total and finding.details["bytes_saved"] == total // 2
    assert finding.details["inputs"] == ["x"] and finding.details["outputs"] == ["y"]
    assert finding.fix.safe is False and finding.fix.details["changes_interface"] is True
    assert finding.fix.details["from"] == "float64" and finding.fix.details["to"] == "float32"


def test_bg105_cast_to_double_inside_a_float32_model(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["xd"], name="to_double", to=TensorProto.DOUBLE),
         helper.make_node("Cast", ["xd"], ["y"], to=TensorProto.FLOAT)],
        "cast", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    path = factories.save(helper.make_model(graph, opset_imports=factories.OPSET), tmp_path / "c.onnx")
    finding = only(run_rule(path, "BG105"))
    assert finding.details["nodes"] == ["Cast to_double"]
    assert finding.fix.details["changes_interface"] is False


@pytest.mark.parametrize("layout", LAYOUTS)
def test_bg105_int64_table_that_fits_int32(tmp_path, layout):
    table = np.arange(4096, dtype=np.int64) * 1000
    path = table_model(tmp_path / "t.onnx", table, layout=layout)
    finding = only(run_rule(path, "BG105"), "narrow-dtypes")
    copies = 2 if layout == "if" else 1
    assert finding.details["weights_count"] == copies
    assert finding.details["bytes_saved"] == copies * 4096 * 4
    assert finding.fix.safe is True and finding.fix.details["to"] == "int32"
    # The 1-element int64 Reshape shape is the ONNX norm and never reported.
    assert "shape" not in finding.message


def test_bg105_quiet_on_int64_that_needs_64_bits_and_on_float32(tmp_path):
    wide = table_model(tmp_path / "wide.onnx", np.arange(4096, dtype=np.int64) + 2**40)
    assert run_rule(wide, "BG105") == []
    assert run_rule(factories.mlp(tmp_path / "f32.onnx"), "BG105") == []
    small = table_model(tmp_path / "small.onnx", np.arange(512, dtype=np.int64))
    assert run_rule(small, "BG105") == []  # under min-elements
    assert only(run_rule(small, "BG105", min_elements=256))


def test_bg105_safetensors_and_state_dicts(tmp_path):
    import torch
    from safetensors.numpy import save_file

    save_file({"w": randn(256, 256, dtype=np.float64), "ids": np.arange(2048, dtype=np.int64)},
              str(tmp_path / "m.safetensors"))
    float64, int64 = run_rule(tmp_path / "m.safetensors", "BG105")
    assert float64.fix.details["from"] == "float64" and int64.fix.details["from"] == "int64"

    torch.save({"w": torch.randn(64, 64, dtype=torch.float64),
                "ids": torch.arange(2048)}, tmp_path / "m.pt")
    float64, int64 = run_rule(tmp_path / "m.pt", "BG105")
    assert float64.severity.value == "warning" and float64.fix.kind == "narrow-dtypes"
    # bloatguard never unpickles, so int64 values are unknown: an informational note, no fix.
    assert int64.severity.value == "info" and int64.fix is None
    assert int64.details["values_read"] is False and "not read" in int64.message


# --- BG106 prunable-weights ------------------------------------------------------------------------

def test_bg106_zero_output_columns_of_a_matmul(tmp_path):
    weight = randn(256, 64)
    weight[:, [3, 10, 42]] = 0  # output columns: structured pruning removes them
    path = single_layer(tmp_path / "m.onnx", weight)
    finding = only(run_rule(path, "BG106"), "prune-channels")
    layer = finding.details["layers"][0]
    assert layer["axis"] == 1 and layer["channels"] == [3, 10, 42] and layer["total_channels"] == 64
    assert finding.details["bytes_saved"] == 3 * 256 * 4
    assert "3 whole output channels are exactly zero" in finding.message
    assert finding.fix.details["exact"] is True


def test_bg106_zero_input_rows_are_not_output_channels(tmp_path):
    weight = randn(256, 64)
    weight[:5] = 0  # unused input features: BG102's business, not a prunable output channel
    assert run_rule(single_layer(tmp_path / "m.onnx", weight), "BG106") == []


@pytest.mark.parametrize("layout", LAYOUTS)
def test_bg106_zero_conv_channels_however_stored(tmp_path, layout):
    weight = randn(32, 16, 3, 3)
    weight[[0, 7]] = 0
    path = single_layer(tmp_path / "c.onnx", weight, "Conv", layout=layout)
    finding = only(run_rule(path, "BG106"), "prune-channels")
    assert finding.details["zero_channels"] == (4 if layout == "if" else 2)
    assert all(layer["axis"] == 0 and layer["channels"] == [0, 7] for layer in finding.details["layers"])


def test_bg106_torch_linear_exports_as_gemm_with_transposed_b(tmp_path):
    import torch

    linear = torch.nn.Linear(128, 64)
    with torch.no_grad():
        linear.weight[[5, 6]] = 0  # rows of torch's [out, in] weight = output features
    path = torch_export(tmp_path / "gemm.onnx", linear, (torch.zeros(1, 128),))
    finding = only(run_rule(path, "BG106"), "prune-channels")
    assert finding.details["layers"][0]["channels"] == [5, 6]
    assert finding.details["layers"][0]["op"] == "Gemm"


def test_bg106_mostly_zero_weights(tmp_path):
    rng = np.random.default_rng(0)
    weight = randn(256, 256)
    weight[rng.random(weight.shape) < 0.8] = 0  # magnitude-pruned to 80% zeros, stored densely
    finding = only(run_rule(single_layer(tmp_path / "m.onnx", weight), "BG106"), "prune-weights")
    layer = finding.details["layers"][0]
    assert 0.78 < layer["zero_share"] < 0.82 and layer["zero_share"] == layer["exact_zero_share"]
    # A bitmask plus the nonzero values: zeros x 4 bytes - one bit per element.
    zeros = layer["zero_share"] * 256 * 256
    assert abs(finding.details["bytes_saved"] - (zeros * 4 - 256 * 256 / 8)) < 8
    assert finding.fix.safe is True  # only exact zeros: storing them sparsely changes nothing


def test_bg106_near_zeros_count_with_the_tolerance(tmp_path):
    weight = randn(256, 256)
    weight[:, ::2] *= 1e-7  # L1-style residue: tiny but not exactly zero, every other column
    weight[0, ::2] = 0
    path = single_layer(tmp_path / "m.onnx", weight)
    channels, sparse = run_rule(path, "BG106")
    assert channels.fix.kind == "prune-channels" and channels.fix.details["exact"] is False
    assert channels.details["layers"][0]["zero_channels"] == 128
    assert "(near-)zero" in channels.message
    assert sparse.fix.kind == "prune-weights"
    assert sparse.fix.safe is False  # the near-zeros would be rounded to zero
    assert 0.5 <= sparse.details["zero_share"] < 0.51
    only(run_rule(path, "BG106", min_zero_share="60%"), "prune-channels")
    assert run_rule(path, "BG106", tolerance=0) == []  # exact zeros only: 128 of 65536


def test_bg106_quiet_on_dense_weights_and_small_tensors(tmp_path):
    assert run_rule(single_layer(tmp_path / "dense.onnx", randn(256, 64)), "BG106") == []
    small = randn(16, 8)
    small[:, 0] = 0
    assert run_rule(single_layer(tmp_path / "small.onnx", small), "BG106") == []  # 128 elements
    assert only(run_rule(tmp_path / "small.onnx", "BG106", min_elements=64))


def test_bg106_safetensors_use_torch_layout(tmp_path):
    from safetensors.numpy import save_file

    weight = randn(64, 128)
    weight[[1, 2]] = 0
    save_file({"fc.weight": weight, "fc.bias": np.zeros(64, np.float32)}, str(tmp_path / "m.safetensors"))
    finding = only(run_rule(tmp_path / "m.safetensors", "BG106"), "prune-channels")
    assert finding.details["layers"][0]["name"] == "fc.weight"
    assert finding.details["layers"][0]["channels"] == [1, 2]


def test_bg106_streaming_stats_match_numpy(monkeypatch):
    from bloatguard.rules import prunable_weights

    monkeypatch.setattr(prunable_weights, "CHUNK_ELEMENTS", 100)  # many chunks per tensor
    weight = randn(64, 32, 3)
    weight[:, 5] = 0
    weight[weight < -1] = 0
    for axis in (0, 1, 2):
        stats = prunable_weights.zero_stats(weight, 0.0, axis)
        assert stats.exact == int((weight == 0).sum())
        peaks = np.abs(weight).max(axis=tuple(i for i in range(3) if i != axis))
        assert stats.zero_channels == [int(i) for i in np.flatnonzero(peaks == 0)]
    assert prunable_weights.zero_stats(weight, 0.0, 1).zero_channels == [5]


# --- the published models --------------------------------------------------------------------------

def test_silero_vad_onnx():
    # BG101: every weight is float32; the Conv encoder (and the STFT basis, applied as a Conv) and
    # the LSTM decoder are above 64 KiB - once per sample-rate branch of the If. The weights reach
    # the LSTM only through Slice -> Concat -> Unsqueeze (gate reordering), so those are followed.
    finding = only(run_rule(SILERO / "silero_vad.onnx", "BG101"))
    assert finding.details["by_op"]["LSTM"] == 4 * 512 * 128 * 4  # weight_ih/hh x 2 branches
    assert finding.details["weights_count"] == 12
    kinds = {finding.fix.kind} | {also["kind"] for also in finding.fix.details["also"]}
    assert kinds == {"quantize-static", "quantize-dynamic"}
    # BG105: float32 weights, and the ~300 int64 tensors are shape/axis constants far under
    # min-elements; no node produces float64.
    assert run_rule(SILERO / "silero_vad.onnx", "BG105") == []
    # BG106: the STFT basis is [cos; sin] of 129 (65 at 8 kHz) frequencies; the sine rows of DC
    # and Nyquist are identically zero, so two output channels per branch carry nothing. The
    # trained layers are dense.
    finding = only(run_rule(SILERO / "silero_vad.onnx", "BG106"), "prune-channels")
    channels = {layer["where"]: layer["channels"] for layer in finding.details["layers"]}
    assert channels == {"If If_0/then_branch/constant": [129, 257],
                        "If If_0/else_branch/constant": [65, 129]}
    assert finding.fix.details["exact"] is True


def test_silero_vad_half():
    # "half" is the 16 kHz-only half of the model, not float16: the weights are float32
    # initializers in the main graph, used by LSTMs inside If branches (outer-scope names).
    path = SILERO / "silero_vad_half.onnx"
    finding = only(run_rule(path, "BG101"))
    assert finding.details["by_dtype"] == {"float32": finding.details["bytes"]}
    assert finding.details["by_op"]["LSTM"] == 2 * 512 * 128 * 4
    assert run_rule(path, "BG105") == []
    assert only(run_rule(path, "BG106"), "prune-channels").details["zero_channels"] == 2


def test_silero_vad_safetensors_and_jit():
    # The safetensors file holds the 16 kHz model's weights: same layers, recognised by name
    # (conv*.weight 3-D -> Conv, lstm_cell.weight_ih/hh -> LSTM) and read for zeros.
    path = SILERO / "silero_vad_16k.safetensors"
    finding = only(run_rule(path, "BG101"))
    assert finding.details["by_op"]["LSTM"] == 2 * 512 * 128 * 4
    assert run_rule(path, "BG105") == []
    channels = only(run_rule(path, "BG106"), "prune-channels").details["layers"]
    assert [(c["name"], c["channels"]) for c in channels] == [("stft_conv.weight", [129, 257])]
    # TorchScript: shapes and names only (never unpickled): the `forward_basis_buffer` is a
    # buffer, not named like a layer weight, so BG101 leaves it out; values are not read, so
    # BG106 has nothing to say.
    path = SILERO / "silero_vad.jit"
    finding = only(run_rule(path, "BG101"))
    assert not any("forward_basis" in w["name"] for w in finding.details["weights"])
    assert run_rule(path, "BG105") == [] and run_rule(path, "BG106") == []


def test_magika():
    # One big Conv (2.6 MB of 3.1 MB) and two MatMuls (the dense head and a one-hot "embedding"
    # MatMul): Conv-heavy, so static QDQ first, dynamic int8 for the MatMuls.
    finding = only(run_rule(MAGIKA, "BG101"), "quantize-static")
    assert finding.details["by_op"] == {"Conv": 512 * 256 * 5 * 4, "MatMul": (512 * 214 + 257 * 64) * 4}
    assert finding.fix.details["also"][0]["kind"] == "quantize-dynamic"
    # float32 weights, int32/int64 constants of a few elements, no float64 anywhere.
    assert run_rule(MAGIKA, "BG105") == []
    # Trained dense weights: no zero channels, no mostly-zero layer.
    assert run_rule(MAGIKA, "BG106") == []


# --- the command line ------------------------------------------------------------------------------

def test_cli_json_carries_the_fix_hint(run_cli, tmp_path):
    factories.conv_model(tmp_path / "models" / "det.onnx", channels=(64, 128))
    (tmp_path / "bloatguard.toml").write_text(
        '[rules.unquantized-layers]\nmin-weight-bytes = "100 KB"\n'
        '[samples]\n"models/det.onnx" = "samples.npz"\n')
    code, out, err = run_cli("check", tmp_path, "--select", "BG101,BG105,BG106",
                             "--output-format", "json")
    assert code == 0, err  # warnings by default: a fresh repository is not blocked
    (model,) = json.loads(out)["models"]
    (finding,) = model["findings"]
    assert finding["code"] == "BG101" and finding["severity"] == "warning"
    assert finding["fix"]["kind"] == "quantize-static" and finding["fix"]["safe"] is False
    assert finding["details"]["samples_configured"] is True
    assert "[tool.bloatguard.samples]" not in finding["message"]  # samples are configured


def test_cli_severity_and_bad_options(run_cli, tmp_path):
    factories.mlp(tmp_path / "m.onnx", sizes=(256, 512))
    (tmp_path / "bloatguard.toml").write_text('[rules.unquantized-layers]\nseverity = "error"\n')
    assert run_cli("check", tmp_path, "--select", "BG101")[0] == 1
    (tmp_path / "bloatguard.toml").write_text('[rules.prunable-weights]\nmin-zero-share = "150%"\n')
    code, _, err = run_cli("check", tmp_path)
    assert code == 2 and "min-zero-share" in err


@pytest.mark.parametrize("code", ["BG101", "BG105", "BG106"])
def test_explain(run_cli, code):
    status, out, _ = run_cli("explain", code)
    assert status == 0 and out.startswith(f"# {code}")
    for section in ("## What it does", "## Why is this bad?", "## Example", "## Use instead",
                    "## Fix safety", "## Options"):
        assert section in out


def test_weights_in_an_if_inside_a_local_function_are_seen(tmp_path):
    # The rules match the reader's labels of stored weights against the graph's; for subgraphs
    # inside model-local functions the two once labelled them differently and BG101 saw nothing.
    weight = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    branch = helper.make_graph(
        [helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(weight, "w")),
         helper.make_node("MatMul", ["x", "w"], ["branch_y"])],
        "then", [], [helper.make_tensor_value_info("branch_y", TensorProto.FLOAT, [1, 64])])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["other_y"])], "else", [],
                              [helper.make_tensor_value_info("other_y", TensorProto.FLOAT, [1, 64])])
    function = helper.make_function(
        "local", "F", ["x", "c"], ["y"],
        [helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=other)],
        [helper.make_opsetid("", 17)])
    graph = helper.make_graph(
        [helper.make_node("F", ["x", "c"], ["y"], domain="local")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64]),
         helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])])
    model = helper.make_model(graph, functions=[function],
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)])
    path = tmp_path / "function_if.onnx"
    onnx.save(model, str(path))
    found = only(run_rule(path, "BG101", min_weight_bytes="1 B", min_share="0%"))
    assert "w" in found.message and "MatMul" in found.message, found.message
