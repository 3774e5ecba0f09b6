"""The PyTorch reader and the pickle scanner: exact counts from real torch.save / TorchScript files,
hostile pickles that must be named and never run, and damaged files that must be reported.

torch is used here only to *write* models and, for the trusted TorchScript file shipped by
silero-vad, to compute the ground truth; the reader itself never imports torch.
"""

import builtins
import os
import pickle
import pickletools
import pkgutil
import subprocess
import sys
import zipfile
from collections import OrderedDict
from importlib import resources
from pathlib import Path
from typing import Dict, List

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from bloatguard.errors import UnreadableModel  # noqa: E402
from bloatguard.formats import read_model  # noqa: E402
from bloatguard.formats.pickle_scan import (  # noqa: E402
    ALLOWLIST,
    UNRESOLVABLE,
    disallowed,
    is_allowed,
    scan_globals,
)

OS_SYSTEM = f"{os.system.__module__}.system"  # "posix.system" on Linux, "nt.system" on Windows


# Reader bugs must fail these tests, not hide behind the dispatcher's "internal error" facts.
pytestmark = pytest.mark.usefixtures("debug_mode")


# --- factories ---------------------------------------------------------------------------------


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.bn(self.conv(x)).mean((2, 3)))


class TiedLM(nn.Module):
    """An embedding and an output head sharing one weight, as language models do."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.head = nn.Linear(16, 50, bias=False)
        self.head.weight = self.embed.weight


def seeded_net() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet()


def save(obj, path: Path, **kwargs) -> Path:
    torch.save(obj, path, **kwargs)
    return path


def truth(state: dict) -> dict[str, tuple[tuple[int, ...], str]]:
    return {name: (tuple(t.shape), str(t.dtype).removeprefix("torch."))
            for name, t in state.items()}


def read_shapes(facts) -> dict[str, tuple[int, ...]]:
    return {t.name: t.shape for t in facts.tensors}


def replace_record(archive: Path, suffix: str, data: bytes | None, out: Path) -> Path:
    """A copy of a zip with the record ending in `suffix` replaced (dropped if data is None)."""
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            if info.filename.endswith(suffix):
                if data is not None:
                    dst.writestr(info.filename, data)
            else:
                dst.writestr(info, src.read(info.filename))
    return out


def data_pkl(archive: Path) -> bytes:
    with zipfile.ZipFile(archive) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith("/data.pkl")]
        return zf.read(name)


class Reduce:
    """An object that unpickles by calling `func(*args)`: the shape of every pickle exploit."""

    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


# --- reading real checkpoints ------------------------------------------------------------------


def test_state_dict_counts_every_tensor_exactly(tmp_path):
    state = seeded_net().state_dict()
    facts = read_model(save(state, tmp_path / "net.pt"))

    assert facts.unreadable is None and facts.unsafe_globals == []
    assert facts.format == "pytorch"
    assert facts.params == sum(t.numel() for t in state.values()) == 293
    assert {t.name: (t.shape, t.dtype) for t in facts.tensors} == truth(state)
    assert facts.params_by_dtype == {"float32": 292, "int64": 1}  # bn.num_batches_tracked
    assert all(t.where == "state_dict" for t in facts.tensors)
    assert [t.name for t in facts.tensors] == list(state)  # state dict order is kept
    assert facts.extra["storage_bytes"] == sum(t.untyped_storage().nbytes() for t in state.values())
    assert facts.inputs == [] and facts.outputs == [] and not facts.ops and facts.macs is None
    assert ("PyTorch checkpoints have no graph: compute (MACs) and activation memory are not "
            "measured") in facts.notes
    assert set(facts.extra["pickle_globals"]) <= ALLOWLIST


def test_legacy_format_reads_like_the_zip_format(tmp_path):
    state = seeded_net().state_dict()
    facts = read_model(save(state, tmp_path / "old.pt", _use_new_zipfile_serialization=False))

    assert facts.unreadable is None
    assert facts.format == "pytorch" and facts.extra["serialization"] == "legacy"
    assert {t.name: (t.shape, t.dtype) for t in facts.tensors} == truth(state)
    assert facts.params == 293
    assert facts.extra["storage_bytes"] == sum(t.untyped_storage().nbytes() for t in state.values())


def test_tied_weights_are_counted_once(tmp_path):
    state = TiedLM().state_dict()
    assert set(state) == {"embed.weight", "head.weight"}  # two names, one storage
    for legacy in (False, True):
        facts = read_model(save(state, tmp_path / f"tied{legacy}.pt",
                                _use_new_zipfile_serialization=not legacy))
        assert facts.params == 50 * 16
        assert [t.name for t in facts.tensors] == ["embed.weight"]
        assert facts.extra["tied"] == [["head.weight", "embed.weight"]]
        assert facts.extra["storage_bytes"] == 50 * 16 * 4


def test_views_of_one_storage_with_different_shapes_are_both_counted(tmp_path):
    base = torch.arange(12, dtype=torch.float32)
    facts = read_model(save({"flat": base, "grid": base.view(3, 4)}, tmp_path / "views.pt"))
    assert read_shapes(facts) == {"flat": (12,), "grid": (3, 4)}
    assert facts.extra["storage_bytes"] == 48  # but the bytes are stored once


@pytest.mark.parametrize("legacy", [False, True])
def test_dtypes_are_reported_in_bloatguard_names(tmp_path, legacy):
    state = {
        "f16": torch.zeros(5, dtype=torch.float16),
        "bf16": torch.zeros(2, 3, dtype=torch.bfloat16),
        "i8": torch.zeros(7, dtype=torch.int8),
        "u8": torch.zeros(1, dtype=torch.uint8),
        "b": torch.zeros(4, dtype=torch.bool),
        "f64": torch.zeros(2, dtype=torch.float64),
        "u16": torch.zeros(3, dtype=torch.uint16),         # untyped storage + _rebuild_tensor_v3
        "f8": torch.zeros(6, dtype=torch.float8_e4m3fn),
        "c64": torch.zeros(2, dtype=torch.complex64),
    }
    facts = read_model(save(state, tmp_path / "dtypes.pt",
                            _use_new_zipfile_serialization=not legacy))
    assert facts.unreadable is None
    assert facts.params_by_dtype == {
        "int8": 7, "bfloat16": 6, "float8e4m3fn": 6, "float16": 5, "bool": 4, "uint16": 3,
        "complex64": 2, "float64": 2, "uint8": 1}
    assert facts.weight_bytes == 10 + 12 + 7 + 1 + 4 + 16 + 6 + 6 + 16


def test_parameters_and_nested_training_checkpoints(tmp_path):
    model = seeded_net()
    checkpoint = {"model": model.state_dict(), "epoch": 3, "step": torch.tensor(1200),
                  "extra": [nn.Parameter(torch.ones(2, 2))], "history": (1.0, 0.5)}
    facts = read_model(save(checkpoint, tmp_path / "ckpt.pt"))

    assert facts.unreadable is None
    expected = {f"model.{k}": tuple(v.shape) for k, v in model.state_dict().items()}
    expected.update({"step": (), "extra.0": (2, 2)})
    assert read_shapes(facts) == expected
    assert facts.params == 293 + 1 + 4


def test_unusual_tensors(tmp_path):
    with_attribute = torch.ones(3)
    with_attribute.note = "tensors with Python attributes use _rebuild_from_type_v2"
    parameter = nn.Parameter(torch.ones(2))
    parameter.note = "and Parameters use _rebuild_parameter_with_state"
    objects = {
        "attr": with_attribute, "param": parameter,
        "meta": torch.empty(3, 4, device="meta"),  # no bytes stored, but a declared weight
        "expanded": torch.zeros(1).expand(5),       # 5 elements over a 1-element storage
        "coo": torch.tensor([[0, 1.0, 0], [2, 0, 0]]).to_sparse(),     # 2 stored values
        "csr": torch.tensor([[0, 1.0, 0], [2, 0, 3]]).to_sparse_csr(),  # 3 stored values
        "size": torch.Size([2, 3]), "dtype": torch.float16, "device": torch.device("cpu"),
    }
    facts = read_model(save(objects, tmp_path / "unusual.pt"))
    assert facts.unreadable is None
    assert read_shapes(facts) == {"attr": (3,), "param": (2,), "meta": (3, 4), "expanded": (5,),
                                  "coo": (2,), "csr": (3,)}


def test_quantized_tensor_counts_as_int8(tmp_path):
    q = torch.quantize_per_tensor(torch.ones(3, 4), 0.1, 0, torch.qint8)
    facts = read_model(save({"w": q}, tmp_path / "q.pt"))
    assert facts.unreadable is None
    assert [(t.name, t.dtype, t.shape) for t in facts.tensors] == [("w", "int8", (3, 4))]


def test_torchscript_archive(tmp_path):
    model = seeded_net().eval()
    path = tmp_path / "net.jit"
    torch.jit.script(model).save(str(path))
    facts = read_model(path)

    assert facts.unreadable is None and facts.unsafe_globals == []
    assert facts.format == "torchscript"
    assert all(t.where == "torchscript" for t in facts.tensors)
    assert {t.name: (t.shape, t.dtype) for t in facts.tensors} == truth(model.state_dict())
    assert facts.params == 293


class ScriptAttributes(nn.Module):
    """TorchScript attributes beyond parameters: typed lists, dicts, tuples, buffers."""

    tensors: List[torch.Tensor]  # noqa: UP006 - TorchScript wants typing's generics
    table: Dict[str, torch.Tensor]  # noqa: UP006
    sizes: List[int]  # noqa: UP006

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.tensors = [torch.ones(4), torch.ones(2, 2)]
        self.table = {"scale": torch.ones(5)}
        self.sizes = [1, 2]
        self.register_buffer("mask", torch.ones(6, dtype=torch.bool))

    def forward(self, x):
        return self.fc(x) + self.tensors[0].sum()


def test_torchscript_attributes_and_traced_modules(tmp_path):
    path = tmp_path / "attrs.jit"
    torch.jit.script(ScriptAttributes()).save(str(path))
    facts = read_model(path)
    assert facts.unreadable is None
    assert read_shapes(facts) == {"fc.weight": (2, 3), "fc.bias": (2,), "mask": (6,),
                                  "tensors.0": (4,), "tensors.1": (2, 2), "table.scale": (5,)}
    assert facts.params_by_dtype == {"float32": 21, "bool": 6}

    traced = tmp_path / "traced.jit"
    torch.jit.trace(nn.Linear(3, 3), torch.ones(1, 3)).save(str(traced))
    with zipfile.ZipFile(traced) as zf:  # the example inputs are stored, but are not weights
        assert any(n.endswith("traced_inputs.pkl") for n in zf.namelist())
    assert read_shapes(read_model(traced)) == {"weight": (3, 3), "bias": (3,)}


def test_silero_vad_torchscript_matches_torch_jit_load():
    path = Path(str(resources.files("silero_vad") / "data" / "silero_vad.jit"))
    facts = read_model(path)
    assert facts.unreadable is None and facts.unsafe_globals == []
    assert facts.format == "torchscript"

    # Ground truth from torch itself; allowed here only because the file is a trusted one that
    # ships inside an installed package.
    module = torch.jit.load(str(path))
    state = module.state_dict()
    read = {t.name: (t.shape, t.dtype) for t in facts.tensors}
    assert {name: read[name] for name in state} == truth(state)
    # Beyond the state dict the archive holds two (empty) tensor attributes and one (empty)
    # constant: tensors the model stores, none of them parameters.
    extra = {name: shape for name, (shape, _) in read.items() if name not in state}
    assert extra == {"_state": (0,), "_context": (0,), "constants.0": (0,)}
    assert facts.params == sum(t.numel() for t in state.values()) == 545282
    with zipfile.ZipFile(path) as zf:
        stored = sum(i.file_size for i in zf.infolist() if "/data/" in i.filename
                     or "/constants/" in i.filename)
    assert facts.extra["storage_bytes"] == stored


def test_reader_never_imports_torch_or_numpy(tmp_path):
    pt = save(seeded_net().state_dict(), tmp_path / "a.pt")
    legacy = save({"x": torch.ones(2)}, tmp_path / "b.pt", _use_new_zipfile_serialization=False)
    script = tmp_path / "c.jit"
    torch.jit.script(seeded_net()).save(str(script))
    code = (
        "import sys; from pathlib import Path; from bloatguard.formats import read_model\n"
        f"for p in {[str(pt), str(legacy), str(script)]!r}:\n"
        "    assert read_model(Path(p)).unreadable is None\n"
        "assert not {'torch', 'numpy'} & set(sys.modules), sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- hostile pickles ---------------------------------------------------------------------------


@pytest.fixture
def canary(tmp_path, monkeypatch):
    """A file the hostile pickles try to create; it must never appear."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "CANARY"
    yield path
    assert not path.exists(), "a pickle was executed"


