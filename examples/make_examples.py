"""Builds the example models shipped in examples/models (run: python examples/make_examples.py).

They are small (well under 1 MB each) but shaped like real exports: a Conv detector backbone, an
MLP classifier with a dynamic batch, and a voice-activity model whose weights live only as
Constant nodes inside the branches of an If (the way silero-vad is exported).
Weights are seeded so the files are reproducible byte for byte.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).parent / "models"
OPSET = [helper.make_opsetid("", 17)]
rng = np.random.default_rng(20261127)


def weight(name: str, *shape: int) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(np.float32), name)


def detector() -> onnx.ModelProto:
    """Three strided 3x3 convs with ReLU, then a 1x1 head: about 100K params."""
    nodes, inits = [], []
    current, channels = "images", 3
    for index, out in enumerate((32, 64, 128)):
        inits += [weight(f"conv{index}.weight", out, channels, 3, 3), weight(f"conv{index}.bias", out)]
        nodes += [helper.make_node("Conv", [current, f"conv{index}.weight", f"conv{index}.bias"],
                                   [f"c{index}"], name=f"conv{index}", kernel_shape=[3, 3],
                                   pads=[1, 1, 1, 1], strides=[2, 2]),
                  helper.make_node("Relu", [f"c{index}"], [f"r{index}"])]
        current, channels = f"r{index}", out
    inits += [weight("head.weight", 6, channels, 1, 1), weight("head.bias", 6)]
    nodes.append(helper.make_node("Conv", [current, "head.weight", "head.bias"], ["boxes"],
                                  name="head", kernel_shape=[1, 1]))
    graph = helper.make_graph(
        nodes, "detector",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["batch", 6, "h8", "w8"])],
        initializer=inits)
    return helper.make_model(graph, opset_imports=OPSET, producer_name="bloatguard-examples")


def classifier() -> onnx.ModelProto:
    """A 64 -> 256 -> 10 MLP over tabular features, dynamic batch."""
    inits = [weight("fc1.weight", 64, 256), weight("fc1.bias", 256),
             weight("fc2.weight", 256, 10), weight("fc2.bias", 10)]
    nodes = [helper.make_node("MatMul", ["features", "fc1.weight"], ["h"], name="fc1"),
             helper.make_node("Add", ["h", "fc1.bias"], ["h_b"]),
             helper.make_node("Relu", ["h_b"], ["h_r"]),
             helper.make_node("MatMul", ["h_r", "fc2.weight"], ["o"], name="fc2"),
             helper.make_node("Add", ["o", "fc2.bias"], ["logits"])]
    graph = helper.make_graph(
        nodes, "classifier",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        initializer=inits)
    return helper.make_model(graph, opset_imports=OPSET, producer_name="bloatguard-examples")


def vad() -> onnx.ModelProto:
    """One branch per sample rate, weights as Constant nodes inside the If branches."""

    def branch(name: str, window: int):
        w = weight(f"{name}.proj", window, 64)
        out = weight(f"{name}.out", 64, 1)
        return helper.make_graph(
            [helper.make_node("Constant", [], [f"{name}_w"], value=w),
             helper.make_node("Constant", [], [f"{name}_o"], value=out),
             helper.make_node("Slice", ["audio", f"{name}_start", f"{name}_end", f"{name}_axis"], [f"{name}_x"]),
             helper.make_node("MatMul", [f"{name}_x", f"{name}_w"], [f"{name}_h"], name=f"{name}_proj"),
             helper.make_node("Tanh", [f"{name}_h"], [f"{name}_t"]),
             helper.make_node("MatMul", [f"{name}_t", f"{name}_o"], [f"{name}_y"], name=f"{name}_out")],
            name, [], [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, [1, 1])],
            initializer=[numpy_helper.from_array(np.array([0], np.int64), f"{name}_start"),
                         numpy_helper.from_array(np.array([window], np.int64), f"{name}_end"),
                         numpy_helper.from_array(np.array([1], np.int64), f"{name}_axis")])

    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["k16"], value=helper.make_tensor("k16", TensorProto.INT64, [], [16000])),
         helper.make_node("Equal", ["sr", "k16"], ["is16k"]),
         helper.make_node("If", ["is16k"], ["speech"], name="by_rate",
                          then_branch=branch("r16k", 512), else_branch=branch("r8k", 256))],
        "vad",
        [helper.make_tensor_value_info("audio", TensorProto.FLOAT, [1, 512]),
         helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("speech", TensorProto.FLOAT, [1, 1])])
    return helper.make_model(graph, opset_imports=OPSET, producer_name="bloatguard-examples")


def main() -> None:
    HERE.mkdir(parents=True, exist_ok=True)
    for name, build in (("detector", detector), ("classifier", classifier), ("vad", vad)):
        model = build()
        onnx.checker.check_model(model, full_check=True)
        onnx.save_model(model, str(HERE / f"{name}.onnx"))
        print(f"wrote {HERE / name}.onnx")


if __name__ == "__main__":
    main()
