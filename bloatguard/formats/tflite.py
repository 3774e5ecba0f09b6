"""TFLite/LiteRT reader: ModelFacts from the flatbuffer, statically, through the verifying
reader of formats.flatbuf (every offset, vector length and buffer range is checked against the
file before use; the work of reading is bounded).

Field numbers follow the official schema (tensorflow/compiler/mlir/lite/schema/schema.fbs,
file identifier TFL3); tests build models with the `tflite` package, which is generated from that
schema, so the two are checked against each other.
"""

from __future__ import annotations

import math
import mmap
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from bloatguard.errors import UnreadableModel
from bloatguard.facts import (
    DeadCode,
    Layer,
    ModelFacts,
    RawTensor,
    TensorInfo,
    ValueInfo,
    WeightUse,
    WeightView,
    dtype_nbytes,
)
from bloatguard.formats.flatbuf import Buffer, FlatbufferError, Table

REMEDY = "re-convert the model with the LiteRT/TFLite converter or restore it from git"
TENSOR_TYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string",
                6: "bool", 7: "int16", 8: "complex64", 9: "int8", 10: "float64", 11: "complex128",
                12: "uint64", 13: "resource", 14: "variant", 15: "uint32", 16: "uint16", 17: "int4",
                18: "bfloat16"}
