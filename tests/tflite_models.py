"""Small TFLite files built with the `tflite` package (code generated from the official
schema.fbs) and flatbuffers' Builder: what the converter writes, minus the converter."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

TYPES = {"float32": 0, "float16": 1, "int32": 2, "uint8": 3, "int64": 4, "int8": 9, "float64": 10}


@dataclass
class T:
    """A tensor: `data` (an array) makes it a constant with a buffer of its own, `buffer` shares
    another tensor's (by tensor index)."""

    name: str
    shape: list[int]
    dtype: str = "float32"
    data: np.ndarray | None = None
    buffer: int | None = None
    sparse: bool = False
    signature: list[int] | None = None
    buffer_number: int | None = None  # a buffer index written as is (hostile files)


@dataclass
class Op:
    op: str  # a BuiltinOperator name, or "custom:<code>"
    inputs: list[int]
    outputs: list[int]
    options: dict = field(default_factory=dict)


def model(path: Path, tensors: list[T], ops: list[Op], inputs: list[int], outputs: list[int], *,
          extra_buffers: list[bytes] = (), more_subgraphs: list[tuple] = (),
          signatures: list[tuple[str, int]] = (), raw_buffers: dict[int, bytes] | None = None,
          external: dict[int, tuple[int, int]] | None = None) -> Path:
    """One subgraph (plus `more_subgraphs`, each (tensors, ops, inputs, outputs)) over shared
    buffers; `extra_buffers` are stored but named by no tensor; `external` gives buffers an
    (offset, size) outside the flatbuffer, as converters write models over 2 GB."""
    import flatbuffers
    import tflite

    b = flatbuffers.Builder(1024)
    graphs = [(tensors, ops, inputs, outputs), *more_subgraphs]
    buffers, tensor_buffers = _buffer_numbers(graphs)
    buffers += list(extra_buffers)
    for number, data in (raw_buffers or {}).items():
        buffers[number] = data
    buffer_offsets = [_buffer(b, data, (external or {}).get(number))
                      for number, data in enumerate(buffers)]
    codes = list(dict.fromkeys(op.op for _, graph_ops, *_ in graphs for op in graph_ops))
    code_offsets = [_opcode(b, name) for name in codes]
    graph_offsets = [_subgraph(b, index, graph, tensor_buffers[index], codes)
                     for index, graph in enumerate(graphs)]
    signature_offsets = [_signature(b, key, graph) for key, graph in signatures]
    buffers_vector = _offsets(b, tflite.ModelStartBuffersVector, buffer_offsets)
    codes_vector = _offsets(b, tflite.ModelStartOperatorCodesVector, code_offsets)
    graphs_vector = _offsets(b, tflite.ModelStartSubgraphsVector, graph_offsets)
    signatures_vector = _offsets(b, tflite.ModelStartSignatureDefsVector, signature_offsets)
    description = b.CreateString("bloatguard test model")
    tflite.ModelStart(b)
    tflite.ModelAddVersion(b, 3)
    tflite.ModelAddOperatorCodes(b, codes_vector)
    tflite.ModelAddSubgraphs(b, graphs_vector)
    tflite.ModelAddBuffers(b, buffers_vector)
    tflite.ModelAddDescription(b, description)
    tflite.ModelAddSignatureDefs(b, signatures_vector)
    b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(b.Output()))
    return path


def _buffer_numbers(graphs) -> tuple[list[bytes], list[list[int]]]:
    """The buffers' bytes (0: the empty sentinel) and each graph's tensors' buffer numbers."""
    buffers: list[bytes] = [b""]
    tensor_buffers: list[list[int]] = []
    for graph_tensors, *_ in graphs:
        numbers = []
        for tensor in graph_tensors:
            if tensor.buffer_number is not None:
                numbers.append(tensor.buffer_number)
            elif tensor.data is not None:
                numbers.append(len(buffers))
                buffers.append(np.ascontiguousarray(tensor.data).tobytes())
            elif tensor.buffer is not None:
                numbers.append(numbers[tensor.buffer])
            else:
                numbers.append(0)
        tensor_buffers.append(numbers)
    return buffers, tensor_buffers


