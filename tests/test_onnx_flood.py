"""Memory amplification: an element of an ONNX graph costs a few bytes on disk and hundreds once
parsed and analysed (an 8 MB file of empty nodes took 3.1 GB and 104 s). Such a flood is refused
with one BG000 line before protobuf parses it, in a process capped at 1.5 GB; genuine graphs,
counted the same way, are read as before."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from google.protobuf.descriptor import FieldDescriptor

from bloatguard.formats import onnx_wire, read_model

import factories

REPO = Path(__file__).resolve().parent.parent
MEMORY_CAP = 1536 * 2**20  # address space of the checking process: far below what a flood took


# --- a protobuf writer of its own, so the hostile files do not depend on the code under test ---

def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append(value & 0x7F | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def field(number: int, payload: bytes = b"") -> bytes:
    """A length-delimited field: a submessage, a string or bytes."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def model_with_graph(graph: bytes) -> bytes:
    """ModelProto{ir_version: 8, graph, opset_import{version: 17}}."""
    return varint(1 << 3) + varint(8) + field(7, graph) + field(8, varint(2 << 3) + varint(17))


IDENTITY = field(1, field(1, b"x") + field(2, b"y") + field(4, b"Identity"))  # graph.node


def empty_node_flood(nodes: int = 4_000_000) -> bytes:
    """The red team's file: one real node, then millions of empty NodeProtos (2 bytes each)."""
    return model_with_graph(IDENTITY + field(1) * nodes)


def attributes_in_small_nodes(nodes: int = 2_000, attributes: int = 1_800) -> bytes:
    """Empty attributes hidden in nodes just under the size the wire reader looks inside."""
    node = field(4, b"Identity") + field(5) * attributes
    return model_with_graph(IDENTITY + field(1, node) * nodes)


def dims_in_one_value_info(dims: int = 3_500_000) -> bytes:
    """Empty dimensions deep inside one value_info (a field the wire reader never walks):
    ValueInfoProto{type{tensor_type{shape{dim, dim, ...}}}}."""
    shape = field(1) * dims
    value_info = field(1, b"y") + field(2, field(1, field(2, shape)))
    return model_with_graph(IDENTITY + field(13, value_info))


FLOODS = {"empty nodes": empty_node_flood, "attributes in small nodes": attributes_in_small_nodes,
          "dims in one value_info": dims_in_one_value_info}


def limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


@pytest.mark.parametrize("kind", FLOODS)
def test_a_flood_is_refused_with_bounded_memory(tmp_path, kind):
    path = tmp_path / "flood.onnx"
    path.write_bytes(FLOODS[kind]())
    assert path.stat().st_size < 10 * 2**20  # a few MB
    done = subprocess.run([sys.executable, "-m", "bloatguard", "check", "--no-latency", str(path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          preexec_fn=limit_memory)
    assert done.returncode == 2, done.stdout + done.stderr
    [line] = done.stderr.splitlines()  # one line: cause and remedy, no traceback
    assert "flood.onnx" in line and "protobuf elements" in line and "remedy:" in line
    assert "BG000" in done.stdout


# --- the count is protobuf's own, and genuine graphs pass it ---------------------------------

def protobuf_elements(message) -> int:
    """What _count must find, from the parsed message: every message and every string or bytes
    value (repeated ones one by one), and each packed numeric field as one."""
    total = 0
    for descriptor, value in message.ListFields():
        values = value if descriptor.is_repeated else [value]
        if descriptor.message_type is not None:
            total += sum(1 + protobuf_elements(item) for item in values)
        elif descriptor.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
            total += len(values)
        elif descriptor.is_packed:
            total += 1
    return total


def real_and_generated(tmp_path) -> list[Path]:
    return [factories.package_file("silero_vad", "data", "silero_vad.onnx"),
            factories.package_file("magika", "models", "standard_v3_3", "model.onnx"),
            factories.if_model(tmp_path / "if.onnx"), factories.function_model(tmp_path / "fn.onnx"),
            factories.sparse_model(tmp_path / "sparse.onnx"),
            factories.matmul_chain(tmp_path / "chain.onnx", layers=5_000, width=4)]


def test_the_count_covers_every_element_protobuf_builds(tmp_path):
    for path in real_and_generated(tmp_path):
        structure = onnx_wire.read_structure(path).model_bytes
        assert onnx_wire._count(memoryview(structure)) == protobuf_elements(
            onnx.ModelProto.FromString(structure)), path.name


def test_genuine_graphs_are_read_when_every_structure_is_counted(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_wire, "_ALWAYS_AFFORDABLE_BYTES", 0)
    monkeypatch.setattr(onnx_wire, "_AFFORDABLE", set())
    for path in real_and_generated(tmp_path):
        facts = read_model(path)
        assert facts.unreadable is None and facts.params > 0, path.name
    assert read_model(tmp_path / "chain.onnx").ops["MatMul"] == 5_000


def test_the_budget_is_what_refuses(tmp_path, monkeypatch):
    """The same genuine graph is refused once its elements cost more than the budget."""
    path = factories.matmul_chain(tmp_path / "chain.onnx", layers=2_000, width=4)
    monkeypatch.setattr(onnx_wire, "_ALWAYS_AFFORDABLE_BYTES", 0)
    monkeypatch.setattr(onnx_wire, "GRAPH_MEMORY_BUDGET", 2_000 * onnx_wire.MESSAGE_COST)
    facts = read_model(path)
    assert "protobuf elements" in facts.unreadable