# BuiltinOperator, by code (schema.fbs).
BUILTIN_OPS = """
    ADD AVERAGE_POOL_2D CONCATENATION CONV_2D DEPTHWISE_CONV_2D DEPTH_TO_SPACE DEQUANTIZE
    EMBEDDING_LOOKUP FLOOR FULLY_CONNECTED HASHTABLE_LOOKUP L2_NORMALIZATION L2_POOL_2D
    LOCAL_RESPONSE_NORMALIZATION LOGISTIC LSH_PROJECTION LSTM MAX_POOL_2D MUL RELU RELU_N1_TO_1
    RELU6 RESHAPE RESIZE_BILINEAR RNN SOFTMAX SPACE_TO_DEPTH SVDF TANH CONCAT_EMBEDDINGS
    SKIP_GRAM CALL CUSTOM EMBEDDING_LOOKUP_SPARSE PAD UNIDIRECTIONAL_SEQUENCE_RNN GATHER
    BATCH_TO_SPACE_ND SPACE_TO_BATCH_ND TRANSPOSE MEAN SUB DIV SQUEEZE
    UNIDIRECTIONAL_SEQUENCE_LSTM STRIDED_SLICE BIDIRECTIONAL_SEQUENCE_RNN EXP TOPK_V2 SPLIT
    LOG_SOFTMAX DELEGATE BIDIRECTIONAL_SEQUENCE_LSTM CAST PRELU MAXIMUM ARG_MAX MINIMUM LESS NEG
    PADV2 GREATER GREATER_EQUAL LESS_EQUAL SELECT SLICE SIN TRANSPOSE_CONV SPARSE_TO_DENSE TILE
    EXPAND_DIMS EQUAL NOT_EQUAL LOG SUM SQRT RSQRT SHAPE POW ARG_MIN FAKE_QUANT REDUCE_PROD
    REDUCE_MAX PACK LOGICAL_OR ONE_HOT LOGICAL_AND LOGICAL_NOT UNPACK REDUCE_MIN FLOOR_DIV
    REDUCE_ANY SQUARE ZEROS_LIKE FILL FLOOR_MOD RANGE RESIZE_NEAREST_NEIGHBOR LEAKY_RELU
    SQUARED_DIFFERENCE MIRROR_PAD ABS SPLIT_V UNIQUE CEIL REVERSE_V2 ADD_N GATHER_ND COS WHERE
    RANK ELU REVERSE_SEQUENCE MATRIX_DIAG QUANTIZE MATRIX_SET_DIAG ROUND HARD_SWISH IF WHILE
    NON_MAX_SUPPRESSION_V4 NON_MAX_SUPPRESSION_V5 SCATTER_ND SELECT_V2 DENSIFY SEGMENT_SUM
    BATCH_MATMUL PLACEHOLDER_FOR_GREATER_OP_CODES CUMSUM CALL_ONCE BROADCAST_TO RFFT2D CONV_3D
    IMAG REAL COMPLEX_ABS HASHTABLE HASHTABLE_FIND HASHTABLE_IMPORT HASHTABLE_SIZE REDUCE_ALL
    CONV_3D_TRANSPOSE VAR_HANDLE READ_VARIABLE ASSIGN_VARIABLE BROADCAST_ARGS
    RANDOM_STANDARD_NORMAL BUCKETIZE RANDOM_UNIFORM MULTINOMIAL GELU DYNAMIC_UPDATE_SLICE
    RELU_0_TO_1 UNSORTED_SEGMENT_PROD UNSORTED_SEGMENT_MAX UNSORTED_SEGMENT_SUM ATAN2
    UNSORTED_SEGMENT_MIN SIGN BITCAST BITWISE_XOR RIGHT_SHIFT STABLEHLO_LOGISTIC STABLEHLO_ADD
    STABLEHLO_DIVIDE STABLEHLO_MULTIPLY STABLEHLO_MAXIMUM STABLEHLO_RESHAPE STABLEHLO_CLAMP
    STABLEHLO_CONCATENATE STABLEHLO_BROADCAST_IN_DIM STABLEHLO_CONVOLUTION STABLEHLO_SLICE
    STABLEHLO_CUSTOM_CALL STABLEHLO_REDUCE STABLEHLO_ABS STABLEHLO_AND STABLEHLO_COSINE
    STABLEHLO_EXPONENTIAL STABLEHLO_FLOOR STABLEHLO_LOG STABLEHLO_MINIMUM STABLEHLO_NEGATE
    STABLEHLO_OR STABLEHLO_POWER STABLEHLO_REMAINDER STABLEHLO_RSQRT STABLEHLO_SELECT
    STABLEHLO_SUBTRACT STABLEHLO_TANH STABLEHLO_SCATTER STABLEHLO_COMPARE STABLEHLO_CONVERT
    STABLEHLO_DYNAMIC_SLICE STABLEHLO_DYNAMIC_UPDATE_SLICE STABLEHLO_PAD STABLEHLO_IOTA
    STABLEHLO_DOT_GENERAL STABLEHLO_REDUCE_WINDOW STABLEHLO_SORT STABLEHLO_WHILE
    STABLEHLO_GATHER STABLEHLO_TRANSPOSE DILATE STABLEHLO_RNG_BIT_GENERATOR REDUCE_WINDOW
    STABLEHLO_COMPOSITE STABLEHLO_SHIFT_LEFT STABLEHLO_CBRT
""".split()
CUSTOM = 32
BATCH_MATMUL_OPTIONS = 101  # BuiltinOptions union member
MAX_RANK = 64  # LiteRT's kernels stop at rank 6 or 8; a longer shape is corrupt or hostile
# Layers and the inputs that hold their weights: (kind, output-channel axis of the weight as a
# function of its rank, or None). Recurrent ops take every 2-D weight input.
_LAYERS: dict[str, dict[int, tuple[str, int | Literal["last"] | None]]] = {
    "CONV_2D": {1: ("conv", 0)},  # filter [Cout, KH, KW, Cin]
    "DEPTHWISE_CONV_2D": {1: ("depthwise", 3)},  # [1, KH, KW, Cout]
    "FULLY_CONNECTED": {1: ("matmul", 0)},  # [units, in]
    "TRANSPOSE_CONV": {1: ("conv", 0)},  # [Cout, KH, KW, Cin]
    "CONV_3D": {1: ("conv", 4)},  # [KD, KH, KW, Cin, Cout]
    "CONV_3D_TRANSPOSE": {1: ("conv", 3)},  # [KD, KH, KW, Cout, Cin]
    "BATCH_MATMUL": {0: ("matmul", None), 1: ("matmul", "last")},
    "EMBEDDING_LOOKUP": {1: ("embedding", None)},
    "GATHER": {0: ("embedding", None)},
}
_RECURRENT = {"LSTM", "UNIDIRECTIONAL_SEQUENCE_LSTM", "BIDIRECTIONAL_SEQUENCE_LSTM", "RNN",
              "UNIDIRECTIONAL_SEQUENCE_RNN", "BIDIRECTIONAL_SEQUENCE_RNN", "SVDF"}
# Ops a weight passes through on its way to a layer (float16 storage behind DEQUANTIZE, sparse
# storage behind DENSIFY); only the first keep the weight's layout.
_PASS_THROUGH = {"DEQUANTIZE", "DENSIFY", "CAST", "RESHAPE", "TRANSPOSE", "SQUEEZE", "EXPAND_DIMS"}
_SAME_LAYOUT = {"DEQUANTIZE", "DENSIFY", "CAST"}
_INTEGER_WEIGHTS = {"int8", "uint8", "int4", "int16"}


