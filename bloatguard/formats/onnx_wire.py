"""Reads an ONNX file's structure without reading its weights.

`onnx.load` parses every weight byte into memory; counting parameters needs only each tensor's
dims and dtype. This module walks the protobuf wire format over an mmap of the file and copies
everything except the bulk data fields of tensors (raw_data, float_data, ...), which it skips by
their length prefix. The result is a small, valid ModelProto whose tensors keep their dims and
dtype, plus an `external_data` entry `bloatguard-embedded` that records where each skipped field
lives in the file, so a rule that needs values can read exactly those bytes later.

Only the message types on the path from ModelProto to TensorProto are walked; everything else is
copied as an opaque byte range, so the cost is proportional to the graph size, not the file size.

Memory, though, is proportional to the number of protobuf elements, not to their bytes: an empty
NodeProto is 2 bytes on disk and hundreds once parsed and analysed, so a few MB of empty nodes
used to cost GBs. Before protobuf sees the bytes, `read_structure` therefore estimates what the
graph will cost (`_count`) and refuses a model over GRAPH_MEMORY_BUDGET.
"""

from __future__ import annotations

import functools
import mmap
import os
from dataclasses import dataclass
from pathlib import Path

from bloatguard.errors import UnreadableModel

EMBEDDED_KEY = "bloatguard-embedded"

# Tensor data fields smaller than this are kept: shape inference needs the values of small
# constants (Reshape targets, Slice bounds), and they cost nothing to copy.
KEEP_DATA_BELOW = 4096

_TENSOR_DATA_FIELDS = {4: "float_data", 5: "int32_data", 6: "string_data", 7: "int64_data",
                       9: "raw_data", 10: "double_data", 11: "uint64_data"}

# For each message type we walk: field number -> message type of that (length-delimited) field.
_SCHEMA: dict[str, dict[int, str]] = {
    "model": {7: "graph", 25: "function", 20: "training_info"},
    "training_info": {1: "graph", 2: "graph"},
    "graph": {1: "node", 5: "tensor", 15: "sparse_tensor"},
    "function": {7: "node"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse_tensor",
                  23: "sparse_tensor"},
    "sparse_tensor": {1: "tensor", 2: "tensor"},
    "tensor": {},
}


# What one element of a parsed graph costs in the main process, from `bloatguard check` peak RSS
# over floods of 500,000 empty elements: NodeProto 680 bytes, AttributeProto 650, ValueInfoProto
# 470 (so any message: 700), one string of a repeated field (a node input) 130 (so: 150).
MESSAGE_COST = 700
STRING_COST = 150
# What the parsed graph may cost. A genuine 100,000-node model (plus an attribute and a value info
# per node) is estimated at 0.7 GiB (measured: 0.5 GiB), so about 300,000 nodes fit.
GRAPH_MEMORY_BUDGET = 2 * 2**30
# Every element takes at least 2 bytes (a key and a length), so a structure this small cannot
# exceed the budget and is never counted: the count costs nothing for ordinary models.
_ALWAYS_AFFORDABLE_BYTES = 2 * GRAPH_MEMORY_BUDGET // MESSAGE_COST
# Files whose structure was counted and found affordable, by (device, inode, size, mtime): a
# model is read more than once per run (facts, then MACs in a forked child, the fixer).
_AFFORDABLE: set[tuple[int, int, int, int]] = set()


@dataclass
class WireResult:
    model_bytes: bytes
    stripped_fields: int
    stripped_bytes: int


class _Corrupt(Exception):
    pass


class _TooCostly(Exception):
    """The graph's elements would cost more than GRAPH_MEMORY_BUDGET; `elements` counted so far."""

    def __init__(self, elements: int) -> None:
        super().__init__(elements)
        self.elements = elements


