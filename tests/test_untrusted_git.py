"""What an attacker's pull request, or a downloaded model folder with its own `.git`, can put in
front of bloatguard's git calls: file names git would C-quote, and repository config that names
commands (an fsmonitor hook, a filter driver, index hooks). Names must be matched byte for byte,
and nothing from a repository's config may ever run."""

from __future__ import annotations

import json
import os
import pickle
import stat
from pathlib import Path

import pytest

import factories
from fix_models import messy
from gitrepo import Repo

# Names `git ls-tree` prints C-quoted without -z: a non-ASCII byte, and a tab, quote, backslash.
AWKWARD_NAMES = ["évil", 'ta\tb"q\\ck']

CONFIG = """
[budgets."models/**"]
max-params-increase = "5%"
max-file-size-increase = "5%"
"""


class _Reduce:
    """Pickles as a call of `func(*args)`; the payload must only ever be scanned, never run."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def hostile_pickle(path: Path, canary: Path, tag: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"w": _Reduce(os.system, f"touch {canary}{tag}")}))
    return path


def report(run_cli, *args):
    code, out, err = run_cli("check", *args, "--output-format", "json", "--no-latency")
    return code, (json.loads(out) if out else None), err


def by_path(document):
    return {m["path"]: m for m in document["models"]}


def codes(model) -> list[str]:
    return [f["code"] for f in model["findings"]]


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch):
    """fix signs its journal with a per-user key: keep this test's key out of the real home."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


@pytest.fixture
def repo(tmp_path, monkeypatch):
    repo = Repo(tmp_path / "repo")
    repo.write("bloatguard.toml", CONFIG)
    repo.commit("config")
    monkeypatch.chdir(repo.root)
    return repo


# --- file names git would quote ----------------------------------------------------------------

@pytest.mark.parametrize("stem", AWKWARD_NAMES)
def test_awkward_names_are_checked_in_the_pre_push_range(repo, run_cli, monkeypatch, tmp_path, stem):
    """A hostile pickle named `évil.pt` is pushed next to `evil.pt`: both are BG900."""
    canary = tmp_path / "canary"
    before = repo.git("rev-parse", "HEAD")
    hostile_pickle(repo.root / "models" / f"{stem}.pt", canary)
    hostile_pickle(repo.root / "models" / "evil.pt", canary)
    pushed = repo.commit("add checkpoints")
    monkeypatch.setenv("PRE_COMMIT_FROM_REF", before)
    monkeypatch.setenv("PRE_COMMIT_TO_REF", pushed)
    code, document, _ = report(run_cli, "models", "--staged")
    models = by_path(document)
    assert sorted(models) == sorted([f"models/{stem}.pt", "models/evil.pt"])
    assert codes(models[f"models/{stem}.pt"]) == codes(models["models/evil.pt"]) == ["BG900"]
    assert code == 1
    assert not canary.exists()


@pytest.mark.parametrize("stem", AWKWARD_NAMES)
def test_awkward_names_are_compared_with_their_base_version(repo, run_cli, tmp_path, stem):
    """The base version of an awkwardly named model is found, so its growth budget applies
    (it used to be reported as [new], held to absolute budgets only)."""
    canary = tmp_path / "canary"
    model = factories.mlp(repo.root / "models" / f"{stem}.onnx", sizes=(16, 32, 4))
    checkpoint = hostile_pickle(repo.root / "models" / f"{stem}.pt", canary)
    repo.commit("models")
    factories.mlp(model, sizes=(16, 64, 4))
    hostile_pickle(checkpoint, canary, tag="-changed")
    code, document, _ = report(run_cli, "models", "--base", "HEAD")
    models = by_path(document)
    grown = models[f"models/{stem}.onnx"]
    assert grown["status"] == "modified"
    assert grown["base"]["metrics"]["params"] == factories.mlp_params((16, 32, 4))
    assert "BG002" in codes(grown)
    pickled = models[f"models/{stem}.pt"]
    assert pickled["status"] == "modified"
    assert codes(pickled) == ["BG001", "BG900"]  # its few bytes of growth count too
    assert code == 1
    assert not canary.exists()


# --- repository config that names commands ----------------------------------------------------

