"""Untrusted models, second round (issue 20): pickles and zip archives an attacker's pull request
can use to slip code past the scanner or to hang `bloatguard check`.

Every hostile file is built here, at test time. Payloads that would run code call
`os.system("touch CANARY")`, and the canary fixture fails the test if it ever appears. Where a
test needs to know what torch itself does with a file, it asks `torch.load(weights_only=True)`,
which never runs a payload, or uses a harmless global (`builtins.len`) that the allowlist refuses.
Cases that hung bloatguard run the real CLI in a subprocess, so a hang is a timeout failure.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import factories

sys.path.insert(0, str(Path(__file__).parent / "fuzz"))
import corpus  # noqa: E402

from bloatguard.formats import (  # noqa: E402
    pickle_scan,  # noqa: E402
    read_model,
    sniff,
)
from bloatguard.formats import torch as torch_reader  # noqa: E402
from bloatguard.formats.pickle_scan import scan_globals, starts_like_pickle  # noqa: E402

OS_SYSTEM = f"{os.system.__module__}.system"
HARMLESS_GLOBAL = b"\x80\x02cbuiltins\nlen\n."  # unpickles to len itself: refused, never harmful
HANG_TIMEOUT = 60


@pytest.fixture
def canary(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "CANARY"
    yield path
    assert not path.exists(), "a pickle was executed"


def evil_pickle(canary: Path) -> bytes:
    return pickle.dumps({"w": corpus._Reduce(os.system, f"touch {canary}")}, protocol=2)


def check(*args) -> tuple[int, dict, str]:
    """The real CLI in a child process (JSON report): a hang fails the test instead of the run."""
    result = subprocess.run([sys.executable, "-m", "bloatguard", "check", *map(str, args),
                             "--output-format", "json", "--no-latency", "--no-cache"],
                            capture_output=True, text=True, timeout=HANG_TIMEOUT)
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout), result.stderr


def findings(report: dict) -> list[str]:
    return [f["code"] for model in report["models"] for f in model["findings"]]


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# --- 1. zip member names, compared the way torch compares them ---------------------------------


def test_torch_loads_the_record_whose_name_differs_only_in_case(tmp_path):
    """The premise, checked against real torch: with `arc/DATA.PKL` listed before a clean
    `arc/data.pkl`, torch.load unpickles DATA.PKL (here it trips over its harmless global)."""
    torch = pytest.importorskip("torch")
    path = write(tmp_path / "model.pt",
                 corpus.case_colliding_zip(HARMLESS_GLOBAL, pickle.dumps({}, protocol=2)))
    with pytest.raises(pickle.UnpicklingError, match="len"):
        torch.load(path, weights_only=True)

    facts = read_model(path)
    assert "names differ only in case" in facts.unreadable
    assert "arc/DATA.PKL" in facts.unreadable and "arc/data.pkl" in facts.unreadable
    assert facts.remedy


@pytest.mark.parametrize("hostile_first", [True, False])
def test_case_colliding_zip_is_unreadable_whichever_copy_is_hostile(tmp_path, canary,
                                                                    hostile_first):
    clean = pickle.dumps({}, protocol=2)
    records = (evil_pickle(canary), clean) if hostile_first else (clean, evil_pickle(canary))
    path = write(tmp_path / "model.pt", corpus.case_colliding_zip(*records))
    code, report, err = check(path)
    assert code == 2 and findings(report) == ["BG000"]
    assert "differ only in case" in err and err.count("\n") == 1


def test_every_pickle_in_the_archive_is_scanned(tmp_path, canary):
    """A loader may read any pickle in the archive, not just data.pkl: all are scanned."""
    torch = pytest.importorskip("torch")
    good = tmp_path / "good.pt"
    torch.save({"w": torch.zeros(3)}, good)
    hostile = tmp_path / "hostile.pt"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(hostile, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        prefix = src.namelist()[0].split("/")[0]
        dst.writestr(f"{prefix}/extra/Hooks.PKL", evil_pickle(canary))
    facts = read_model(hostile)
    assert facts.unsafe_globals == [OS_SYSTEM] and facts.weights_unknown


def test_data_pkl_and_storages_are_found_whatever_their_case(tmp_path, canary):
    """torch finds `ARC/DATA.PKL` and `data/0` as `DATA/0`; so does the reader (a
    case-sensitive lookup saw no data.pkl at all, or a missing storage)."""
    torch = pytest.importorskip("torch")
    good = tmp_path / "good.pt"
    torch.save({"w": torch.zeros(3, 4)}, good)
    renamed = tmp_path / "renamed.pt"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(renamed, "w") as dst:
        for info in src.infolist():
            prefix, rest = info.filename.split("/", 1)
            data = src.read(info)
            info.filename = f"{prefix}/{rest.upper()}" if rest in ("data.pkl", "data/0") else \
                info.filename
            dst.writestr(info, data)
    assert torch.load(renamed, weights_only=True)["w"].shape == (3, 4)
    facts = read_model(renamed)
    assert facts.unreadable is None and facts.params == 12

    hostile = tmp_path / "hostile.pt"
    with zipfile.ZipFile(hostile, "w") as dst:
        dst.writestr("arc/DATA.PKL", evil_pickle(canary))
        dst.writestr("arc/version", b"3\n")
    assert read_model(hostile).unsafe_globals == [OS_SYSTEM]


# --- 2. pickles recognised by what the unpickler accepts ---------------------------------------


def test_legacy_checkpoint_with_a_long1_magic_number_is_read(tmp_path):
    """torch.load needs only that the first pickle *equals* the magic number."""
    torch = pytest.importorskip("torch")
    state = {"w": torch.ones(2, 3)}
    saved = tmp_path / "saved.pt"
    torch.save(state, saved, _use_new_zipfile_serialization=False)
    data = saved.read_bytes()
    standard_magic = pickle.dumps(corpus.LEGACY_MAGIC, protocol=2)
    assert data.startswith(standard_magic)
    path = write(tmp_path / "models" / "pytorch_model.bin",
                 corpus.long1_magic() + data[len(standard_magic):])
    assert torch.load(path, weights_only=True)["w"].shape == (2, 3)

    facts = read_model(path)
    assert facts.unreadable is None and facts.extra["serialization"] == "legacy"
    assert facts.params == 6


def test_hostile_long1_legacy_bin_in_a_directory_is_found_and_reported(tmp_path, canary):
    models = tmp_path / "models"
    write(models / "pytorch_model.bin", corpus.long1_legacy(evil_pickle(canary)))
    code, report, _ = check(models)
    assert code == 1 and report["summary"]["models"] == 1
    assert findings(report) == ["BG900"]

    code, report, _ = check(models / "pytorch_model.bin")
    assert code == 1 and findings(report) == ["BG900"]


@pytest.mark.parametrize("name", ["model.pt", "weights.bin"])
@pytest.mark.parametrize("start", [b"\x8a\x01\x01", b"K\x07", b"J\x00\x00\x00\x01",
                                   b"X\x01\x00\x00\x00a", b"G" + bytes(8)])
def test_pickles_without_a_proto_header_are_scanned(tmp_path, canary, name, start):
    """Without PROTO a pickle may start with any opcode: here one that pushes a value which
    is popped again (`start` + POP), then a protocol 2 pickle minus its header."""
    write(tmp_path / "models" / name, start + b"0" + evil_pickle(canary)[2:])
    code, report, _ = check(tmp_path / "models")
    assert code == 1 and findings(report) == ["BG900"]


def test_bin_files_that_are_clearly_not_models_are_still_skipped(tmp_path):
    models = tmp_path / "models"
    write(models / "zeros.bin", bytes(4096))
    write(models / "text.bin", b"hello, this is a vocabulary file\n" * 20)
    write(models / "floats.bin", bytes(range(256)) * 16)
    factories.mlp(models / "real.onnx", sizes=(4, 4))  # a directory without models is an error
    code, report, _ = check(models)
    assert code == 0 and [Path(m["path"]).name for m in report["models"]] == ["real.onnx"]


def test_legacy_tar_checkpoint_named_bin_is_reported_not_skipped(tmp_path, canary):
    """torch.load still reads the pre-1.0 tar format (unpickling its members)."""
    models = tmp_path / "models"
    models.mkdir()
    with tarfile.open(models / "pytorch_model.bin", "w") as archive:
        for member in ("storages", "tensors", "pickle"):
            data = evil_pickle(canary)
            info = tarfile.TarInfo(member)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    code, report, err = check(models)
    assert code == 2 and findings(report) == ["BG000"] and "tar archive" in err


def test_sniffing_recognises_pickles_by_their_opcodes():
    assert sniff(corpus.long1_magic(), ".bin") == "pickle"
    for protocol in range(6):
        data = pickle.dumps({"a": [1, 2.0, "x"]}, protocol=protocol)
        assert sniff(data, ".bin") == "pickle" and starts_like_pickle(data[:5])
    long_pickle = pickle.dumps(list(range(1000)), protocol=0)
    assert starts_like_pickle(long_pickle[:512])  # cut short by the sniffing window: still one
    for not_a_pickle in (b"", bytes(512), b"garbage", b"hello world\n", b"\x08\x07\x12\x04onnx",
                         b"\x80\x06K\x01.", b"\x80\x02h\x05."):
        assert not starts_like_pickle(not_a_pickle), not_a_pickle
    # A V7 tar header has no "ustar" magic, only a valid checksum; tarfile (torch.load) reads it.
    header = bytearray(tarfile.TarInfo("storages").tobuf(tarfile.GNU_FORMAT))
    header[257:265] = bytes(8)
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    assert sniff(bytes(header), ".bin") == "tar"


# --- 6. pickles that cost exponential time or unbounded work without naming any global ---------


@pytest.mark.parametrize("container", ["dict", "set", "frozenset", "ordered_dict"])
def test_hash_bomb_is_refused_without_hashing(tmp_path, container):
    bomb = corpus.hash_bomb(64, container)
    assert len(bomb) < 400 and scan_globals(bomb) in ([], ["collections.OrderedDict"])
    path = write(tmp_path / "bomb.pkl", bomb)
    code, report, err = check(path)
    assert code == 2 and findings(report) == ["BG000"]
    assert "hashing keys like it can take exponential time" in err


def test_hash_bomb_inside_a_checkpoint_and_in_error_messages(tmp_path):
    path = write(tmp_path / "bomb.pt", corpus.sequential_zip([
        corpus.local_record("arc/data.pkl", corpus.hash_bomb(64)),
        corpus.local_record("arc/version", b"3\n")]))
    # The same tuple where a message would have repr()'d it: a storage reference.
    bomb_tuple = b")" + b"q\x00h\x00\x86" * 64
    persistent = write(tmp_path / "pid.pt", corpus.sequential_zip([
        corpus.local_record("arc/data.pkl", b"\x80\x02(X\x07\x00\x00\x00storage" + bomb_tuple
                            + b"tQ."),
        corpus.local_record("arc/version", b"3\n")]))
    code, report, err = check(path, persistent)
    assert code == 2 and findings(report) == ["BG000", "BG000"]
    assert "malformed storage reference" in err


def test_huge_int_key_is_a_clean_unreadable_model(tmp_path):
    facts = read_model(write(tmp_path / "big.pkl", corpus.huge_int_key_pickle()))
    assert "an integer of 16610 bits" in facts.unreadable
    # As a value it is harmless, and names in messages never try to print it.
    facts = read_model(write(tmp_path / "value.pkl", pickle.dumps([10**5000], protocol=2)))
    assert facts.unreadable is None and facts.params == 0
    size = pickle.dumps((10**5000,), protocol=2)[2:-1]  # the LONG4 opcode and a TUPLE1
    facts = read_model(write(tmp_path / "size.pkl", b"\x80\x02ctorch\nSize\n" + size + b"R."))
    assert "torch.Size is not a short sequence of plausible" in facts.unreadable


def test_every_opcode_copied_element_and_visit_is_charged(tmp_path, monkeypatch):
    monkeypatch.setattr(pickle_scan, "MAX_PICKLE_WORK", 3000)
    many = write(tmp_path / "many.pkl", pickle.dumps([None] * 2000, protocol=2))
    assert "steps to read" in read_model(many).unreadable

    # 1,006 opcodes, scanned and unpickled: 2,012 steps; visiting the list's 1,000 items for
    # tensors costs 1,001 more.
    listed = write(tmp_path / "listed.pkl", pickle.dumps([None] * 1000, protocol=2))
    monkeypatch.setattr(pickle_scan, "MAX_PICKLE_WORK", 2500)
    assert "steps to read" in read_model(listed).unreadable
    monkeypatch.setattr(pickle_scan, "MAX_PICKLE_WORK", 3100)
    assert read_model(listed).unreadable is None

    # About 1,100 opcodes, but each set(...) copies a shared 100-element list: 20,000 elements.
    shared = b"](" + b"".join(b"K%c" % i for i in range(100)) + b"eq\x01"
    calls = b"cbuiltins\nset\nq\x000" + shared + b"0" + b"h\x00h\x01\x85R0" * 200
    path = write(tmp_path / "copies.pkl", b"\x80\x02" + calls + b"N.")
    assert "steps to read" in read_model(path).unreadable


def test_unpickling_writes_only_where_torch_writes(tmp_path):
    cases = {
        # BUILD would set attributes on bloatguard's own placeholder function for torch.Size.
        b"\x80\x02ctorch\nSize\nN}X\x0c\x00\x00\x00__defaults__)s\x86b.": "BUILD on",
        # SETITEM with a slice key splices a whole list per opcode.
        b"\x80\x02]cbuiltins\nslice\nNN\x86R]s.": "SETITEM into",
        b"\x80\x02cbuiltins\nbytearray\nC\x01a\x85R(K\x01e.": "APPENDS into",
    }
    for data, refusal in cases.items():
        facts = read_model(write(tmp_path / "case.pkl", data))
        assert refusal in facts.unreadable, (data, facts.unreadable)
    assert torch_reader._size.__defaults__ == ((),)


def test_scanner_bounds_what_global_names_can_cost():
    long_name = b"\x80\x04\x8c\x02os\x8d" + (5000).to_bytes(8, "little") + b"x" * 5000 + b"\x93."
    assert scan_globals(long_name) == [pickle_scan.TOO_LONG]  # named unsafe without joining it
    many = b"\x80\x02" + b"".join(b"cm\nf%d\n0" % i for i in range(10_001)) + b"N."
    with pytest.raises(pickle_scan.PickleScanError, match="more than 10000 different globals"):
        scan_globals(many)


# --- 7. zip bombs ----------------------------------------------------------------------------


def test_bzip2_record_is_refused_before_it_is_inflated(tmp_path):
    """A record declaring 1 KiB whose bzip2 stream expands to 64 MiB: miniz (torch) reads
    only stored and deflated records, so it is refused from the central directory."""
    facts = read_model(write(tmp_path / "bomb.pt", corpus.bzip2_bomb_zip()))
    assert "compression method 12" in facts.unreadable
    assert "torch.load cannot read" in facts.unreadable


def test_deflated_records_may_inflate_only_so_much(tmp_path, monkeypatch):
    monkeypatch.setattr(torch_reader, "MAX_INFLATED_BYTES", 2**20)
    path = tmp_path / "deflated.pt"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("arc/data.pkl", pickle.dumps({}, protocol=2))
        archive.writestr("arc/code/big.py", bytes(2 * 2**20))
    assert "more than 1 MiB" in read_model(path).unreadable


def test_overlapping_records_are_refused(tmp_path, canary):
    path = write(tmp_path / "overlap.pt",
                 corpus.overlapping_zip(pickle.dumps({}, protocol=2), evil_pickle(canary)))
    with zipfile.ZipFile(path) as archive:  # a valid zip to zipfile, entry by entry
        assert archive.read("arc/extra.pkl") == evil_pickle(canary)
    facts = read_model(path)
    assert "arc/extra.pkl overlaps the record before it" in facts.unreadable
