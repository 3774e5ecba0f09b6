"""Builds a corpus of hostile and damaged model files from real and synthetic seeds.

Run `python tests/fuzz/corpus.py OUT_DIR` to write it; tests/test_fuzz.py builds it in a temporary
directory and runs the CLI on every file. Mutations: truncation at many offsets, random byte
flips, wrong magic, huge declared dims, deep nesting, LFS pointers, hostile external-data paths,
archives, and malicious pickles that would create a canary file if anything executed them.
From the second red-team round: zips whose record names collide in case or whose records
overlap, extra pickles in a zip, legacy checkpoints whose magic pickle starts with LONG1, hash
bombs, huge-int keys, bzip2 bombs, and models that are symlinks or FIFOs. Issue 17: TFLite and
GGUF seeds and attacks. Issue 20: hostile names, valid and damaged models whose file names carry
line breaks, markdown, HTML, workflow commands, bidi overrides, invalid UTF-8, a leading `-` or
255 bytes (`hostile_names`).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import struct
import sys
import zipfile
import zlib
from pathlib import Path

import onnx
from onnx import TensorProto, helper

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import factories  # noqa: E402


class _Reduce:
    """Pickles as a call of `func(*args)`: what an attacker writes into a checkpoint."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def malicious_payloads(canary: Path) -> dict[str, object]:
    import builtins
    import pkgutil

    touch = f"touch {canary}"
    return {
        "os_system": _Reduce(os.system, touch),
        "exec": _Reduce(builtins.exec, f"open({str(canary)!r}, 'w').close()"),
        "resolve_name": _Reduce(pkgutil.resolve_name, "os:system"),
        "eval": _Reduce(builtins.eval, f"__import__('os').system({touch!r})"),
    }


def _seeds(work: Path) -> dict[str, Path]:
    seeds = {
        "mlp.onnx": factories.mlp(work / "seed_mlp.onnx", sizes=(16, 16, 4)),
        "if.onnx": factories.if_model(work / "seed_if.onnx"),
        "conv.onnx": factories.conv_model(work / "seed_conv.onnx"),
        "fn.onnx": factories.function_model(work / "seed_fn.onnx"),
    }
    header = {"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]},
              "b": {"dtype": "F16", "shape": [4], "data_offsets": [64, 72]}}
    raw = json.dumps(header).encode()
    safetensors = work / "seed.safetensors"
    safetensors.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(72))
    seeds["st.safetensors"] = safetensors
    try:
        import torch

        state = {"w": torch.randn(8, 4), "b": torch.zeros(8, dtype=torch.float16)}
        torch.save(state, work / "seed_state.pt")
        seeds["state.pt"] = work / "seed_state.pt"
        torch.save(state, work / "seed_legacy.pt", _use_new_zipfile_serialization=False)
        seeds["legacy.pt"] = work / "seed_legacy.pt"
        # The same checkpoint whose magic-number pickle starts with LONG1 instead of PROTO.
        legacy = (work / "seed_legacy.pt").read_bytes()
        standard_magic = pickle.dumps(LEGACY_MAGIC, protocol=2)
        assert legacy.startswith(standard_magic)
        (work / "seed_long1.pt").write_bytes(long1_magic() + legacy[len(standard_magic):])
        seeds["long1.pt"] = work / "seed_long1.pt"
    except ImportError:
        pass
    seeds.update(_new_format_seeds(work))
    return seeds


def _new_format_seeds(work: Path) -> dict[str, Path]:
    """A TFLite model with every counted layer, a sparse one, and a small llama GGUF with a
    chat template (issue 17): their truncations and flips join the corpus."""
    import gguf_models
    import tflite_models

    sparse = [tflite_models.T("x", [1, 16]), tflite_models.T("w", [8, 16], data=tflite_models.randn(12),
                                                              sparse=True),
              tflite_models.T("d", [8, 16]), tflite_models.T("y", [1, 8])]
    return {
        "layers.tflite": tflite_models.every_layer(work / "seed_layers.tflite"),
        "sparse.tflite": tflite_models.model(work / "seed_sparse.tflite", sparse,
                                             [tflite_models.Op("DENSIFY", [1], [2]),
                                              tflite_models.Op("FULLY_CONNECTED", [0, 2, -1], [3])], [0], [3]),
        "llama.gguf": gguf_models.llama(work / "seed_llama.gguf", embd=32, ff=64, blocks=1),
    }


