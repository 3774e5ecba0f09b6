"""Models and helpers shared by the `bloatguard fix` tests (this module holds no tests).

Every model is built here, small enough that a test runs it in milliseconds, and each one
carries the thing a fix acts on: dead weights, duplicates, unfused BatchNorm, Dropout/Identity,
constant subgraphs, zero channels, Conv-heavy layers for quantization.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

import factories
from factories import const, info, init  # noqa: F401 - the fix tests import them from here

OPSET = factories.OPSET
F32 = TensorProto.FLOAT


save = factories.build  # the fix tests' name for it


def run(path_or_model, feeds: dict) -> list[np.ndarray]:
    """Outputs of onnxruntime on a model file or ModelProto."""
    import onnxruntime as ort

    data = path_or_model.SerializeToString() if isinstance(path_or_model, onnx.ModelProto) \
        else str(path_or_model)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"]).run(None, feeds)


def assert_same_outputs(before, after, feeds_list, rtol=1e-5) -> None:
    """Same outputs (relative to each output's scale) for every feed dict."""
    for feeds in feeds_list:
        for want, got in zip(run(before, feeds), run(after, feeds), strict=True):
            scale = max(float(np.max(np.abs(want))), 1e-12)
            assert want.shape == got.shape
            assert float(np.max(np.abs(want.astype(np.float64) - got))) <= rtol * scale


def rand(*shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


# --- models ------------------------------------------------------------------------------------

def messy(path: Path, *, external: bool = False) -> Path:
    """Dead weights of every kind: an unused initializer, a dead chain (Constant -> Mul -> Add)
    and a 32x32 weight stored twice (initializer and Constant)."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((32, 32)).astype(np.float32)
    nodes = [const("w_copy", w),
             helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node("MatMul", ["h", "w_copy"], ["y"]),
             const("dead_scale", rng.standard_normal((32,)).astype(np.float32)),
             helper.make_node("Mul", ["h", "dead_scale"], ["d1"], name="dead_mul"),
             helper.make_node("Add", ["d1", "dead_bias"], ["d2"], name="dead_add")]
    inits = [init("w", w), init("orphan", np.ones((16, 16), np.float32)),
             init("dead_bias", np.zeros((32,), np.float32))]
    return save(nodes, [info("x", [1, 32])], [info("y", [1, 32])], inits, path, external=external)


def conv_net(path: Path, *, channels=64, blocks=3, size=32, external=False, seed=0) -> Path:
    """A small Conv-heavy detector: 3x3 Conv + Relu blocks at `size`x`size`, then a 1x1 head.
    What BG101 recommends static int8 for, and what quantize_dynamic makes slower."""
    rng = np.random.default_rng(seed)
    nodes, inits, current, cin = [], [], "images", 3
    for index in range(blocks):
        w = (rng.standard_normal((channels, cin, 3, 3)) * np.sqrt(2 / (cin * 9))).astype(np.float32)
        inits += [init(f"w{index}", w), init(f"b{index}", (rng.standard_normal(channels) * 0.1).astype(np.float32))]
        nodes += [helper.make_node("Conv", [current, f"w{index}", f"b{index}"], [f"c{index}"],
                                   pads=[1] * 4, kernel_shape=[3, 3], name=f"conv{index}"),
                  helper.make_node("Relu", [f"c{index}"], [f"r{index}"])]
        current, cin = f"r{index}", channels
    inits.append(init("head", (rng.standard_normal((8, channels, 1, 1)) * 0.1).astype(np.float32)))
    nodes.append(helper.make_node("Conv", [current, "head"], ["boxes"], name="head"))
    return save(nodes, [info("images", [1, 3, size, size])], [info("boxes", [1, 8, size, size])],
                inits, path, external=external)


def torch_bn_net():
    """A torch module whose export keeps BatchNorm unfused (Conv+BN2d, Linear+BN1d, Dropout)."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.bn = torch.nn.BatchNorm2d(8)
            self.drop = torch.nn.Dropout(0.5)
            self.fc = torch.nn.Linear(8, 4)
            self.bn_fc = torch.nn.BatchNorm1d(4)

        def forward(self, x):
            y = self.drop(torch.relu(self.bn(self.conv(x)))).mean((2, 3))
            return self.bn_fc(self.fc(y))

    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():  # trained-looking statistics
        for bn in (net.bn, net.bn_fc):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    return net.eval()


def torch_export(net, path: Path, **kwargs) -> Path:
    """The export the fix tests run: input "x", output "y"."""
    return factories.torch_export(net, path, input_names=["x"], output_names=["y"], **kwargs)


def detector_head(path: Path, *, classes=80, size=16, channels=64, seed=0) -> Path:
    """A YOLO-style detector: a Conv backbone, then one 1x1 Conv head whose output, reshaped to
    [1, 4 + classes, N], holds box coordinates (up to ~320) in channels 0-3 and class scores
    (under 0.6) in the others. One quantization range for the head's output (per tensor) has
    steps of about 1.3: every score rounds to zero, while the boxes, and so the whole-output
    cosine, barely move."""
    rng = np.random.default_rng(seed)
    nodes, inits, current, cin = [], [], "images", 3
    for index in range(2):
        w = (rng.standard_normal((channels, cin, 3, 3)) * np.sqrt(2 / (cin * 9))).astype(np.float32)
        inits.append(init(f"w{index}", w))
        nodes += [helper.make_node("Conv", [current, f"w{index}"], [f"c{index}"], pads=[1] * 4,
                                   kernel_shape=[3, 3], name=f"conv{index}"),
                  helper.make_node("Relu", [f"c{index}"], [f"r{index}"])]
        current, cin = f"r{index}", channels
    # Non-negative features times non-negative weights: boxes and scores are non-negative, and
    # their scales are set by the weights' magnitudes.
    features = run_features(nodes, inits, current, channels, size, rng)
    head = np.abs(rng.standard_normal((4 + classes, channels))).astype(np.float32)
    peaks = features @ head.T
    head[:4] *= 320 / peaks[:, :4].max()
    head[4:] *= 0.6 / peaks[:, 4:].max()
    inits += [init("head", head.reshape(4 + classes, channels, 1, 1)),
              init("shape", np.array([1, 4 + classes, size * size], np.int64))]
    nodes += [helper.make_node("Conv", [current, "head"], ["raw"], name="head"),
              helper.make_node("Reshape", ["raw", "shape"], ["output0"])]
    return save(nodes, [info("images", [1, 3, size, size])],
                [info("output0", [1, 4 + classes, size * size])], inits, path)


def run_features(nodes, inits, output: str, channels: int, size: int, rng) -> np.ndarray:
    """The backbone's features on a few random images, one row per pixel: [pixels, channels]."""
    model = helper.make_model(helper.make_graph(
        nodes, "backbone", [info("images", [1, 3, size, size])],
        [info(output, [1, channels, size, size])], initializer=inits), opset_imports=OPSET)
    rows = [run(model, {"images": rng.random((1, 3, size, size), dtype=np.float32)})[0]
            for _ in range(4)]
    return np.concatenate([r.reshape(channels, -1).T for r in rows])


def paddle_detector(path: Path, *, channels=64, blocks=3, size=32, seed=0) -> Path:
    """A PP-OCR-style text detector as paddle2onnx writes it: opset 12, every weight in a
    `Constant` node, BatchNormalization left unfused after each Conv, a symbolic batch named
    p2o.DynamicDimension.0, and a Sigmoid probability map. onnxruntime's quantizers skip
    Constant-node weights, and per-channel QDQ is invalid below opset 13."""
    rng = np.random.default_rng(seed)
    nodes, current, cin = [], "x", 3
    for index in range(blocks):
        w = (rng.standard_normal((channels, cin, 3, 3)) * np.sqrt(2 / (cin * 9))).astype(np.float32)
        stats = {"scale": rng.random(channels) + 0.5, "bias": rng.standard_normal(channels) * 0.1,
                 "mean": rng.standard_normal(channels) * 0.1, "var": rng.random(channels) + 0.5}
        nodes.append(const(f"conv{index}.w", w))
        nodes += [const(f"bn{index}.{k}", v.astype(np.float32)) for k, v in stats.items()]
        nodes += [helper.make_node("Conv", [current, f"conv{index}.w"], [f"c{index}"], pads=[1] * 4,
                                   kernel_shape=[3, 3], name=f"conv{index}"),
                  helper.make_node("BatchNormalization",
                                   [f"c{index}", *(f"bn{index}.{k}" for k in stats)], [f"b{index}"],
                                   name=f"bn{index}"),
                  helper.make_node("Relu", [f"b{index}"], [f"r{index}"])]
        current, cin = f"r{index}", channels
    nodes += [const("head.w", (rng.standard_normal((1, channels, 1, 1)) * 0.1).astype(np.float32)),
              helper.make_node("Conv", [current, "head.w"], ["logits"], name="head"),
              helper.make_node("Sigmoid", ["logits"], ["maps"])]
    batch = "p2o.DynamicDimension.0"
    return save(nodes, [info("x", [batch, 3, size, size])], [info("maps", [batch, 1, size, size])],
                path=path, opsets=[helper.make_opsetid("", 12)], ir_version=7)
