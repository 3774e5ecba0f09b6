"""Static MACs: hand-computed counts for each op family, the published ResNet-50 and VGG-19
numbers, and real published models (silero-vad, magika) whose graphs defeat naive counters."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from bloatguard.formats import read_model
from bloatguard.measure.compute import MAX_MACS, MacsResult, count_macs

from factories import package_file

FLOAT = TensorProto.FLOAT
OPSET = [helper.make_opsetid("", 17)]


# --- small model factories ---------------------------------------------------------------------

def weight(name: str, *dims: int) -> onnx.TensorProto:
    return numpy_helper.from_array(np.zeros(dims, dtype=np.float32), name)


def model(nodes, inputs, outputs, initializers=(), *, opset=OPSET, out_type=FLOAT,
          **kwargs) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, out_type, None) for n in outputs],
        initializer=list(initializers))
    return helper.make_model(graph, opset_imports=opset, **kwargs)


def single_conv(x_shape, w_dims, **attrs) -> onnx.ModelProto:
    return model([helper.make_node("Conv", ["x", "w"], ["y"], name="conv1", **attrs)],
                 [("x", FLOAT, x_shape)], ["y"], [weight("w", *w_dims)])


def macs(m: onnx.ModelProto, shapes=None) -> int | None:
    return count_macs(m, shapes or {}).macs


# --- one op at a time -------------------------------------------------------------------------

def test_single_conv():
    # out 16x32x32 (pad 1, stride 1) * Cin 3 * 3x3 kernel
    result = count_macs(single_conv([1, 3, 32, 32], (16, 3, 3, 3), pads=[1, 1, 1, 1]), {})
    assert result == MacsResult(16 * 32 * 32 * 3 * 9, [], {"Conv": 16 * 32 * 32 * 3 * 9})
    # stride 2, no padding: floor((32 - 3) / 2) + 1 = 15
    assert macs(single_conv([1, 3, 32, 32], (16, 3, 3, 3), strides=[2, 2])) == 16 * 15 * 15 * 27
    # dilation 2: effective kernel 5, out 28
    assert macs(single_conv([2, 3, 32, 32], (8, 3, 3, 3), dilations=[2, 2])) == 2 * 8 * 28 * 28 * 27


def test_grouped_and_depthwise_conv():
    grouped = single_conv([1, 32, 16, 16], (64, 8, 3, 3), group=4, pads=[1] * 4)
    assert macs(grouped) == 64 * 16 * 16 * (32 // 4) * 9
    depthwise = single_conv([1, 32, 16, 16], (32, 1, 3, 3), group=32, pads=[1] * 4)
    assert macs(depthwise) == 32 * 16 * 16 * 1 * 9


def test_conv1d_and_auto_pad():
    assert macs(single_conv([1, 4, 100], (8, 4, 5))) == 8 * 96 * 4 * 5
    same = single_conv([1, 4, 100], (8, 4, 5), auto_pad="SAME_UPPER", strides=[2])
    assert macs(same) == 8 * 50 * 4 * 5


def test_conv_transpose():
    def deconv(w_dims, **attrs):
        return model([helper.make_node("ConvTranspose", ["x", "w"], ["y"], **attrs)],
                     [("x", FLOAT, [1, 16, 8, 8])], ["y"], [weight("w", *w_dims)])

    # N*Cin*prod(in spatial) * (Cout/group)*prod(kernel); output is 8x16x16 but never matters
    assert macs(deconv((16, 8, 4, 4), strides=[2, 2], pads=[1] * 4)) == 16 * 64 * 8 * 16
    assert macs(deconv((16, 4, 4, 4), strides=[2, 2], pads=[1] * 4, group=2)) == 16 * 64 * 4 * 16


def test_gemm_with_transposes():
    m = model([helper.make_node("Gemm", ["a", "b", "c"], ["y"], transA=1, transB=1)],
              [("a", FLOAT, [8, 4])], ["y"], [weight("b", 16, 8), weight("c", 16)])
    assert macs(m) == 4 * 16 * 8  # M=4, N=16, K=8


@pytest.mark.parametrize("a, b, expected", [
    ([2, 1, 5, 6], [3, 6, 7], 2 * 3 * 5 * 7 * 6),  # batch dims broadcast to [2, 3]
    ([4, 5, 6], [6, 7], 4 * 5 * 7 * 6),
    ([6], [6, 7], 7 * 6),                          # 1-D left operand is a row
    ([4, 6], [6], 4 * 6),                          # 1-D right operand is a column
    ([6], [6], 6),                                 # dot product
    ([3, 1, 4, 6], [6], 3 * 4 * 6),
])
def test_matmul_broadcasting(a, b, expected):
    m = model([helper.make_node("MatMul", ["a", "b"], ["y"])],
              [("a", FLOAT, a), ("b", FLOAT, b)], ["y"])
    assert macs(m, {"a": a, "b": b}) == expected


def test_mismatched_matmul_cannot_run():
    m = model([helper.make_node("MatMul", ["a", "b"], ["y"], name="mm")],
              [("a", FLOAT, [1, 4, 6]), ("b", FLOAT, [5, 7])], ["y"])
    result = count_macs(m, {})
    assert result.macs is None
    assert any("cannot run" in n and "MatMul 'mm'" in n for n in result.notes)


def test_pointwise_ops_are_not_counted():
    m = model([helper.make_node("MatMul", ["x", "w"], ["h"]),
               helper.make_node("Add", ["h", "b"], ["h2"]),
               helper.make_node("Relu", ["h2"], ["h3"]),
               helper.make_node("Softmax", ["h3"], ["y"])],
              [("x", FLOAT, [1, 10])], ["y"], [weight("w", 10, 20), weight("b", 20)])
    result = count_macs(m, {})
    assert result.macs == 200
    assert result.by_op == {"MatMul": 200}


def test_quantized_forms():
    u8, i8 = TensorProto.UINT8, TensorProto.INT8
    scalar = lambda name, dtype, v: helper.make_tensor(name, dtype, [], [v])  # noqa: E731
    qconv = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"],
                             pads=[1] * 4)
    inits = [scalar("xs", FLOAT, 1.0), scalar("xz", u8, 0), scalar("ws", FLOAT, 1.0),
             scalar("wz", i8, 0), scalar("ys", FLOAT, 1.0), scalar("yz", u8, 0),
             helper.make_tensor("w", i8, [8, 4, 3, 3], np.zeros(288, dtype=np.int8))]
    m = model([qconv], [("x", u8, [1, 4, 10, 10])], ["y"], inits, out_type=u8)
    assert macs(m) == 8 * 100 * 4 * 9

    mmi = helper.make_node("MatMulInteger", ["a", "b"], ["y"])
    m = model([mmi], [("a", u8, [3, 16])], ["y"],
              [helper.make_tensor("b", i8, [16, 5], np.zeros(80, dtype=np.int8))],
              out_type=TensorProto.INT32)
    assert macs(m) == 3 * 5 * 16


def test_matmul_nbits_uses_its_attributes():
    # com.microsoft MatMulNBits: A [..., K] times a packed int4 weight [N, K]; onnx has no schema
    # for it, so only A's dims and the K/N attributes are available.
    node = helper.make_node("MatMulNBits", ["a", "b", "scales"], ["y"], domain="com.microsoft",
                            K=64, N=32, bits=4, block_size=32)
    inits = [helper.make_tensor("b", TensorProto.UINT8, [32, 2, 16], np.zeros(1024, np.uint8)),
             weight("scales", 64)]
    m = model([node], [("a", FLOAT, ["batch", 7, 64])], ["y"], inits,
              opset=[*OPSET, helper.make_opsetid("com.microsoft", 1)])
    result = count_macs(m, {})
    assert result.macs == 7 * 64 * 32
    assert "assumed batch 1 for input 'a'" in result.notes


def test_einsum_two_operands():
    m = model([helper.make_node("Einsum", ["a", "b"], ["y"], equation="bij,bjk->bik")],
              [("a", FLOAT, [2, 3, 4]), ("b", FLOAT, [2, 4, 5])], ["y"])
    assert macs(m) == 2 * 3 * 4 * 5
    m = model([helper.make_node("Einsum", ["a", "b"], ["y"], equation="...ij,jk->...ik")],
              [("a", FLOAT, [6, 2, 3, 4]), ("b", FLOAT, [4, 5])], ["y"])
    assert macs(m) == 6 * 2 * 3 * 4 * 5


@pytest.mark.parametrize("op, gates", [("LSTM", 4), ("GRU", 3), ("RNN", 1)])
def test_recurrent(op, gates):
    seq, batch, inp, hidden, dirs = 10, 2, 16, 32, 2
    node = helper.make_node(op, ["x", "w", "r"], ["y"], hidden_size=hidden,
                            direction="bidirectional")
    m = model([node], [("x", FLOAT, [seq, batch, inp])], ["y"],
              [weight("w", dirs, gates * hidden, inp), weight("r", dirs, gates * hidden, hidden)])
    assert macs(m) == seq * batch * dirs * gates * hidden * (inp + hidden)


def test_lstm_batch_first_layout():
    node = helper.make_node("LSTM", ["x", "w", "r"], ["y"], hidden_size=8, layout=1)
    m = model([node], [("x", FLOAT, [3, 5, 4])], ["y"],  # [batch 3, seq 5, input 4]
              [weight("w", 1, 32, 4), weight("r", 1, 32, 8)])
    assert macs(m) == 5 * 3 * 1 * 4 * 8 * (4 + 8)


# --- symbolic dims --------------------------------------------------------------------------

def test_symbolic_batch_becomes_one_with_a_note():
    m = single_conv(["N", 3, 32, 32], (16, 3, 3, 3), pads=[1] * 4)
    result = count_macs(m, {})
    assert result.macs == 16 * 32 * 32 * 27
    assert result.notes == ["assumed batch 1 for input 'x'"]
    # a configured batch replaces the assumption
    result = count_macs(m, {"x": [4, 3, 32, 32]})
    assert result.macs == 4 * 16 * 32 * 32 * 27
    assert result.notes == []


@pytest.mark.parametrize("unknown", [-1, ""])
def test_minus_one_and_empty_dims_are_unknown(unknown):
    m = single_conv([1, 3, 32, 32], (16, 3, 3, 3), pads=[1] * 4)
    m.graph.input[0].type.tensor_type.shape.dim[0].Clear()
    if unknown == -1:
        m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = -1
    assert count_macs(m, {}).macs == 16 * 32 * 32 * 27


def test_symbolic_spatial_dims_need_configuration():
    m = single_conv(["N", 3, "height", "width"], (16, 3, 3, 3), pads=[1] * 4)
    result = count_macs(m, {})
    assert result.macs is None
    note = next(n for n in result.notes if n.startswith("MACs unknown"))
    assert "Conv 'conv1'" in note and "input 'x'" in note
    assert "['height', 'width']" in note and "[tool.bloatguard.inputs]" in note
    assert "assumed batch 1 for input 'x'" in result.notes

    resolved = count_macs(m, {"x": [1, 3, 64, 48]})
    assert resolved.macs == 16 * 64 * 48 * 27
    assert resolved.notes == []


def test_a_symbolic_dim_fixed_once_is_fixed_on_every_input():
    # silero-vad style: input[batch, samples] and state[2, batch, 128] share `batch`.
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node("Gather", ["state", "zero"], ["s0"], axis=0),
             helper.make_node("MatMul", ["s0", "w2"], ["y"])]
    m = model(nodes, [("x", FLOAT, ["batch", 16]), ("state", FLOAT, [2, "batch", 8])], ["h", "y"],
              [weight("w", 16, 4), weight("w2", 8, 8),
               numpy_helper.from_array(np.array(0, np.int64), "zero")])
    result = count_macs(m, {})
    assert result.macs == 16 * 4 + 8 * 8
    assert result.notes == ["assumed batch 1 for input 'x'",
                            "input 'state': dim 'batch' = 1, as on input 'x'"]
    assert count_macs(m, {"x": [3, 16]}).macs == 3 * (16 * 4 + 8 * 8)


def test_bad_configuration_is_noted_not_fatal():
    m = single_conv([1, 3, 8, 8], (4, 3, 1, 1))
    result = count_macs(m, {"images": [1, 3, 8, 8], "x": [1, 3, 8, 8]})
    assert result.macs == 4 * 64 * 3
    assert any("'images'" in n and "no such input" in n for n in result.notes)
    result = count_macs(m, {"x": [1, 3, -8, 8]})
    assert result.macs == 4 * 64 * 3  # the declared shape is kept
    assert any("non-negative integers" in n for n in result.notes)


def test_absurd_sizes_are_capped():
    m = model([helper.make_node("MatMul", ["a", "b"], ["y"])],
              [("a", FLOAT, [10**7, 10**7]), ("b", FLOAT, [10**7, 10**7])], ["y"])
    result = count_macs(m, {})
    assert 10**21 > MAX_MACS and result.macs is None
    assert any("exceeds 10^18" in n for n in result.notes)


def test_shape_inference_failure_is_a_note(monkeypatch):
    def boom(*args, **kwargs):
        raise onnx.shape_inference.InferenceError("[ShapeInferenceError] broken")

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", boom)
    result = count_macs(single_conv([1, 3, 8, 8], (4, 3, 1, 1)), {})
    assert result.macs is None
    assert any("shape inference failed" in n and "broken" in n for n in result.notes)


def test_pads_computed_at_run_time_are_folded():
    # Exporters (silero-vad's STFT) compute Pad amounts through Transpose/Reshape/Cast, which
    # ONNX's own data propagation does not follow: without folding, the Conv has unknown dims.
    pads = numpy_helper.from_array(np.array([[0, 0], [0, 64]], dtype=np.int64), "pads_2d")
    minus_one = numpy_helper.from_array(np.array([-1], dtype=np.int64), "minus_one")
    nodes = [
        helper.make_node("Constant", [], ["p"], value=pads),
        helper.make_node("Transpose", ["p"], ["pt"], perm=[1, 0]),
        helper.make_node("Constant", [], ["m1"], value=minus_one),
        helper.make_node("Reshape", ["pt", "m1"], ["pr"]),
        helper.make_node("Cast", ["pr"], ["pads"], to=TensorProto.INT64),
        helper.make_node("Pad", ["x", "pads"], ["xp"], mode="reflect"),
        helper.make_node("Unsqueeze", ["xp", "one"], ["x3"]),
        helper.make_node("Conv", ["x3", "w"], ["y"], strides=[128]),
    ]
    m = model(nodes, [("x", FLOAT, [1, 512])], ["y"],
              [weight("w", 258, 1, 256), numpy_helper.from_array(np.array([1], np.int64), "one")])
    # (512 + 64 - 256) / 128 + 1 = 3 frames
    assert macs(m) == 258 * 3 * 256


# --- control flow and functions ---------------------------------------------------------------

def branch(name: str, out_features: int, x: str = "x") -> onnx.GraphProto:
    w = numpy_helper.from_array(np.zeros((8, out_features), np.float32), f"{name}_w")
    return helper.make_graph(
        [helper.make_node("Constant", [], [f"{name}_w"], value=w),
         helper.make_node("MatMul", [x, f"{name}_w"], [f"{name}_mm"]),
         helper.make_node("ReduceSum", [f"{name}_mm"], [f"{name}_y"], keepdims=1)],
        name, [], [helper.make_tensor_value_info(f"{name}_y", FLOAT, None)])


def test_if_counts_the_costlier_branch():
    node = helper.make_node("If", ["flag"], ["y"], name="pick",
                            then_branch=branch("then", 4), else_branch=branch("else", 64))
    m = model([node], [("x", FLOAT, [1, 8]), ("flag", TensorProto.BOOL, [])], ["y"])
    result = count_macs(m, {})
    assert result.macs == 8 * 64
    assert result.by_op == {"MatMul": 8 * 64}
    assert any("If 'pick'" in n and "else_branch: 512" in n and "then_branch: 32" in n
               for n in result.notes)


def test_if_with_a_condition_known_from_shapes_takes_that_branch():
    # cond = (x.shape[1] == 8): known once the shape is, so only the then branch runs.
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "i1"], ["width"], axis=0),
             helper.make_node("Equal", ["width", "eight"], ["cond"]),
             helper.make_node("If", ["cond"], ["y"], then_branch=branch("then", 4),
                              else_branch=branch("else", 64))]
    inits = [numpy_helper.from_array(np.array(1, np.int64), "i1"),
             numpy_helper.from_array(np.array(8, np.int64), "eight")]
    m = model(nodes, [("x", FLOAT, ["batch", 8])], ["y"], inits)
    result = count_macs(m, {})
    assert result.macs == 8 * 4
    assert result.notes == ["assumed batch 1 for input 'x'"]


@pytest.mark.parametrize("index", [np.array(2, np.int64), np.array([2], np.int64)])
def test_known_dim_of_a_partly_unknown_shape_decides_a_branch(index):
    # x[batch, n, 8]: n stays unknown, yet Gather(Shape(x), 2) == 8 is known.
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "i2"], ["last"], axis=0),
             helper.make_node("Equal", ["last", "eight"], ["cond"]),
             helper.make_node("If", ["cond"], ["y"], then_branch=branch("then", 4, x="z"),
                              else_branch=branch("else", 64, x="z"))]
    inits = [numpy_helper.from_array(index, "i2"),
             numpy_helper.from_array(np.array(8, np.int64), "eight")]
    m = model(nodes, [("x", FLOAT, ["batch", "n", 8]), ("z", FLOAT, [1, 8])], ["y"], inits)
    result = count_macs(m, {})
    assert result.macs == 8 * 4
    assert not any("costlier" in n for n in result.notes)


def test_branch_reading_outer_constants_gets_its_shapes():
    # The branch pads `x` by amounts stored outside it; ONNX infers subgraphs with outer types but
    # not outer values, so the pads are copied into the branch before inference.
    pad_branch = helper.make_graph(
        [helper.make_node("Pad", ["x", "pads"], ["xp"]),
         helper.make_node("Conv", ["xp", "w"], ["then_y"])],
        "then", [], [helper.make_tensor_value_info("then_y", FLOAT, None)])
    plain_branch = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["else_y"])],
        "else", [], [helper.make_tensor_value_info("else_y", FLOAT, None)])
    node = helper.make_node("If", ["flag"], ["y"], then_branch=pad_branch, else_branch=plain_branch)
    pads = numpy_helper.from_array(np.array([0, 0, 0, 0, 0, 6], np.int64), "pads")
    inits = [weight("w", 4, 1, 3), pads]
    m = model([node], [("x", FLOAT, [1, 1, 10]), ("flag", TensorProto.BOOL, [])], ["y"], inits)
    result = count_macs(m, {})
    assert result.macs == 4 * (10 + 6 - 2) * 3


def loop_model(trip_count: onnx.TensorProto | None) -> onnx.ModelProto:
    body = helper.make_graph(
        [helper.make_node("MatMul", ["h_in", "w"], ["h_out"]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_in", FLOAT, [1, 16])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h_out", FLOAT, [1, 16])])
    inits = [weight("w", 16, 16), helper.make_tensor("true", TensorProto.BOOL, [], [True])]
    inputs = [("x", FLOAT, [1, 16])]
    if trip_count is None:
        inputs.append(("M", TensorProto.INT64, []))
    else:
        inits.append(trip_count)
    node = helper.make_node("Loop", ["M", "true", "x"], ["y"], name="steps", body=body)
    return model([node], inputs, ["y"], inits)


def test_loop_multiplies_the_body_by_a_constant_trip_count():
    result = count_macs(loop_model(helper.make_tensor("M", TensorProto.INT64, [], [5])), {})
    assert result.macs == 5 * 16 * 16
    assert result.notes == []


def test_loop_with_runtime_trip_count_counts_one_iteration():
    result = count_macs(loop_model(None), {})
    assert result.macs == 16 * 16
    assert any("Loop 'steps'" in n and "one iteration" in n for n in result.notes)


def test_scan_multiplies_the_body_by_the_sequence_length():
    body = helper.make_graph(
        [helper.make_node("MatMul", ["x_t", "w"], ["y_t"]),
         helper.make_node("Identity", ["s_in"], ["s_out"])],
        "body",
        [helper.make_tensor_value_info("s_in", FLOAT, [1]),
         helper.make_tensor_value_info("x_t", FLOAT, [1, 8])],
        [helper.make_tensor_value_info("s_out", FLOAT, [1]),
         helper.make_tensor_value_info("y_t", FLOAT, [1, 4])])
    node = helper.make_node("Scan", ["s0", "xs"], ["s", "ys"], body=body, num_scan_inputs=1)
    m = model([node], [("s0", FLOAT, [1]), ("xs", FLOAT, [12, 1, 8])], ["s", "ys"],
              [weight("w", 8, 4)])
    assert macs(m) == 12 * 8 * 4


def test_model_local_function_is_counted():
    function = helper.make_function(
        "local", "Proj", ["x"], ["y"],
        [helper.make_node("Constant", [], ["w"], value=weight("fw", 4, 6)),
         helper.make_node("MatMul", ["x", "w"], ["y"])],
        opset_imports=OPSET)
    graph = helper.make_graph(
        [helper.make_node("Proj", ["x"], ["h"], domain="local"),
         helper.make_node("Proj", ["x"], ["h2"], domain="local")], "fn",
        [helper.make_tensor_value_info("x", FLOAT, [3, 4])],
        [helper.make_tensor_value_info(name, FLOAT, None) for name in ("h", "h2")])
    m = helper.make_model(graph, opset_imports=[*OPSET, helper.make_opsetid("local", 1)],
                          functions=[function])
    assert macs(m) == 2 * 3 * 6 * 4


def test_no_onnxruntime_or_torch_import():
    code = ("import sys, onnx\n"
            "from onnx import helper\n"
            "from bloatguard.measure.compute import count_macs\n"
            "g = helper.make_graph([helper.make_node('MatMul', ['a', 'b'], ['y'])], 'g',\n"
            "    [helper.make_tensor_value_info(n, 1, [2, 2]) for n in 'ab'],\n"
            "    [helper.make_tensor_value_info('y', 1, None)])\n"
            "assert count_macs(helper.make_model(g), {}).macs == 8\n"
            "print(sorted(m for m in ('onnxruntime', 'torch') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- ResNet-50 and VGG-19 against published numbers -----------------------------------------------

class NetBuilder:
    """Builds a CNN with onnx.helper whose weights live in a sparse external data file: the
    reader sees the real dims (and checks offsets against the file size) while the test writes
    no weight bytes. Tallies MACs and params itself as it goes, from its own spatial arithmetic,
    as an independent check on count_macs."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.nodes: list = []
        self.initializers: list = []
        self.offset = 0
        self.params = 0
        self.macs = 0
        self.counter = 0

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def weight(self, *dims: int) -> str:
        name = self.fresh("w")
        tensor = onnx.TensorProto(name=name, data_type=FLOAT, dims=dims)
        tensor.data_location = onnx.TensorProto.EXTERNAL
        nbytes = 4 * math.prod(dims)
        for key, value in (("location", f"{self.name}.data"), ("offset", str(self.offset)),
                           ("length", str(nbytes))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        self.offset += nbytes
        self.params += math.prod(dims)
        self.initializers.append(tensor)
        return name

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        out = self.fresh(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def conv(self, x, size, cin, cout, k, stride=1, bias=False):
        pad = k // 2
        out_size = (size + 2 * pad - k) // stride + 1
        inputs = [x, self.weight(cout, cin, k, k)] + ([self.weight(cout)] if bias else [])
        self.macs += cout * out_size * out_size * cin * k * k
        y = self.node("Conv", inputs, kernel_shape=[k, k], strides=[stride] * 2, pads=[pad] * 4)
        return y, out_size

    def affine_bn(self, x, c):
        # BatchNorm's learnable scale and shift (2*C params, as torchvision counts it); running
        # statistics are buffers, not parameters, so they are left out.
        return self.node("Add", [self.node("Mul", [x, self.weight(c, 1, 1)]), self.weight(c, 1, 1)])

    def gemm(self, x, fan_in, fan_out):
        self.macs += fan_in * fan_out
        return self.node("Gemm", [x, self.weight(fan_out, fan_in), self.weight(fan_out)], transB=1)

    def save(self, directory: Path, x_shape, output: str) -> Path:
        graph = helper.make_graph(
            self.nodes, self.name, [helper.make_tensor_value_info("input", FLOAT, x_shape)],
            [helper.make_tensor_value_info(output, FLOAT, None)], initializer=self.initializers)
        path = directory / f"{self.name}.onnx"
        path.write_bytes(helper.make_model(graph, opset_imports=OPSET).SerializeToString())
        with open(directory / f"{self.name}.data", "wb") as data:
            data.truncate(self.offset)  # sparse: no weight bytes are written
        return path


def build_resnet50(directory: Path) -> tuple[Path, NetBuilder]:
    """torchvision's resnet50 (v1.5: the stride sits on the 3x3 conv of each bottleneck)."""
    b = NetBuilder("resnet50")
    x, size = b.conv("input", 224, 3, 64, 7, stride=2)
    x = b.node("Relu", [b.affine_bn(x, 64)])
    x = b.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4)
    size, cin = 56, 64
    for width, blocks, first_stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for index in range(blocks):
            stride = first_stride if index == 0 else 1
            h, s = b.conv(x, size, cin, width, 1)
            h = b.node("Relu", [b.affine_bn(h, width)])
            h, s = b.conv(h, s, width, width, 3, stride=stride)
            h = b.node("Relu", [b.affine_bn(h, width)])
            h, s = b.conv(h, s, width, width * 4, 1)
            h = b.affine_bn(h, width * 4)
            shortcut = x
            if index == 0:
                shortcut, _ = b.conv(x, size, cin, width * 4, 1, stride=stride)
                shortcut = b.affine_bn(shortcut, width * 4)
            x = b.node("Relu", [b.node("Add", [h, shortcut])])
            size, cin = s, width * 4
    x = b.node("Flatten", [b.node("GlobalAveragePool", [x])])
    y = b.gemm(x, 2048, 1000)
    return b.save(directory, ["batch", 3, 224, 224], y), b


def build_vgg19(directory: Path) -> tuple[Path, NetBuilder]:
    b = NetBuilder("vgg19")
    x, size, cin = "input", 224, 3
    for stage, (width, convs) in enumerate(((64, 2), (128, 2), (256, 4), (512, 4), (512, 4))):
        for _ in range(convs):
            x, size = b.conv(x, size, cin, width, 3, bias=True)
            x = b.node("Relu", [x])
            cin = width
        x = b.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
        size //= 2
    x = b.node("Flatten", [x])
    x = b.node("Relu", [b.gemm(x, 512 * 7 * 7, 4096)])
    x = b.node("Relu", [b.gemm(x, 4096, 4096)])
    y = b.gemm(x, 4096, 1000)
    return b.save(directory, [1, 3, "height", "width"], y), b


def test_resnet50_matches_published_numbers(tmp_path):
    path, builder = build_resnet50(tmp_path)
    facts = read_model(path)
    assert facts.unreadable is None, facts.unreadable
    assert facts.params == builder.params == 25_557_032
    result = count_macs(facts.handle.proto, {})
    assert result.notes == ["assumed batch 1 for input 'input'"]
    assert result.macs == builder.macs
    assert result.macs == pytest.approx(4.09e9, rel=0.02)
    assert result.by_op == {"Conv": builder.macs - 2048 * 1000, "Gemm": 2048 * 1000}


def test_vgg19_matches_published_numbers(tmp_path):
    path, builder = build_vgg19(tmp_path)
    facts = read_model(path)
    assert facts.unreadable is None, facts.unreadable
    assert facts.params == builder.params == 143_667_240
    assert facts.file_size > 4 * 143_667_240  # the sparse data file counts at its declared size

    unresolved = count_macs(facts.handle.proto, {})
    assert unresolved.macs is None
    assert any("['height', 'width']" in n for n in unresolved.notes)

    result = count_macs(facts.handle.proto, {"input": [1, 3, 224, 224]})
    assert result.notes == []
    assert result.macs == builder.macs
    assert result.macs == pytest.approx(19.6e9, rel=0.02)


# --- real published models ----------------------------------------------------------------------


def weight_dims(proto: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Dims of every Constant-node weight, wherever it lives, read straight off the proto."""
    dims = {}
    stack = [proto.graph]
    while stack:
        graph = stack.pop()
        for tensor in graph.initializer:
            dims[tensor.name] = tuple(tensor.dims)
        for node in graph.node:
            for attribute in node.attribute:
                if node.op_type == "Constant" and attribute.name == "value":
                    dims[node.output[0]] = tuple(attribute.t.dims)
                if attribute.HasField("g"):
                    stack.append(attribute.g)
    return dims


def test_silero_vad():
    facts = read_model(package_file("silero_vad", "data", "silero_vad.onnx"))
    proto = facts.handle.proto
    result = count_macs(proto, {"input": [1, 512], "state": [2, 1, 128]})

    # Independent derivation for the 16 kHz branch (a 512-sample frame). The model picks its
    # branch from the int64 `sr` input, whose value is unknown statically, so the costlier
    # branch that can run is counted; the 8 kHz branch cannot take 512 samples (its encoder
    # leaves 2 frames where its LSTM expects 1) and is left out with a note.
    dims = weight_dims(proto)
    prefix = "If_0_then_branch__Inline_0__"
    stft = dims[prefix + "stft.forward_basis_buffer"]  # [258, 1, 256]: a Conv with stride 128
    assert stft == (258, 1, 256)
    # The exporter reflection-pads 64 samples: (512 + 64 - 256) // 128 + 1 = 3 STFT frames,
    # 129 magnitude bins; then four k=3, pad=1 convs with strides 1, 2, 2, 1: 3 -> 3 -> 2 -> 1 -> 1.
    frames = (512 + 64 - 256) // 128 + 1
    expected = stft[0] * frames * stft[1] * stft[2]
    length = frames
    for layer, stride in enumerate((1, 2, 2, 1)):
        cout, cin, k = dims[f"{prefix}encoder.{layer}.reparam_conv.weight"]
        length = (length + 2 - k) // stride + 1
        expected += cout * length * cin * k
    gates_hidden, lstm_in = dims[prefix + "decoder.rnn.weight_ih"]  # LSTMCell: [4*128, 128]
    hidden = dims[prefix + "decoder.rnn.weight_hh"][1]
    expected += 1 * 1 * gates_hidden * (lstm_in + hidden)  # one step, batch 1
    cout, cin, k = dims[prefix + "decoder.decoder.2.weight"]
    expected += cout * length * cin * k
    assert expected == 563_968
    assert result.macs == expected
    assert result.by_op == {"Conv": expected - 131_072, "LSTM": 131_072}
    assert any("else_branch cannot run" in n for n in result.notes)

    # Without configuration the frame length is unknown: no number, but a note naming the input.
    unresolved = count_macs(proto, {})
    assert unresolved.macs is None
    assert any("'input' [1, ?]" in n for n in unresolved.notes)


def test_magika():
    path = package_file("magika", "models", "standard_v3_3", "model.onnx")
    result = count_macs(read_model(path).handle.proto, {})
    assert result.notes == ["assumed batch 1 for input 'bytes'"]

    # Independent derivation from the weights in the file: 2048 bytes are one-hot encoded over
    # 257 symbols and projected to 64 (Dense_0, a MatMul); 4 consecutive positions are reshaped
    # into 256 channels over 512 steps, a k=5 valid Conv gives 508 steps of 512 channels, a global
    # max-pool and LayerNorm follow, then Dense_1 maps 512 -> 214 labels.
    full = onnx.load(str(path))
    inits = {t.name: tuple(t.dims) for t in full.graph.initializer}
    vocab, embed = inits["jax2tf_get_logits_/Const:0"]
    conv_weight = "jax2tf_get_logits_/pjit_get_logits_/MagikaV2/Conv_0/transpose_3:0"
    conv_out, conv_in, k, _ = inits[conv_weight]
    features, labels = inits["jax2tf_get_logits_/Const_24:0"]
    steps = 2048 * embed // conv_in
    expected = 2048 * vocab * embed + conv_out * (steps - k + 1) * conv_in * k + features * labels
    assert (vocab, embed, conv_out, conv_in, k) == (257, 64, 512, 256, 5)
    assert (features, labels) == (512, 214)
    assert result.macs == expected == 366_717_952


@pytest.mark.parametrize("name, published", [("light_resnet50", 4.09e9), ("light_vgg19", 19.6e9)])
def test_onnx_model_zoo_exports(name, published):
    # The onnx package ships weight-stripped copies of model-zoo exports (Caffe2 era): real
    # exporter output, independent of the graphs built above.
    path = package_file("onnx", "backend", "test", "data", "light", f"{name}.onnx")
    result = count_macs(onnx.load(str(path), load_external_data=False), {})
    assert result.macs == pytest.approx(published, rel=0.02)
    assert result.notes == []


def test_the_list_of_standard_ops_with_subgraphs_matches_onnx_schemas():
    # The reader and the MACs counter look for subgraphs only in these ops; a new one in a
    # future opset must be added there.
    from bloatguard.graph import STD_OPS_WITH_GRAPHS

    graph_types = {onnx.defs.OpSchema.AttrType.GRAPH, onnx.defs.OpSchema.AttrType.GRAPHS}
    expected = {schema.name for schema in onnx.defs.get_all_schemas_with_history()
                if schema.domain in ("", "ai.onnx")
                and any(a.type in graph_types for a in schema.attributes.values())}
    assert STD_OPS_WITH_GRAPHS == expected