def _truncations(data: bytes, count: int) -> list[bytes]:
    offsets = sorted({1, 2, 4, 8, 9, 16, *(len(data) * k // count for k in range(1, count))})
    return [data[:offset] for offset in offsets if 0 < offset < len(data)]


def _flips(data: bytes, rng: random.Random, count: int) -> list[bytes]:
    out = []
    for _ in range(count):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            position = rng.randrange(len(mutated))
            mutated[position] = rng.randrange(256)
        out.append(bytes(mutated))
    return out


def _huge_dims_onnx(work: Path) -> bytes:
    model = onnx.load(str(factories.mlp(work / "huge.onnx", sizes=(4, 4))))
    model.graph.initializer[0].ClearField("raw_data")
    del model.graph.initializer[0].dims[:]
    model.graph.initializer[0].dims.extend([2**40, 2**40, 2**40])
    return model.SerializeToString()


def _dims_over_data_onnx(work: Path) -> bytes:
    """A tensor declaring 2^31 x 2^31 floats over the 64 bytes it really stores."""
    model = onnx.load(str(factories.mlp(work / "dims.onnx", sizes=(4, 4))))
    del model.graph.initializer[0].dims[:]
    model.graph.initializer[0].dims.extend([2**31, 2**31])
    return model.SerializeToString()


def _deep_if_onnx(depth: int) -> bytes:
    """`If` nested `depth` deep: deeper than protobuf's recursion limit at the extremes."""
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y0"])], "leaf", [],
                              [helper.make_tensor_value_info("y0", TensorProto.FLOAT, [1])])
    leaf = graph
    for level in range(depth):
        # Only one branch nests: nesting both would double the model at every level.
        node = helper.make_node("If", ["c"], [f"y{level + 1}"], then_branch=graph, else_branch=leaf)
        graph = helper.make_graph([node], f"g{level}", [],
                                  [helper.make_tensor_value_info(f"y{level + 1}", TensorProto.FLOAT, [1])])
    main = helper.make_graph(graph.node, "main",
                             [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1]),
                              helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                             list(graph.output))
    return helper.make_model(main).SerializeToString()


def _field(number: int, payload: bytes) -> bytes:
    from bloatguard.formats.onnx_wire import _key_and_len

    return _key_and_len(number, len(payload)) + payload


def _deep_if_wire(depth: int) -> bytes:
    """Nested If graphs far beyond protobuf's depth limit, written straight in wire format
    (the protobuf library itself refuses to build them)."""
    graph = _field(1, _field(1, b"x") + _field(2, b"y") + _field(4, b"Identity"))
    for _ in range(depth):
        attribute = _field(1, b"then_branch") + b"\xa0\x01\x05" + _field(6, graph)  # type=GRAPH
        node = _field(1, b"c") + _field(2, b"y") + _field(4, b"If") + _field(5, attribute)
        graph = _field(1, node)
    return b"\x08\x08" + _field(7, graph + _field(2, b"deep"))  # ir_version 8, graph


def _hostile_external(work: Path, location: str, offset: str = "0") -> bytes:
    model = onnx.load(str(factories.mlp(work / "ext_seed.onnx", sizes=(4, 4), external=True)),
                      load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
            if entry.key == "offset":
                entry.value = offset
    return model.SerializeToString()


def _zip_with(records: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, data in records.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _bad_crc_zip(data: bytes) -> bytes:
    mutated = bytearray(data)
    index = mutated.find(b"PK\x03\x04")
    mutated[index + 14] ^= 0xFF  # the CRC field of the first local header
    return bytes(mutated)


def _flip_in_record(data: bytes, suffix: str) -> bytes:
    """Flip one byte inside a stored record's data (not its header): only a CRC check sees it."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(suffix))
    name_length = int.from_bytes(data[info.header_offset + 26:info.header_offset + 28], "little")
    extra_length = int.from_bytes(data[info.header_offset + 28:info.header_offset + 30], "little")
    position = info.header_offset + 30 + name_length + extra_length
    mutated = bytearray(data)
    mutated[position] ^= 0x01
    return bytes(mutated)


def _deep_list_pickle(depth: int) -> bytes:
    """[[[...]]] nested `depth` deep, written opcode by opcode (pickle.dumps would recurse)."""
    return b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"."


# --- hostile files of the second red-team round (also used by tests/test_untrusted_pickles.py) --

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def local_record(name: str, payload: bytes, *, method: int = zipfile.ZIP_STORED,
                 declared: int | None = None, crc: int | None = None) -> bytes:
    """A zip local header plus its (already compressed) payload. `declared` is the uncompressed
    size the headers claim; a liar's zip sets it to anything."""
    raw = name.encode()
    declared = len(payload) if declared is None else declared
    crc = zlib.crc32(payload) if crc is None else crc
    return struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, method, 0, 0, crc, len(payload),
                       declared, len(raw), 0) + raw + payload


def raw_zip(records: list[tuple[int, bytes]], body: bytes) -> bytes:
    """A zip of `body` (local records laid out by hand) whose central directory lists each
    (offset, local record) in `records`: entries may point anywhere, overlapping included."""
    central = b""
    for offset, record in records:
        (_, _, _, method, _, _, crc, size, declared, name_length, _) = struct.unpack(
            "<4sHHHHHIIIHH", record[:30])
        name = record[30:30 + name_length]
        central += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, method, 0, 0,
                               crc, size, declared, len(name), 0, 0, 0, 0, 0, offset) + name
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(records), len(records),
                      len(central), len(body), 0)
    return body + central + end


