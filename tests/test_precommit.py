"""The real pre-commit runs the hook from this checkout (`pre-commit try-repo`) in a temporary
repository, and blocks a commit that breaks a budget."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import factories
from gitrepo import GIT_ENV, Repo

REPO = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("pre-commit") is None, reason="pre-commit not installed")]


def pre_commit(repo: Repo, *args: str, cache: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **GIT_ENV, "HOME": str(repo.root.parent), "PRE_COMMIT_HOME": str(cache),
           **(env or {})}
    return subprocess.run(["pre-commit", *args], cwd=repo.root, env=env, capture_output=True,
                          text=True, timeout=900)


@pytest.fixture(scope="module")
def hook_cache(tmp_path_factory):
    # One pre-commit home for the module, so the hook's environment is built once.
    return tmp_path_factory.mktemp("pre-commit-home")


def test_try_repo_blocks_a_commit_that_breaks_a_budget(tmp_path, hook_cache):
    repo = Repo(tmp_path / "project")
    repo.write("bloatguard.toml", '[budgets."models/**"]\nmax-params-increase = "5%"\nmax-params = "2K"\n')
    factories.mlp(repo.root / "models" / "m.onnx", sizes=(16, 32, 4))
    repo.commit("initial")
    index_before = (repo.root / ".git" / "index").read_bytes()

    result = pre_commit(repo, "try-repo", str(REPO), "bloatguard", "--files", "models/m.onnx",
                        cache=hook_cache)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "bloatguard" in result.stdout and "Passed" in result.stdout

    factories.mlp(repo.root / "models" / "m.onnx", sizes=(16, 64, 4))
    repo.git("add", "models/m.onnx")
    result = pre_commit(repo, "try-repo", str(REPO), "bloatguard", "--files", "models/m.onnx",
                        cache=hook_cache)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Failed" in result.stdout
    assert "BG002" in result.stdout and "grew from 676 to 1.35K" in result.stdout
    assert "modified" in result.stdout
    # The hook only reads: the index is what `git add` left.
    assert (repo.root / ".git" / "index").read_bytes() != index_before
    staged_index = (repo.root / ".git" / "index").read_bytes()
    pre_commit(repo, "try-repo", str(REPO), "bloatguard", "--files", "models/m.onnx", cache=hook_cache)
    assert (repo.root / ".git" / "index").read_bytes() == staged_index


def test_hook_checks_lfs_pointers_too(tmp_path, hook_cache):
    """`files:` matches suffixes, so an LFS pointer (a text file) still reaches the hook."""
    repo = Repo(tmp_path / "project")
    repo.write("models/m.onnx", factories.LFS_POINTER.decode())
    repo.git("add", "-A")
    result = pre_commit(repo, "try-repo", str(REPO), "bloatguard", "--files", "models/m.onnx",
                        cache=hook_cache)
    assert result.returncode == 1, result.stdout + result.stderr  # pre-commit's own "failed"
    assert "exit code: 2" in result.stdout  # bloatguard's "could not evaluate"
    assert "git lfs pull" in result.stdout


def test_a_retried_commit_is_blocked_again(tmp_path, hook_cache):
    """The second run finds the model in the metric cache; the rules that read its weights
    must still run (or their cached outcomes apply), so the same commit fails the same way."""
    from onnx import helper

    repo = Repo(tmp_path / "project")
    repo.write("bloatguard.toml", '[rules.unfused-ops]\nseverity = "error"\n')
    factories.mlp(repo.root / "models" / "m.onnx", sizes=(16, 16))
    repo.commit("initial")
    factories.build([helper.make_node("Dropout", ["x"], ["d"]), helper.make_node("Relu", ["d"], ["y"])],
                    [factories.info("x", [1, 16])], [factories.info("y", [1, 16])],
                    path=repo.root / "models" / "m.onnx")
    repo.git("add", "models/m.onnx")
    env = {"XDG_CACHE_HOME": str(tmp_path / "user-cache")}
    for attempt in (1, 2):
        result = pre_commit(repo, "try-repo", str(REPO), "bloatguard", "--files", "models/m.onnx",
                            cache=hook_cache, env=env)
        assert result.returncode == 1, (attempt, result.stdout + result.stderr)
        assert "BG104 error" in result.stdout, attempt
    assert any((repo.root / ".git" / "bloatguard-cache").rglob("*.json"))


def git(repo: Repo, *args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=repo.root, env=env, capture_output=True, text=True,
                          timeout=300, check=False)


def test_installed_hook_blocks_git_commit_every_time(tmp_path, hook_cache):
    """`pre-commit install` in a project, then a plain `git commit`: the hook this checkout
    declares (.pre-commit-hooks.yaml: entry, files, stages) runs as a `repo: local` hook with
    the bloatguard of this environment, so no hook environment is built. A change within budget
    is committed; one that breaks it is refused, and refused again on the retry."""
    import json

    import yaml

    [declared] = [hook for hook in yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
                  if hook["id"] == "bloatguard"]
    hook = {**declared, "language": "system"}
    repo = Repo(tmp_path / "project")
    repo.write(".pre-commit-config.yaml", json.dumps({"repos": [{"repo": "local", "hooks": [hook]}]}))
    repo.write("bloatguard.toml", '[budgets."models/**"]\nmax-params-increase = "5%"\nmax-params = "2K"\n')
    factories.mlp(repo.root / "models" / "m.onnx", sizes=(16, 32, 4))
    repo.commit("initial")

    bin_dir = str(Path(sys.executable).parent)  # where this environment's `bloatguard` is
    env = {**os.environ, **GIT_ENV, "HOME": str(repo.root.parent), "PRE_COMMIT_HOME": str(hook_cache),
           "XDG_CACHE_HOME": str(tmp_path / "user-cache"),
           "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")])}
    installed = pre_commit(repo, "install", cache=hook_cache, env=env)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert "pre-commit" in (repo.root / ".git" / "hooks" / "pre-commit").read_text()

    # Within budget (new weights, same size): the hook runs, passes, and the commit is made.
    factories.mlp(repo.root / "models" / "m.onnx", sizes=(16, 32, 4), seed=1)
    repo.git("add", "models/m.onnx")
    done = git(repo, "commit", "-m", "retrain", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "bloatguard" in done.stdout + done.stderr and "Passed" in done.stdout + done.stderr
    assert repo.git("log", "-1", "--format=%s") == "retrain"

    head = repo.git("rev-parse", "HEAD")
    factories.mlp(repo.root / "models" / "m.onnx", sizes=(16, 64, 4))  # +100% params
    repo.git("add", "models/m.onnx")
    for attempt in (1, 2):
        done = git(repo, "commit", "-m", "wider", env=env)
        output = done.stdout + done.stderr
        assert done.returncode != 0, (attempt, output)
        assert "Failed" in output and "BG002" in output, (attempt, output)
        assert repo.git("rev-parse", "HEAD") == head, attempt  # no commit was made
        assert repo.git("diff", "--cached", "--name-only") == "models/m.onnx", attempt  # still staged
    assert any((repo.root / ".git" / "bloatguard-cache").rglob("*.json"))  # the retry ran warm