@dataclass
class _Tensor:
    index: int
    name: str
    type_id: int
    shape: tuple[int, ...]
    signature: tuple[int, ...]
    buffer: int
    sparse: bool

    @property
    def dtype(self) -> str:
        return TENSOR_TYPES.get(self.type_id, f"unknown type {self.type_id}")


@dataclass
class _Op:
    index: int
    name: str  # the builtin op, or a custom op's code
    custom: bool
    inputs: list[int]
    outputs: list[int]
    adj: tuple[bool, bool] = (False, False)  # BATCH_MATMUL's adj_x, adj_y


@dataclass
class _Subgraph:
    index: int
    name: str
    tensors: list[_Tensor]
    inputs: list[int]
    outputs: list[int]
    ops: list[_Op]

    @property
    def prefix(self) -> str:
        return "" if self.index == 0 else f"subgraph {self.name or self.index}/"

    def label(self, op: _Op) -> str:
        first = next((self.tensors[i].name for i in op.outputs if i >= 0), "")
        return f"{self.prefix}{op.name} {first}".rstrip()


@dataclass
class _Model:
    version: int
    subgraphs: list[_Subgraph]
    buffers: list[tuple[int, int]]  # (start, length) in the file; (0, 0) for an empty buffer
    metadata_buffers: set[int]
    signatures: list[tuple[str, int]]  # (key, subgraph index)


# --- parsing ------------------------------------------------------------------------------------

def read(path: Path, display: str) -> ModelFacts:
    size = path.stat().st_size
    facts = ModelFacts(path=display, format="tflite", file_size=size)
    with open(path, "rb") as handle:
        data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        model = _parse(Buffer(data))
    except FlatbufferError as exc:
        raise UnreadableModel(f"not a valid TFLite flatbuffer: {exc}", REMEDY) from None
    finally:
        data.close()
    _fill(facts, model)
    return facts


def _parse(buf: Buffer) -> _Model:
    root = buf.root(b"TFL3")
    version = root.scalar(0, "I")
    opcodes = [_opcode(table) for table in root.tables(1, "operator_codes")]
    buffers = [_buffer(buf, table) for table in root.tables(4, "buffers")]
    subgraphs = [_subgraph(index, table, opcodes, len(buffers))
                 for index, table in enumerate(root.tables(2, "subgraphs"))]
    if not subgraphs:
        raise FlatbufferError("the model has no subgraph")
    metadata = {b for b in root.scalars(5, "i", "metadata_buffer") if 0 <= b < len(buffers)}
    for entry in root.tables(6, "metadata"):
        metadata.add(entry.scalar(1, "I"))
    signatures = []
    for table in root.tables(7, "signature_defs"):
        key = table.string(2, "a signature key") or ""
        graph = table.scalar(4, "I")
        if graph >= len(subgraphs):
            raise FlatbufferError(f"signature {key!r} names subgraph {graph} of {len(subgraphs)}")
        for io in (0, 1):
            for entry in table.tables(io, f"the tensors of signature {key!r}"):
                if entry.scalar(1, "I") >= len(subgraphs[graph].tensors):
                    raise FlatbufferError(f"signature {key!r} names a tensor outside its subgraph")
        signatures.append((key, graph))
    return _Model(version, subgraphs, buffers, metadata, signatures)


def _opcode(table: Table) -> tuple[str, bool]:
    code = max(table.scalar(0, "b"), table.scalar(3, "i"))
    if code == CUSTOM:
        return table.string(1, "a custom op code") or "CUSTOM", True
    return (BUILTIN_OPS[code] if 0 <= code < len(BUILTIN_OPS) else f"UNKNOWN_OP_{code}"), False


def _buffer(buf: Buffer, table: Table) -> tuple[int, int]:
    offset, size = table.scalar(1, "Q"), table.scalar(2, "Q")
    if offset > 1:  # data outside the flatbuffer (models over 2 GB), from the file's start
        buf.check(offset, size, "a buffer's external data")
        return offset, size
    data = table.vector(0, 1, "a buffer's data")
    return data if data is not None else (0, 0)


