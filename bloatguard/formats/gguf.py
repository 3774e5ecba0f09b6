"""GGUF reader (llama.cpp's model format): ModelFacts from the header, the metadata key/values
and the tensor infos, without reading a weight.

Layout (version 2 and 3, little-endian): `GGUF`, version u32, tensor count u64, key/value count
u64; each key/value is a string key, a type u32 and a value (scalars, strings as u64 length +
UTF-8, arrays as element type u32 + count u64 + elements); each tensor info is a name, n_dims
u32, n_dims u64 dims (innermost first), a GGML type u32 and a u64 offset into the data region,
which starts at the next multiple of `general.alignment` (32 by default).

Every count and length is checked against the bytes left before anything is read or allocated,
and the checks follow llama.cpp's own loader (gguf.cpp): at most 4 dims, no duplicate keys or
tensor names, a row length that is a whole number of blocks, offsets aligned, in order and
inside the file. A tensor type this reader does not know (the type table lags new quantization
types) is reported as "unknown type N" with a note: its elements are counted, its bytes are not.
This module does not import the `gguf` package: the format is small enough to read and check
here, and a check of GGUF files then needs nothing beyond bloatguard.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bloatguard.errors import UnreadableModel
from bloatguard.facts import DTYPE_SIZES, GGML_BLOCKS, ModelFacts, RawTensor, TensorInfo, WeightUse, WeightView

MAGIC = b"GGUF"
REMEDY = "re-convert the model with llama.cpp (convert_hf_to_gguf.py) or restore it from git"
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_KEY_BYTES = 65_536  # keys are short dotted names; a longer one is corrupt
MAX_NESTING = 4  # arrays of arrays are allowed by the format, not used by real files
DEFAULT_ALIGNMENT = 32
INT64_MAX = 2**63 - 1
TEMPLATE_KEY = "tokenizer.chat_template"

# GGML type id -> name (llama.cpp's ggml.h); the block-quantized ones are sized in facts.GGML_BLOCKS.
# Ids 4, 5 (Q4_2, Q4_3) and 31-33, 36-38 (the removed Q4_0_4_4 family) are no longer valid.
GGML_TYPES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
    10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS",
    17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S",
    23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M", 30: "BF16",
    34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4", 40: "NVFP4", 41: "Q1_0",
}
# Plain types keep bloatguard's dtype names; block-quantized ones keep GGML's.
PLAIN = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64", "I8": "int8",
         "I16": "int16", "I32": "int32", "I64": "int64"}
FLOATS = {"float32", "float16", "bfloat16", "float64"}

# Metadata value types: id -> (struct format, size); 8 is a string, 9 an array.
_SCALARS = {0: ("B", 1), 1: ("b", 1), 2: ("H", 2), 3: ("h", 2), 4: ("I", 4), 5: ("i", 4),
            6: ("f", 4), 7: ("?", 1), 10: ("Q", 8), 11: ("q", 8), 12: ("d", 8)}
_STRING, _ARRAY = 8, 9

# Per-architecture metadata kept in the facts (`{arch}.<key>`).
ARCH_KEYS = ("context_length", "embedding_length", "block_count", "feed_forward_length",
             "attention.head_count", "attention.head_count_kv", "expert_count",
             "expert_used_count", "vocab_size")
GENERAL_KEYS = ("general.architecture", "general.name", "general.file_type",
                "general.quantization_version", "general.alignment", "general.size_label")


class _Corrupt(Exception):
    pass


@dataclass
class _Tensor:
    name: str
    dims: tuple[int, ...]  # GGML order: innermost first
    type_id: int
    offset: int  # in the data region

    @property
    def type_name(self) -> str | None:
        return GGML_TYPES.get(self.type_id)

    @property
    def dtype(self) -> str:
        name = self.type_name
        if name is None:
            return f"unknown type {self.type_id}"
        return PLAIN.get(name, name)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(reversed(self.dims))  # row-major, as numpy and torch name it

    @property
    def numel(self) -> int:
        count = 1
        for dim in self.dims:
            count *= dim
        return count

    @property
    def nbytes(self) -> int | None:
        name = self.type_name
        if name is None:
            return None
        if name in GGML_BLOCKS:
            block, size = GGML_BLOCKS[name]
            return self.numel // block * size
        return self.numel * int(DTYPE_SIZES[PLAIN[name]])


class _Cursor:
    """Reads the header front to back; every read is checked against the file's size."""

    def __init__(self, data, size: int) -> None:
        self.data, self.size, self.pos = data, size, 0

    def take(self, count: int, what: str) -> int:
        if count < 0 or self.pos + count > self.size:
            raise _Corrupt(f"{what} runs past the end of the file (offset {self.pos}, "
                           f"{count} bytes wanted, {self.size - self.pos} left)")
        start = self.pos
        self.pos += count
        return start

    def unpack(self, fmt: str, size: int, what: str):
        return struct.unpack_from("<" + fmt, self.data, self.take(size, what))[0]

    def u32(self, what: str) -> int:
        return self.unpack("I", 4, what)

    def u64(self, what: str) -> int:
        return self.unpack("Q", 8, what)

    def string(self, what: str, limit: int | None = None) -> str:
        length = self.u64(f"the length of {what}")
        if limit is not None and length > limit:
            raise _Corrupt(f"{what} is {length} bytes long (at most {limit} expected)")
        start = self.take(length, what)
        return bytes(self.data[start:start + length]).decode("utf-8", errors="replace")

    def skip_string(self, what: str) -> None:
        self.take(self.u64(f"the length of {what}"), what)


