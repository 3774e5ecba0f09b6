"""Replacing files so that a reader (or a crash) sees the old file or the new one, never half of
one: write a temporary file beside the target, sync it, give it the target's mode, rename it
over the target. `bloatguard fix` builds its multi-file swap from these pieces; `init` and the
metric cache use `replace_file`.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

# Temporary files are named ".<target name>.bloatguard-tmp-<pid>-<hex>", so that a clean-up can
# tell them from user files and from a live process's (fix/write.is_leftover_name).
TEMP_MARK = ".bloatguard-tmp-"


def temporary_path(target: Path) -> Path:
    return target.parent / f".{target.name}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}"


def write_synced(path: Path, payload: bytes, *, sync: bool = True) -> None:
    """Create `path` (never overwriting) with the umask's mode and write `payload` to disk."""
    with open(path, "xb") as handle:
        handle.write(payload)
        if sync:
            handle.flush()
            os.fsync(handle.fileno())


def keep_mode(target: Path, replacement: Path) -> None:
    """Give `replacement` the permissions of the `target` it is about to replace, if any."""
    try:
        shutil.copymode(target, replacement)
    except FileNotFoundError:
        pass


def sync_directory(directory: Path) -> None:
    """fsync the directory so a rename in it survives a power cut."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def replace_file(target: Path, payload: bytes, *, sync: bool = True) -> None:
    """Put `payload` at `target` atomically, keeping an existing target's permissions.
    `sync=False` skips the fsyncs, for files whose loss costs only time (a cache)."""
    temporary = temporary_path(target)
    try:
        write_synced(temporary, payload, sync=sync)
        keep_mode(target, temporary)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    if sync:
        sync_directory(target.parent)