def _subgraph(index: int, table: Table, opcodes: list[tuple[str, bool]], buffers: int) -> _Subgraph:
    name = table.string(4, f"the name of subgraph {index}") or ""
    tensors = [_tensor(i, t, buffers) for i, t in enumerate(table.tables(0, f"the tensors of subgraph {index}"))]

    def indices(values: list[int], what: str, optional: bool = False) -> list[int]:
        for value in values:
            if not (0 <= value < len(tensors) or (optional and value == -1)):
                raise FlatbufferError(f"{what} in subgraph {index} names tensor {value} of {len(tensors)}")
        return values

    ops = []
    for number, op in enumerate(table.tables(3, f"the operators of subgraph {index}")):
        code = op.scalar(0, "I")
        if code >= len(opcodes):
            raise FlatbufferError(f"operator {number} of subgraph {index} names op code {code} "
                                  f"of {len(opcodes)}")
        op_name, custom = opcodes[code]
        entry = _Op(number, op_name, custom,
                    indices(op.scalars(1, "i", "operator inputs"), f"operator {number}", True),
                    indices(op.scalars(2, "i", "operator outputs"), f"operator {number}", True))
        kind, options = op.union(3, 4, "builtin options")
        if op_name == "BATCH_MATMUL" and kind == BATCH_MATMUL_OPTIONS and options is not None:
            entry.adj = (bool(options.scalar(0, "B")), bool(options.scalar(1, "B")))
        ops.append(entry)
    return _Subgraph(index, name, tensors, indices(table.scalars(1, "i", "subgraph inputs"), "an input"),
                     indices(table.scalars(2, "i", "subgraph outputs"), "an output"), ops)


def _tensor(index: int, table: Table, buffers: int) -> _Tensor:
    name = table.string(3, f"the name of tensor {index}") or f"tensor {index}"
    buffer = table.scalar(2, "I")
    if buffer >= max(buffers, 1):
        raise FlatbufferError(f"tensor {name!r} names buffer {buffer} of {buffers}")
    shape = tuple(table.scalars(0, "i", f"the shape of {name!r}", MAX_RANK))
    signature = tuple(table.scalars(7, "i", f"the shape signature of {name!r}", MAX_RANK))
    sparse = table.table(6, f"the sparsity of {name!r}") is not None
    return _Tensor(index, name, table.scalar(1, "b"), shape, signature, buffer, sparse)


# --- facts --------------------------------------------------------------------------------------

@dataclass
class _Stored:
    """One buffer with data, as the tensor that first names it."""

    info: TensorInfo
    tensor: _Tensor
    graph: _Subgraph
    start: int
    readers: list[tuple[_Subgraph, _Tensor]] = field(default_factory=list)


def _fill(facts: ModelFacts, model: _Model) -> None:
    stored: dict[int, _Stored] = {}
    for graph in model.subgraphs:
        for tensor in graph.tensors:
            start, length = model.buffers[tensor.buffer] if model.buffers else (0, 0)
            if not length:
                continue
            entry = stored.get(tensor.buffer)
            if entry is None:
                info = _tensor_info(tensor, graph, length)
                entry = stored[tensor.buffer] = _Stored(info, tensor, graph, start)
                facts.tensors.append(info)
            entry.readers.append((graph, tensor))
    facts.ops = Counter(op.name for graph in model.subgraphs for op in graph.ops)
    main = model.subgraphs[0]
    facts.inputs = [_value_info(main.tensors[i]) for i in main.inputs]
    facts.outputs = [_value_info(main.tensors[i]) for i in main.outputs]
    raw = [RawTensor(s.info.name, s.info.where, s.info.dtype, s.info.shape, s.start)
           for s in stored.values() if s.info.stored is None]
    facts.handle = TfliteModel(model, stored, raw)
    _count_macs(facts, model)
    _activation_memory(facts, model)
    _notes(facts, model, stored)
    facts.layers = _layers(model, stored, counted=facts.macs is not None)


def _tensor_info(tensor: _Tensor, graph: _Subgraph, length: int) -> TensorInfo:
    if any(dim < 0 for dim in tensor.shape):
        raise UnreadableModel(f"constant tensor {tensor.name!r} declares a negative dimension "
                              f"{list(tensor.shape)}", REMEDY)
    info = TensorInfo(tensor.name, tensor.dtype, tensor.shape, where=f"{graph.prefix}buffer")
    expected = dtype_nbytes(tensor.dtype, info.numel)
    if tensor.sparse:
        itemsize = dtype_nbytes(tensor.dtype, 1)
        if itemsize and length % itemsize == 0:
            info.stored = length // itemsize
            if info.stored > info.numel:
                raise UnreadableModel(f"sparse tensor {tensor.name!r} stores {info.stored} values, "
                                      f"more than its shape {list(tensor.shape)} holds", REMEDY)
    elif expected is not None and tensor.dtype not in ("string", "resource", "variant") \
            and expected != length:
        raise UnreadableModel(f"tensor {tensor.name!r} declares shape {list(tensor.shape)} "
                              f"({tensor.dtype}, {expected} bytes) but its buffer holds {length} "
                              "bytes", REMEDY)
    return info


