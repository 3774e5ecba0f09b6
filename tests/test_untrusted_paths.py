"""Model paths an attacker's pull request controls (issue 20, item 9): symlinks, FIFOs, devices.

A model path, and every file bloatguard opens for it, must be a regular file inside the checked
tree. A symlink is reported by its own name (BG000) with nothing of its target: not the target's
path, not its size (file_size is 0), not its first bytes. A FIFO or a device is reported without
being opened: opening a FIFO blocks until a writer comes, which in CI is never. The FIFO cases
run the real CLI in a subprocess, so a hang is a timeout failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bloatguard.formats import read_model

SECRET = b"\x80\x02}q\x00X\x06\x00\x00\x00secretq\x01K\x2as."  # a pickle outside the tree

pytestmark = pytest.mark.skipif(not hasattr(os, "symlink") or not hasattr(os, "mkfifo"),
                                reason="needs POSIX symlinks and FIFOs")


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """The checked tree, `repo/`, and a secret file outside it that links point at."""
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "credentials.pt"
    secret.write_bytes(SECRET)
    repo = tmp_path / "repo"
    (repo / "models").mkdir(parents=True)
    monkeypatch.chdir(repo)
    return repo, secret


def check(*args) -> tuple[int, dict, str]:
    result = subprocess.run([sys.executable, "-m", "bloatguard", "check", *map(str, args),
                             "--output-format", "json", "--no-latency", "--no-cache"],
                            capture_output=True, text=True, timeout=60)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout), result.stderr


def assert_reported_as_link_only(model: dict, link: str, secret: Path) -> None:
    assert model["path"] == link
    assert model["metrics"]["file_size"] == 0
    (finding,) = model["findings"]
    assert finding["code"] == "BG000" and "symbolic link" in finding["message"]
    text = json.dumps(model)
    assert str(secret.parent) not in text and "credentials" not in text
    assert str(len(SECRET)) not in text and "secret" not in text


@pytest.mark.parametrize("suffix", [".pt", ".onnx", ".safetensors", ".bin"])
def test_symlinked_model_in_a_directory_is_reported_not_followed(tree, suffix, run_cli):
    repo, secret = tree
    os.symlink(secret, repo / "models" / f"model{suffix}")
    code, out, err = run_cli("check", "models", "--output-format", "json", "--no-latency",
                             "--no-cache")
    report = json.loads(out)
    assert code == 2 and len(report["models"]) == 1
    assert_reported_as_link_only(report["models"][0], f"models/model{suffix}", secret)
    assert "credentials" not in err and str(secret.parent) not in err


def test_symlink_named_on_the_command_line_is_reported_not_followed(tree, run_cli):
    repo, secret = tree
    os.symlink(secret, repo / "models" / "model.pt")
    os.symlink(secret.parent / "missing.pt", repo / "models" / "dangling.pt")
    code, out, _ = run_cli("check", "models/model.pt", "models/dangling.pt", "--output-format",
                           "json", "--no-latency", "--no-cache")
    models = json.loads(out)["models"]
    assert code == 2
    assert_reported_as_link_only(models[0], "models/dangling.pt", secret)
    assert_reported_as_link_only(models[1], "models/model.pt", secret)


def test_link_to_a_file_inside_the_tree_is_named_by_the_link(tree, run_cli):
    repo, _ = tree
    (repo / "models" / "real.pt").write_bytes(SECRET)
    os.symlink(repo / "models" / "real.pt", repo / "models" / "alias.pt")
    code, out, _ = run_cli("check", "models/alias.pt", "--output-format", "json",
                           "--no-latency", "--no-cache")
    assert json.loads(out)["models"][0]["path"] == "models/alias.pt"


def test_reader_refuses_links_itself(tree):
    repo, secret = tree
    link = repo / "models" / "model.pt"
    os.symlink(secret, link)
    facts = read_model(link)
    assert "symbolic link" in facts.unreadable and facts.file_size == 0
    assert facts.unsafe_globals == [] and facts.tensors == []


def test_linked_directories_are_not_entered_and_linked_model_names_are_reported(tree, run_cli):
    repo, secret = tree
    os.symlink(secret.parent, repo / "models" / "more")            # a plain linked directory
    os.symlink(secret.parent, repo / "models" / "weights.onnx")    # a link with a model name
    code, out, _ = run_cli("check", "models", "--output-format", "json", "--no-latency",
                           "--no-cache")
    models = json.loads(out)["models"]
    assert code == 2 and [m["path"] for m in models] == ["models/weights.onnx"]
    assert_reported_as_link_only(models[0], "models/weights.onnx", secret)


@pytest.mark.parametrize("name", [
    "model.bin", "model.pt",
    # engine.check starts counting MACs of .onnx files in forked children before reading them:
    # only for regular files, or they would open the FIFO and block.
    "model.onnx",
])
def test_fifo_is_reported_without_being_opened(tree, name):
    repo, _ = tree
    os.mkfifo(repo / "models" / name)
    for target in ("models", f"models/{name}"):
        code, report, err = check(target)
        assert code == 2, err
        (model,) = report["models"]
        assert model["metrics"]["file_size"] == 0
        assert [f["code"] for f in model["findings"]] == ["BG000"]
        assert "not a regular file (a FIFO)" in err


def test_device_is_not_a_model():
    facts = read_model(Path(os.devnull))
    assert facts.unreadable == "not a regular file (a character device), so not a model"
    assert facts.file_size == 0
