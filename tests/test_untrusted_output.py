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