def _value_info(tensor: _Tensor) -> ValueInfo:
    dims = tensor.signature if len(tensor.signature) == len(tensor.shape) else tensor.shape
    return ValueInfo(tensor.name, tensor.dtype, tuple(d if d >= 0 else None for d in dims))


# --- MACs ---------------------------------------------------------------------------------------

class _Unknown(Exception):
    pass


def _shape(graph: _Subgraph, op: _Op, position: int, inputs: bool = True) -> tuple[int, ...]:
    indices = op.inputs if inputs else op.outputs
    if position >= len(indices) or indices[position] < 0:
        raise _Unknown(f"{op.name} has no {'input' if inputs else 'output'} {position}")
    shape = graph.tensors[indices[position]].shape
    if any(dim < 0 for dim in shape):
        raise _Unknown(f"{graph.label(op)} has a tensor of unknown shape {list(shape)}")
    return shape


def op_macs(graph: _Subgraph, op: _Op) -> int | None:
    """Multiply-accumulates of one operator (None: not a contraction), one per weight use: the
    convention of the ONNX counter (bloatguard.measure.compute)."""
    name = op.name
    if name in ("CONV_2D", "FULLY_CONNECTED", "CONV_3D"):
        weights = _shape(graph, op, 1)
        out = math.prod(_shape(graph, op, 0, inputs=False))
        if name == "CONV_2D":
            return out * math.prod(weights[1:])  # [Cout, KH, KW, Cin]
        if name == "CONV_3D":
            return out * math.prod(weights[:4])  # [KD, KH, KW, Cin, Cout]
        return out * weights[-1]  # [units, in]
    if name == "DEPTHWISE_CONV_2D":
        weights = _shape(graph, op, 1)  # [1, KH, KW, Cout]
        return math.prod(_shape(graph, op, 0, inputs=False)) * weights[1] * weights[2]
    if name in ("TRANSPOSE_CONV", "CONV_3D_TRANSPOSE"):
        # Every input element is spread over a kernel of every output channel.
        weights, data = _shape(graph, op, 1), _shape(graph, op, 2)
        kernel = weights[:3] if name == "TRANSPOSE_CONV" else weights[:4]
        return math.prod(data) * math.prod(kernel)
    if name == "BATCH_MATMUL":
        left = _shape(graph, op, 0)
        if len(left) < 2:
            raise _Unknown(f"{graph.label(op)} has a left operand of rank {len(left)}")
        k = left[-2] if op.adj[0] else left[-1]
        return math.prod(_shape(graph, op, 0, inputs=False)) * k
    if name in _RECURRENT and name != "SVDF":
        # Every step of every sequence multiplies each weight matrix once.
        vectors = math.prod(_shape(graph, op, 0)[:-1])
        matrices = [graph.tensors[i].shape for i in op.inputs[1:] if i >= 0
                    and len(graph.tensors[i].shape) == 2]
        return vectors * sum(math.prod(shape) for shape in matrices)
    return None


def _count_macs(facts: ModelFacts, model: _Model) -> None:
    entries = sorted({graph for _, graph in model.signatures}) or [0]
    by_op: Counter = Counter()
    others = 0
    unknown: list[str] = []
    for graph in model.subgraphs:
        for op in graph.ops:
            try:
                macs = op_macs(graph, op)
            except _Unknown as exc:
                if graph.index in entries:
                    unknown.append(str(exc))
                continue
            if macs is None:
                continue
            if graph.index in entries:
                by_op[op.name] += macs
            else:
                others += macs
    if unknown:
        facts.note(f"MACs not measured: {unknown[0]}" + (f" (and {len(unknown) - 1} more)"
                                                           if len(unknown) > 1 else ""))
        facts.macs = None
    elif not by_op and any(op.custom for i in entries for op in model.subgraphs[i].ops):
        facts.macs = None  # custom ops only: their cost is unknown, not zero
    else:
        facts.macs = sum(by_op.values())
        facts.macs_by_op = dict(sorted(by_op.items()))
    if len(model.subgraphs) > 1:
        names = ", ".join(repr(model.subgraphs[i].name or str(i)) for i in entries)
        facts.note(f"{len(model.subgraphs)} subgraphs: MACs count the entry subgraph(s) {names}"
                   + (f"; the other subgraphs (control-flow bodies, other entry points) hold "
                      f"{others} MACs, not included" if others else ""))


# --- activation memory (BG005) ------------------------------------------------------------------