def payloads(canary: Path) -> dict[str, tuple[object, str]]:
    return {
        "os.system": (Reduce(os.system, f"touch {canary}"), OS_SYSTEM),
        "exec": (Reduce(builtins.exec, f"open({str(canary)!r}, 'w')"), "builtins.exec"),
        "resolve_name": (Reduce(pkgutil.resolve_name, "os:system"), "pkgutil.resolve_name"),
    }


def assert_unsafe_not_loaded(facts):
    """An unsafe pickle is reported (BG900, exit 1), not unreadable, and never unpickled."""
    assert facts.unreadable is None and facts.weights_unknown
    assert facts.tensors == [] and facts.params is None
    assert any("outside the allowlist" in note and "safetensors" in note for note in facts.notes)


@pytest.mark.parametrize("payload", ["os.system", "exec", "resolve_name"])
@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_hostile_raw_pickle_is_named_not_run(tmp_path, canary, payload, protocol):
    evil, name = payloads(canary)[payload]
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"weights": [1, 2], "x": evil}, protocol=protocol))
    facts = read_model(path)
    assert facts.unsafe_globals == [name]
    assert_unsafe_not_loaded(facts)


@pytest.mark.parametrize("payload", ["os.system", "exec", "resolve_name"])
def test_hostile_data_pkl_inside_a_torch_zip(tmp_path, canary, payload):
    evil, name = payloads(canary)[payload]
    good = save(seeded_net().state_dict(), tmp_path / "good.pt")
    bad = replace_record(good, "/data.pkl", pickle.dumps(OrderedDict(w=evil), protocol=2),
                         tmp_path / "bad.pt")
    facts = read_model(bad)
    assert facts.format == "pytorch"
    assert facts.unsafe_globals == [name]
    assert_unsafe_not_loaded(facts)