def _ints(b, start, values, kind="Int32"):
    start(b, len(values))
    for value in reversed(values):
        getattr(b, f"Prepend{kind}")(value)
    return b.EndVector()


def _offsets(b, start, values):
    start(b, len(values))
    for value in reversed(values):
        b.PrependUOffsetTRelative(value)
    return b.EndVector()


def _buffer(b, data: bytes, external: tuple[int, int] | None = None):
    import tflite

    vector = None
    if data:
        b.StartVector(1, len(data), 16)  # the schema's force_align: 16
        b.head = b.head - len(data)
        b.Bytes[b.head:b.head + len(data)] = data
        vector = b.EndVector()
    tflite.BufferStart(b)
    if vector is not None:
        tflite.BufferAddData(b, vector)
    if external is not None:
        tflite.BufferAddOffset(b, external[0])
        tflite.BufferAddSize(b, external[1])
    return tflite.BufferEnd(b)


def _opcode(b, name: str):
    import tflite
    from tflite.BuiltinOperator import BuiltinOperator

    custom = b.CreateString(name.split(":", 1)[1]) if name.startswith("custom:") else None
    number = 32 if custom else getattr(BuiltinOperator, name)
    tflite.OperatorCodeStart(b)
    tflite.OperatorCodeAddDeprecatedBuiltinCode(b, min(number, 127))
    tflite.OperatorCodeAddBuiltinCode(b, number)
    tflite.OperatorCodeAddVersion(b, 1)
    if custom is not None:
        tflite.OperatorCodeAddCustomCode(b, custom)
    return tflite.OperatorCodeEnd(b)


def _tensor(b, tensor: T, number: int):
    import tflite

    name = b.CreateString(tensor.name)
    shape = _ints(b, tflite.TensorStartShapeVector, tensor.shape)
    signature = (_ints(b, tflite.TensorStartShapeSignatureVector, tensor.signature)
                 if tensor.signature else None)
    sparsity = _sparsity(b, tensor) if tensor.sparse else None
    tflite.TensorStart(b)
    tflite.TensorAddShape(b, shape)
    tflite.TensorAddType(b, TYPES[tensor.dtype])
    tflite.TensorAddBuffer(b, number)
    tflite.TensorAddName(b, name)
    if signature is not None:
        tflite.TensorAddShapeSignature(b, signature)
    if sparsity is not None:
        tflite.TensorAddSparsity(b, sparsity)
    return tflite.TensorEnd(b)


def _operator(b, op: Op, codes: list[str]):
    import tflite

    op_inputs = _ints(b, tflite.OperatorStartInputsVector, op.inputs)
    op_outputs = _ints(b, tflite.OperatorStartOutputsVector, op.outputs)
    kind, options = _options(b, op)
    tflite.OperatorStart(b)
    tflite.OperatorAddOpcodeIndex(b, codes.index(op.op))
    tflite.OperatorAddInputs(b, op_inputs)
    tflite.OperatorAddOutputs(b, op_outputs)
    if options is not None:
        tflite.OperatorAddBuiltinOptionsType(b, kind)
        tflite.OperatorAddBuiltinOptions(b, options)
    return tflite.OperatorEnd(b)


def _subgraph(b, index: int, graph, numbers: list[int], codes: list[str]):
    import tflite

    graph_tensors, graph_ops, graph_inputs, graph_outputs = graph
    made = [_tensor(b, tensor, number) for tensor, number in zip(graph_tensors, numbers)]
    op_offsets = [_operator(b, op, codes) for op in graph_ops]
    tensors_vector = _offsets(b, tflite.SubGraphStartTensorsVector, made)
    ops_vector = _offsets(b, tflite.SubGraphStartOperatorsVector, op_offsets)
    inputs_vector = _ints(b, tflite.SubGraphStartInputsVector, graph_inputs)
    outputs_vector = _ints(b, tflite.SubGraphStartOutputsVector, graph_outputs)
    name = b.CreateString(f"graph{index}")
    tflite.SubGraphStart(b)
    tflite.SubGraphAddTensors(b, tensors_vector)
    tflite.SubGraphAddOperators(b, ops_vector)
    tflite.SubGraphAddInputs(b, inputs_vector)
    tflite.SubGraphAddOutputs(b, outputs_vector)
    tflite.SubGraphAddName(b, name)
    return tflite.SubGraphEnd(b)


