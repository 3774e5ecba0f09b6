"""Tiny models built on the fly, so tests never depend on committed binaries.

Each factory writes a model file and returns its path; the weights are deterministic so that
counts can be asserted exactly.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 17)]


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def save(model: onnx.ModelProto, path: Path, *, external: bool = False, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data", size_threshold=0, **kwargs)
    else:
        onnx.save_model(model, str(path))
    return path


def mlp(path: Path, sizes=(16, 32, 4), *, batch="batch", weights_as="initializer",
        dtype=np.float32, external: bool = False, seed: int = 0) -> Path:
    """x[batch, sizes[0]] -> MatMul/Add per layer -> y. Params: sum(i*o + o)."""
    rng = _rng(seed)
    nodes, inits = [], []
    current = "x"
    for index, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
        w = rng.standard_normal((fan_in, fan_out)).astype(dtype)
        b = rng.standard_normal((fan_out,)).astype(dtype)
        w_name, b_name = f"w{index}", f"b{index}"
        if weights_as == "constant":
            nodes.append(helper.make_node("Constant", [], [w_name], value=numpy_helper.from_array(w, w_name)))
            nodes.append(helper.make_node("Constant", [], [b_name], value=numpy_helper.from_array(b, b_name)))
        else:
            inits += [numpy_helper.from_array(w, w_name), numpy_helper.from_array(b, b_name)]
        nodes.append(helper.make_node("MatMul", [current, w_name], [f"mm{index}"], name=f"matmul{index}"))
        current = "y" if index == len(sizes) - 2 else f"h{index}"
        nodes.append(helper.make_node("Add", [f"mm{index}", b_name], [current]))
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("x", elem, [batch, sizes[0]])],
        [helper.make_tensor_value_info("y", elem, [batch, sizes[-1]])],
        initializer=inits)
    return save(helper.make_model(graph, opset_imports=OPSET), path, external=external)


def mlp_params(sizes=(16, 32, 4)) -> int:
    return sum(i * o + o for i, o in zip(sizes, sizes[1:]))


def matmul_chain(path: Path, layers: int, width: int = 256, batch: str | int = "batch") -> Path:
    """x[batch, width] -> (MatMul, Relu) x layers: work proportional to `layers` (latency tests
    and benchmarks make a head slower by adding layers)."""
    rng = _rng(0)
    nodes, inits, current = [], [], "x"
    for index in range(layers):
        weight = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        inits.append(numpy_helper.from_array(weight, f"w{index}"))
        nodes.append(helper.make_node("MatMul", [current, f"w{index}"], [f"m{index}"]))
        current = "y" if index == layers - 1 else f"h{index}"
        nodes.append(helper.make_node("Relu", [f"m{index}"], [current]))
    graph = helper.make_graph(
        nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, width])], initializer=inits)
    return save(helper.make_model(graph, opset_imports=OPSET), path)


def if_model(path: Path) -> Path:
    """Weights live only inside the branches of an If, as Constant nodes (silero-vad style):
    then: x @ W1 (8x4), else: x @ W2 (8x4) + b (4). Params: 32 + 32 + 4 = 68."""
    rng = _rng(1)

    def branch(name: str, with_bias: bool):
        w = numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), f"{name}_w")
        nodes = [helper.make_node("Constant", [], [f"{name}_w"], value=w),
                 helper.make_node("MatMul", ["x", f"{name}_w"], [f"{name}_out" if with_bias else f"{name}_y"])]
        if with_bias:
            b = numpy_helper.from_array(rng.standard_normal((4,)).astype(np.float32), f"{name}_b")
            nodes += [helper.make_node("Constant", [], [f"{name}_b"], value=b),
                      helper.make_node("Add", [f"{name}_out", f"{name}_b"], [f"{name}_y"])]
        return helper.make_graph(nodes, name, [], [
            helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, [1, 4])])

    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["sixteen_k"], value=helper.make_tensor("c", TensorProto.INT64, [], [16000])),
         helper.make_node("Equal", ["sr", "sixteen_k"], ["is16k"]),
         helper.make_node("If", ["is16k"], ["y"], then_branch=branch("then", False),
                          else_branch=branch("else", True))],
        "if_model",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8]),
         helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    return save(helper.make_model(graph, opset_imports=OPSET), path)


def conv_model(path: Path, *, channels=(3, 8), kernel=3, spatial=("height", "width"),
               batch: int | str = "N") -> Path:
    """x[N, C, H, W] -> Conv(k x k, pad same) -> y. Params: Cout*Cin*k*k + Cout."""
    cin, cout = channels
    rng = _rng(2)
    w = numpy_helper.from_array(rng.standard_normal((cout, cin, kernel, kernel)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal((cout,)).astype(np.float32), "b")
    pad = kernel // 2
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", pads=[pad] * 4,
                          kernel_shape=[kernel, kernel])],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, cin, *spatial])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, cout, *spatial])],
        initializer=[w, b])
    return save(helper.make_model(graph, opset_imports=OPSET), path)


def function_model(path: Path) -> Path:
    """A model-local function whose body holds a Constant weight (4x4 = 16 params)."""
    w = numpy_helper.from_array(np.eye(4, dtype=np.float32), "fw")
    function = helper.make_function(
        "local", "Proj", ["x"], ["y"],
        [helper.make_node("Constant", [], ["w"], value=w), helper.make_node("MatMul", ["x", "w"], ["y"])],
        opset_imports=OPSET)
    graph = helper.make_graph(
        [helper.make_node("Proj", ["x"], ["y"], domain="local")], "fn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[*OPSET, helper.make_opsetid("local", 1)],
                              functions=[function])
    return save(model, path)


def sparse_model(path: Path) -> Path:
    """A sparse initializer: dense shape 10x10 with 3 stored values (params counts stored: 3)."""
    values = numpy_helper.from_array(np.array([1.0, 2.0, 3.0], dtype=np.float32), "s")
    indices = numpy_helper.from_array(np.array([0, 11, 99], dtype=np.int64), "s_idx")
    sparse = helper.make_sparse_tensor(values, indices, [10, 10])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "s"], ["y"])], "sparse",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        sparse_initializer=[sparse])
    return save(helper.make_model(graph, opset_imports=OPSET), path)


# --- building blocks for hand-made graphs --------------------------------------------------------

def info(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def const(name: str, array) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(array), name))


def init(name: str, array) -> TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def build(nodes, inputs, outputs, inits=(), path: Path | None = None, *, external=False, **kwargs) -> Path:
    """A checked model of `nodes` saved to `path` (opset 17 unless `opsets=` says otherwise)."""
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=kwargs.pop("opsets", OPSET), **kwargs)
    onnx.checker.check_model(model)
    return save(model, path, external=external)


def conv_net(path, *, widths=(16, 8), extra: bool = False, names=("conv1", "conv2"),
             weights=("w1", "w2"), size: int = 8):
    """x[1,3,size,size] -> Conv 3x3 (pad 1) -> Relu -> Conv 3x3 (pad 1) -> y; `extra` inserts
    a 3x3 Conv + Relu of widths[0] channels between them."""
    rng = np.random.default_rng(0)
    first, second = widths
    inits = [init(weights[0], rng.standard_normal((first, 3, 3, 3)).astype(np.float32)),
             init(weights[1], rng.standard_normal((second, first, 3, 3)).astype(np.float32))]
    nodes = [helper.make_node("Conv", ["x", weights[0]], ["h1"], name=names[0], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["h1"], ["r1"], name="relu1")]
    last = "r1"
    if extra:
        inits.append(init("w_mid", rng.standard_normal((first, first, 3, 3)).astype(np.float32)))
        nodes += [helper.make_node("Conv", ["r1", "w_mid"], ["hm"], name="conv_mid", pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", ["hm"], ["rm"], name="relu_mid")]
        last = "rm"
    nodes.append(helper.make_node("Conv", [last, weights[1]], ["y"], name=names[1], pads=[1, 1, 1, 1]))
    return build(nodes, [info("x", [1, 3, size, size])],
                           [info("y", [1, second, size, size])], inits, path)


def torch_export(net, path: Path, example=None, **kwargs) -> Path:
    """torch.onnx.export (TorchScript exporter) of `net` on `example` (default: a (2, 3, 8, 8)
    image batch), warnings silenced."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, example or (torch.randn(2, 3, 8, 8),), str(path), dynamo=False, **kwargs)
    return path


LFS_POINTER = (b"version https://git-lfs.github.com/spec/v1\n"
               b"oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
               b"size 12345\n")


def package_file(package: str, *parts: str) -> Path:
    """A file a PyPI package ships (silero-vad, magika), found without importing the package
    (silero_vad's import pulls in torch); skips the test when it is not installed."""
    import pytest

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{package} is not installed")
    path = Path(spec.submodule_search_locations[0]).joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not shipped by this {package} version")
    return path