# Ops that run other subgraphs: their bodies' tensors are not walked.
_CONTROL_FLOW = {"WHILE", "IF", "CALL_ONCE", "STABLEHLO_WHILE", "STABLEHLO_COMPOSITE"}


def _activation_memory(facts: ModelFacts, model: _Model) -> None:
    """The static peak of the entry subgraph(s), by the lifetime walk ONNX models get
    (bloatguard.lifetimes, measure.memory): tensors backed by a buffer are weights and not
    counted; a tensor computed from weights alone (DEQUANTIZE of float16 weights) is a computed
    constant the interpreter evaluates once and keeps, so it counts at every op. The shapes are
    the file's (LiteRT allocates those unless an input is resized)."""
    from bloatguard.lifetimes import DETAIL_TENSORS, Step, peak_note, walk

    best: dict | None = None
    best_tensors: list[tuple[str, int]] = []
    for index in sorted({graph for _, graph in model.signatures}) or [0]:
        graph = model.subgraphs[index]
        constant = {i for i, t in enumerate(graph.tensors)
                    if model.buffers and model.buffers[t.buffer][1]}
        computed: dict[str, int] = {}
        steps, sizes, unknown = [], {}, []
        for op in graph.ops:
            reads = [i for i in op.inputs if i >= 0]
            writes = [i for i in op.outputs if i >= 0]
            folded = bool(reads) and not op.custom and all(i in constant for i in reads)
            for i in writes:
                tensor = graph.tensors[i]
                size = (dtype_nbytes(tensor.dtype, math.prod(tensor.shape))
                        if all(d >= 0 for d in tensor.shape) else None)
                if size is None:
                    unknown.append(f"tensor {tensor.name!r} has shape {list(tensor.shape)} "
                                   f"({tensor.dtype})")
                elif folded:
                    constant.add(i)
                    computed[tensor.name] = size
                elif i not in constant:
                    sizes[str(i)] = size
            steps.append(Step(graph.label(op), op.name, [str(i) for i in reads],
                              [str(i) for i in writes]))
        for i in graph.inputs:
            tensor = graph.tensors[i]
            if i not in constant and str(i) not in sizes:
                size = (dtype_nbytes(tensor.dtype, math.prod(tensor.shape))
                        if all(d >= 0 for d in tensor.shape) else None)
                if size is None:
                    unknown.append(f"input {tensor.name!r} has shape {list(tensor.shape)}")
                else:
                    sizes[str(i)] = size
        if unknown:
            facts.measured["activation_memory"] = None
            facts.note(f"activation memory unknown: {unknown[0]}"
                       + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""))
            return
        peak = walk(steps, sizes, [str(i) for i in graph.inputs], [str(i) for i in graph.outputs])
        constants = sum(computed.values())
        tensors = [(graph.tensors[int(key)].name, size) for key, size in peak.tensors]
        found = {"bytes": peak.bytes + constants, "node": peak.step.label if peak.step else "",
                 "op": peak.step.op if peak.step else "",
                 "graph": "main graph" if index == 0 else f"subgraph {graph.name or index}",
                 "tensors": [[name, size] for name, size in tensors[:DETAIL_TENSORS]],
                 "computed_constants": constants, "computed_constant_count": len(computed)}
        if best is None or found["bytes"] > best["bytes"]:
            best, best_tensors = found, tensors
    assert best is not None  # a model has at least one subgraph (the parser checks)
    facts.measured["activation_memory"] = best["bytes"]
    facts.activation_peak = best  # type: ignore[assignment]  # built with ActivationPeak's keys
    facts.note(peak_note(best, best_tensors))
    flow = sorted({op.name for graph in model.subgraphs for op in graph.ops
                   if op.name in _CONTROL_FLOW})
    if flow:
        facts.note(f"activation memory does not walk the subgraphs that {', '.join(flow)} run: "
                   "their tensors are not counted")


def _notes(facts: ModelFacts, model: _Model, stored: dict[int, _Stored]) -> None:
    if model.signatures:
        facts.note("signatures: " + ", ".join(f"{key or '(unnamed)'} (subgraph {graph})"
                                              for key, graph in model.signatures))
    custom = sorted({op.name for graph in model.subgraphs for op in graph.ops if op.custom})
    if custom:
        facts.note(f"custom ops {', '.join(custom)}: their cost is unknown (not in MACs), and "
                   "a runtime without them cannot load the model")
    sparse = [s.info for s in stored.values() if s.info.stored is not None]
    if sparse:
        dense, kept = sum(t.numel for t in sparse), sum(t.stored for t in sparse if t.stored is not None)
        facts.note(f"{len(sparse)} sparse tensor(s): params count their {dense} dense elements; "
                   f"{kept} values are stored (params_stored), plus their index arrays")
        facts.extra["format_metrics"] = {"params_stored": sum(
            t.stored if t.stored is not None else t.numel for t in facts.tensors)}


