"""Writing a verified candidate over the original without ever losing it.

The protocol, for the model file itself:

1. write the bytes to a temporary file in the target's directory (same filesystem, so the
   final rename is atomic), named `.<name>.bloatguard-tmp-<pid>-<random>`, and fsync it;
2. read it back: the bytes hash to what was verified and the model reader accepts it with
   the verified parameter count;
3. `os.replace` it over the target and fsync the directory.

A model with external data gets a *new* data file, `<model>.<digest>.data`, written the same
way and renamed into place before the `.onnx` is replaced (the old `.onnx` keeps pointing at
the old data until then); the old data file is removed only after the swap, as a small
journal written before the swap says. So a process killed at any point leaves either the old
pair or the new pair intact, plus at most a temporary file, an unreferenced new data file or
a journal, all named so that the next run can tell they are leftovers and finish the job
(`clean_stale`).

Before anything is written, `uncommitted` refuses targets whose current bytes git does not
have (unstaged changes, untracked files) unless --force: a fix is undoable with git.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import sys
import time
from pathlib import Path

from bloatguard.atomic import keep_mode, sync_directory, temporary_path, write_synced

_TEMP = re.compile(r"^\.(?P<name>.+)\.bloatguard-tmp-(?P<pid>\d+)-[0-9a-f]{8}$")
_DATA = re.compile(r"^(?P<model>.+)\.(?P<digest>[0-9a-f]{12})\.data$")
# Written before a swap: the old data files to delete once the new model is in place.
_JOURNAL = re.compile(r"^\.(?P<name>.+)\.bloatguard-drop-(?P<pid>\d+)-[0-9a-f]{8}$")
# Test hook: pause at the named write steps (comma-separated, or "*"), announcing each on
# stderr, so a test can SIGKILL the process at that exact point.
PAUSE_ENV = "BLOATGUARD_FIX_PAUSE"
PAUSE_MARK = "bloatguard-fix-pause: "


class WriteError(Exception):
    """The fix could not be written; the original is untouched."""


# --- git --------------------------------------------------------------------------------------

def uncommitted(path: Path) -> str | None:
    """Why overwriting `path` could lose data git does not have, or None when it cannot: the
    file is outside any repository, or its bytes are committed or staged (then `git checkout`
    or `git restore --staged` brings them back)."""
    from bloatguard.errors import BloatguardError
    from bloatguard.gitbase import GitRepo

    if not path.exists():
        return None
    try:
        repo = GitRepo(path.parent)
    except BloatguardError:
        return None
    import git

    # GitRepo makes pathspecs literal and keeps the repository's own config from running
    # commands: the repository above a downloaded model may not be the user's.
    spec = repo.relpath(path)
    try:
        if not repo.git.ls_files("-z", "--", spec):
            return "is not tracked by git, so its current bytes exist nowhere else"
        if repo.git.diff("--name-only", "-z", "--no-ext-diff", "--no-textconv", "--", spec):
            return "has changes that are neither staged nor committed"
    except git.GitCommandError as exc:
        return f"git cannot tell whether it has uncommitted changes ({exc.status})"
    return None


# --- leftovers --------------------------------------------------------------------------------

def is_leftover_name(name: str) -> bool:
    """Whether a file name is one this module gives to temporary files, new data files or
    journals (what a killed run can leave behind)."""
    return bool(_TEMP.match(name) or _DATA.match(name) or _JOURNAL.match(name))


def clean_stale(directory: Path) -> list[Path]:
    """Finish or undo what killed runs left in `directory`: journals of processes that are
    gone (their old data files are deleted once no model references them), temporary files
    of such processes, and `<model>.<digest>.data` files that no model references."""
    removed: list[Path] = []
    try:
        entries = sorted(directory.iterdir(), key=lambda p: not _JOURNAL.match(p.name))
    except OSError:
        return removed
    for entry in entries:
        match = _JOURNAL.match(entry.name)
        if match and not _alive(int(match["pid"])):
            for name in _journal_entries(entry):
                old = directory / name
                if old.is_file() and not _referenced(directory, name):
                    _unlink(old, removed)
            _unlink(entry, removed)
            continue
        match = _TEMP.match(entry.name)
        if match and not _alive(int(match["pid"])):
            _unlink(entry, removed)
            continue
        match = _DATA.match(entry.name)
        if match and (directory / match["model"]).is_file() and not _referenced(directory, entry.name):
            _unlink(entry, removed)
    return removed


def _journal_entries(journal: Path) -> list[str]:
    import json

    try:
        names = json.loads(journal.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    # Plain names in this directory only: a journal never reaches anywhere else.
    return [n for n in names if isinstance(n, str) and n and "/" not in n and "\\" not in n
            and n not in (".", "..")] if isinstance(names, list) else []


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _referenced(directory: Path, data_name: str) -> bool:
    """Whether any ONNX model in the directory names this data file."""
    from bloatguard.formats.onnx import external_locations

    for model in directory.glob("*.onnx"):
        if data_name in external_locations(model):
            return True
    return False


def _unlink(path: Path, removed: list[Path]) -> None:
    try:
        path.unlink()
        removed.append(path)
    except FileNotFoundError:
        pass


# --- writing ----------------------------------------------------------------------------------

def write_model(candidate: Path, target: Path, *, expected_params: int | None,
                model_format: str) -> Path:
    """Put the verified candidate at `target` (replacing it atomically if it exists)."""
    if model_format == "onnx":
        return _write_onnx(candidate, target, expected_params)
    return _write_file(candidate, target, expected_params)


def _write_file(candidate: Path, target: Path, expected_params: int | None) -> Path:
    data = candidate.read_bytes()
    temporary = temporary_path(target)
    try:
        write_synced(temporary, data)
        _pause("temp-written")
        _verify(temporary, target, hashlib.sha256(data).hexdigest(), expected_params)
        keep_mode(target, temporary)
        _pause("before-replace")
        os.replace(temporary, target)
        sync_directory(target.parent)
        _pause("after-replace")
    except BaseException:
        _unlink(temporary, [])
        raise
    return target


def _write_onnx(candidate: Path, target: Path, expected_params: int | None) -> Path:
    import onnx
    from onnx.external_data_helper import _get_all_tensors

    from bloatguard.formats.onnx import external_locations

    sources = external_locations(candidate)
    old_locations = external_locations(target) if target.exists() else []
    created: list[Path] = []
    data_path = None
    try:
        if sources:
            if len(sources) != 1:
                raise WriteError(f"the candidate has {len(sources)} external data files")
            data_path = _place_data(candidate.parent / sources[0], target, old_locations, created)
            # Parsed only here: without external data the candidate's bytes are written as they are.
            model = onnx.load(str(candidate), load_external_data=False)
            for tensor in _get_all_tensors(model):
                for entry in tensor.external_data:
                    if entry.key == "location":
                        entry.value = data_path.name
        payload = model.SerializeToString() if sources else candidate.read_bytes()
        temporary = temporary_path(target)
        created.append(temporary)
        write_synced(temporary, payload)
        _pause("temp-written")
        _verify(temporary, target, hashlib.sha256(payload).hexdigest(), expected_params)
        stale = [name for name in old_locations if data_path is None or name != data_path.name]
        journal = _journal(target, stale) if stale else None
        if journal is not None:
            created.append(journal)
        keep_mode(target, temporary)
        _pause("before-replace")
        os.replace(temporary, target)
        created.remove(temporary)
        sync_directory(target.parent)
        created.clear()  # the new pair is in place: nothing of it may be removed any more
        _pause("after-replace")
    except BaseException:
        for path in created:
            _unlink(path, [])
        raise
    for location in stale:
        old = target.parent / location
        if old.is_file() and not _referenced(target.parent, location):
            _unlink(old, [])
    if journal is not None:
        _unlink(journal, [])
    return target


def _journal(target: Path, names: list[str]) -> Path:
    """Record, before the swap, which old data files the swap makes obsolete."""
    import json

    journal = target.parent / f".{target.name}.bloatguard-drop-{os.getpid()}-{secrets.token_hex(4)}"
    write_synced(journal, json.dumps(names).encode())
    return journal


def _place_data(source: Path, target: Path, old_locations: list[str], created: list[Path]) -> Path:
    """Copy the candidate's data file next to the target under a name no current model uses."""
    digest = _file_digest(source)[:12]
    final = target.parent / f"{target.name}.{digest}.data"
    if final.name in old_locations:
        # The same bytes are already in place under this name (an idempotent re-run).
        if _file_digest(final)[:12] == digest:
            return final
        raise WriteError(f"{final} exists with other contents")
    temporary = temporary_path(final)
    created.append(temporary)
    with open(source, "rb") as reader, open(temporary, "wb") as writer:
        shutil.copyfileobj(reader, writer, 1 << 20)
        writer.flush()
        os.fsync(writer.fileno())
    _pause("data-written")
    if _file_digest(temporary) != _file_digest(source):
        raise WriteError(f"{temporary} does not read back as written")
    os.replace(temporary, final)
    created.remove(temporary)
    created.append(final)
    sync_directory(target.parent)
    return final


def _verify(path: Path, target: Path, digest: str, expected_params: int | None) -> None:
    """Read the written file back: the same bytes, and a model the reader accepts (read as
    the target's format: ONNX files are recognised by their suffix)."""
    from bloatguard.errors import UnreadableModel
    from bloatguard.formats import _read

    if _file_digest(path) != digest:
        raise WriteError(f"{path} does not read back as written")
    try:
        facts = _read(path, str(target), target.suffix.lower())
    except (UnreadableModel, OSError) as exc:
        raise WriteError(f"the written model does not load: {exc}") from None
    if expected_params is not None and facts.params != expected_params:
        raise WriteError(f"the written model holds {facts.params} parameters, "
                         f"the verified one {expected_params}")


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _pause(step: str) -> None:
    wanted = os.environ.get(PAUSE_ENV)
    if not wanted or (wanted != "*" and step not in wanted.split(",")):
        return
    sys.stderr.write(f"{PAUSE_MARK}{step}\n")
    sys.stderr.flush()
    time.sleep(float(os.environ.get(f"{PAUSE_ENV}_SECONDS", "60")))
