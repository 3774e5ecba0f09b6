"""The CLI on a corpus of damaged and hostile model files (tests/fuzz/corpus.py).

For every file: no traceback, no hang, exit code 0/1/2 (0 only when the mutation happened to
leave a valid model), one line on stderr per unreadable model naming the file, and nothing from
the file executed (the canary a malicious pickle would create never appears). The corpus is left
byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fuzz"))
import corpus  # noqa: E402

PER_FILE_SECONDS = 60


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    canary = root / "CANARY"
    files = corpus.build(root / "corpus", canary)
    return root, canary, files


def _digest(files: list[Path]) -> dict[str, str]:
    return {str(f): _fingerprint(f) for f in files}


def _fingerprint(file: Path) -> str:
    """A link by where it points (its target is not the corpus's), a FIFO by its kind (reading
    it would block), anything else by its bytes."""
    if file.is_symlink():
        return f"link to {os.readlink(file)}"
    if not file.is_file():
        return "special file"
    return hashlib.sha256(file.read_bytes()).hexdigest()


def _alarm(signum, frame):
    raise TimeoutError(f"a check took longer than {PER_FILE_SECONDS} s")


def test_cli_survives_the_corpus(built, run_cli):
    root, canary, files = built
    before = _digest(files)
    assert len(files) > 300
    outcomes: dict[int, int] = {}
    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        for file in files:
            signal.alarm(PER_FILE_SECONDS)
            code, out, err = run_cli("check", file, "--output-format", "json", "--no-latency", "--no-cache")
            signal.alarm(0)
            outcomes[code] = outcomes.get(code, 0) + 1
            assert code in (0, 1, 2), (file, code, err)
            assert "Traceback" not in err and "internal error" not in err, (file, err)
            report = json.loads(out)
            unreadable = [m for m in report["models"] if any(f["code"] == "BG000" for f in m["findings"])]
            if code == 2:
                assert unreadable, (file, err)
                lines = err.strip().splitlines()
                assert len(lines) == len(unreadable), (file, err)
                assert all(line.startswith(f"bloatguard: {report['models'][0]['path']}: ") for line in lines)
            else:
                assert not unreadable and err == "", (file, err)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert not canary.exists()
    assert _digest(files) == before
    # The corpus is hostile by construction: most files must be rejected, not measured.
    assert outcomes.get(2, 0) > len(files) // 2, outcomes


def test_malicious_pickles_are_errors_not_unreadable(built, run_cli):
    _, canary, files = built
    evil = [f for f in files if f.name.startswith("evil_")]
    assert len(evil) >= 20
    for file in evil:
        code, out, _ = run_cli("check", file, "--output-format", "json", "--no-latency", "--no-cache")
        findings = json.loads(out)["models"][0]["findings"]
        assert code == 1, file
        assert [f["code"] for f in findings] == ["BG900"], (file, findings)
    assert not canary.exists()


SECOND_ROUND = ("casefold_", "overlap_", "hash_bomb_", "huge_int_key", "bzip2_bomb")


def test_second_round_attacks_are_unreadable_models(built, run_cli):
    """Each is BG000 with its cause: none is measured, none hangs, none is followed or opened."""
    _, canary, files = built
    hostile = [f for f in files if f.name.startswith(SECOND_ROUND)
               or f.parent.name.startswith(("symlink_", "fifo_"))]
    assert len(hostile) >= 30
    for file in hostile:
        code, out, err = run_cli("check", file, "--output-format", "json", "--no-latency",
                                 "--no-cache")
        findings = json.loads(out)["models"][0]["findings"]
        assert code == 2 and [f["code"] for f in findings] == ["BG000"], (file, findings)
        assert "internal error" not in err, err
    assert not canary.exists()


def test_real_cli_process_prints_one_line_per_bad_file(built):
    """The installed entry point, as a separate process, over a directory of hostile files."""
    root, canary, files = built
    directory = files[0].parent.parent
    result = subprocess.run([sys.executable, "-m", "bloatguard", "check", str(directory),
                             "--output-format", "json", "--no-latency", "--no-cache"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    report = json.loads(result.stdout)
    # One line per unreadable model, besides the progress lines a long run prints to a log.
    lines = [line for line in result.stderr.splitlines() if not line.startswith("bloatguard: [")]
    assert report["summary"]["unreadable"] == len(lines)
    assert not canary.exists()