# --- layers (bloatguard.layers): `show` and the base/head layer diff ------------------------------

def _layers(model: _Model, stored: dict[int, _Stored], *, counted: bool) -> list[Layer]:
    """Every operator that reads a stored weight or computes, in model order, with its MACs as
    `check` counts them (entry subgraphs only; None for all when MACs are unknown). A weight
    belongs to the first operator that computes with it, looking through layout ops and
    DEQUANTIZE; buffers no operator reads form the layer `(read by no node)`."""
    entries = set(sorted({graph for _, graph in model.signatures}) or [0])
    consumers = {graph.index: _consumers(graph) for graph in model.subgraphs}
    owners: dict[tuple[int, int], list[tuple[str, str]]] = {}
    unread: list[tuple[str, str]] = []
    budget = [FOLLOW_BUDGET]
    for entry in stored.values():
        key = (entry.info.where, entry.info.name)
        owner = next((found for graph, tensor in entry.readers
                      if (found := _first_reader(graph, tensor, consumers[graph.index], budget))),
                     None)
        if owner is None:
            unread.append(key)
        else:
            owners.setdefault(owner, []).append(key)
    layers = []
    for graph in model.subgraphs:
        for op in graph.ops:
            macs = None
            if counted:
                try:
                    macs = (op_macs(graph, op) or 0) if graph.index in entries else 0
                except _Unknown:
                    macs = 0  # counted MACs are known: this op is outside what they count
            weights = owners.get((graph.index, op.index), [])
            if weights or macs:
                first = next((graph.tensors[i].name for i in op.outputs if i >= 0), str(op.index))
                layers.append(Layer(f"{graph.prefix}{first}", op.name, weights, macs))
    if unread:
        layers.append(Layer("(read by no node)", "", unread, 0 if counted else None))
    return layers


def _first_reader(graph: _Subgraph, tensor: _Tensor, consumers,
                  budget: list[int]) -> tuple[int, int] | None:
    """(subgraph, operator) of the first operator that computes with `tensor`; None when none
    does, or when the model's steps for this (FOLLOW_BUDGET) are spent: a hostile file of many
    weights on one long chain of layout ops lists them as unread rather than costing minutes."""
    stack, seen = [tensor.index], set()
    while stack and budget[0] > 0:
        index = stack.pop(0)
        if index in seen:
            continue
        seen.add(index)
        budget[0] -= 1
        for op, position in consumers.get(index, ()):
            if op.name in _PASS_THROUGH and position == 0:
                stack += [out for out in op.outputs[:1] if out >= 0]
            else:
                return graph.index, op.index
    return None


# --- the handle: the weight view and raw arrays --------------------------------------------------

class TfliteModel:
    def __init__(self, model: _Model, stored: dict[int, _Stored], raw: list[RawTensor]) -> None:
        self.model, self.stored, self.raw_tensors = model, stored, raw
        self._view: WeightView | None = None

    def weight_view(self, facts: ModelFacts) -> WeightView:
        if self._view is None:
            self._view = _view(self.model, self.stored)
        return self._view


def _consumers(graph: _Subgraph) -> dict[int, list[tuple[_Op, int]]]:
    table: dict[int, list[tuple[_Op, int]]] = {}
    for op in graph.ops:
        for position, index in enumerate(op.inputs):
            if index >= 0:
                table.setdefault(index, []).append((op, position))
    return table


# Tensors visited while following weights to their layers, over the whole model: many weights
# sharing one long chain of layout ops would otherwise cost weights x chain length.
FOLLOW_BUDGET = 4_000_000


def _view(model: _Model, stored: dict[int, _Stored]) -> WeightView:
    view = WeightView(toolchain="litert", from_graph=True, stored_noun="buffer")
    consumers = {graph.index: _consumers(graph) for graph in model.subgraphs}
    budget = [FOLLOW_BUDGET]
    for entry in stored.values():
        key = (entry.info.where, entry.info.name)
        for graph, tensor in entry.readers:
            for use in _follow(graph, tensor, consumers[graph.index], budget):
                view.uses.setdefault(key, []).append(use)
                if entry.info.dtype in _INTEGER_WEIGHTS:
                    view.quantized = True
    view.unused, view.dead = _unused_and_dead(model, stored, consumers)
    view.float64_ops = [graph.label(op) for graph in model.subgraphs for op in graph.ops
                        if any(i >= 0 and graph.tensors[i].dtype == "float64" for i in op.outputs)]
    return view


