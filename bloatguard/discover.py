"""Which files are models: by extension, confirmed by magic bytes where the extension is
ambiguous (`.bin` is as often a data blob as a checkpoint), filtered by include/exclude."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from bloatguard.config import Config
from bloatguard.errors import BloatguardError
from bloatguard.formats import read_head, sniff

MODEL_SUFFIXES = {".onnx", ".pt", ".pth", ".ckpt", ".safetensors", ".bin", ".jit", ".tflite", ".gguf"}
# Suffixes that also name non-model files: such files count only when their bytes say model.
AMBIGUOUS_SUFFIXES = {".bin"}
# What a `.bin` must be to count: anything torch.load would load (a zip, a tar or a pickle of
# any protocol), safetensors, or a Git LFS pointer (reported, never skipped silently).
_BIN_MODEL_KINDS = {"zip", "tar", "pickle", "safetensors", "lfs-pointer"}
SKIP_DIRS = {".git", ".hg", ".svn", "__pycache__", "node_modules", ".venv", "venv",
             ".bloatguard_cache", ".tox", ".mypy_cache", ".pytest_cache"}


def is_model_file(path: Path) -> bool:
    suffix = path.suffix.lower()
    if suffix not in MODEL_SUFFIXES:
        return False
    if suffix in AMBIGUOUS_SUFFIXES:
        try:
            if not stat.S_ISREG(path.lstat().st_mode):
                # A symlink, FIFO or device with a model suffix is reported (BG000) without
                # being opened: a FIFO would block the sniff forever.
                return True
            return sniff(read_head(path), suffix) in _BIN_MODEL_KINDS
        except OSError:
            return False
    return True


def discover(paths: list[Path], config: Config) -> list[Path]:
    """Model files under `paths`, sorted, without duplicates.

    A file named explicitly is always checked (its format is sniffed when read); directories are
    walked for model suffixes. include/exclude globs apply to both. The walk does not follow
    symlinks: a linked directory is not entered, and a linked file with a model suffix is
    reported as a model (the reader refuses it as a link, BG000) instead of being read through.
    """
    found: dict[Path, None] = {}
    for path in paths:
        if not path.exists() and not path.is_symlink():
            raise BloatguardError(f"{path}: no such file or directory")
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                # os.walk lists a symlink to a directory among `dirs` (and never enters it).
                linked = [name for name in dirs if os.path.islink(os.path.join(root, name))]
                dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith(".")
                                 and d not in linked)
                for name in sorted(files + linked):
                    candidate = Path(root) / name
                    if is_model_file(candidate) and config.is_included(candidate):
                        found[candidate] = None
        elif config.is_included(path):
            found[path] = None
    return sorted(found, key=lambda p: p.as_posix())
