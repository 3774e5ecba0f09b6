"""Never lose the original: `bloatguard fix` killed (SIGKILL, no cleanup handlers) at every step
of a write leaves a model that loads and computes what it did, plus only leftovers that are
clearly named and that the next run removes. And a write that fails leaves nothing behind.
And the clean-up removes nothing but what this user's own runs provably left: a journal
planted in a checkout deletes nothing."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

from bloatguard import secret
from bloatguard.fix import write

from fix_models import messy, rand, run

REPO = Path(__file__).resolve().parent.parent
DEAD_PID = 999999999  # above any pid_max: never a live process


@pytest.fixture(autouse=True)
def user_cache(tmp_path_factory, monkeypatch):
    """A signing key of this test's own (the fix subprocesses inherit the variable)."""
    cache = tmp_path_factory.mktemp("xdg-cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return cache


def start_fix(path: Path, pause: str) -> subprocess.Popen:
    env = {**os.environ, write.PAUSE_ENV: pause, f"{write.PAUSE_ENV}_SECONDS": "120",
           "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "bloatguard", "fix", str(path), "--no-latency"],
                            cwd=path.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def wait_for_pause(process: subprocess.Popen, step: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stderr], [], [], 0.5)
        if ready:
            line = process.stderr.readline()
            seen.append(line)
            if line.strip() == f"{write.PAUSE_MARK}{step}":
                return
        if process.poll() is not None:
            break
    process.kill()
    raise AssertionError(f"the fix never paused at {step!r}: {''.join(seen)}")


def kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    process.stdout.close()
    process.stderr.close()


def leftovers(directory: Path, expected: set[str]) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name not in expected)


def is_clearly_named(name: str) -> bool:
    return write.is_leftover_name(name)


def outputs(path: Path) -> list[np.ndarray]:
    return run(path, {"x": rand(1, 32, seed=7)})