def _follow(graph: _Subgraph, tensor: _Tensor, consumers, budget: list[int]) -> list[WeightUse]:
    uses: list[WeightUse] = []
    stack: list[tuple[int, tuple[str, ...]]] = [(tensor.index, ())]
    seen: set[int] = set()
    while stack:
        index, via = stack.pop()
        if index in seen:
            continue
        seen.add(index)
        budget[0] -= 1
        if budget[0] < 0:
            raise ValueError(f"following the weights to their layers takes more than "
                             f"{FOLLOW_BUDGET} steps (weights sharing very long chains of layout ops)")
        for op, position in consumers.get(index, ()):
            if op.name in _PASS_THROUGH and position == 0:
                stack += [(out, (*via, op.name)) for out in op.outputs[:1] if out >= 0]
                continue
            kind_axis = _LAYERS.get(op.name, {}).get(position)
            if kind_axis is None and op.name in _RECURRENT and position >= 1 \
                    and len(tensor.shape) == 2:
                kind_axis = ("recurrent", None)
            if kind_axis is None:
                continue
            kind, axis = kind_axis
            rank = len(tensor.shape)
            if axis == "last":
                axis = rank - 2 if op.adj[1] else rank - 1
            if set(via) - _SAME_LAYOUT or (axis is not None and axis >= rank):
                axis = None
            uses.append(WeightUse(kind=kind, op=op.name, layer=graph.label(op), index=position,
                                  via=via, channel_axis=axis, groups=_groups(graph, op, tensor)))
    return uses


def _groups(graph: _Subgraph, op: _Op, weight: _Tensor) -> int:
    """A grouped CONV_2D's groups: its input's channels over the filter's (OHWI) input channels;
    1 when either is unknown or they do not divide."""
    if op.name != "CONV_2D" or not op.inputs or op.inputs[0] < 0 or len(weight.shape) != 4:
        return 1
    channels, per_group = graph.tensors[op.inputs[0]].shape[-1:] or (0,), weight.shape[3]
    if channels[0] > 0 and per_group > 0 and channels[0] % per_group == 0:
        return channels[0] // per_group
    return 1


def _unused_and_dead(model: _Model, stored: dict[int, _Stored], consumers):
    """Buffers no tensor names (or only tensors nothing reads), and operators whose results
    reach no output of their subgraph, with the weights only they read."""
    unused: list[tuple[str, str, int]] = []
    named = {tensor.buffer for graph in model.subgraphs for tensor in graph.tensors}
    for number, (_, length) in enumerate(model.buffers):
        if length and number not in named and number not in model.metadata_buffers:
            unused.append(("buffer", f"buffer {number}", length))
    live_ops: dict[int, set[int]] = {graph.index: _live(graph) for graph in model.subgraphs}
    dead_ops = [(graph, op) for graph in model.subgraphs for op in graph.ops
                if op.index not in live_ops[graph.index]]
    weights, wasted = [], 0
    for entry in stored.values():
        readers = [(graph, op) for graph, tensor in entry.readers
                   for op, _ in consumers[graph.index].get(tensor.index, ())]
        outputs = any(tensor.index in graph.outputs or tensor.index in graph.inputs
                      for graph, tensor in entry.readers)
        nbytes = entry.info.nbytes or 0
        if not readers and not outputs:
            unused.append((entry.info.where, entry.info.name, nbytes))
        elif readers and not outputs and all(op.index not in live_ops[g.index] for g, op in readers):
            weights.append(f"{entry.info.where}:{entry.info.name}")
            wasted += nbytes
    dead = None
    if dead_ops:
        dead = DeadCode(nodes=[graph.label(op) for graph, op in dead_ops], node_count=len(dead_ops),
                        weights=weights, wasted_bytes=wasted)
    return unused, dead


def _live(graph: _Subgraph) -> set[int]:
    """Indices of the operators whose results reach the subgraph's outputs."""
    from bloatguard.opgraph import live_ops

    producers = {out: op for op in graph.ops for out in op.outputs if out >= 0}
    silent = [op for op in graph.ops if not any(out >= 0 for out in op.outputs)]
    return {op.index for op in live_ops(graph.outputs, producers, silent, _inputs)}


def _inputs(op: _Op) -> list[int]:
    return [i for i in op.inputs if i >= 0]  # -1 marks an optional input left out