def test_hostile_main_pickle_in_a_legacy_checkpoint(tmp_path, canary):
    header = b"".join(pickle.dumps(x, protocol=2) for x in (
        0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}))
    main = pickle.dumps({"w": Reduce(os.system, f"touch {canary}")}, protocol=2)
    path = tmp_path / "legacy.pt"
    path.write_bytes(header + main + pickle.dumps([], protocol=2))
    facts = read_model(path)
    assert facts.format == "pytorch" and facts.extra["serialization"] == "legacy"
    assert facts.unsafe_globals == [OS_SYSTEM]


def test_stack_global_with_memoized_strings(tmp_path, canary):
    # Protocol 4 memoizes "pkgutil" the first time and fetches it with BINGET the second.
    data = pickle.dumps([Reduce(pkgutil.resolve_name, "os:system"),
                         Reduce(pkgutil.get_data, "os", "x")], protocol=4)
    ops = [op.name for op, _, _ in pickletools.genops(data)]
    first, second = [i for i, name in enumerate(ops) if name == "STACK_GLOBAL"]
    assert "BINGET" in ops[first:second]  # the module string comes back from the memo
    assert scan_globals(data) == ["pkgutil.resolve_name", "pkgutil.get_data"]
    path = tmp_path / "m.pkl"
    path.write_bytes(data)
    assert read_model(path).unsafe_globals == ["pkgutil.get_data", "pkgutil.resolve_name"]


