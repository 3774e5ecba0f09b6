"""safetensors reader: ModelFacts from the JSON header alone, never touching the tensor bytes.

Layout: an 8-byte little-endian header length N, N bytes of UTF-8 JSON (an object mapping tensor
names to {"dtype", "shape", "data_offsets"}, plus an optional "__metadata__" map of strings), then
the data region. The checks follow the reference implementation (the `safetensors` library),
so a file this reader accepts is one `safe_open` accepts too: the header fits in the file, every
tensor's byte range matches its dtype and shape, and the ranges tile the data region exactly - no
overlaps (which would let two names alias one buffer), no holes, nothing after the last tensor.
This module deliberately does not import the `safetensors` library: reading the header is
cheap, and it keeps the library a test-only dependency.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bloatguard.errors import UnreadableModel
from bloatguard.facts import ModelFacts, RawTensor, TensorInfo
from bloatguard.formats.named import NamedWeights

# The reference implementation refuses larger headers too.
MAX_HEADER_BYTES = 100_000_000
# usize in the reference implementation; anything beyond is an overflow there.
MAX_DIM = 2**63 - 1

REMEDY = "re-save the file with safetensors.save_file or restore it from git"
NO_GRAPH_NOTE = ("safetensors files have no graph: compute (MACs) and activation memory are not "
                 "measured")

# safetensors dtype -> (bloatguard dtype name, bits per element)
DTYPES: dict[str, tuple[str, int]] = {
    "F64": ("float64", 64), "F32": ("float32", 32), "F16": ("float16", 16),
    "BF16": ("bfloat16", 16),
    "I64": ("int64", 64), "I32": ("int32", 32), "I16": ("int16", 16), "I8": ("int8", 8),
    "U64": ("uint64", 64), "U32": ("uint32", 32), "U16": ("uint16", 16), "U8": ("uint8", 8),
    "BOOL": ("bool", 8),
    "C64": ("complex64", 64),
    "F8_E4M3": ("float8e4m3fn", 8), "F8_E5M2": ("float8e5m2", 8), "F8_E8M0": ("float8e8m0", 8),
    "F4": ("float4e2m1", 4), "F6_E2M3": ("float6e2m3", 6), "F6_E3M2": ("float6e3m2", 6),
}


def read(path: Path, display: str) -> ModelFacts:
    facts = ModelFacts(path=display, format="safetensors", file_size=path.stat().st_size)
    header, data_size = _read_header(path, facts.file_size)
    metadata = header.pop("__metadata__", None)
    if metadata is not None:
        facts.extra["metadata"] = _check_metadata(metadata)
    ranges: list[tuple[int, int, str]] = []
    raw: list[RawTensor] = []
    data_start = facts.file_size - data_size
    for name, entry in header.items():
        tensor, begin, end = _tensor(name, entry, data_size)
        facts.tensors.append(tensor)
        ranges.append((begin, end, name))
        raw.append(RawTensor(name, tensor.where, tensor.dtype, tensor.shape, data_start + begin))
    _check_tiling(ranges, data_size)
    facts.extra["storage_bytes"] = data_size
    facts.note(NO_GRAPH_NOTE)
    facts.handle = NamedWeights("torch", raw)
    return facts


def _read_header(path: Path, file_size: int) -> tuple[dict[str, Any], int]:
    """The parsed JSON header and the size of the data region after it."""
    if file_size < 8:
        raise UnreadableModel(f"the file is {file_size} bytes, too short for a safetensors header",
                              REMEDY)
    with open(path, "rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        if length > MAX_HEADER_BYTES:
            raise UnreadableModel(f"header length {length} exceeds the {MAX_HEADER_BYTES}-byte "
                                  "limit of the format", REMEDY)
        if length > file_size - 8:
            raise UnreadableModel(f"header length {length} is larger than the rest of the file "
                                  f"({file_size - 8} bytes); the file is truncated or corrupt",
                                  REMEDY)
        raw = handle.read(length)
    if not raw.startswith(b"{"):
        raise UnreadableModel("the header does not start with a JSON object", REMEDY)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError as exc:
        raise UnreadableModel(f"the header is not valid UTF-8 (byte {exc.start})", REMEDY) from None
    except ValueError as exc:  # JSONDecodeError, or a number too long to convert
        raise UnreadableModel(f"the header is not valid JSON ({exc})", REMEDY) from None
    except RecursionError:  # json's parser recurses per nesting level
        raise UnreadableModel("the header nests too deeply to be a safetensors header (tensor "
                              "entries nest three levels)", REMEDY) from None
    if not isinstance(header, dict):
        raise UnreadableModel("the header is not a JSON object", REMEDY)
    return header, file_size - 8 - length


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json keeps the last of duplicate keys silently; two readers could then disagree on which
    # bytes a tensor name refers to.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _check_metadata(metadata: Any) -> dict[str, str]:
    if not isinstance(metadata, dict) or not all(
            isinstance(value, str) for value in metadata.values()):
        raise UnreadableModel("__metadata__ must map strings to strings", REMEDY)
    return metadata


def _tensor(name: str, entry: Any, data_size: int) -> tuple[TensorInfo, int, int]:
    """One header entry as a TensorInfo plus its byte range, after checking it is consistent."""
    if not isinstance(entry, dict):
        raise UnreadableModel(f"tensor {name!r}: the header entry is not an object", REMEDY)
    dtype = entry.get("dtype")
    if dtype not in DTYPES:
        raise UnreadableModel(f"tensor {name!r}: unknown dtype {dtype!r:.40}", REMEDY)
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(_is_int(d) and 0 <= d <= MAX_DIM for d in shape):
        raise UnreadableModel(f"tensor {name!r}: shape must be a list of non-negative integers",
                              REMEDY)
    offsets = entry.get("data_offsets")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(_is_int(o) and o >= 0 for o in offsets)):
        raise UnreadableModel(f"tensor {name!r}: data_offsets must be [begin, end]", REMEDY)
    begin, end = offsets
    if begin > end or end > data_size:
        raise UnreadableModel(f"tensor {name!r}: data_offsets [{begin}, {end}] fall outside the "
                              f"{data_size}-byte data region", REMEDY)
    bloatguard_dtype, bits = DTYPES[dtype]
    numel = _numel(shape)
    if numel is None:
        raise UnreadableModel(f"tensor {name!r}: shape {_brief_shape(shape)} has more than "
                              "2^63 - 1 elements", REMEDY)
    if (numel * bits) % 8:
        raise UnreadableModel(f"tensor {name!r}: {numel} {dtype} elements do not fill whole bytes",
                              REMEDY)
    nbytes = numel * bits // 8
    if end - begin != nbytes:
        raise UnreadableModel(f"tensor {name!r}: shape {_brief_shape(shape)} of {dtype} needs "
                              f"{nbytes} bytes but data_offsets span {end - begin}", REMEDY)
    info = TensorInfo(name=name, dtype=bloatguard_dtype, shape=tuple(shape), where="safetensors")
    return info, begin, end


def _numel(shape: list[int]) -> int | None:
    """The number of elements, or None once it passes MAX_DIM (an overflow in the reference
    implementation). Stops early, so a shape of hundreds of huge dims stays cheap to check."""
    if 0 in shape:
        return 0
    numel = 1
    for dim in shape:
        numel *= dim
        if numel > MAX_DIM:
            return None
    return numel


def _brief_shape(shape: list[int]) -> str:
    return str(shape) if len(shape) <= 8 else f"[{', '.join(map(str, shape[:8]))}, ...]"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_tiling(ranges: list[tuple[int, int, str]], data_size: int) -> None:
    """The tensors' byte ranges must cover the data region exactly once, in any order."""
    position = 0
    for begin, end, name in sorted(ranges):
        if begin < position:
            raise UnreadableModel(f"tensor {name!r} overlaps another tensor's bytes "
                                  f"(offset {begin} < {position})", REMEDY)
        if begin > position:
            raise UnreadableModel(f"bytes {position}..{begin} of the data region belong to no "
                                  f"tensor (before {name!r})", REMEDY)
        position = end
    if position != data_size:
        raise UnreadableModel(f"the data region has {data_size - position} bytes after the last "
                              "tensor; the header does not describe the whole file", REMEDY)
