"""The safetensors reader: exact counts from the header alone, and every malformed header refused
with a one-line cause. Each malformed case is also checked against the reference implementation
(`safe_open`), so that bloatguard accepts exactly the files the library accepts.
"""

import json
import math
import struct
from importlib import resources
from pathlib import Path

import pytest

from bloatguard.errors import UnreadableModel
from bloatguard.formats import read_model
from bloatguard.formats import safetensors as reader

safetensors = pytest.importorskip("safetensors")
from safetensors import safe_open  # noqa: E402

# Reader bugs must fail these tests, not hide behind the dispatcher's "internal error" facts.
pytestmark = pytest.mark.usefixtures("debug_mode")


# --- factories ---------------------------------------------------------------------------------


def raw_file(path: Path, header, data: bytes = b"", *, length: int | None = None) -> Path:
    """A safetensors file written byte by byte, so that it can be wrong in any way we like."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    text += b" " * (-len(text) % 8)  # the writer pads the header to 8 bytes; so do we
    path.write_bytes(struct.pack("<Q", len(text) if length is None else length) + text + data)
    return path


def entry(dtype: str, shape: list[int], begin: int, end: int) -> dict:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def library_accepts(path: Path) -> bool:
    try:
        with safe_open(str(path), framework="numpy") as handle:
            list(handle.keys())
        return True
    except Exception:
        return False


def torch_file(path: Path) -> Path:
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    save_file({
        "encoder.weight": torch.zeros(16, 8),
        "encoder.bias": torch.zeros(16),
        "half": torch.zeros(3, 5, dtype=torch.float16),
        "brain": torch.zeros(7, dtype=torch.bfloat16),
        "q": torch.zeros(2, 2, 2, dtype=torch.int8),
        "u": torch.zeros(9, dtype=torch.uint8),
        "mask": torch.zeros(4, dtype=torch.bool),
        "steps": torch.zeros(1, dtype=torch.int64),
        "wide": torch.zeros(2, dtype=torch.float64),
        "f8": torch.zeros(6, dtype=torch.float8_e4m3fn),
        "scalar": torch.tensor(1.0),
        "empty": torch.zeros(0, 3),
    }, str(path), metadata={"format": "pt", "author": "tests"})
    return path


# --- good files --------------------------------------------------------------------------------


def test_every_dtype_and_shape_from_the_header(tmp_path):
    facts = read_model(torch_file(tmp_path / "m.safetensors"))
    assert facts.unreadable is None and facts.format == "safetensors"
    assert {t.name: (t.shape, t.dtype) for t in facts.tensors} == {
        "encoder.weight": ((16, 8), "float32"), "encoder.bias": ((16,), "float32"),
        "half": ((3, 5), "float16"), "brain": ((7,), "bfloat16"), "q": ((2, 2, 2), "int8"),
        "u": ((9,), "uint8"), "mask": ((4,), "bool"), "steps": ((1,), "int64"),
        "wide": ((2,), "float64"), "f8": ((6,), "float8e4m3fn"), "scalar": ((), "float32"),
        "empty": ((0, 3), "float32"),
    }
    assert facts.params == 128 + 16 + 15 + 7 + 8 + 9 + 4 + 1 + 2 + 6 + 1
    assert facts.params_by_dtype["float32"] == 145
    expected_bytes = 145 * 4 + 30 + 14 + 8 + 9 + 4 + 8 + 16 + 6
    assert facts.weight_bytes == facts.extra["storage_bytes"] == expected_bytes
    assert facts.extra["metadata"] == {"format": "pt", "author": "tests"}
    assert all(t.where == "safetensors" for t in facts.tensors)
    assert ("safetensors files have no graph: compute (MACs) and activation memory are not "
            "measured") in facts.notes


def test_silero_vad_safetensors_matches_safe_open():
    path = Path(str(resources.files("silero_vad") / "data" / "silero_vad_16k.safetensors"))
    facts = read_model(path)
    assert facts.unreadable is None
    with safe_open(str(path), framework="numpy") as handle:
        expected = {}
        for name in handle.keys():
            view = handle.get_slice(name)
            expected[name] = (tuple(view.get_shape()), view.get_dtype())
    names = {"F32": "float32", "F16": "float16", "I64": "int64"}
    assert {t.name: (t.shape, t.dtype) for t in facts.tensors} == {
        name: (shape, names[dtype]) for name, (shape, dtype) in expected.items()}
    assert facts.params == sum(math.prod(shape) for shape, _ in expected.values()) == 309633


def test_header_only_file_and_sub_byte_dtypes(tmp_path):
    empty = raw_file(tmp_path / "empty.safetensors", {"__metadata__": {"k": "v"}})
    facts = read_model(empty)
    assert facts.unreadable is None and facts.params == 0 and facts.tensors == []

    fp4 = raw_file(tmp_path / "fp4.safetensors", {"a": entry("F4", [4, 2], 0, 4)}, b"\0" * 4)
    facts = read_model(fp4)
    assert [(t.dtype, t.shape) for t in facts.tensors] == [("float4e2m1", (4, 2))]
    assert facts.weight_bytes == 4
    assert library_accepts(fp4)


# --- bad files ---------------------------------------------------------------------------------

F32x2 = entry("F32", [2], 0, 8)

BAD_HEADERS = {
    "overlapping offsets": (
        {"a": entry("F32", [2], 0, 8), "b": entry("F32", [1], 4, 8)}, b"\0" * 8,
        "tensor 'b' overlaps another tensor's bytes"),
    "size does not match shape": (
        {"a": entry("F32", [3], 0, 8)}, b"\0" * 8,
        "tensor 'a': shape [3] of F32 needs 12 bytes but data_offsets span 8"),
    "offsets past the data": (
        {"a": entry("F32", [4], 0, 16)}, b"\0" * 8,
        "tensor 'a': data_offsets [0, 16] fall outside the 8-byte data region"),
    "a hole": (
        {"a": entry("F32", [1], 4, 8)}, b"\0" * 8,
        "bytes 0..4 of the data region belong to no tensor"),
    "bytes after the last tensor": (
        {"a": entry("F32", [1], 0, 4)}, b"\0" * 8,
        "the data region has 4 bytes after the last tensor"),
    "unknown dtype": ({"a": entry("F128", [1], 0, 16)}, b"\0" * 16, "unknown dtype 'F128'"),
    "negative dim": ({"a": entry("F32", [-1], 0, 0)}, b"", "shape must be a list of non-negative"),
    "float dim": ({"a": entry("F32", [2.0], 0, 8)}, b"\0" * 8,
                  "shape must be a list of non-negative"),
    "bool offsets": ({"a": {"dtype": "U8", "shape": [1], "data_offsets": [False, True]}}, b"\0",
                     "data_offsets must be [begin, end]"),
    "missing offsets": ({"a": {"dtype": "F32", "shape": [2]}}, b"\0" * 8,
                        "data_offsets must be [begin, end]"),
    "entry not an object": ({"a": [1, 2]}, b"", "the header entry is not an object"),
    "metadata not strings": ({"__metadata__": {"epoch": 3}, "a": F32x2}, b"\0" * 8,
                             "__metadata__ must map strings to strings"),
    "duplicate keys": (b'{"a":' + json.dumps(F32x2).encode() + b',"a":'
                       + json.dumps(F32x2).encode() + b"}", b"\0" * 8, "duplicate key 'a'"),
    "bad JSON": (b'{"a": {"dtype": "F32",', b"", "the header is not valid JSON"),
    "invalid UTF-8": (b'{"\xff": 1}', b"", "the header is not valid UTF-8"),
    "odd sub-byte size": ({"a": entry("F4", [3], 0, 2)}, b"\0\0", "do not fill whole bytes"),
    # Once "internal error": the element count ran to 19,000 bits and did not print, and the
    # JSON parser ran out of stack.
    "dims that overflow": ({"a": entry("F32", [2**63 - 1] * 300, 0, 4)}, b"\0" * 4,
                           "tensor 'a': shape [9223372036854775807, 9223372036854775807, "),
    "deep nesting": (b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}", b"",
                     "the header nests too deeply"),
}


@pytest.mark.parametrize("case", list(BAD_HEADERS))
def test_malformed_headers_are_refused_like_the_library_does(tmp_path, case):
    header, data, cause = BAD_HEADERS[case]
    path = raw_file(tmp_path / "bad.safetensors", header, data)
    facts = read_model(path)
    assert facts.unreadable is not None and cause in facts.unreadable, facts.unreadable
    assert facts.params is None and facts.remedy
    # Deliberately stricter than the library on one point: it silently keeps one of two
    # duplicate names, so two readers could disagree on which bytes a name means.
    assert library_accepts(path) == (case == "duplicate keys")


def test_header_whose_length_starts_like_a_pickle(tmp_path):
    """A 640-byte header's length field begins 0x80 0x02, PROTO 2 to a pickle sniffer."""
    header = {"a": F32x2, "__metadata__": {"pad": ""}}
    text = json.dumps(header).encode()
    header["__metadata__"]["pad"] = "x" * (640 - len(text))
    path = raw_file(tmp_path / "m.safetensors", header, b"\0" * 8)
    assert path.read_bytes()[:2] == b"\x80\x02" and library_accepts(path)
    facts = read_model(path)
    assert facts.unreadable is None and facts.format == "safetensors" and facts.params == 2