def test_stack_global_operands_come_from_the_real_stack_not_the_last_strings():
    # Pushes "os" "system", then pushes and pops two allowlisted-looking strings: the
    # unpickler resolves os.system; a "last two strings" heuristic would see OrderedDict.
    data = (b"\x80\x04\x8c\x02os\x8c\x06system\x8c\x0bcollections\x8c\x0bOrderedDict00"
            b"\x93)R.")
    assert scan_globals(data) == ["os.system"]
    # The same through a MARK frame: POP_MARK discards the decoys.
    data = b"\x80\x04\x8c\x02os\x8c\x06system(\x8c\x05torch\x8c\x04Size1\x93)R."
    assert scan_globals(data) == ["os.system"]


def test_operands_that_are_not_strings_are_unresolvable():
    assert scan_globals(b"\x80\x04K\x01K\x02\x93.") == [UNRESOLVABLE]
    assert disallowed([UNRESOLVABLE]) == [UNRESOLVABLE]


def test_global_operands_and_python2_names():
    # Protocol 2 fixes Python 2 module names as the unpickler does.
    assert scan_globals(b"\x80\x02c__builtin__\neval\n.") == ["builtins.eval"]
    assert scan_globals(b"\x80\x02c__builtin__\nset\n.") == ["builtins.set"]
    # INST (protocol 0) and extension codes are globals too.
    assert scan_globals(b"(ios\nsystem\n.") == ["os.system"]
    assert scan_globals(b"\x80\x02\x82\x07.") == ["<extension code 7>"]
    # A qualified name can never pass as an allowlisted "module.name".
    qualified = b"\x80\x04\x8c\x05torch\x8c\x0e_utils.os.path\x93."
    assert scan_globals(qualified) == ["torch:_utils.os.path"]