class GgufWeights:
    """The handle of a GGUF model: its weight view (by llama.cpp's tensor names) and where its
    plain arrays lie."""

    def __init__(self, raw: list[RawTensor], quantized: bool) -> None:
        self.raw_tensors = raw
        self.quantized = quantized
        self._view: WeightView | None = None

    def weight_view(self, facts: ModelFacts) -> WeightView:
        if self._view is None:
            self._view = _view(facts, self.quantized)
        return self._view


def read(path: Path, display: str) -> ModelFacts:
    size = path.stat().st_size
    facts = ModelFacts(path=display, format="gguf", file_size=size)
    with open(path, "rb") as handle:
        data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        try:
            header = _parse(data, size)
        except _Corrupt as exc:
            raise UnreadableModel(f"not a valid GGUF file: {exc}", REMEDY) from None
    finally:
        data.close()
    _fill(facts, *header)
    return facts


def _parse(data, size: int) -> tuple[dict[str, Any], list[_Tensor], int, int]:
    cursor = _Cursor(data, size)
    if bytes(data[:4]) != MAGIC:
        raise _Corrupt("the file does not start with GGUF")
    cursor.take(4, "the magic")
    version = cursor.u32("the version")
    if version not in (2, 3):
        raise _Corrupt(f"version {version} is not supported (2 and 3 are)")
    tensor_count = cursor.u64("the tensor count")
    kv_count = cursor.u64("the key/value count")
    # Each key/value takes at least 12 bytes and each tensor info at least 24: a count the
    # file cannot hold is refused before anything is read for it.
    if kv_count * 12 + tensor_count * 24 > size - cursor.pos:
        raise _Corrupt(f"{kv_count} key/values and {tensor_count} tensors cannot fit in "
                       f"{size} bytes")
    metadata: dict[str, Any] = {}
    for index in range(kv_count):
        key = cursor.string(f"key {index}", MAX_KEY_BYTES)
        if key in metadata:
            raise _Corrupt(f"duplicate key {key!r}")
        kind = cursor.u32(f"the type of {key!r}")
        metadata[key] = _value(cursor, kind, key, keep=_wanted(key))
    tensors: list[_Tensor] = []
    names: set[str] = set()
    for index in range(tensor_count):
        name = cursor.string(f"the name of tensor {index}", MAX_KEY_BYTES)
        if name in names:
            raise _Corrupt(f"duplicate tensor name {name!r}")
        names.add(name)
        n_dims = cursor.u32(f"the rank of {name!r}")
        if n_dims > MAX_DIMS:
            raise _Corrupt(f"tensor {name!r} has {n_dims} dims (at most {MAX_DIMS})")
        dims = tuple(cursor.u64(f"the dims of {name!r}") for _ in range(n_dims))
        type_id = cursor.u32(f"the type of {name!r}")
        offset = cursor.u64(f"the offset of {name!r}")
        tensors.append(_Tensor(name, dims, type_id, offset))
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise _Corrupt(f"general.alignment {alignment!r} is not a power of two")
    data_start = -(-cursor.pos // alignment) * alignment if tensors else cursor.pos
    _check_tensors(tensors, alignment, data_start, size)
    return metadata, tensors, data_start, version


def _wanted(key: str) -> bool:
    return (key in GENERAL_KEYS or key.startswith(TEMPLATE_KEY) or key == "tokenizer.ggml.tokens"
            or key.rsplit(".", 1)[-1] in {k.rsplit(".", 1)[-1] for k in ARCH_KEYS})


def _value(cursor: _Cursor, kind: int, key: str, keep: bool, depth: int = 0) -> Any:
    """One metadata value; strings and arrays nobody needs are skipped, not built (a tokens
    array holds hundreds of thousands of strings). A kept array is returned as its length."""
    if kind in _SCALARS:
        fmt, size = _SCALARS[kind]
        return cursor.unpack(fmt, size, f"the value of {key!r}")
    if kind == _STRING:
        if keep:
            return cursor.string(f"the value of {key!r}")
        cursor.skip_string(f"the value of {key!r}")
        return None
    if kind == _ARRAY:
        if depth >= MAX_NESTING:
            raise _Corrupt(f"{key!r} nests arrays more than {MAX_NESTING} deep")
        element = cursor.u32(f"the element type of {key!r}")
        count = cursor.u64(f"the length of {key!r}")
        if element in _SCALARS:
            cursor.take(count * _SCALARS[element][1], f"the elements of {key!r}")
        elif element in (_STRING, _ARRAY):
            # Every element needs at least 8 bytes (a length or a header): check, then walk.
            if count * 8 > cursor.size - cursor.pos:
                raise _Corrupt(f"{key!r} declares {count} elements, more than the file can hold")
            if element == _STRING:
                _skip_strings(cursor, count, key)
            else:
                for _ in range(count):
                    _value(cursor, element, key, keep=False, depth=depth + 1)
        else:
            raise _Corrupt(f"{key!r} has elements of unknown type {element}")
        return count
    raise _Corrupt(f"{key!r} has a value of unknown type {kind}")


def _skip_strings(cursor: _Cursor, count: int, key: str) -> None:
    """Walk past `count` strings (a tokenizer's vocabulary) without building them."""
    data, size, pos, unpack = cursor.data, cursor.size, cursor.pos, struct.unpack_from
    for _ in range(count):
        if pos + 8 > size:
            raise _Corrupt(f"the elements of {key!r} run past the end of the file")
        pos += 8 + unpack("<Q", data, pos)[0]
    if pos > size:
        raise _Corrupt(f"the elements of {key!r} run past the end of the file")
    cursor.pos = pos


def _check_tensors(tensors: list[_Tensor], alignment: int, data_start: int, size: int) -> None:
    """llama.cpp's checks: sizes that do not overflow, whole blocks per row, aligned offsets in
    declaration order, data inside the file."""
    expected = 0
    for tensor in tensors:
        label = f"tensor {tensor.name!r}"
        if any(dim > INT64_MAX for dim in tensor.dims) or tensor.numel > INT64_MAX:
            raise _Corrupt(f"{label} has dims {list(tensor.dims)} beyond 2^63 elements")
        if tensor.offset % alignment:
            raise _Corrupt(f"{label} starts at offset {tensor.offset}, not a multiple of the "
                           f"alignment {alignment}")
        if tensor.offset < expected:
            raise _Corrupt(f"{label} at offset {tensor.offset} overlaps the tensor before it "
                           f"(which ends at {expected})")
        name = tensor.type_name
        block = GGML_BLOCKS.get(name, (1, 0))[0] if name else 1
        if tensor.dims and tensor.dims[0] % block:
            raise _Corrupt(f"{label} has rows of {tensor.dims[0]} elements, not a whole number "
                           f"of {name} blocks of {block}")
        nbytes = tensor.nbytes or 0
        end = tensor.offset + nbytes
        if data_start + end > size:
            raise _Corrupt(f"{label} ({nbytes} bytes at offset {tensor.offset}) runs past the "
                           f"end of the file ({size - data_start} bytes of tensor data)")
        expected = -(-end // alignment) * alignment


def _fill(facts: ModelFacts, metadata: dict[str, Any], tensors: list[_Tensor], data_start: int,
          version: int) -> None:
    unknown = sorted({t.type_id for t in tensors if t.type_name is None})
    if unknown:
        facts.note(f"unknown type {', '.join(map(str, unknown))}: a GGML tensor type newer than "
                   "this bloatguard; those tensors' elements are counted, their bytes are not "
                   "(weight bytes and bits per weight unknown)")
    raw: list[RawTensor] = []
    for tensor in tensors:
        facts.tensors.append(TensorInfo(tensor.name, tensor.dtype, tensor.shape, where="gguf"))
        raw.append(RawTensor(tensor.name, "gguf", tensor.dtype, tensor.shape,
                             data_start + tensor.offset))
    arch = metadata.get("general.architecture")
    arch = arch if isinstance(arch, str) else None
    info: dict[str, Any] = {"gguf_version": version}
    for key in GENERAL_KEYS:
        if metadata.get(key) is not None:
            info[key.split(".", 1)[1]] = metadata[key]
    if arch:
        for key in ARCH_KEYS:
            value = metadata.get(f"{arch}.{key}")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                info[key] = value
    if isinstance(metadata.get("tokenizer.ggml.tokens"), int):
        info["vocab_size"] = metadata["tokenizer.ggml.tokens"]
    facts.extra["gguf"] = info
    facts.chat_templates = {key: value for key, value in metadata.items()
                            if key.startswith(TEMPLATE_KEY) and isinstance(value, str)}
    layer = [t for t in tensors if _layer_kind(t.name, t.shape)]
    quantized = any(t.type_name in GGML_BLOCKS for t in layer)
    facts.handle = GgufWeights(raw, quantized)
    _metrics(facts, tensors, info, arch)
    if not tensors:
        facts.note("this GGUF file holds no tensors (a vocabulary or metadata file)")
    else:
        facts.note("activation memory not counted: a GGUF file holds weights and metadata, not "
                   "the graph llama.cpp builds from them (its KV cache grows with the context)")


def _metrics(facts: ModelFacts, tensors: list[_Tensor], info: dict[str, Any], arch: str | None) -> None:
    params = sum(t.numel for t in tensors)
    sizes = [t.nbytes for t in tensors]
    known = [s for s in sizes if s is not None]
    weight_bytes = sum(known) if len(known) == len(sizes) else None
    by_type: dict[str, int] = {}
    for tensor, nbytes in zip(tensors, sizes):
        if nbytes is not None:
            by_type[tensor.dtype] = by_type.get(tensor.dtype, 0) + nbytes
    metrics: dict[str, Any] = {
        "bytes_by_dtype": dict(sorted(by_type.items(), key=lambda item: (-item[1], item[0]))),
        "bits_per_weight": round(weight_bytes * 8 / params, 4) if weight_bytes and params else None,
        "architecture": arch,
        "context_length": info.get("context_length"),
    }
    facts.extra["format_metrics"] = metrics
    _macs_per_token(facts, tensors, info, arch)


def _macs_per_token(facts: ModelFacts, tensors: list[_Tensor], info: dict[str, Any],
                    arch: str | None) -> None:
    """MACs per token of a standard transformer, from its tensors: one multiply-accumulate per
    weight of every matrix a token passes through (attention and feed-forward projections of
    each block, the output head; the embedding lookup is a gather and costs none), with only
    `expert_used_count` of `expert_count` experts. Attention over the context adds
    2 x block_count x embedding_length MACs per token of context (the scores and the weighted
    sum), which depends on the position and is not included."""
    blocks = [t for t in tensors if t.name.startswith("blk.") and len(t.dims) >= 2]
    if not tensors:
        return
    if not arch or not info.get("block_count") or not blocks:
        facts.note("MACs per token not counted: not a standard transformer by its metadata and "
                   "tensors (general.architecture, <arch>.block_count, blk.N.* weights)")
        return
    experts, used = info.get("expert_count") or 0, info.get("expert_used_count") or 0
    total = 0
    for tensor in blocks:
        if "_exps" in tensor.name and experts and used:
            total += tensor.numel * used // experts
        else:
            total += tensor.numel
    head = next((t for t in tensors if t.name == "output.weight"), None)
    tied = head is None
    head = head or next((t for t in tensors if t.name == "token_embd.weight"), None)
    head_macs = head.numel if head is not None else 0
    facts.macs = total + head_macs
    facts.macs_by_op = {"MUL_MAT": total + head_macs}
    embd = info.get("embedding_length")
    context = (f"; attention over a context of n tokens adds 2 x {info['block_count']} x {embd} "
               "x n MACs per token" if embd else "")
    facts.note("MACs are per token (llama.cpp's MUL_MAT: one multiply-accumulate per weight of "
               "each block's projections and of the output head"
               + (", tied to token_embd" if tied and head is not None else "")
               + (f", {used} of {experts} experts" if experts and used else "") + context + ")")


def _layer_kind(name: str, shape: tuple[int, ...]) -> str | None:
    """What a llama.cpp tensor feeds, from its name: 2-D+ `*.weight` tensors are matrices of
    MUL_MAT (token_embd is an embedding table, read with GET_ROWS)."""
    if len(shape) < 2 or not name.endswith(".weight"):
        return None
    if name.startswith("token_embd") or name.startswith("pos_embd"):
        return None if name.startswith("pos_embd") else "embedding"
    if "conv" in name.rsplit(".", 2)[-2]:
        return "conv"
    return "matmul"


def _view(facts: ModelFacts, quantized: bool) -> WeightView:
    view = WeightView(toolchain="llama.cpp", from_graph=False, stored_noun="tensor", quantized=quantized)
    for tensor in facts.tensors:
        kind = _layer_kind(tensor.name, tensor.shape)
        if kind is None:
            continue
        op = {"embedding": "GET_ROWS", "conv": "CONV"}.get(kind, "MUL_MAT")
        # ggml's matrices are [rows = outputs, row length = inputs]: axis 0 is the output.
        axis = 0 if kind == "matmul" and len(tensor.shape) == 2 else None
        view.uses[(tensor.where, tensor.name)] = [WeightUse(kind=kind, op=op, channel_axis=axis)]
    return view