def test_header_length_larger_than_the_file(tmp_path):
    path = raw_file(tmp_path / "long.safetensors", {"a": F32x2}, b"\0" * 8, length=5000)
    facts = read_model(path)
    assert "header length 5000 is larger than the rest of the file" in facts.unreadable
    assert not library_accepts(path)


def test_huge_header_length_is_refused_without_reading(tmp_path):
    path = raw_file(tmp_path / "huge.safetensors", {"a": F32x2}, b"\0" * 8, length=2**40)
    with pytest.raises(UnreadableModel, match="exceeds the 100000000-byte limit"):
        reader.read(path, "huge.safetensors")
    assert read_model(path).unreadable  # the dispatcher does not even take it for safetensors


@pytest.mark.parametrize("keep", [9, 40, -9, -1])
def test_truncated_files(tmp_path, keep):
    data = torch_file(tmp_path / "m.safetensors").read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[:keep])
    facts = read_model(cut)
    assert facts.unreadable is not None and facts.params is None
    assert not library_accepts(cut)


def test_reader_agrees_with_the_library_under_random_damage(tmp_path):
    """Flip bytes in the header: bloatguard accepts exactly what the library accepts (except
    duplicate names, see above), and reads the same tensors from it."""
    import random

    rng = random.Random(7)
    data = torch_file(tmp_path / "m.safetensors").read_bytes()
    header_end = 8 + int.from_bytes(data[:8], "little")
    for _ in range(300):
        mutated = bytearray(data)
        mutated[rng.randrange(8, header_end)] = rng.choice(b'0123456789[]{},:" FIUB')
        path = tmp_path / "mutated.safetensors"
        path.write_bytes(bytes(mutated))
        facts = read_model(path)
        if facts.unreadable is None:
            with safe_open(str(path), framework="numpy") as handle:
                shapes = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
            assert {t.name: t.shape for t in facts.tensors} == shapes
        elif "duplicate key" not in facts.unreadable:
            assert not library_accepts(path), facts.unreadable


def test_six_bit_floats_have_weight_bytes(tmp_path):
    # 8 F6 values pack into 6 bytes; the reader knows it, so the report must too.
    path = raw_file(tmp_path / "f6.safetensors",
                    {"six": entry("F6_E2M3", [8], 0, 6), "f": entry("F32", [2], 6, 14)}, bytes(14))
    facts = read_model(path)
    assert facts.params == 10
    assert facts.weight_bytes == 6 + 8
