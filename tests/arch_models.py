"""Models of known structure for BG107 (efficient-architecture) and `factorize-lowrank`: a weight
of exact rank, full-rank weights, a dense 3x3 conv and its depthwise-separable counterpart, and
a BERT/MiniLM-style encoder built with onnx.helper (token ids -> embedding -> encoder layers,
weights and nodes named as Hugging Face exports name them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from factories import OPSET, build, info, init, save


def low_rank(rank: int, rows: int = 256, cols: int = 256, noise: float = 1e-4,
             seed: int = 0) -> np.ndarray:
    """A [rows, cols] float32 matrix of exactly `rank` plus `noise` x N(0, 1) per element."""
    rng = np.random.default_rng(seed)
    matrix = rng.standard_normal((rows, rank)) @ rng.standard_normal((rank, cols)) / np.sqrt(rank)
    return (matrix + noise * rng.standard_normal((rows, cols))).astype(np.float32)


def matmul(path: Path, weight: np.ndarray, *, batch="batch", gemm_trans_b: bool = False) -> Path:
    """x[batch, K] -> MatMul(x, W) (or Gemm with W stored [N, K], transB=1) + bias -> y."""
    rng = np.random.default_rng(1)
    if gemm_trans_b:
        n, k = weight.shape
        bias = (0.1 * rng.standard_normal(n)).astype(np.float32)
        nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="proj", transB=1)]
    else:
        k, n = weight.shape
        bias = (0.1 * rng.standard_normal(n)).astype(np.float32)
        nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="proj"),
                 helper.make_node("Add", ["h", "b"], ["y"], name="bias")]
    return build(nodes, [info("x", [batch, k])], [info("y", [batch, n])],
                 [init("w", weight), init("b", bias)], path)


def dense_conv(path: Path, channels: int = 128, size: int = 32, seed: int = 0) -> Path:
    """A dense 3x3 conv, `channels` -> `channels`, on [1, channels, size, size] (pads 1)."""
    rng = np.random.default_rng(seed)
    weight = (rng.standard_normal((channels, channels, 3, 3)) / np.sqrt(9 * channels)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1] * 4, kernel_shape=[3, 3])
    return build([node], [info("x", [1, channels, size, size])],
                 [info("y", [1, channels, size, size])], [init("w", weight)], path)


def separable_block(path: Path, channels: int = 128, size: int = 32, seed: int = 0) -> Path:
    """The same width as dense_conv, depthwise-separable: a 3x3 depthwise conv then a 1x1 conv."""
    rng = np.random.default_rng(seed)
    depthwise = (rng.standard_normal((channels, 1, 3, 3)) / 3).astype(np.float32)
    pointwise = (rng.standard_normal((channels, channels, 1, 1)) / np.sqrt(channels)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "dw"], ["h"], name="depthwise", pads=[1] * 4,
                              kernel_shape=[3, 3], group=channels),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Conv", ["r", "pw"], ["y"], name="pointwise", kernel_shape=[1, 1])]
    return build(nodes, [info("x", [1, channels, size, size])],
                 [info("y", [1, channels, size, size])], [init("dw", depthwise), init("pw", pointwise)],
                 path)


def encoder(path: Path, *, vocab: int = 30522, width: int = 384, layers: int = 6,
            ffn: int = 1536, heads: int = 12, tokens: int = 128, seed: int = 0) -> Path:
    """A BERT/MiniLM-style encoder (all-MiniLM-L6-v2's shape by default: 30522 x 384 word
    embeddings, 6 layers of 384 wide with 12 heads and a 1536 FFN, 22.6M parameters): token ids
    [1, tokens] -> word + position embeddings -> LayerNorm -> post-norm encoder layers (Q/K/V/O
    projections, softmax attention, a Relu FFN) -> hidden states. Random weights (a trained
    model cannot be downloaded here), scaled like an initialisation."""
    rng = np.random.default_rng(seed)
    inits: list = []
    nodes: list = []

    def weight(name: str, shape) -> str:
        inits.append(numpy_helper.from_array(
            (rng.standard_normal(shape) * 0.02).astype(np.float32), name))
        return name

    def vector(name: str, size: int, value: float | None = None) -> str:
        data = (np.full(size, value, np.float32) if value is not None
                else np.zeros(size, np.float32))
        inits.append(numpy_helper.from_array(data, name))
        return name

    def layer_norm(prefix: str, x: str, out: str, node: str) -> None:
        nodes.append(helper.make_node(
            "LayerNormalization", [x, vector(f"{prefix}.weight", width, 1.0),
                                   vector(f"{prefix}.bias", width)], [out], name=node, axis=-1,
            epsilon=1e-12))

    def linear(prefix: str, x: str, shape, out: str, node: str) -> None:
        nodes.append(helper.make_node("MatMul", [x, weight(f"{prefix}.weight", shape)],
                                      [out + ".mm"], name=f"{node}/MatMul"))
        nodes.append(helper.make_node("Add", [out + ".mm", vector(f"{prefix}.bias", shape[1])],
                                      [out], name=f"{node}/Add"))

    inits += [numpy_helper.from_array(np.array([1, tokens, heads, width // heads], np.int64), "split"),
              numpy_helper.from_array(np.array([1, tokens, width], np.int64), "merge"),
              numpy_helper.from_array(np.array(1 / np.sqrt(width // heads), np.float32), "scale"),
              numpy_helper.from_array(np.arange(tokens, dtype=np.int64)[None], "position_ids")]
    nodes += [helper.make_node("Gather", [weight("embeddings.word_embeddings.weight", (vocab, width)),
                                          "input_ids"], ["words"], name="/embeddings/word_embeddings/Gather"),
              helper.make_node("Gather", [weight("embeddings.position_embeddings.weight", (512, width)),
                                          "position_ids"], ["positions"],
                               name="/embeddings/position_embeddings/Gather"),
              helper.make_node("Add", ["words", "positions"], ["embedded"], name="/embeddings/Add")]
    layer_norm("embeddings.LayerNorm", "embedded", "x0", "/embeddings/LayerNorm")
    x = "x0"
    for index in range(layers):
        p, n = f"encoder.layer.{index}", f"/encoder/layer.{index}"
        for name in ("query", "key", "value"):
            out = f"{p}.{name}"
            linear(f"{p}.attention.self.{name}", x, (width, width), out, f"{n}/attention/self/{name}")
            nodes += [helper.make_node("Reshape", [out, "split"], [out + ".heads"]),
                      helper.make_node("Transpose", [out + ".heads"], [out + ".t"],
                                       perm=[0, 2, 3, 1] if name == "key" else [0, 2, 1, 3])]
        nodes += [helper.make_node("MatMul", [f"{p}.query.t", f"{p}.key.t"], [f"{p}.scores"]),
                  helper.make_node("Mul", [f"{p}.scores", "scale"], [f"{p}.scaled"]),
                  helper.make_node("Softmax", [f"{p}.scaled"], [f"{p}.probs"], axis=-1),
                  helper.make_node("MatMul", [f"{p}.probs", f"{p}.value.t"], [f"{p}.context"]),
                  helper.make_node("Transpose", [f"{p}.context"], [f"{p}.context.t"], perm=[0, 2, 1, 3]),
                  helper.make_node("Reshape", [f"{p}.context.t", "merge"], [f"{p}.context.m"])]
        linear(f"{p}.attention.output.dense", f"{p}.context.m", (width, width), f"{p}.attended",
               f"{n}/attention/output/dense")
        nodes.append(helper.make_node("Add", [f"{p}.attended", x], [f"{p}.residual1"]))
        layer_norm(f"{p}.attention.output.LayerNorm", f"{p}.residual1", f"{p}.norm1",
                   f"{n}/attention/output/LayerNorm")
        linear(f"{p}.intermediate.dense", f"{p}.norm1", (width, ffn), f"{p}.inner",
               f"{n}/intermediate/dense")
        nodes.append(helper.make_node("Relu", [f"{p}.inner"], [f"{p}.gelu"]))
        linear(f"{p}.output.dense", f"{p}.gelu", (ffn, width), f"{p}.outer", f"{n}/output/dense")
        nodes.append(helper.make_node("Add", [f"{p}.outer", f"{p}.norm1"], [f"{p}.residual2"]))
        out = "last_hidden_state" if index == layers - 1 else f"{p}.out"
        layer_norm(f"{p}.output.LayerNorm", f"{p}.residual2", out, f"{n}/output/LayerNorm")
        x = out
    graph = helper.make_graph(
        nodes, "encoder", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, tokens])],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, [1, tokens, width])],
        initializer=inits)
    return save(helper.make_model(graph, opset_imports=OPSET), path)


def encoder_params(vocab: int = 30522, width: int = 384, layers: int = 6, ffn: int = 1536) -> int:
    """The stored floats of `encoder` (the int64 shape/position constants excluded)."""
    per_layer = 4 * (width * width + width) + 2 * width * ffn + ffn + width + 4 * width
    return vocab * width + 512 * width + 2 * width + layers * per_layer