def _varint(buf, pos: int, end: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise _Corrupt(pos)
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise _Corrupt(pos)


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key_and_len(field: int, payload_len: int) -> bytes:
    return _encode_varint(field << 3 | 2) + _encode_varint(payload_len)


def _entry(key: str, value: str) -> bytes:
    k, v = key.encode(), value.encode()
    body = _key_and_len(1, len(k)) + k + _key_and_len(2, len(v)) + v
    return _key_and_len(13, len(body)) + body


class _Rewriter:
    def __init__(self, buf) -> None:
        self.buf = buf
        self.stripped_fields = 0
        self.stripped_bytes = 0
        # What the elements seen so far will cost, a lower bound (small messages are copied
        # without a look inside): enough to stop a flood of graph-level elements early.
        self.elements = 0
        self.budget_left = GRAPH_MEMORY_BUDGET

    def rewrite(self, start: int, end: int, kind: str) -> list:
        """The message in buf[start:end] as a list of byte chunks, bulk tensor data left out."""
        buf = self.buf
        schema = _SCHEMA[kind]
        chunks: list = []
        copy_from = start
        pos = start
        while pos < end:
            field_start = pos
            key, pos = _varint(buf, pos, end)
            field, wire = key >> 3, key & 7
            if wire == 0:
                _, pos = _varint(buf, pos, end)
            elif wire == 1:
                pos += 8
            elif wire == 5:
                pos += 4
            elif wire == 2:
                length, pos = _varint(buf, pos, end)
                payload = pos
                pos += length
                if pos > end:
                    raise _Corrupt(field_start)
                child = schema.get(field)
                self.elements += 1
                self.budget_left -= STRING_COST if child is None else MESSAGE_COST
                if self.budget_left < 0:
                    raise _TooCostly(self.elements)
                if kind == "tensor" and field in _TENSOR_DATA_FIELDS and length >= KEEP_DATA_BELOW:
                    chunks.append(buf[copy_from:field_start])
                    chunks.append(_entry(EMBEDDED_KEY, f"{_TENSOR_DATA_FIELDS[field]}:{payload}:{length}"))
                    copy_from = pos
                    self.stripped_fields += 1
                    self.stripped_bytes += length
                elif child is not None and length >= KEEP_DATA_BELOW:
                    # A smaller message cannot hold a data field worth stripping: copy it as is
                    # (protobuf's own parser validates it afterwards). Most nodes are this small.
                    inner = self.rewrite(payload, pos, child)
                    if len(inner) != 1 or inner[0] is not None:
                        chunks.append(buf[copy_from:field_start])
                        body = b"".join(inner)
                        chunks.append(_key_and_len(field, len(body)))
                        chunks.append(body)
                        copy_from = pos
            else:
                raise _Corrupt(field_start)
            if pos > end:
                raise _Corrupt(field_start)
        if copy_from == start and not chunks:
            # Nothing changed inside: the caller can keep its verbatim copy.
            return [None]
        chunks.append(buf[copy_from:end])
        return chunks


def read_structure(path: Path) -> WireResult:
    """The model's structure with bulk tensor data left out, as serialized ModelProto bytes.
    Raises UnreadableModel for a corrupt file and for a graph over GRAPH_MEMORY_BUDGET."""
    with open(path, "rb") as handle:
        info = os.fstat(handle.fileno())
        size = info.st_size
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
    view = memoryview(mapped)
    try:
        rewriter = _Rewriter(view)
        try:
            chunks = rewriter.rewrite(0, size, "model")
            model_bytes = view.tobytes() if chunks == [None] else b"".join(chunks)
            del chunks
            identity = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
            if len(model_bytes) > _ALWAYS_AFFORDABLE_BYTES and identity not in _AFFORDABLE:
                _count(memoryview(model_bytes))
                _AFFORDABLE.add(identity)
        except _Corrupt as exc:
            raise UnreadableModel(
                f"not a valid ONNX protobuf (truncated or corrupt near byte {exc.args[0]} of {size})",
                "re-export the model or restore the file from git",
            ) from None
        except _TooCostly as exc:
            raise _too_costly(exc.elements, size) from None
        except RecursionError:
            raise UnreadableModel("graph nesting is too deep to read",
                                  "flatten the model's subgraphs") from None
        return WireResult(model_bytes, rewriter.stripped_fields, rewriter.stripped_bytes)
    finally:
        try:
            view.release()
            if isinstance(mapped, mmap.mmap):
                mapped.close()
        except BufferError:
            pass  # slices still referenced by an exception's frames; the GC unmaps it later


def _too_costly(elements: int, size: int) -> UnreadableModel:
    return UnreadableModel(
        f"its graph holds over {elements:,} protobuf elements in {size:,} bytes, over "
        f"{GRAPH_MEMORY_BUDGET / 2**30:g} GiB of memory to analyse (a flood of near-empty "
        "nodes, attributes or names)",
        "a genuine graph this large must be simplified (fuse or fold ops, e.g. with onnxsim) "
        "before bloatguard can check it")


def _count(buf) -> int:
    """The messages and length-delimited scalars (strings, packed numbers) of a serialized
    ModelProto, in every message type protobuf will build; raises _TooCostly as soon as they
    would cost more than the budget. (The hot loop of large models: one-byte varints inline.)"""
    schema = _full_schema()
    elements, budget_left = 0, GRAPH_MEMORY_BUDGET
    pending = [(0, len(buf), "onnx.ModelProto")]
    while pending:
        pos, end, kind = pending.pop()
        children = schema[kind]
        while pos < end:
            key = buf[pos]
            if key < 0x80:
                pos += 1
            else:
                key, pos = _varint(buf, pos, end)
            wire = key & 7
            if wire == 2:
                if pos < end and buf[pos] < 0x80:
                    length = buf[pos]
                    pos += 1
                else:
                    length, pos = _varint(buf, pos, end)
                child = children.get(key >> 3)
                elements += 1
                if child is None:
                    budget_left -= STRING_COST
                else:
                    budget_left -= MESSAGE_COST
                    if length:
                        pending.append((pos, pos + length, child))
                if budget_left < 0:
                    raise _TooCostly(elements)
                pos += length
            elif wire == 0:
                _, pos = _varint(buf, pos, end)
            elif wire == 1:
                pos += 8
            elif wire == 5:
                pos += 4
            else:
                raise _Corrupt(pos)
        if pos > end:
            raise _Corrupt(end)
    return elements


@functools.cache
def _full_schema() -> dict[str, dict[int, str]]:
    """{message type: {field number: message type}} for everything reachable from ModelProto,
    from the installed onnx's own descriptors, so that no message field protobuf would build
    escapes the count (unlike _SCHEMA, which lists only the way to the tensors)."""
    import onnx

    schema: dict[str, dict[int, str]] = {}
    pending = [onnx.ModelProto.DESCRIPTOR]
    while pending:
        descriptor = pending.pop()
        if descriptor.full_name not in schema:
            message_fields = [field for field in descriptor.fields if field.message_type is not None]
            schema[descriptor.full_name] = {field.number: field.message_type.full_name
                                            for field in message_fields}
            pending += [field.message_type for field in message_fields]
    return schema