def sequential_zip(records: list[bytes]) -> bytes:
    """A zip of local records one after the other, as any writer lays them out."""
    offsets, position = [], 0
    for record in records:
        offsets.append((position, record))
        position += len(record)
    return raw_zip(offsets, b"".join(records))


def case_colliding_zip(first: bytes, second: bytes) -> bytes:
    """`arc/DATA.PKL` then `arc/data.pkl`: one name to torch's case-insensitive lookup, which
    (torch 2.13) loads the first; a case-sensitive scanner reads the second."""
    return sequential_zip([local_record("arc/DATA.PKL", first),
                           local_record("arc/data.pkl", second),
                           local_record("arc/version", b"3\n")])


def overlapping_zip(clean: bytes, hidden: bytes) -> bytes:
    """A clean data.pkl, and a record `arc/blob` whose stored bytes are another complete record,
    `arc/extra.pkl`, that the central directory also lists: two entries share bytes."""
    data_pkl = local_record("arc/data.pkl", clean)
    inner = local_record("arc/extra.pkl", hidden)
    blob = local_record("arc/blob", inner)
    blob_at = len(data_pkl)
    inner_at = blob_at + 30 + len("arc/blob")
    return raw_zip([(0, data_pkl), (blob_at, blob), (inner_at, inner)], data_pkl + blob)


def bzip2_bomb_zip(expanded: int = 64 * 2**20, declared: int = 1024) -> bytes:
    """A checkpoint whose storage record is bzip2: a few hundred bytes that expand to `expanded`
    bytes, though the headers declare `declared`."""
    import bz2

    data_pkl = pickle.dumps({}, protocol=2)
    bomb = bz2.compress(bytes(expanded), 9)
    return sequential_zip([local_record("arc/data.pkl", data_pkl),
                           local_record("arc/data/0", bomb, method=zipfile.ZIP_BZIP2,
                                        declared=declared, crc=0),
                           local_record("arc/version", b"3\n")])


def long1_magic() -> bytes:
    """The legacy torch.save magic number as a pickle without a PROTO header: LONG1 first.
    torch.load only checks that the first pickle equals the magic number."""
    return b"\x8a\x0a" + LEGACY_MAGIC.to_bytes(10, "little") + b"."


def long1_legacy(main: bytes, keys: bytes = pickle.dumps([], protocol=2)) -> bytes:
    """A legacy checkpoint (magic, protocol version, sys_info, main pickle, storage keys) whose
    magic pickle starts with LONG1."""
    header = b"".join(pickle.dumps(x, protocol=2) for x in (
        1001, {"protocol_version": 1001, "little_endian": True}))
    return long1_magic() + header + main + keys