def _signature(b, key: str, graph: int):
    import tflite

    key_offset = b.CreateString(key)
    empty = _offsets(b, tflite.SignatureDefStartInputsVector, [])
    tflite.SignatureDefStart(b)
    tflite.SignatureDefAddSignatureKey(b, key_offset)
    tflite.SignatureDefAddInputs(b, empty)
    tflite.SignatureDefAddSubgraphIndex(b, graph)
    return tflite.SignatureDefEnd(b)


def _options(b, op: Op):
    """Builtin options the interpreter needs to run the op (strides of 1, VALID padding)."""
    import tflite
    from tflite.BuiltinOptions import BuiltinOptions

    if op.op == "CONV_2D":
        tflite.Conv2DOptionsStart(b)
        tflite.Conv2DOptionsAddPadding(b, 1)
        tflite.Conv2DOptionsAddStrideW(b, 1)
        tflite.Conv2DOptionsAddStrideH(b, 1)
        tflite.Conv2DOptionsAddDilationWFactor(b, 1)
        tflite.Conv2DOptionsAddDilationHFactor(b, 1)
        return BuiltinOptions.Conv2DOptions, tflite.Conv2DOptionsEnd(b)
    if op.op == "DEPTHWISE_CONV_2D":
        tflite.DepthwiseConv2DOptionsStart(b)
        tflite.DepthwiseConv2DOptionsAddPadding(b, 1)
        tflite.DepthwiseConv2DOptionsAddStrideW(b, 1)
        tflite.DepthwiseConv2DOptionsAddStrideH(b, 1)
        tflite.DepthwiseConv2DOptionsAddDepthMultiplier(b, 1)
        tflite.DepthwiseConv2DOptionsAddDilationWFactor(b, 1)
        tflite.DepthwiseConv2DOptionsAddDilationHFactor(b, 1)
        return BuiltinOptions.DepthwiseConv2DOptions, tflite.DepthwiseConv2DOptionsEnd(b)
    if op.op == "TRANSPOSE_CONV":
        tflite.TransposeConvOptionsStart(b)
        tflite.TransposeConvOptionsAddPadding(b, 1)
        tflite.TransposeConvOptionsAddStrideW(b, 1)
        tflite.TransposeConvOptionsAddStrideH(b, 1)
        return BuiltinOptions.TransposeConvOptions, tflite.TransposeConvOptionsEnd(b)
    if op.op == "BATCH_MATMUL":
        tflite.BatchMatMulOptionsStart(b)
        tflite.BatchMatMulOptionsAddAdjX(b, op.options.get("adj_x", False))
        tflite.BatchMatMulOptionsAddAdjY(b, op.options.get("adj_y", False))
        return BuiltinOptions.BatchMatMulOptions, tflite.BatchMatMulOptionsEnd(b)
    if op.op == "FULLY_CONNECTED":
        tflite.FullyConnectedOptionsStart(b)
        return BuiltinOptions.FullyConnectedOptions, tflite.FullyConnectedOptionsEnd(b)
    return 0, None


def _sparsity(b, tensor: T):
    """A 2-D CSR layout ([d0 dense, d1 sparse]) over the values in the tensor's buffer; the
    index arrays say nothing real (the reader only needs to know the tensor is sparse)."""
    import tflite

    def int32_vector(values):
        tflite.Int32VectorStartValuesVector(b, len(values))
        for value in reversed(values):
            b.PrependInt32(value)
        vector = b.EndVector()
        tflite.Int32VectorStart(b)
        tflite.Int32VectorAddValues(b, vector)
        return tflite.Int32VectorEnd(b)

    segments, indices = int32_vector([0, 1]), int32_vector([0])
    dims = []
    tflite.DimensionMetadataStart(b)
    tflite.DimensionMetadataAddFormat(b, 0)
    tflite.DimensionMetadataAddDenseSize(b, tensor.shape[0])
    dims.append(tflite.DimensionMetadataEnd(b))
    tflite.DimensionMetadataStart(b)
    tflite.DimensionMetadataAddFormat(b, 1)
    tflite.DimensionMetadataAddArraySegmentsType(b, 1)
    tflite.DimensionMetadataAddArraySegments(b, segments)
    tflite.DimensionMetadataAddArrayIndicesType(b, 1)
    tflite.DimensionMetadataAddArrayIndices(b, indices)
    dims.append(tflite.DimensionMetadataEnd(b))
    tflite.SparsityParametersStartDimMetadataVector(b, len(dims))
    for dim in reversed(dims):
        b.PrependUOffsetTRelative(dim)
    dim_vector = b.EndVector()
    tflite.SparsityParametersStartTraversalOrderVector(b, 2)
    b.PrependInt32(1)
    b.PrependInt32(0)
    order = b.EndVector()
    tflite.SparsityParametersStart(b)
    tflite.SparsityParametersAddTraversalOrder(b, order)
    tflite.SparsityParametersAddDimMetadata(b, dim_vector)
    return tflite.SparsityParametersEnd(b)