def test_allowlist_is_an_allowlist():
    for safe in ("torch._utils._rebuild_tensor_v2", "torch.FloatStorage", "torch.bfloat16",
                 "collections.OrderedDict", "torch.jit._pickle.build_intlist",
                 "__torch__.vad.model.VADRNNJIT", "builtins.set"):
        assert is_allowed(safe), safe
    for unsafe in (OS_SYSTEM, "os.system", "builtins.exec", "builtins.eval", "builtins.getattr",
                   "pkgutil.resolve_name", "importlib.import_module",
                   "numpy.core.multiarray._reconstruct",
                   "argparse.Namespace", "torch.nn.modules.linear.Linear", "torch.load",
                   "__torch__:x.y", "torch._utils.os"):
        assert not is_allowed(unsafe), unsafe


def test_full_module_pickle_names_the_module_classes(tmp_path):
    facts = read_model(save(seeded_net(), tmp_path / "whole.pt"))
    assert facts.unsafe_globals == sorted([
        f"{TinyNet.__module__}.TinyNet", "torch.nn.modules.batchnorm.BatchNorm2d",
        "torch.nn.modules.conv.Conv2d", "torch.nn.modules.linear.Linear"])
    assert_unsafe_not_loaded(facts)


def test_plain_pickles_of_non_torch_objects(tmp_path):
    import argparse

    path = tmp_path / "args.pkl"
    path.write_bytes(pickle.dumps({"args": argparse.Namespace(lr=0.1)}, protocol=4))
    assert read_model(path).unsafe_globals == ["argparse.Namespace"]

    np = pytest.importorskip("numpy")
    path.write_bytes(pickle.dumps(np.zeros(3), protocol=2))
    facts = read_model(path)
    assert {"numpy.ndarray", "numpy.dtype"} <= set(facts.unsafe_globals)

    # A pickle of only safe containers is read (and holds no tensors).
    path.write_bytes(pickle.dumps(OrderedDict(a=[1, 2], b={3}), protocol=2))
    facts = read_model(path)
    assert facts.unreadable is None and facts.format == "pickle" and facts.params == 0


def test_damaged_pickle_still_reports_the_globals_before_the_damage(tmp_path, canary):
    data = pickle.dumps([Reduce(os.system, f"touch {canary}"), list(range(100))], protocol=2)
    path = tmp_path / "cut.pkl"
    path.write_bytes(data[: len(data) - 30])
    facts = read_model(path)
    assert facts.unsafe_globals == [OS_SYSTEM]
    assert any("damaged" in note for note in facts.notes)


def test_pickles_beyond_the_size_cap_are_still_scanned(tmp_path, monkeypatch):
    from bloatguard.formats import torch as torch_reader

    np = pytest.importorskip("numpy")
    monkeypatch.setattr(torch_reader, "MAX_PICKLE_BYTES", 4096)
    # A pickled array names its globals first, then its (here 80 kB) data.
    path = tmp_path / "array.pkl"
    path.write_bytes(pickle.dumps({"w": np.zeros(10_000)}, protocol=4))
    facts = read_model(path)
    assert {"numpy.ndarray", "numpy.dtype"} <= set(facts.unsafe_globals)
    assert any("larger than" in note for note in facts.notes)

    state = {f"layer{i}.weight": torch.zeros(1) for i in range(200)}  # a long data.pkl
    facts = read_model(save(state, tmp_path / "long.pt"))
    assert facts.unsafe_globals == []
    assert "more than a checkpoint's pickle ever needs" in facts.unreadable


def test_allowlisted_globals_are_still_called_with_checked_arguments(tmp_path):
    # bytearray(10**12) would allocate a terabyte: sizes are refused, contents accepted.
    path = tmp_path / "big.pkl"
    path.write_bytes(b"\x80\x02cbuiltins\nbytearray\n\x8a\x06\x00\x10\xa5\xd4\xe8\x00\x85R.")
    facts = read_model(path)
    assert "bytearray called with a size" in facts.unreadable and not facts.unsafe_globals