def hash_bomb(depth: int = 64, container: str = "dict") -> bytes:
    """About 6 bytes per level: t = (); t = (t, t) `depth` times, then t used as a dict key (or
    set element). No global at all, but hashing t visits 2^depth tuples."""
    bomb = b")" + b"q\x00h\x00\x86" * depth  # BINPUT 0, BINGET 0, TUPLE2
    uses = {
        "dict": b"}" + bomb + b"K\x01s",                         # {t: 1}
        "set": b"\x8f(" + bomb + b"\x90",                        # EMPTY_SET, ADDITEMS
        "frozenset": b"(" + bomb + b"\x91",                      # FROZENSET
        "ordered_dict": b"\x8c\x0bcollections\x8c\x0bOrderedDict\x93]" + bomb
                        + b"K\x01\x86a\x85R",                     # OrderedDict([(t, 1)])
    }
    return b"\x80\x04" + uses[container] + b"."


def huge_int_key_pickle() -> bytes:
    return pickle.dumps({10**5000: 1}, protocol=2)


def _empty_node_flood(nodes: int) -> bytes:
    """One real node, then `nodes` empty NodeProtos: 2 bytes each on disk, hundreds in memory
    once parsed (8 MB took 3.1 GB and 104 s). The reader must refuse it before parsing."""
    graph = (_field(1, _field(1, b"x") + _field(2, b"y") + _field(4, b"Identity"))
             + _field(1, b"") * nodes)
    return b"\x08\x08" + _field(7, graph) + _field(8, b"\x10\x11")  # ir_version 8, graph, opset 17


def _new_format_attacks(work: Path) -> dict[str, bytes]:
    """Hostile TFLite and GGUF files (bad offsets, 2^31-element vectors, a table referenced
    60,000 times, lying shapes, impossible counts) and a GGUF whose chat template would run code."""
    import gguf_models
    import tflite_models

    cases = dict(tflite_models.hostile(work))
    for name, (data, _) in gguf_models.HOSTILE.items():
        cases[f"gguf_{name.replace(' ', '_').replace('^', '')}.gguf"] = data
    cases["gguf_evil_template.gguf"] = gguf_models.llama(
        work / "evil.gguf", embd=32, ff=64, blocks=1, template=gguf_models.HOSTILE_TEMPLATE).read_bytes()
    return cases


