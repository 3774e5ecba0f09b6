"""Drift budgets: cumulative growth since a reference commit fails the run even when each
change stayed under its per-change budget (issue 16 #4)."""

from __future__ import annotations

import json

import pytest

import factories
from gitrepo import Repo

CONFIG = """
[drift]
reference = "v1.0"

[budgets."models/**"]
max-params-increase = "10%"
max-params-drift = "20%"
"""


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """v1.0 has 676 params; three changes each grow it by under 10 %, 31 % in all."""
    repo = Repo(tmp_path / "repo")
    repo.write("bloatguard.toml", CONFIG)
    factories.mlp(repo.root / "models" / "a.onnx", sizes=(16, 32, 4))
    repo.commit("v1.0")
    repo.git("tag", "v1.0")
    monkeypatch.chdir(repo.root)
    return repo


def grow(repo: Repo, width: int) -> None:
    factories.mlp(repo.root / "models" / "a.onnx", sizes=(16, width, 4))
    repo.commit(f"width {width}")


def check(run_cli, *args):
    code, out, err = run_cli("check", "models", "--no-latency", "--output-format", "json", *args)
    return code, json.loads(out), err


def test_small_steps_that_add_up_fail_the_drift_budget(repo, run_cli):
    params = factories.mlp_params
    widths = [32, 35, 38, 41]
    steps = [params((16, b, 4)) / params((16, a, 4)) - 1 for a, b in zip(widths, widths[1:])]
    assert all(step < 0.10 for step in steps)  # each change passes max-params-increase
    for width in widths[1:3]:
        grow(repo, width)
        code, document, _ = check(run_cli, "--base", "HEAD~1")
        assert code == 0, document  # 35 and 38: +19 % since v1.0, under the drift budget
    grow(repo, 41)
    code, document, _ = check(run_cli, "--base", "HEAD~1")
    assert code == 1
    [finding] = [f for f in document["models"][0]["findings"]
                 if f["details"].get("key") == "max-params-drift"]
    before, after = params((16, 32, 4)), params((16, 41, 4))
    assert finding["details"]["before"] == before and finding["details"]["after"] == after
    assert finding["message"].startswith(f"parameter count drifted from {before} at v1.0 to")
    assert "more than the allowed drift of +20% since v1.0" in finding["message"]
    assert document["models"][0]["reference"]["ref"] == "v1.0"
    assert document["models"][0]["reference"]["metrics"]["params"] == before


def test_the_drift_line_is_in_the_text_and_the_pr_comment(repo, run_cli):
    grow(repo, 35)
    before, after = factories.mlp_params((16, 32, 4)), factories.mlp_params((16, 35, 4))
    moved = f"params {before} → {after} ({(after - before) / before * 100:+.1f}%)"
    code, out, _ = run_cli("check", "models", "--no-latency")
    assert "drift since v1.0: file size" in out and moved in out
    code, out, _ = run_cli("check", "models", "--no-latency", "--output-format", "markdown")
    assert "Drift since `v1.0`:" in out and moved in out


def test_a_reference_that_is_not_here_is_a_clear_error(repo, run_cli):
    repo.write("bloatguard.toml", CONFIG.replace("v1.0", "v9.9"))
    code, out, err = run_cli("check", "models", "--no-latency")
    assert code == 2 and "[drift] reference 'v9.9'" in err and "fetch-depth: 0" in err


def test_a_model_added_after_the_reference_has_no_drift(repo, run_cli):
    factories.mlp(repo.root / "models" / "new.onnx", sizes=(16, 64, 4))
    repo.commit("new model")
    code, document, _ = check(run_cli)
    new = next(m for m in document["models"] if m["path"].endswith("new.onnx"))
    assert "reference" not in new and code == 0
