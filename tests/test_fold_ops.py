"""The folder's numpy ops must give exactly what onnx's reference implementation gives, and must
decline (None, so the reference runs) every case they do not cover."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from bloatguard.measure import fold_ops

from factories import package_file

i64 = lambda *values: np.array(values, dtype=np.int64)  # noqa: E731
SHAPE = i64(1, 64, 1, 1600)
MATRIX = np.arange(24, dtype=np.int64).reshape(2, 3, 4)

# (op, inputs, attributes, opset)
COVERED = [
    ("Identity", [SHAPE], {}, 17),
    ("Cast", [SHAPE], {"to": TensorProto.FLOAT}, 17),
    ("Cast", [np.array([2.7, -2.7, 0.0], np.float32)], {"to": TensorProto.INT64}, 17),
    ("Cast", [SHAPE], {"to": TensorProto.BOOL}, 17),
    ("Cast", [np.array([1.5], np.float64)], {"to": TensorProto.FLOAT16}, 13),
    ("Concat", [SHAPE, i64(7), i64()], {"axis": 0}, 13),
    ("Concat", [MATRIX, MATRIX], {"axis": -1}, 13),
    ("Unsqueeze", [np.array(5, np.int64), i64(0)], {}, 13),
    ("Unsqueeze", [MATRIX, i64(-1, 0)], {}, 13),
    ("Unsqueeze", [SHAPE], {"axes": [0, 2]}, 11),
    ("Squeeze", [MATRIX[:1], i64(0)], {}, 13),
    ("Squeeze", [np.ones((1, 3, 1), np.int64)], {}, 13),
    ("Squeeze", [np.ones((1, 3, 1), np.int64)], {"axes": [-1]}, 11),
    ("Squeeze", [np.ones((1, 3, 1), np.int64)], {"axes": []}, 11),
    ("Reshape", [MATRIX, i64(0, -1)], {}, 14),
    ("Reshape", [MATRIX, i64(-1)], {}, 14),
    ("Reshape", [np.zeros((0, 3), np.int64), i64(3, 0)], {"allowzero": 1}, 14),
    ("Transpose", [MATRIX], {}, 13),
    ("Transpose", [MATRIX], {"perm": [1, 0, 2]}, 13),
    ("Gather", [SHAPE, np.array(-1, np.int64)], {}, 13),
    ("Gather", [SHAPE, np.array([0, 2], np.int32)], {}, 13),
    ("Gather", [MATRIX, i64(1, 0)], {"axis": 1}, 13),
    ("Slice", [SHAPE, i64(0), i64(2)], {}, 13),
    ("Slice", [SHAPE, i64(-2), i64(2**63 - 1)], {}, 13),
    ("Slice", [SHAPE, i64(-1), i64(-(2**63)), i64(0), i64(-1)], {}, 13),
    ("Slice", [SHAPE, i64(10), i64(20)], {}, 13),
    ("Slice", [MATRIX, i64(1, 0), i64(3, 4), i64(2, 1), i64(2, 1)], {}, 13),
    ("Slice", [SHAPE], {"starts": [1], "ends": [3]}, 9),
    ("ConstantOfShape", [i64(2, 3)], {}, 13),
    ("ConstantOfShape", [i64()], {"value": numpy_helper.from_array(i64(7))}, 13),
    ("Range", [np.array(0, np.int64), np.array(10, np.int64), np.array(3, np.int64)], {}, 13),
    ("Range", [np.array(5, np.int32), np.array(0, np.int32), np.array(-2, np.int32)], {}, 13),
    ("Range", [np.array(-20000, np.int16), np.array(20000, np.int16), np.array(10, np.int16)], {}, 13),
    ("Range", [np.array(10, np.uint8), np.array(0, np.uint8), np.array(1, np.uint8)], {}, 13),
    ("Expand", [i64(1, 2), i64(3, 1)], {}, 13),
    ("Where", [np.array([True, False]), i64(1, 2), i64(3, 4)], {}, 13),
    ("Add", [SHAPE, i64(1)], {}, 14),
    ("Sub", [np.array(3, np.int64), i64(5, 6)], {}, 14),
    ("Mul", [SHAPE, SHAPE], {}, 14),
    ("Div", [i64(7, -7, 7, -7), i64(2, 2, -2, -2)], {}, 14),
    ("Div", [np.array([1.0, -3.0], np.float32), np.array([0.0, 2.0], np.float32)], {}, 14),
    ("Min", [SHAPE, i64(50)], {}, 13),
    ("Max", [SHAPE, i64(50), i64(2, 2, 2, 2000)], {}, 13),
    ("Equal", [SHAPE, i64(1)], {}, 13),
    ("Less", [SHAPE, i64(64)], {}, 13),
    ("LessOrEqual", [SHAPE, i64(64)], {}, 16),
    ("Greater", [SHAPE, i64(64)], {}, 13),
    ("GreaterOrEqual", [SHAPE, i64(64)], {}, 16),
    ("Neg", [SHAPE], {}, 13),
    ("Abs", [i64(-3, 3)], {}, 13),
    ("Floor", [np.array([1.5, -1.5], np.float32)], {}, 13),
    ("Ceil", [np.array([1.5, -1.5], np.float32)], {}, 13),
    ("Sqrt", [np.array([4.0, 2.0], np.float32)], {}, 13),
    ("Not", [np.array([True, False])], {}, 1),
    ("And", [np.array([True, False]), np.array(True)], {}, 7),
    ("Or", [np.array([True, False]), np.array(False)], {}, 7),
    ("Xor", [np.array([True, False]), np.array(True)], {}, 7),
]

DECLINED = [
    ("Cast", [SHAPE], {"to": TensorProto.STRING}, 17),
    ("Cast", [SHAPE], {"to": TensorProto.BFLOAT16}, 17),
    ("Cast", [np.array([np.inf], np.float32)], {"to": TensorProto.INT64}, 17),
    ("Div", [i64(1), i64(0)], {}, 14),
    ("Add", [SHAPE, np.array([1], np.int32)], {}, 14),
    ("Gather", [SHAPE, i64(4)], {}, 13),
    ("Squeeze", [MATRIX, i64(0)], {}, 13),
    ("Slice", [SHAPE, i64(0), i64(2), i64(0), i64(0)], {}, 13),
    ("Range", [np.array(0.0, np.float32), np.array(1.0, np.float32), np.array(0.1, np.float32)], {}, 13),
    ("Mod", [i64(7), i64(3)], {}, 13),
    ("Reshape", [MATRIX, i64(-1, -1)], {}, 14),
    ("Reshape", [MATRIX, i64(4, 6)], {"allowzero": 1}, 13),
    ("Concat", [SHAPE, SHAPE], {}, 13),
    ("Add", [SHAPE, i64(1)], {"broadcast": 1}, 6),
    ("Slice", [SHAPE, None, i64(2)], {}, 13),  # an empty name where `starts` is required
]


def _node(op, inputs, attributes):
    names = [f"in{index}" if value is not None else "" for index, value in enumerate(inputs)]
    empty = [name for name, value in attributes.items() if value == []]  # typed by hand
    node = helper.make_node(op, names, ["out"], **{k: v for k, v in attributes.items() if k not in empty})
    node.attribute.extend(helper.make_attribute(name, [], attr_type=onnx.AttributeProto.INTS)
                          for name in empty)
    return node, {name: value for name, value in zip(names, inputs) if name}


def _reference(node, feeds, opset):
    graph = helper.make_graph([node], "g", [onnx.ValueInfoProto(name=n) for n in feeds],
                              [onnx.ValueInfoProto(name="out")])
    return np.asarray(ReferenceEvaluator(graph, opsets={"": opset}).run(None, feeds)[0])


@pytest.mark.parametrize("op, inputs, attributes, opset", COVERED,
                         ids=[f"{case[0]}-{index}" for index, case in enumerate(COVERED)])
def test_covered_ops_match_the_reference(op, inputs, attributes, opset):
    node, feeds = _node(op, inputs, attributes)
    ours = fold_ops.evaluate(node, inputs, opset)
    assert ours is not None, f"{op} should be covered"
    expected = _reference(node, feeds, opset)
    assert ours[0].dtype == expected.dtype
    assert ours[0].shape == expected.shape
    np.testing.assert_array_equal(ours[0], expected)


@pytest.mark.parametrize("op, inputs, attributes, opset", DECLINED,
                         ids=[f"{case[0]}-{index}" for index, case in enumerate(DECLINED)])
def test_uncovered_cases_are_left_to_the_reference(op, inputs, attributes, opset):
    node, _ = _node(op, inputs, attributes)
    assert fold_ops.evaluate(node, inputs, opset) is None


def test_folding_real_models_does_not_need_the_reference_evaluator():
    # The point of fold_ops: the MACs child never pays for importing onnx.reference on silero.
    silero_models = sorted(package_file("silero_vad", "data").glob("*.onnx"))
    assert silero_models, "silero-vad ships no ONNX model here: the test would prove nothing"
    code = ("import sys, onnx\nfrom bloatguard.measure.compute import count_macs\n"
            "for p in sys.argv[1:]: count_macs(onnx.load(p), {'input': [1, 512]})\n"
            "print('onnx.reference' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code, *map(str, silero_models)],
                            capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_unsqueeze_with_unsorted_axes_follows_the_spec_where_the_reference_does_not():
    # Unsqueeze-11 with axes [2, 0] on (3, 4): the spec (and onnxruntime, and shape inference)
    # give (1, 3, 1, 4); onnx's reference inserts one axis at a time and gets (1, 3, 4, 1).
    import onnxruntime

    data = np.arange(12, dtype=np.float32).reshape(3, 4)
    node = helper.make_node("Unsqueeze", ["x"], ["y"], axes=[2, 0])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], ir_version=7)
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"x": data})[0]
    ours = fold_ops.evaluate(node, [data], 11)[0]
    assert ours.shape == expected.shape == (1, 3, 1, 4)
    np.testing.assert_array_equal(ours, expected)
