"""One reader per format. `read_model` sniffs the file and hands it to the right reader; readers
raise UnreadableModel for bad files and never execute anything stored in them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from bloatguard.errors import UnreadableModel
from bloatguard.facts import ModelFacts
from bloatguard.formats.sniffing import SNIFF_BYTES
from bloatguard.lfs import LFS_POINTER_PREFIX, lfs_object_path, lfs_oid

ZIP_MAGIC = b"PK\x03\x04"
EMPTY_ZIP_MAGIC = b"PK\x05\x06"
GGUF_MAGIC = b"GGUF"
TFLITE_MAGIC = b"TFL3"


def sniff(head: bytes, suffix: str) -> str:
    """The format a file's first bytes (and, for protobuf, its extension) say it has."""
    if head.startswith(LFS_POINTER_PREFIX):
        return "lfs-pointer"
    if head.startswith((ZIP_MAGIC, EMPTY_ZIP_MAGIC)):
        return "zip"
    if head.startswith(GGUF_MAGIC):
        return "gguf"
    if head[4:8] == TFLITE_MAGIC:  # the flatbuffer's file identifier, after the root offset
        return "tflite"
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000:
        # Before pickles: a header length of 640 starts with the bytes of PROTO 2.
        return "safetensors"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"7z\xbc\xaf\x27\x1c"):
        return "7z"
    if _is_tar(head):
        return "tar"
    if suffix == ".onnx" and not head.startswith(b"\x80"):
        return "onnx"  # protobuf has no magic number; a pickle with a PROTO header is a pickle
    from bloatguard.formats.pickle_scan import starts_like_pickle

    # A pickle has no magic number either, and torch.load accepts any pickle (legacy files need
    # only that the first one *evaluates* to their magic number): recognise one by whether its
    # first opcodes are a valid program for the unpickler.
    if starts_like_pickle(head):
        return "pickle"
    return "onnx" if suffix == ".onnx" else "unknown"


def _is_tar(head: bytes) -> bool:
    """A tar header, as tarfile (and so torch.load, which still reads legacy tar checkpoints)
    accepts it: the ustar magic, or failing that (old V7 archives have none) a valid checksum."""
    if head[257:262] == b"ustar":
        return True
    import tarfile

    try:
        tarfile.TarInfo.frombuf(head[:512], "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


def read_head(path: Path, size: int = SNIFF_BYTES) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(size)


def read_model(path: Path, display: str | None = None) -> ModelFacts:
    """Facts about the model at `path`. Never raises for a bad file: the facts say what is wrong."""
    display = display or str(path)
    try:
        facts = _read(path, display)
        facts.file = facts.file or path
        return facts
    except UnreadableModel as exc:
        return _unreadable(path, display, exc.cause, exc.remedy)
    except OSError as exc:
        return _unreadable(path, display, f"cannot read the file ({exc.strerror or exc})",
                           "check the path and its permissions")
    except MemoryError:
        return _unreadable(path, display, "the model is too large to read in memory",
                           "check the file's declared sizes; it may be corrupt")
    except Exception as exc:  # a reader bug must not cost the user the rest of the report
        if os.environ.get("BLOATGUARD_DEBUG"):
            raise
        return _unreadable(path, display, f"internal error while reading ({type(exc).__name__}: {exc})",
                           "please report this; set BLOATGUARD_DEBUG=1 for a traceback")


def _unreadable(path: Path, display: str, cause: str, remedy: str) -> ModelFacts:
    # lstat, and 0 for anything but a regular file: the size of whatever a symlink points at
    # (outside the checked tree, maybe) is none of the report's business.
    try:
        status = path.lstat()
        size = status.st_size if stat.S_ISREG(status.st_mode) else 0
    except OSError:
        size = 0
    facts = ModelFacts(path=display, format="unknown", file_size=size)
    facts.unreadable = cause
    facts.remedy = remedy
    return facts


def require_regular_file(path: Path) -> None:
    """Refuse, without opening it, a model path that is not a regular file.

    A symlink could point anywhere (~/.ssh, /proc/self/environ): following it would measure,
    and quote the bytes of, a file outside the checked tree, so it is reported by its own name
    only. A FIFO would block the first read forever, a device never end.
    """
    mode = path.lstat().st_mode
    if stat.S_ISLNK(mode):
        raise UnreadableModel("the model path is a symbolic link, which bloatguard does not "
                              "follow (it could point outside the checked tree)",
                              "commit the model file itself, or exclude the link in the config")
    if not stat.S_ISREG(mode):
        raise UnreadableModel(f"not a regular file (a {_file_kind(mode)}), so not a model",
                              "remove it, or exclude it in the config")


_FILE_KINDS = ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"),
               (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"))


def _file_kind(mode: int) -> str:
    return next((kind for test, kind in _FILE_KINDS if test(mode)), "special file")


def _read(path: Path, display: str, suffix: str | None = None) -> ModelFacts:
    require_regular_file(path)
    if path.stat().st_size == 0:
        raise UnreadableModel("the file is empty", "re-export the model or restore it from git")
    head = read_head(path)
    kind = sniff(head, suffix or path.suffix.lower())
    if kind == "lfs-pointer":
        oid = lfs_oid(read_head(path, 1024))
        fetched = lfs_object_path(path, oid) if oid else None
        if fetched is not None:
            facts = _read(fetched, display, path.suffix.lower())
            facts.file_size = fetched.stat().st_size
            facts.file = fetched
            facts.note("measured the Git LFS object the pointer names")
            return facts
        raise UnreadableModel("this is a Git LFS pointer, not the model",
                              "run `git lfs pull` (in GitHub Actions: `lfs: true` on actions/checkout)")
    if kind == "onnx":
        from bloatguard.formats import onnx

        return onnx.read(path, display)
    if kind in ("zip", "pickle"):
        from bloatguard.formats import torch

        return torch.read(path, display, kind)
    if kind == "safetensors":
        from bloatguard.formats import safetensors

        return safetensors.read(path, display)
    if kind == "gguf":
        from bloatguard.formats import gguf

        return gguf.read(path, display)
    if kind == "tflite":
        from bloatguard.formats import tflite

        return tflite.read(path, display)
    if kind in ("gzip", "7z", "tar"):
        raise UnreadableModel(f"a {kind} archive, not a model file bloatguard can read",
                              "commit the model itself, not an archive of it")
    raise UnreadableModel("unsupported format (not ONNX, PyTorch, safetensors, TFLite or GGUF by "
                          "its first bytes)",
                          "check the file, or exclude it with `exclude` in the config")
