"""A `Bloatguard-Accept:` trailer in the pushed range (README, "Accepting regressions"): the
pre-push hook runs `bloatguard check --staged` with PRE_COMMIT_FROM_REF/PRE_COMMIT_TO_REF set,
and a trailer on any commit of that range accepts the regression it names for that push."""

from __future__ import annotations

import json

import pytest

import factories
from gitrepo import Repo

CONFIG = '[budgets."models/**"]\nmax-params-increase = "5%"\n'
TRAILER = "Bloatguard-Accept: models/*.onnx BG002 the wider head is worth it (ML-7)"


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """main: models/a.onnx (676 params) under a 5% growth budget; what was pushed before."""
    repo = Repo(tmp_path / "repo")
    repo.write("bloatguard.toml", CONFIG)
    factories.mlp(repo.root / "models" / "a.onnx", sizes=(16, 32, 4))
    repo.commit("initial model")
    monkeypatch.chdir(repo.root)
    return repo


def push_range(repo: Repo, monkeypatch, *, grow_message: str, later_message: str) -> None:
    """Two new commits: the model grows (+100%), then an unrelated change. The hook sees
    the range from what the remote had to the pushed tip."""
    before = repo.git("rev-parse", "HEAD")
    factories.mlp(repo.root / "models" / "a.onnx", sizes=(16, 64, 4))
    repo.commit(grow_message)
    repo.write("NOTES.md", "why the head grew\n")
    pushed = repo.commit(later_message)
    # The working tree must not matter in pre-push: put the model back to its old size.
    factories.mlp(repo.root / "models" / "a.onnx", sizes=(16, 32, 4))
    monkeypatch.setenv("PRE_COMMIT_FROM_REF", before)
    monkeypatch.setenv("PRE_COMMIT_TO_REF", pushed)


def pre_push_check(run_cli):
    """What the pre-push hook runs on the pushed model files."""
    code, out, err = run_cli("check", "--staged", "--output-format", "json", "models/a.onnx")
    document = json.loads(out)
    [model] = document["models"]
    return code, model, document, err


def bg002(model) -> dict:
    [finding] = [f for f in model["findings"] if f["code"] == "BG002"]
    return finding


def test_without_a_trailer_the_pushed_regression_fails(repo, run_cli, monkeypatch):
    push_range(repo, monkeypatch, grow_message="wider head", later_message="notes")
    code, model, document, _ = pre_push_check(run_cli)
    assert code == 1
    # The pushed tip was measured (not the working tree) against the remote's commit.
    assert model["status"] == "modified"
    assert model["metrics"]["params"] == factories.mlp_params((16, 64, 4))
    assert model["base"]["metrics"]["params"] == factories.mlp_params((16, 32, 4))
    finding = bg002(model)
    assert finding["severity"] == "error" and "accepted" not in finding
    assert document["summary"]["errors"] == 1 and document["summary"]["accepted"] == 0


@pytest.mark.parametrize("where", ["growing commit", "later commit"])
def test_a_trailer_on_a_pushed_commit_accepts_the_regression(repo, run_cli, monkeypatch, where):
    messages = {"grow_message": "wider head", "later_message": "notes"}
    key = "grow_message" if where == "growing commit" else "later_message"
    messages[key] += "\n\n" + TRAILER
    push_range(repo, monkeypatch, **messages)
    code, model, document, _ = pre_push_check(run_cli)
    assert code == 0
    finding = bg002(model)
    assert finding["severity"] == "error"  # kept in the data, and accepted
    assert finding["accepted"] == {"reason": "the wider head is worth it (ML-7)", "expires": None,
                                   "source": "trailer"}
    assert document["summary"]["errors"] == 0 and document["summary"]["accepted"] == 1
    code, text, _ = run_cli("check", "--staged", "models/a.onnx")
    assert code == 0 and "the wider head is worth it (ML-7)" in text


def test_a_trailer_already_pushed_does_not_accept_the_next_push(repo, run_cli, monkeypatch):
    """A trailer on a commit before PRE_COMMIT_FROM_REF belongs to an earlier push."""
    repo.commit("earlier push\n\n" + TRAILER)
    push_range(repo, monkeypatch, grow_message="wider head", later_message="notes")
    code, model, _, _ = pre_push_check(run_cli)
    assert code == 1 and "accepted" not in bg002(model)


def test_a_trailer_for_another_path_or_code_accepts_nothing(repo, run_cli, monkeypatch):
    push_range(repo, monkeypatch, grow_message="wider head",
               later_message="notes\n\nBloatguard-Accept: models/other.onnx BG002 not this model\n"
                             "Bloatguard-Accept: models/*.onnx BG003 not this rule")
    code, model, _, _ = pre_push_check(run_cli)
    assert code == 1 and "accepted" not in bg002(model)


def test_a_malformed_trailer_in_the_range_is_an_error(repo, run_cli, monkeypatch):
    push_range(repo, monkeypatch, grow_message="wider head\n\nBloatguard-Accept: models/*.onnx",
               later_message="notes")
    code, out, err = run_cli("check", "--staged", "models/a.onnx")
    assert code == 2
    assert "expected `Bloatguard-Accept: <path-glob> <codes> <reason>`" in err


def test_the_range_is_the_pushed_one_even_when_another_branch_is_checked_out(repo, run_cli,
                                                                            monkeypatch):
    """`git push origin feature` from main: the trailer is read from FROM..TO, not from HEAD."""
    repo.git("checkout", "-q", "-b", "feature")
    push_range(repo, monkeypatch, grow_message="wider head\n\n" + TRAILER, later_message="notes")
    repo.git("checkout", "-q", "-f", "main")
    code, model, _, _ = pre_push_check(run_cli)
    assert code == 0
    assert model["metrics"]["params"] == factories.mlp_params((16, 64, 4))
    assert bg002(model)["accepted"]["source"] == "trailer"