def plant_hostile_config(repo: Repo, canaries: Path) -> None:
    """Make the repository's own config and hooks run a command at every opportunity git has:
    the fsmonitor hook (every index read), a required clean filter on every file (comparing a
    working-tree file), and index hooks. Each leaves a canary file named after itself."""
    canaries.mkdir()
    script = canaries.parent / "hostile.sh"
    script.write_text(f'#!/bin/sh\ntouch "{canaries}/$1"\ncat\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    repo.git("config", "core.fsmonitor", f"{script} fsmonitor")
    repo.git("config", "filter.evil.clean", f"{script} filter-clean")
    repo.git("config", "filter.evil.smudge", f"{script} filter-smudge")
    repo.git("config", "filter.evil.required", "true")
    (repo.root / ".git" / "info" / "attributes").write_text("* filter=evil\n")
    hooks = repo.root / ".git" / "hooks"
    for hook in ("post-index-change", "reference-transaction", "post-checkout"):
        (hooks / hook).write_text(f"#!/bin/sh\n{script} hook-{hook} </dev/null\n")
        (hooks / hook).chmod(0o755)


@pytest.fixture
def hostile_repo(tmp_path):
    """A model folder with its own `.git` (committed model, then hostile config), the folder
    where its canaries would appear, and its commit."""
    repo = Repo(tmp_path / "downloaded")
    messy(repo.root / "m.onnx")
    commit = repo.commit("model")
    canaries = tmp_path / "canaries"
    plant_hostile_config(repo, canaries)
    return repo, canaries, commit


def touch_working_tree(path: Path) -> None:
    """Change the file's stat data (not its bytes), so git must re-read it through its filter."""
    info = path.stat()
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + 10**9))


def test_the_hostile_config_is_live(hostile_repo):
    """The plant works with plain git: without the overrides the canaries do appear."""
    repo, canaries, _ = hostile_repo
    touch_working_tree(repo.root / "m.onnx")
    repo.git("diff", "--name-only", check=False)
    assert {"fsmonitor", "filter-clean"} <= {p.name for p in canaries.iterdir()}


def test_fix_runs_nothing_from_the_model_folders_git_config(hostile_repo, run_cli, tmp_path, monkeypatch):
    repo, canaries, _ = hostile_repo
    touch_working_tree(repo.root / "m.onnx")
    monkeypatch.chdir(tmp_path)  # the user is outside the downloaded folder
    code, out, err = run_cli("fix", str(repo.root / "m.onnx"), "--no-latency")
    assert sorted(p.name for p in canaries.iterdir()) == []
    assert code == 0, out + err  # and the fix still went through: git answered "committed"
    assert "refusing" not in out + err


@pytest.mark.parametrize("args", [["--base", "HEAD"], ["--staged"]])
def test_check_runs_nothing_from_the_repositorys_git_config(hostile_repo, run_cli, monkeypatch, args):
    repo, canaries, _ = hostile_repo
    touch_working_tree(repo.root / "m.onnx")
    monkeypatch.chdir(repo.root)
    code, document, err = report(run_cli, ".", *args)
    assert sorted(p.name for p in canaries.iterdir()) == []
    assert code in (0, 1), err
    assert by_path(document)["m.onnx"]["status"] == "unchanged"


def test_pre_push_range_runs_nothing_from_the_repositorys_git_config(hostile_repo, run_cli, monkeypatch):
    repo, canaries, _ = hostile_repo
    monkeypatch.chdir(repo.root)
    head = (repo.root / ".git" / "refs" / "heads" / "main").read_text().strip()
    monkeypatch.setenv("PRE_COMMIT_FROM_REF", head)
    monkeypatch.setenv("PRE_COMMIT_TO_REF", head)
    code, _, err = report(run_cli, ".", "--staged")
    assert sorted(p.name for p in canaries.iterdir()) == []
    assert code in (0, 1), err


def test_a_filter_driver_that_cannot_be_switched_off_is_refused(hostile_repo, run_cli, monkeypatch):
    """`-c filter.a=b.clean=` would set `filter.a` instead: such a driver name is an error."""
    repo, canaries, _ = hostile_repo
    with (repo.root / ".git" / "config").open("a") as config:
        config.write(f'[filter "a=b"]\n\tclean = {canaries.parent / "hostile.sh"} filter-a-b\n')
    (repo.root / ".git" / "info" / "attributes").write_text("* filter=a=b\n")
    touch_working_tree(repo.root / "m.onnx")
    monkeypatch.chdir(repo.root)
    code, _, err = report(run_cli, ".", "--base", "HEAD")
    assert code == 2 and "cannot switch off" in err and err.count("\n") == 1
    assert sorted(p.name for p in canaries.iterdir()) == []