def randn(*shape, dtype=np.float32, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def mlp(path: Path, sizes=(64, 256, 10), *, dtype="float32", seed=0) -> Path:
    """x[1, sizes[0]] -> FULLY_CONNECTED (+bias) per layer; weights [out, in] of `dtype`
    (float16 ones behind DEQUANTIZE, as the converter's float16 quantization writes them)."""
    tensors = [T("x", [1, sizes[0]])]
    ops = []
    current = 0
    for layer, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
        weight = randn(fan_out, fan_in, seed=seed + layer)
        tensors.append(T(f"dense{layer}/w", [fan_out, fan_in], dtype, weight.astype(dtype)))
        w = len(tensors) - 1
        if dtype == "float16":
            tensors.append(T(f"dense{layer}/w_dequantized", [fan_out, fan_in]))
            ops.append(Op("DEQUANTIZE", [w], [len(tensors) - 1]))
            w = len(tensors) - 1
        tensors.append(T(f"dense{layer}/b", [fan_out], data=np.zeros(fan_out, np.float32)))
        tensors.append(T(f"y{layer}", [1, fan_out]))
        ops.append(Op("FULLY_CONNECTED", [current, w, len(tensors) - 2], [len(tensors) - 1]))
        current = len(tensors) - 1
    return model(path, tensors, ops, [0], [current])


def amplified(count: int = 60_000) -> bytes:
    """One operator table whose inputs vector holds `count` elements, referenced `count` times:
    480 KB on disk, 3.6 billion input indices for a reader that follows every reference."""
    import flatbuffers
    import tflite

    b = flatbuffers.Builder(1024)
    tflite.OperatorStartInputsVector(b, count)
    b.head -= 4 * count  # zeros: tensor 0, valid every time
    b.vectorNumElems = count
    inputs = b.EndVector()
    tflite.OperatorStart(b)
    tflite.OperatorAddInputs(b, inputs)
    operator = tflite.OperatorEnd(b)
    tflite.SubGraphStartOperatorsVector(b, count)
    for _ in range(count):
        b.PrependUOffsetTRelative(operator)
    operators = b.EndVector()
    tflite.TensorStart(b)
    tensor = tflite.TensorEnd(b)
    tensors = _offsets(b, tflite.SubGraphStartTensorsVector, [tensor])
    tflite.SubGraphStart(b)
    tflite.SubGraphAddTensors(b, tensors)
    tflite.SubGraphAddOperators(b, operators)
    subgraph = tflite.SubGraphEnd(b)
    graphs = _offsets(b, tflite.ModelStartSubgraphsVector, [subgraph])
    codes = _offsets(b, tflite.ModelStartOperatorCodesVector, [_opcode(b, "ADD")])
    tflite.ModelStart(b)
    tflite.ModelAddOperatorCodes(b, codes)
    tflite.ModelAddSubgraphs(b, graphs)
    b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def with_vector_length(data: bytes, field: int, length: int) -> bytes:
    """The model with the length of one of its root table's vectors (by vtable slot: 12 is
    `buffers`, 8 `subgraphs`) overwritten: a liar's vector of `length` elements."""
    import struct

    import tflite

    root = tflite.Model.GetRootAs(data, 0)
    position = root._tab.Vector(root._tab.Offset(field)) - 4
    return data[:position] + struct.pack("<I", length) + data[position + 4:]


def hostile(work: Path) -> dict[str, bytes]:
    """TFLite files that must be BG000 (the fuzz corpus and tests/test_tflite.py share them)."""
    import struct

    good = mlp(work / "hostile_seed.tflite", (16, 32, 4)).read_bytes()
    weights = randn(8, 4)
    cases = {
        "tflite_root_beyond.tflite": struct.pack("<I", 2**31) + b"TFL3" + bytes(8),
        "tflite_vtable_beyond.tflite": struct.pack("<I", 8) + b"TFL3" + struct.pack("<i", -(2**30)) + bytes(4),
        "tflite_amplified.tflite": amplified(),
        "tflite_rank_1000.tflite": model(work / "h0.tflite", [T("x", [1] * 1000), T("y", [1, 4])],
                                         [Op("RELU", [0], [1])], [0], [1]).read_bytes(),
        "tflite_buffers_2g.tflite": with_vector_length(good, 12, 2**31 - 1),
        "tflite_subgraphs_2g.tflite": with_vector_length(good, 8, 2**31 - 1),
        "tflite_missing_tensor.tflite": model(work / "h1.tflite", [T("x", [1, 4]), T("y", [1, 4])],
                                              [Op("RELU", [0], [7])], [0], [1]).read_bytes(),
        "tflite_missing_buffer.tflite": model(work / "h2.tflite", [T("x", [1, 4], buffer_number=40),
                                                                   T("y", [1, 4])],
                                              [Op("RELU", [0], [1])], [0], [1]).read_bytes(),
        "tflite_shape_lies.tflite": model(work / "h3.tflite", [T("x", [1, 4]), T("w", [1000, 1000], data=weights),
                                                               T("y", [1, 4])],
                                          [Op("ADD", [0, 1], [2])], [0], [2]).read_bytes(),
        "tflite_external_beyond.tflite": model(work / "h4.tflite", [T("x", [1, 4]), T("w", [8, 4], data=weights),
                                                                    T("y", [1, 8])],
                                               [Op("FULLY_CONNECTED", [0, 1, -1], [2])], [0], [2],
                                               external={1: (2**40, 128)}).read_bytes(),
    }
    return cases


def every_layer(path: Path) -> Path:
    """One of each counted op, shapes consistent (not meant to run)."""
    tensors = [
        T("x", [1, 8, 8, 3]),
        T("conv/w", [16, 3, 3, 3], data=randn(16, 3, 3, 3)),
        T("conv/out", [1, 6, 6, 16]),
        T("dw/w", [1, 3, 3, 16], data=randn(1, 3, 3, 16)),
        T("dw/out", [1, 4, 4, 16]),
        T("tconv/shape", [4], "int32", np.array([1, 5, 5, 8], np.int32)),
        T("tconv/w", [8, 2, 2, 16], data=randn(8, 2, 2, 16)),
        T("tconv/out", [1, 5, 5, 8]),
        T("flat", [1, 200]),
        T("fc/w", [10, 200], data=randn(10, 200)),
        T("fc/out", [1, 10]),
        T("a", [2, 5, 4]),
        T("bmm/b", [2, 5, 3], data=randn(2, 5, 3)),
        T("bmm/out", [2, 4, 3]),
        T("seq", [1, 7, 4]),
        *[T(f"lstm/i{k}", [8, 4], data=randn(8, 4, seed=k)) for k in range(4)],
        *[T(f"lstm/r{k}", [8, 8], data=randn(8, 8, seed=k)) for k in range(4)],
        T("lstm/out", [1, 7, 8]),
    ]
    lstm_inputs = [14, *range(15, 23)]
    ops = [Op("CONV_2D", [0, 1, -1], [2]), Op("DEPTHWISE_CONV_2D", [2, 3, -1], [4]),
           Op("TRANSPOSE_CONV", [5, 6, 4], [7]), Op("RESHAPE", [7], [8]),
           Op("FULLY_CONNECTED", [8, 9, -1], [10]),
           Op("BATCH_MATMUL", [11, 12], [13], {"adj_x": True}),
           Op("UNIDIRECTIONAL_SEQUENCE_LSTM", lstm_inputs, [23])]
    return model(path, tensors, ops, [0, 11, 14], [10, 13, 23])