def test_huge_memo_index_is_refused_before_unpickling(tmp_path):
    # LONG_BINPUT 0xfffffff0 would make the C unpickler allocate a 64 GiB memo table.
    path = tmp_path / "memo.pkl"
    path.write_bytes(b"\x80\x02K\x01r\xf0\xff\xff\xff.")
    facts = read_model(path)
    assert "memo index 4294967280 is implausibly large" in facts.unreadable


def test_tensor_larger_than_its_storage_is_refused(tmp_path):
    good = save({"w": torch.zeros(4)}, tmp_path / "good.pt")
    pkl = data_pkl(good)
    assert pkl.count(b"K\x04\x85") == 1  # the size tuple (4,)
    lying = replace_record(good, "/data.pkl", pkl.replace(b"K\x04\x85", b"M\x00\x10\x85"),
                           tmp_path / "lying.pt")
    facts = read_model(lying)
    assert "needs 16384 bytes but its storage" in facts.unreadable
    assert facts.unsafe_globals == []


# --- damaged files -----------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.01, 0.3, 0.6, 0.99])
def test_truncated_zip_checkpoint(tmp_path, fraction):
    data = save(seeded_net().state_dict(), tmp_path / "net.pt").read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: max(4, int(len(data) * fraction))])
    facts = read_model(cut)
    assert facts.unreadable and "zip" in facts.unreadable
    assert facts.params is None


@pytest.mark.parametrize("keep", [3, 12, 40, 200, -1000, -5])
def test_truncated_legacy_checkpoint(tmp_path, keep):
    data = save(seeded_net().state_dict(), tmp_path / "old.pt",
                _use_new_zipfile_serialization=False).read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[:keep])
    facts = read_model(cut)
    assert facts.unreadable is not None
    assert "truncated" in facts.unreadable or "not a valid pickle" in facts.unreadable


def test_zip_without_data_pkl(tmp_path):
    path = tmp_path / "weights.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/weights.npy", b"\x93NUMPY")
    facts = read_model(path)
    assert facts.unreadable == "a zip archive without data.pkl: not a PyTorch checkpoint"


def test_missing_storage_record(tmp_path):
    good = save({"w": torch.zeros(4)}, tmp_path / "good.pt")
    broken = replace_record(good, "/data/0", None, tmp_path / "broken.pt")
    facts = read_model(broken)
    assert "storage" in facts.unreadable and "missing from the archive" in facts.unreadable


def test_duplicate_zip_records_are_refused(tmp_path):
    good = save({"w": torch.zeros(4)}, tmp_path / "good.pt")
    path = tmp_path / "dup.pt"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info.filename))
        with pytest.warns(UserWarning):
            dst.writestr([n for n in src.namelist() if n.endswith("data.pkl")][0], b"\x80\x02N.")
    facts = read_model(path)
    assert "duplicate records" in facts.unreadable


def test_trailing_garbage_after_a_plain_pickle(tmp_path):
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=2) + b"garbage")
    assert "7 bytes of trailing data" in read_model(path).unreadable


def test_scanner_refuses_incomplete_pickles():
    data = pickle.dumps({"a": [1, 2, 3]}, protocol=2)
    for bad, cause in [(data[:-1], "truncated"), (data[:5], "truncated"),
                       (data + b"\x80\x02N.", "trailing data"),
                       (b"\x80\x02\xff.", "not a valid pickle"),
                       (b"\x80\x02h\x05.", "read before it is written"),
                       (b"\x80\x02t.", "MARK expected")]:
        with pytest.raises(UnreadableModel, match=cause):
            scan_globals(bad)


def test_random_damage_never_raises_or_executes(tmp_path, canary):
    """Byte flips and cuts anywhere in real files: always facts, never a traceback."""
    import random

    rng = random.Random(1234)
    sources = [
        save(seeded_net().state_dict(), tmp_path / "a.pt"),
        save(seeded_net().state_dict(), tmp_path / "b.pt", _use_new_zipfile_serialization=False),
    ]
    for source in sources:
        data = source.read_bytes()
        for trial in range(150):
            mutated = bytearray(data)
            for _ in range(rng.randint(1, 4)):
                mutated[rng.randrange(2, len(mutated))] = rng.randrange(256)
            if trial % 3 == 0:
                mutated = mutated[: rng.randrange(2, len(mutated))]
            path = tmp_path / "mutated.pt"
            path.write_bytes(bytes(mutated))
            facts = read_model(path)  # BLOATGUARD_DEBUG turns reader bugs into exceptions
            assert facts.unreadable is None or facts.params is None