def build(out: Path, canary: Path, *, seed: int = 1234, truncations: int = 24, flips: int = 12) -> list[Path]:
    """Write the corpus into `out` and return the files (one directory per case, because
    external-data cases need their own companions)."""
    rng = random.Random(seed)
    work = out / "_seeds"
    work.mkdir(parents=True, exist_ok=True)
    cases: dict[str, bytes] = {}
    for name, path in _seeds(work).items():
        data = path.read_bytes()
        stem, suffix = name.rsplit(".", 1)
        for index, cut in enumerate(_truncations(data, truncations)):
            cases[f"trunc_{stem}_{index}.{suffix}"] = cut
        for index, mutated in enumerate(_flips(data, rng, flips)):
            cases[f"flip_{stem}_{index}.{suffix}"] = mutated
        cases[f"magic_{stem}.{suffix}"] = b"\x00\xff\x13\x37" + data[4:]
        cases[f"empty_{stem}.{suffix}"] = b""
        cases[f"lfs_{stem}.{suffix}"] = factories.LFS_POINTER
        cases[f"gzip_{stem}.{suffix}"] = b"\x1f\x8b\x08\x00" + data
        cases[f"tar_{stem}.{suffix}"] = bytes(257) + b"ustar\x0000" + bytes(300)
        cases[f"7z_{stem}.{suffix}"] = b"7z\xbc\xaf\x27\x1c" + data
        if suffix == "pt" and stem == "state":
            cases[f"badcrc_{stem}.pt"] = _bad_crc_zip(data)
            cases[f"badcrc_storage_{stem}.pt"] = _flip_in_record(data, "data/0")
    cases["random.onnx"] = bytes(rng.randrange(256) for _ in range(4096))
    cases["random.pt"] = bytes(rng.randrange(256) for _ in range(4096))
    cases["random.safetensors"] = bytes(rng.randrange(256) for _ in range(4096))
    cases["huge_dims.onnx"] = _huge_dims_onnx(work)
    cases["dims_over_data.onnx"] = _dims_over_data_onnx(work)
    cases["deep_if_20.onnx"] = _deep_if_onnx(20)
    cases["deep_if_5000.onnx"] = _deep_if_wire(5000)
    cases["deep_pickle.pkl"] = _deep_list_pickle(100_000)
    header = json.dumps({"w": {"dtype": "F32", "shape": [2**62, 2**62], "data_offsets": [0, 16]}}).encode()
    cases["huge_dims.safetensors"] = struct.pack("<Q", len(header)) + header + bytes(16)
    cases["huge_header.safetensors"] = struct.pack("<Q", 2**62) + b"{}"
    for name, payload in malicious_payloads(canary).items():
        for protocol in (0, 2, 4):
            cases[f"evil_{name}_p{protocol}.pkl"] = pickle.dumps({"w": [1.0], "x": payload}, protocol=protocol)
        evil = pickle.dumps({"w": payload}, protocol=2)
        cases[f"evil_{name}_zip.pt"] = _zip_with({"archive/data.pkl": evil, "archive/version": b"3\n"})
        cases[f"evil_{name}.bin"] = evil
        cases[f"evil_{name}_long1.bin"] = long1_legacy(evil)
        cases[f"evil_{name}_extra_pkl.pt"] = _zip_with({"archive/data.pkl": pickle.dumps({}, protocol=2),
                                                        "archive/extra/Hook.PKL": evil})
        clean = pickle.dumps({}, protocol=2)
        cases[f"casefold_{name}_first.pt"] = case_colliding_zip(evil, clean)
        cases[f"casefold_{name}_second.pt"] = case_colliding_zip(clean, evil)
        cases[f"overlap_{name}.pt"] = overlapping_zip(clean, evil)
    for container in ("dict", "set", "frozenset", "ordered_dict"):
        cases[f"hash_bomb_{container}.pkl"] = hash_bomb(64, container)
    cases["hash_bomb_zip.pt"] = _zip_with({"archive/data.pkl": hash_bomb(64), "archive/version": b"3\n"})
    cases["huge_int_key.pkl"] = huge_int_key_pickle()
    cases["huge_int_key.bin"] = huge_int_key_pickle()
    cases["bzip2_bomb.pt"] = bzip2_bomb_zip()
    cases["empty_node_flood.onnx"] = _empty_node_flood(4_000_000)
    cases.update(_new_format_attacks(work))
    files: list[Path] = []
    for name, data in sorted(cases.items()):
        directory = out / name.replace(".", "_")
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / name
        target.write_bytes(data)
        files.append(target)
    for label, location, offset in (("abs", "/etc/passwd", "0"), ("dotdot", "../../etc/passwd", "0"),
                                    ("nul", "model.onnx.data\x00x", "0"),
                                    ("offset", "model.onnx.data", str(2**40)), ("missing", "nope.data", "0"),
                                    ("symlink", "link.data", "0")):
        directory = out / f"external_{label}"
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / "model.onnx"
        target.write_bytes(_hostile_external(work, location, offset))
        (directory / "model.onnx.data").write_bytes(bytes(128))
        if label == "symlink":
            os.symlink("/etc/hostname", directory / "link.data")
        files.append(target)
    files += _special_files(out, work)
    names = hostile_names(out / "hostile_names", work)
    # Not the invalid-UTF-8 names: the in-process harness captures output on strict UTF-8
    # streams, which a real process's stderr is not. test_fuzz.py runs them in real processes.
    files += [names.root / kind / name for kind in ("valid", "damaged") for name in names.names]
    return files


# --- hostile names (issue 20) ---------------------------------------------------------------------

# A name a pull request chooses, for each kind of trouble it can cause in a report: a line break
# that would start a line of its own (on a CI log: a workflow command), markdown that would render
# (a table cell split by `|`, emphasis, a link, an @mention that notifies someone, raw HTML),
# percent-escapes the workflow-command syntax decodes, a bidi override that reverses what a
# reviewer reads, a leading `-` that a command line takes for an option, and the longest name a
# file system allows. At most 10 names: GitHub annotates 10 errors per step, and the `github`
# report of the damaged ones must show every name. `/` cannot occur in a name, so the link's URL
# runs across a directory: `link [pwn](http:/x) ...`.
HOSTILE_NAMES = {
    "newline": "nl\n::error ::forged by a newline.onnx",
    "carriage return": "cr\r::warning ::forged by a CR\r\n| forged | row |.onnx",
    "tab and backticks": "tab\there `code` ``two`` ```.onnx",
    "pipes and emphasis": "pipe | *bold* _em_ __strong__ | cell.onnx",
    "mention and html": "@octocat <script>alert(1)<script> <img src=x onerror=alert(1)>.onnx",
    "link": "link [pwn](http:/x) [ref](x).onnx",
    "workflow command": "::error file=a.onnx,title=forged::forged %0A::notice ::x.onnx",
    "non-ascii": "caf\u00e9 \U0001f600 \u202egnp.onnx",
    "leading dash": "-rf.onnx",
    "long": "long_" + "x" * (255 - len("long_.onnx")) + ".onnx",
}
# Names that are not UTF-8 at all (most Linux file systems take any bytes but `/` and NUL).
HOSTILE_BYTE_NAMES = {
    "invalid utf-8": b"utf8 \xff\xfe.onnx",
    "invalid utf-8 and a newline": b"nl8\n\xc3(::error ::forged.onnx",
}


