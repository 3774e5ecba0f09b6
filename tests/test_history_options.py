"""`bloatguard history` options: `--since` and `--max-count` restrict which commits are measured
(not only which rows are shown), and `--plot` without matplotlib says how to install it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from test_history import build_history, params

from gitrepo import Repo


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """test_history's six commits: widths 8, 16, 32, a docs-only commit, a rename to
    models/b.onnx, back to width 8."""
    repo = build_history(tmp_path)
    monkeypatch.chdir(repo.root)
    return repo


def history(run_cli, *args):
    code, out, err = run_cli("history", "models/b.onnx", "--output-format", "json", *args)
    assert code == 0, err
    return json.loads(out)["points"]


def measured_versions(repo: Repo) -> int:
    """How many model versions the run measured: one cache entry of facts per distinct blob."""
    cache = repo.root / ".git" / "bloatguard-cache"
    return len([p for p in cache.rglob("*.json")
                if "tensors" in json.loads(json.loads(p.read_text())["payload"])])


def test_max_count_keeps_the_newest_commits_and_measures_only_them(repo, run_cli):
    points = history(run_cli, "--max-count", "2")
    assert [p["subject"] for p in points] == ["rename", "back to the first width"]
    assert [p["metrics"]["params"] for p in points] == [params(32), params(8)]
    assert [p["path"] for p in points] == ["models/b.onnx", "models/b.onnx"]
    assert measured_versions(repo) == 2  # widths 32 and 8; 16 was never read


def test_max_count_counts_commits_that_changed_the_model_not_all_commits(repo, run_cli):
    """The docs-only commit is not one of the four: four model commits reach back to "wider",
    across the rename."""
    points = history(run_cli, "--max-count", "4")
    assert [p["subject"] for p in points] == ["wider", "wider again", "rename", "back to the first width"]
    assert [p["path"] for p in points] == ["models/a.onnx", "models/a.onnx", "models/b.onnx", "models/b.onnx"]
    assert [p["metrics"]["params"] for p in points] == [params(16), params(32), params(32), params(8)]


def test_since_keeps_only_commits_after_the_ref(repo, run_cli):
    wider = repo.git("rev-parse", "HEAD~4")
    assert repo.git("log", "-1", "--format=%s", wider) == "wider"
    points = history(run_cli, "--since", wider)
    # "wider" itself and everything before it are left out; the rename is still followed.
    assert [p["subject"] for p in points] == ["wider again", "rename", "back to the first width"]
    assert [p["metrics"]["params"] for p in points] == [params(32), params(32), params(8)]
    assert [p["sha"] for p in points] == repo.git("rev-list", "--reverse", f"{wider}..HEAD",
                                                  "--", "models/a.onnx", "models/b.onnx").split()
    assert measured_versions(repo) == 2  # widths 32 and 8


def test_since_and_max_count_together(repo, run_cli):
    first = repo.git("rev-list", "--max-parents=0", "HEAD")
    points = history(run_cli, "--since", first, "--max-count", "1")
    assert [p["subject"] for p in points] == ["back to the first width"]
    assert [p["metrics"]["params"] for p in points] == [params(8)]
    assert measured_versions(repo) == 1


def test_since_the_latest_commit_leaves_nothing_and_says_so(repo, run_cli):
    code, out, err = run_cli("history", "models/b.onnx", "--since", "HEAD")
    assert code == 2 and out == ""
    assert "no commit changed this file since HEAD" in err


def test_the_text_table_counts_only_the_selected_commits(repo, run_cli):
    code, out, _ = run_cli("history", "models/b.onnx", "--max-count", "3")
    assert code == 0
    assert "params at 3 commit(s)" in out
    shown = {sha[:7] for sha in repo.git("rev-list", "HEAD").split() if sha[:7] in out}
    assert shown == {repo.git("rev-parse", f"HEAD~{n}")[:7] for n in (0, 1, 3)}


def without_matplotlib(tmp_path) -> dict:
    """An environment whose first PYTHONPATH entry holds a `matplotlib` that cannot be imported."""
    shadow = tmp_path / "no-matplotlib"
    (shadow / "matplotlib").mkdir(parents=True)
    (shadow / "matplotlib" / "__init__.py").write_text(
        "raise ImportError('matplotlib is not installed in this test')\n")
    path = os.pathsep.join(filter(None, [str(shadow), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def history_process(repo: Repo, target, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bloatguard", "history", "models/b.onnx",
                           "--plot", str(target)], cwd=repo.root, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def test_plot_without_matplotlib_says_how_to_install_it(repo, tmp_path):
    target = tmp_path / "chart.png"
    env = without_matplotlib(tmp_path)
    probe = subprocess.run([sys.executable, "-c", "import matplotlib"], env=env,
                           capture_output=True, text=True, check=False)
    assert probe.returncode == 1 and "ImportError" in probe.stderr  # the shadow works
    done = history_process(repo, target, env)
    assert done.returncode == 2, done.stderr
    assert "--plot needs matplotlib: pip install 'bloatguard[plot]'" in done.stderr
    assert "Traceback" not in done.stderr
    assert not target.exists()


def test_plot_in_the_same_subprocess_setup_works_with_matplotlib(repo, tmp_path):
    """The control for the test above: the same command with matplotlib importable writes the
    chart, so exit 2 there comes from the missing matplotlib alone."""
    pytest.importorskip("matplotlib")
    target = tmp_path / "chart.png"
    done = history_process(repo, target)
    assert done.returncode == 0, done.stderr
    assert target.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
