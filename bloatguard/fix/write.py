"""Writing a verified candidate over the original without ever losing it.

The protocol, for the model file itself:

1. write the bytes to a temporary file in the target's directory (same filesystem, so the
   final rename is atomic), named `.<name>.bloatguard-tmp-<pid>-<random>`, and fsync it;
2. read it back: the bytes hash to what was verified and the model reader accepts it with
   the verified parameter count;
3. `os.replace` it over the target and fsync the directory.

A model with external data gets a *new* data file, `<model>.<digest>.data`, written the same
way and renamed into place before the `.onnx` is replaced (the old `.onnx` keeps pointing at
the old data until then); the old data file is removed only after the swap.

Before it creates anything, a write records in a journal every file it may create and every
old data file the swap makes obsolete, so a process killed at any point leaves either the old
pair or the new pair intact, plus leftovers the journal names: the next run (`clean_stale`)
removes each named file that no model in the directory references. A journal is followed only
if it carries this user's signature over its exact place and content (bloatguard.secret): a
checkout is written by others, and a planted journal must not delete a README. Nothing else is
ever removed, however it is named.

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
# Written before a write creates anything: what to remove if the process dies.
_JOURNAL = re.compile(r"^\.(?P<name>.+)\.bloatguard-drop-(?P<pid>\d+)-[0-9a-f]{8}$")
_MAX_JOURNAL_BYTES = 1 << 16  # a journal lists a handful of names; anything longer is not ours
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
    """Finish or undo what killed runs left in `directory`: for each journal of a process that
    is gone and that this user signed for this place, remove the files it names that no model
    references (temporary files, the new data file of an unfinished swap, the old data file of
    a finished one), then the journal itself."""
    removed: list[Path] = []
    try:
        journals = [entry for entry in directory.iterdir() if _JOURNAL.match(entry.name)]
    except OSError:
        return removed
    for journal in sorted(journals):
        match = _JOURNAL.match(journal.name)
        assert match is not None  # journals are the entries it matches
        if _alive(int(match["pid"])):
            continue
        names = _signed_entries(journal)
        if names is None:
            continue  # not provably ours: neither followed nor removed
        for name in names:
            leftover = directory / name
            if leftover.is_file() and not _referenced(directory, name):
                _unlink(leftover, removed)
        _unlink(journal, removed)
    return removed


def _journal_payload(journal: Path, names: list[str]) -> bytes:
    """What a journal's signature covers: its own absolute place and the names it lists."""
    import json

    place = os.fsdecode(journal.parent.resolve() / journal.name)
    return json.dumps({"journal": place, "names": names}, sort_keys=True).encode()


def _signed_entries(journal: Path) -> list[str] | None:
    """The names a journal lists, or None unless this user signed exactly it, here."""
    import json

    from bloatguard import secret

    if journal.is_symlink() or not journal.is_file():  # a FIFO would block the read
        return None
    try:
        with open(journal, "rb") as handle:
            content = json.loads(handle.read(_MAX_JOURNAL_BYTES))
    except (OSError, ValueError):
        return None
    if not isinstance(content, dict):
        return None
    names = content.get("names")
    if not (isinstance(names, list) and all(_plain_name(name) for name in names)):
        return None
    return names if secret.verify(_journal_payload(journal, names), content.get("signature")) else None


def _plain_name(name: object) -> bool:
    """A file name in the journal's own directory: a journal never reaches anywhere else."""
    return (isinstance(name, str) and name not in ("", ".", "..")
            and "/" not in name and "\\" not in name and "\0" not in name)


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
    journal = _journal(target, [temporary.name])
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
        _unlink(journal, [])
        raise
    _unlink(journal, [])
    return target


def _write_onnx(candidate: Path, target: Path, expected_params: int | None) -> Path:
    from bloatguard.formats.onnx import external_locations

    sources = external_locations(candidate)
    if len(sources) > 1:
        raise WriteError(f"the candidate has {len(sources)} external data files")
    old_locations = external_locations(target) if target.exists() else []
    data = _DataPlan(candidate.parent / sources[0], target) if sources else None
    temporary = temporary_path(target)
    stale = [name for name in old_locations if data is None or name != data.final.name]
    journal = _journal(target, [*(data.may_create if data else []), temporary.name, *stale])
    created: list[Path] = [journal]
    try:
        if data is not None:
            data.place(created)
        payload = _relocated(candidate, data.final.name) if data else candidate.read_bytes()
        created.append(temporary)
        write_synced(temporary, payload)
        _pause("temp-written")
        _verify(temporary, target, hashlib.sha256(payload).hexdigest(), expected_params)
        keep_mode(target, temporary)
        _pause("before-replace")
        os.replace(temporary, target)
        created.remove(temporary)
        sync_directory(target.parent)
        # The new pair is in place: nothing of it may be removed any more, and the journal
        # stays until the old data is gone, so a run killed from here on is finished next time.
        created.clear()
        _pause("after-replace")
    except BaseException:
        for path in created:
            _unlink(path, [])
        raise
    for location in stale:
        old = target.parent / location
        if old.is_file() and not _referenced(target.parent, location):
            _unlink(old, [])
    _unlink(journal, [])
    return target


def _relocated(candidate: Path, data_name: str) -> bytes:
    """The candidate's bytes with every external data location renamed to `data_name`.
    Parsed only here: without external data the candidate's bytes are written as they are."""
    import onnx
    from onnx.external_data_helper import _get_all_tensors

    model = onnx.load(str(candidate), load_external_data=False)
    for tensor in _get_all_tensors(model):
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = data_name
    return model.SerializeToString()


def _journal(target: Path, names: list[str]) -> Path:
    """Record, signed, before anything is created: the files this write may leave behind if
    it dies (its temporary files, a new data file) and the old data files it makes obsolete."""
    import json

    from bloatguard import secret

    journal = target.parent / f".{target.name}.bloatguard-drop-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        signature = secret.sign(_journal_payload(journal, names))
    except secret.KeyUnavailable as exc:
        raise WriteError(str(exc)) from None
    write_synced(journal, json.dumps({"names": names, "signature": signature}).encode())
    return journal


class _DataPlan:
    """The candidate's data file copied next to the target, under a name no current file
    uses for other bytes: `<model>.<digest>.data`."""

    def __init__(self, source: Path, target: Path) -> None:
        self.source = source
        self.digest = _file_digest(source)[:12]
        self.final = target.parent / f"{target.name}.{self.digest}.data"
        self.temporary = temporary_path(self.final)
        # The same bytes may already be in place under this name (an idempotent re-run).
        self.exists = self.final.exists()
        if self.exists and _file_digest(self.final)[:12] != self.digest:
            raise WriteError(f"{self.final} exists with other contents")

    @property
    def may_create(self) -> list[str]:
        return [] if self.exists else [self.temporary.name, self.final.name]

    def place(self, created: list[Path]) -> None:
        if self.exists:
            return
        created.append(self.temporary)
        with open(self.source, "rb") as reader, open(self.temporary, "xb") as writer:
            shutil.copyfileobj(reader, writer, 1 << 20)
            writer.flush()
            os.fsync(writer.fileno())
        _pause("data-written")
        if _file_digest(self.temporary) != _file_digest(self.source):
            raise WriteError(f"{self.temporary} does not read back as written")
        os.replace(self.temporary, self.final)
        created.remove(self.temporary)
        created.append(self.final)
        sync_directory(self.final.parent)


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
