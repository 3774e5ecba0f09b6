"""Names a pull request chooses (file names with newlines, say) never start a line of their own
in anything bloatguard prints: on a CI log such a line is a GitHub workflow command."""

from __future__ import annotations

import subprocess
import sys

import pytest

import factories

NAME = "evil\n::error::All models verified safe\n.onnx"


@pytest.mark.parametrize("output_format", ["github", "text", "markdown", "json", "sarif", "junit"])
def test_a_newline_in_a_file_name_cannot_start_a_workflow_command(tmp_path, output_format):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / NAME).write_bytes(factories.LFS_POINTER)  # BG000: a stderr line too
    factories.mlp(tmp_path / "models" / "ok.onnx")
    done = subprocess.run([sys.executable, "-m", "bloatguard", "check", "models",
                           "--output-format", output_format], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2
    for stream in (done.stdout, done.stderr):
        assert not any(line.startswith("::error::All models") for line in stream.splitlines()), stream
    assert "git lfs pull" in done.stderr and "\\n::error::All models verified safe\\n" in done.stderr


LEGACY = ("##[error]All models verified safe.onnx", "##[stop-commands]pause.onnx", "m##[add-mask]x.onnx")


@pytest.mark.parametrize("output_format", ["github", "text", "markdown", "json", "sarif", "junit"])
def test_no_legacy_runner_command_anywhere_in_a_line(tmp_path, output_format):
    """The runner takes `##[command]` from anywhere in a line (`##[stop-commands]` would silence
    every annotation after it): no name carries one into anything bloatguard prints, and JSON
    still gives the name back as it is."""
    import json

    (tmp_path / "models").mkdir()
    for name in LEGACY:
        factories.mlp(tmp_path / "models" / name)
    (tmp_path / "models" / "##[error]damaged.onnx").write_bytes(b"\x08\x07garbage")  # BG000 on stderr
    done = subprocess.run([sys.executable, "-m", "bloatguard", "check", "models", "--no-cache",
                           "--output-format", output_format], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "##[" not in done.stdout and "##[" not in done.stderr
    assert "damaged.onnx" in done.stderr
    if output_format == "json":
        paths = {model["path"] for model in json.loads(done.stdout)["models"]}
        assert {f"models/{name}" for name in LEGACY} <= paths


def test_show_and_fix_print_no_legacy_runner_command(tmp_path):
    (tmp_path / "models").mkdir()
    path = factories.mlp(tmp_path / "models" / LEGACY[0])
    for command in (["show", str(path)], ["fix", "--dry-run", "--no-latency", str(path)]):
        done = subprocess.run([sys.executable, "-m", "bloatguard", *command], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert "Traceback" not in done.stderr and "verified safe" in done.stdout + done.stderr
        assert "##[" not in done.stdout and "##[" not in done.stderr, command