class HostileNames:
    """Where `hostile_names` wrote them: `root/valid/<name>` (a valid model with three dead-weight
    warnings, so the name also reaches fix hints) and `root/damaged/<name>` (the same model cut
    short: unreadable), each name as the CLI reports it relative to its directory; and likewise
    under `root/bytes` for the invalid-UTF-8 names (str names hold them surrogate-escaped, as
    os.fsdecode does), when the file system takes them (`byte_names` is empty when not)."""

    def __init__(self, root: Path, names: list[str], byte_names: list[str]) -> None:
        self.root, self.names, self.byte_names = root, names, byte_names


def hostile_names(root: Path, work: Path) -> HostileNames:
    import fix_models

    valid = fix_models.messy(work / "seed_messy.onnx").read_bytes()
    contents = {"valid": valid, "damaged": valid[:50]}
    names = []
    for name in HOSTILE_NAMES.values():
        for kind, data in contents.items():
            target = root / kind / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        names.append(name)
    assert len(names) <= 10 and all(len(os.fsencode(Path(name).name)) <= 255 for name in names)
    byte_names = []
    for raw in HOSTILE_BYTE_NAMES.values():
        try:
            for kind, data in contents.items():
                directory = os.fsencode(root / "bytes" / kind)
                os.makedirs(directory, exist_ok=True)
                with open(os.path.join(directory, raw), "wb") as out:
                    out.write(data)
        except (OSError, UnicodeError):  # e.g. APFS refuses names that are not UTF-8
            continue
        byte_names.append(os.fsdecode(raw))
    return HostileNames(root, names, byte_names)


def _special_files(out: Path, work: Path) -> list[Path]:
    """Models that are symlinks (to a real checkpoint and to a file outside the corpus,
    dangling or not) and FIFOs, which must be reported without being followed or opened."""
    files = []
    for suffix in (".pt", ".bin", ".safetensors", ".onnx"):
        directory = out / f"symlink{suffix.replace('.', '_')}"
        directory.mkdir(parents=True, exist_ok=True)
        for name, target in (("model", work / "seed_state.pt"), ("outside", Path("/etc/hostname")),
                             ("dangling", work / "missing.pt")):
            link = directory / f"{name}{suffix}"
            os.symlink(target, link)
            files.append(link)
    # Not .onnx: engine.check counts MACs of every .onnx in forked children, which would open it.
    for suffix in (".pt", ".bin"):
        directory = out / f"fifo{suffix.replace('.', '_')}"
        directory.mkdir(parents=True, exist_ok=True)
        os.mkfifo(directory / f"model{suffix}")
        files.append(directory / f"model{suffix}")
    return files


def run_cli_over(files: list[Path]) -> dict[int, int]:
    """Exit codes of `bloatguard check` (in-process) over every file, for the figures in notes."""
    import collections
    import contextlib

    from bloatguard.cli import main

    codes: collections.Counter = collections.Counter()
    for file in files:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            codes[main(["check", str(file), "--output-format", "json", "--no-latency", "--no-cache"])] += 1
    return dict(sorted(codes.items()))


if __name__ == "__main__":
    # python tests/fuzz/corpus.py OUT_DIR [--run]
    import time

    target = Path(next((a for a in sys.argv[1:] if not a.startswith("--")), "fuzz-corpus"))
    built = build(target, target / "CANARY")
    print(f"wrote {len(built)} files to {target}")
    if "--run" in sys.argv:
        start = time.perf_counter()
        codes = run_cli_over(built)
        print(f"exit codes {codes} in {time.perf_counter() - start:.1f} s; "
              f"canary created: {(target / 'CANARY').exists()}")
