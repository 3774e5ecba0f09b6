"""The `bloatguard-fix` pre-commit hook: safe fixes only, files rewritten -> exit 1 (pre-commit's
convention), then a clean second run. Its entry is run as pre-commit would run it, and, once
the fix package is committed, through `pre-commit try-repo` itself."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fix_models import conv_net, messy
from gitrepo import GIT_ENV, Repo

REPO = Path(__file__).resolve().parent.parent


def hook(hook_id: str) -> dict:
    hooks = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    return next(h for h in hooks if h["id"] == hook_id)


def run_entry(repo: Repo, files: list[str]) -> subprocess.CompletedProcess:
    """The hook's entry with the staged files appended, as pre-commit runs it."""
    argv = shlex.split(hook("bloatguard-fix")["entry"])
    assert argv[0] == "bloatguard"
    env = {**os.environ, **GIT_ENV, "HOME": str(repo.root.parent), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "bloatguard", *argv[1:], *files], cwd=repo.root,
                          env=env, capture_output=True, text=True, timeout=300)


def test_hook_definition():
    definition = hook("bloatguard-fix")
    assert "--unsafe-fixes" not in definition["entry"]  # safe fixes only
    assert "--exit-non-zero-on-fix" in definition["entry"]
    assert definition["files"] == hook("bloatguard")["files"] and definition["require_serial"]


def test_hooks_see_every_model_suffix_discovery_knows():
    """A staged .tflite or .gguf once never reached the hook: its `files` pattern lagged behind
    the readers. Both hooks match exactly the suffixes discovery checks, in any case."""
    import re

    from bloatguard.discover import MODEL_SUFFIXES

    for hook_id in ("bloatguard", "bloatguard-fix"):
        pattern = re.compile(hook(hook_id)["files"])
        for suffix in MODEL_SUFFIXES:
            for name in (f"models/m{suffix}", f"models/M{suffix.upper()}"):
                assert pattern.search(name), (hook_id, name)
        for name in ("README.md", "models/m.onnx.txt", "train.py", "models/m.tflite.orig"):
            assert not pattern.search(name), (hook_id, name)


def test_hook_rewrites_staged_models_and_fails_once(tmp_path):
    repo = Repo(tmp_path / "project")
    messy(repo.root / "models" / "m.onnx")
    conv_net(repo.root / "models" / "det.onnx", channels=64, blocks=3, size=16)
    repo.commit("models")
    messy(repo.root / "models" / "m.onnx")
    repo.git("add", "-A")
    before = (repo.root / "models" / "det.onnx").read_bytes()
    result = run_entry(repo, ["models/det.onnx", "models/m.onnx"])
    assert result.returncode == 1, result.stdout + result.stderr
    assert "=> wrote models/m.onnx with all safe fixes" in result.stdout
    # The Conv model only has an unsafe fix (quantization): the hook leaves it alone.
    assert (repo.root / "models" / "det.onnx").read_bytes() == before
    assert "quantize-static is an unsafe fix" in result.stdout
    repo.git("add", "-A")
    again = run_entry(repo, ["models/det.onnx", "models/m.onnx"])
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("=> nothing to fix") == 2


def _fix_package_committed() -> bool:
    done = subprocess.run(["git", "ls-files", "--error-unmatch", "bloatguard/fix/command.py"],
                          cwd=REPO, capture_output=True)
    return done.returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("pre-commit") is None, reason="pre-commit not installed")
@pytest.mark.skipif(not _fix_package_committed(),
                    reason="try-repo installs committed files: commit bloatguard/fix first")
def test_try_repo_runs_the_fix_hook(tmp_path):
    repo = Repo(tmp_path / "project")
    messy(repo.root / "models" / "m.onnx")
    repo.git("add", "-A")
    env = {**os.environ, **GIT_ENV, "HOME": str(repo.root.parent),
           "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home")}
    result = subprocess.run(["pre-commit", "try-repo", str(REPO), "bloatguard-fix", "--files",
                             "models/m.onnx"], cwd=repo.root, env=env, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "files were modified by this hook" in result.stdout


def test_the_fix_package_is_part_of_the_distribution():
    """pyproject.toml lists packages explicitly: without bloatguard.fix there, a non-editable
    install (pre-commit's hook environment, `pip install .`) lacks it, and since the CLI
    registers `fix` when it builds its parser, every bloatguard command would fail to start."""
    import tomllib

    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert "bloatguard.fix" in packages, 'add "bloatguard.fix" to [tool.setuptools] packages'