@pytest.mark.parametrize("external, steps", [
    (False, ["temp-written", "before-replace", "after-replace"]),
    (True, ["data-written", "before-replace", "after-replace"]),
])
def test_killed_mid_write_loses_nothing(tmp_path, external, steps):
    path = messy(tmp_path / "m.onnx", external=external)
    expected_outputs = outputs(path)
    originals = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    for step in steps:
        process = start_fix(path, step)
        wait_for_pause(process, step)
        kill(process)
        # Whatever the step, the model at its path loads (with its data) and computes the same.
        onnx.checker.check_model(onnx.load(str(path)))
        for want, got in zip(expected_outputs, outputs(path), strict=True):
            assert np.array_equal(want, got), step
        if step != "after-replace":
            assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name in originals} == originals
        extra = leftovers(tmp_path, set(originals))
        assert all(is_clearly_named(name) for name in extra), (step, extra)
        if step == "after-replace":
            break  # the new model is in place; the next run drops the old data file
        # The next run's clean-up removes what the killed one left.
        write.clean_stale(tmp_path)
        assert leftovers(tmp_path, set(originals)) == []
    # A full run afterwards completes and leaves only the model (and its one data file).
    done = subprocess.run([sys.executable, "-m", "bloatguard", "fix", str(path), "--no-latency"],
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    names = sorted(p.name for p in tmp_path.iterdir())
    if external:
        assert len(names) == 2 and names[0] == "m.onnx" and write._DATA.match(names[1])
    else:
        assert names == ["m.onnx"]
    for want, got in zip(expected_outputs, outputs(path), strict=True):
        assert np.array_equal(want, got)


def test_a_failed_write_leaves_the_original_and_no_temporary_file(tmp_path, monkeypatch):
    path = messy(tmp_path / "m.onnx", external=True)
    candidate_dir = tmp_path / "candidate"
    candidate_dir.mkdir()
    model = onnx.load(str(path))
    onnx.save_model(model, str(candidate_dir / "model.onnx"), save_as_external_data=True,
                    location="model.onnx.data", size_threshold=0)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    real_replace = os.replace

    def failing_replace(src, dst):
        if str(dst).endswith("m.onnx"):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        write.write_model(candidate_dir / "model.onnx", path, expected_params=None, model_format="onnx")
    monkeypatch.undo()
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert after == before  # same files, same bytes: the new data file was removed as well
    # A candidate whose parameter count does not match what was verified is never put in place.
    with pytest.raises(write.WriteError, match="parameters"):
        write.write_model(candidate_dir / "model.onnx", path, expected_params=1, model_format="onnx")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_clean_stale_removes_nothing_a_signed_journal_does_not_name(tmp_path):
    """Leftover-looking names are not proof: without this user's journal they stay."""
    path = messy(tmp_path / "m.onnx", external=True)
    planted = [tmp_path / f".m.onnx.bloatguard-tmp-{DEAD_PID}-0123abcd",
               tmp_path / "m.onnx.0123456789ab.data", tmp_path / "weights.0123456789ab.data"]
    for file in planted:
        file.write_bytes(b"x")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert write.clean_stale(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert path.exists()


def plant_journal(directory: Path, names: list[str], signature: str | None = None) -> Path:
    journal = directory / f".m.onnx.bloatguard-drop-{DEAD_PID}-0123abcd"
    content = names if signature is None else {"names": names, "signature": signature}
    journal.write_text(json.dumps(content))
    return journal


def victims(directory: Path) -> list[Path]:
    """What a planted journal would like deleted: a README and an untracked checkpoint."""
    readme = directory / "README.md"
    readme.write_text("# my project\n")
    checkpoint = directory / "checkpoint.pt"
    checkpoint.write_bytes(b"weeks of training")
    return [readme, checkpoint]


def forge_journal(kind: str, directory: Path, names: list[str]) -> Path:
    """A journal that is not this user's journal for this place: the old unsigned format, a
    signature under another key, or a genuine journal copied from another directory."""
    if kind == "unsigned":
        return plant_journal(directory, names)
    if kind == "other key":
        return plant_journal(directory, names, "0" * 64)
    elsewhere = directory.parent / "elsewhere"
    elsewhere.mkdir()
    genuine = elsewhere / f".m.onnx.bloatguard-drop-{DEAD_PID}-0123abcd"
    return plant_journal(directory, names, secret.sign(write._journal_payload(genuine, names)))


@pytest.mark.parametrize("kind", ["unsigned", "other key", "copied"])
def test_a_planted_journal_deletes_nothing(tmp_path, run_cli, monkeypatch, kind):
    """`bloatguard fix` in a checkout holding a journal it did not write: the journal's names
    (a README, an untracked checkpoint) survive, and so does the journal."""
    project = tmp_path / "project"
    project.mkdir()
    path = messy(project / "m.onnx")
    files = victims(project)
    journal = forge_journal(kind, project, [f.name for f in files])
    monkeypatch.chdir(project)
    code, out, err = run_cli("fix", str(path), "--no-latency")
    assert code == 0, out + err
    assert all(file.exists() for file in files) and journal.exists()


def test_a_genuine_journal_of_a_killed_run_is_followed(tmp_path):
    """The signed journal of a run killed before its swap: its temporary file and its new,
    unreferenced data file go; the data the model still uses, and other files, stay."""
    path = messy(tmp_path / "m.onnx", external=True)
    [data] = [p.name for p in tmp_path.iterdir() if p.name != "m.onnx"]
    temporary = tmp_path / f".m.onnx.bloatguard-tmp-{DEAD_PID}-0123abcd"
    new_data = tmp_path / "m.onnx.0123456789ab.data"
    unrelated = victims(tmp_path)
    for file in (temporary, new_data):
        file.write_bytes(b"x")
    names = [temporary.name, new_data.name, data]
    journal = tmp_path / f".m.onnx.bloatguard-drop-{DEAD_PID}-0123abcd"
    plant_journal(tmp_path, names, secret.sign(write._journal_payload(journal, names)))
    removed = write.clean_stale(tmp_path)
    assert sorted(p.name for p in removed) == sorted([temporary.name, new_data.name, journal.name])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, data, *(f.name for f in unrelated)])
