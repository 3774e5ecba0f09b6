"""--base and --staged in real temporary repositories."""

from __future__ import annotations

import json
import subprocess

import pytest

import factories
from gitrepo import Repo

CONFIG = """
[budgets."models/**"]
max-params = "10K"
max-params-increase = "5%"
max-file-size-increase = "5%"
min-file-size-increase = "1 KB"
"""


@pytest.fixture
def repo(tmp_path, monkeypatch):
    repo = Repo(tmp_path / "repo")
    repo.write("bloatguard.toml", CONFIG)
    factories.mlp(repo.root / "models" / "a.onnx", sizes=(16, 32, 4))
    factories.mlp(repo.root / "models" / "b.onnx", sizes=(8, 8))
    repo.commit("initial models")
    monkeypatch.chdir(repo.root)
    return repo


def report(run_cli, *args):
    # Latency has its own tests; here it would only slow the git plumbing down.
    code, out, err = run_cli("check", *args, "--output-format", "json", "--no-latency")
    return code, (json.loads(out) if out else None), err


def by_path(document):
    return {m["path"]: m for m in document["models"]}


def test_growth_beyond_budget_fails_with_before_after(repo, run_cli):
    repo.git("checkout", "-q", "-b", "feature")
    factories.mlp(repo.root / "models" / "a.onnx", sizes=(16, 40, 4))
    repo.commit("grow a")
    before = repo.snapshot()
    code, document, _ = report(run_cli, "models", "--base", "main")
    assert code == 1
    a = by_path(document)["models/a.onnx"]
    assert a["status"] == "modified"
    assert a["base"]["metrics"]["params"] == factories.mlp_params((16, 32, 4))
    assert a["metrics"]["params"] == factories.mlp_params((16, 40, 4))
    finding = next(f for f in a["findings"] if f["code"] == "BG002")
    assert finding["details"]["before"] == 676 and finding["details"]["after"] == 844
    assert finding["details"]["delta"] == 168
    assert by_path(document)["models/b.onnx"]["status"] == "unchanged"
    assert repo.snapshot() == before

    code, out, _ = run_cli("check", "models", "--base", "main", "--no-latency")
    assert "base" in out and "head" in out and "delta" in out
    assert "+168 (+24.9%)" in out


def test_identical_recommit_and_pure_rename_pass(repo, run_cli):
    repo.git("checkout", "-q", "-b", "feature")
    data = (repo.root / "models" / "a.onnx").read_bytes()
    (repo.root / "models" / "a.onnx").write_bytes(data)
    repo.git("mv", "models/b.onnx", "models/renamed.onnx")
    repo.commit("rename b")
    code, document, _ = report(run_cli, "models", "--base", "main")
    assert code == 0
    models = by_path(document)
    assert models["models/a.onnx"]["status"] == "unchanged"
    assert models["models/renamed.onnx"]["status"] == "renamed"
    assert models["models/renamed.onnx"]["base"]["path"] == "models/b.onnx"


def test_new_model_is_held_to_absolute_budgets_only(repo, run_cli):
    factories.mlp(repo.root / "models" / "big.onnx", sizes=(128, 128))
    factories.mlp(repo.root / "models" / "small.onnx", sizes=(4, 4))
    code, document, _ = report(run_cli, "models", "--base", "HEAD")
    models = by_path(document)
    assert models["models/small.onnx"]["status"] == "new"
    assert models["models/small.onnx"]["findings"] == []
    assert "base" not in models["models/small.onnx"]
    assert [f["code"] for f in models["models/big.onnx"]["findings"]] == ["BG002"]
    assert "exceeds the budget" in models["models/big.onnx"]["findings"][0]["message"]
    assert code == 1


def test_deleted_model_is_reported_not_an_error(repo, run_cli):
    (repo.root / "models" / "b.onnx").unlink()
    code, document, _ = report(run_cli, "models", "--base", "HEAD")
    assert code == 0
    deleted = by_path(document)["models/b.onnx"]
    assert deleted["status"] == "deleted" and deleted["metrics"] is None
    assert deleted["base"]["metrics"]["params"] == factories.mlp_params((8, 8))


def test_noise_floor_keeps_small_changes_quiet(repo, run_cli):
    repo.write("bloatguard.toml", CONFIG.replace('max-params-increase = "5%"\n', ""))
    factories.mlp(repo.root / "models" / "b.onnx", sizes=(8, 9))  # +10 params, ~+40 bytes
    code, document, _ = report(run_cli, "models", "--base", "HEAD")
    assert code == 0, document
    assert by_path(document)["models/b.onnx"]["status"] == "modified"


def test_branch_base_is_the_merge_base(repo, run_cli):
    repo.git("checkout", "-q", "-b", "feature")
    factories.mlp(repo.root / "models" / "a.onnx", sizes=(16, 33, 4))
    repo.commit("feature change")
    repo.git("checkout", "-q", "main")
    factories.mlp(repo.root / "models" / "a.onnx", sizes=(16, 64, 4))  # main moved on
    repo.commit("main change")
    repo.git("checkout", "-q", "feature")
    code, document, _ = report(run_cli, "models/a.onnx", "--base", "main")
    a = by_path(document)["models/a.onnx"]
    assert a["base"]["metrics"]["params"] == factories.mlp_params((16, 32, 4))


def test_detached_head_works(repo, run_cli):
    first = repo.git("rev-parse", "HEAD")
    factories.mlp(repo.root / "models" / "a.onnx", sizes=(16, 64, 4))
    repo.commit("grow")
    repo.git("checkout", "-q", "--detach", "HEAD")
    code, document, _ = report(run_cli, "models", "--base", first)
    assert code == 1
    assert by_path(document)["models/a.onnx"]["status"] == "modified"


def test_missing_base_commit_exits_2_with_remedy(repo, run_cli):
    code, out, err = run_cli("check", "models", "--base", "0123456789abcdef0123456789abcdef01234567")
    assert code == 2 and out == ""
    assert "not a commit" in err and "git fetch" in err


def test_shallow_clone_names_the_remedy(repo, tmp_path, run_cli, monkeypatch):
    first = repo.git("rev-parse", "HEAD")
    factories.mlp(repo.root / "models" / "a.onnx", sizes=(16, 64, 4))
    repo.commit("second")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--depth=1", f"file://{repo.root}", str(clone)], check=True)
    monkeypatch.chdir(clone)
    code, _, err = run_cli("check", "models", "--base", first)
    assert code == 2
    assert "shallow clone" in err and "fetch-depth: 0" in err and "--fetch-base" in err
    code, document, _ = report(run_cli, "models", "--base", first, "--fetch-base")
    assert code == 1
    assert by_path(document)["models/a.onnx"]["base"]["metrics"]["params"] == 676


def test_refs_are_data_not_options(repo, run_cli, tmp_path):
    canary = tmp_path / "canary"
    for ref in (f"--upload-pack=touch {canary}", f"$(touch {canary})", "-h"):
        code, _, err = run_cli("check", "models", f"--base={ref}")
        assert code == 2, ref
        assert "Traceback" not in err
    assert not canary.exists()


def test_not_a_git_repository(tmp_path, run_cli, monkeypatch):
    factories.mlp(tmp_path / "m.onnx")
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli("check", ".", "--base", "main")
    assert code == 2 and "not inside a git repository" in err
    assert run_cli("check", ".")[0] == 0


def test_a_missing_path_in_a_repository_is_missing_not_outside_git(repo, run_cli):
    """`check --staged` on a model deleted with its directory, or a typo, once said "not
    inside a git repository" from inside one."""
    repo.git("rm", "-q", "-r", "models")  # a.onnx and b.onnx, and so their directory
    for path in ("models/a.onnx", "scripts/typo.onnx"):
        code, _, err = run_cli("check", "--staged", path)
        assert code == 2 and f"{path}: no such file or directory" in err, err


def test_staged_compares_index_with_head(repo, run_cli):
    factories.mlp(repo.root / "models" / "a.onnx", sizes=(16, 64, 4))
    code, document, _ = report(run_cli, "models/a.onnx", "--staged")
    assert by_path(document)["models/a.onnx"]["status"] == "unchanged"  # not staged yet
    assert code == 0
    repo.git("add", "models/a.onnx")
    factories.mlp(repo.root / "models" / "a.onnx", sizes=(16, 32, 4))  # working tree back to small
    code, document, _ = report(run_cli, "models/a.onnx", "--staged")
    a = by_path(document)["models/a.onnx"]
    assert a["status"] == "modified" and a["metrics"]["params"] == factories.mlp_params((16, 64, 4))
    assert code == 1


def test_staged_before_first_commit(tmp_path, run_cli, monkeypatch):
    repo = Repo(tmp_path / "fresh")
    factories.mlp(repo.root / "m.onnx")
    repo.git("add", "m.onnx")
    monkeypatch.chdir(repo.root)
    code, document, _ = report(run_cli, "m.onnx", "--staged")
    assert code == 0 and document["models"][0]["status"] == "new"


def test_pre_push_range_from_pre_commit_env(repo, run_cli, monkeypatch):
    first = repo.git("rev-parse", "HEAD")
    factories.mlp(repo.root / "models" / "a.onnx", sizes=(16, 64, 4))
    second = repo.commit("grow")
    factories.mlp(repo.root / "models" / "a.onnx", sizes=(16, 32, 4))  # dirty tree must not matter
    monkeypatch.setenv("PRE_COMMIT_FROM_REF", first)
    monkeypatch.setenv("PRE_COMMIT_TO_REF", second)
    code, document, _ = report(run_cli, "models/a.onnx", "--staged")
    a = by_path(document)["models/a.onnx"]
    assert a["metrics"]["params"] == factories.mlp_params((16, 64, 4))
    assert code == 1


def test_metric_cache_survives_corruption(repo, run_cli):
    """Damaged entries are ignored and rewritten (reuse and forgery: tests/test_cache.py)."""
    factories.mlp(repo.root / "models" / "a.onnx", sizes=(16, 40, 4))
    first = report(run_cli, "models", "--base", "HEAD")
    entries = sorted((repo.root / ".git" / "bloatguard-cache").rglob("*.json"))
    assert entries
    assert repo.git("status", "--porcelain", "--", ".") == "M models/a.onnx"  # nothing else
    for entry in entries:
        entry.write_text("{not json")
    second = report(run_cli, "models", "--base", "HEAD")
    assert second[1]["models"] == first[1]["models"]
    assert all(json.loads(e.read_text())["key"] for e in entries)  # rewritten


def test_lfs_pointer_with_and_without_object(repo, run_cli):
    real = factories.mlp(repo.root / "tmp.onnx", sizes=(8, 8)).read_bytes()
    (repo.root / "tmp.onnx").unlink()
    import hashlib

    oid = hashlib.sha256(real).hexdigest()
    pointer = (f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(real)}\n").encode()
    (repo.root / "models" / "lfs.onnx").write_bytes(pointer)
    code, _, err = run_cli("check", "models/lfs.onnx")
    assert code == 2 and "git lfs pull" in err
    store = repo.root / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4]
    store.mkdir(parents=True)
    (store / oid).write_bytes(real)
    code, document, _ = report(run_cli, "models/lfs.onnx")
    assert code == 0
    assert document["models"][0]["metrics"]["params"] == factories.mlp_params((8, 8))
    assert document["models"][0]["metrics"]["file_size"] == len(real)
    assert document["models"][0]["metrics"]["macs"] == 8 * 8  # counted on the object, not the pointer


def test_external_data_companions_come_from_the_base_tree(repo, run_cli):
    factories.mlp(repo.root / "models" / "ext.onnx", sizes=(32, 32), external=True)
    repo.commit("external data model")
    factories.mlp(repo.root / "models" / "ext.onnx", sizes=(32, 64), external=True)
    code, document, _ = report(run_cli, "models", "--base", "HEAD")
    ext = by_path(document)["models/ext.onnx"]
    assert ext["base"]["metrics"]["params"] == 32 * 32 + 32
    assert ext["metrics"]["params"] == 32 * 64 + 64
    assert ext["status"] == "modified"
    assert code == 1


def test_unreadable_base_is_reported_not_compared(repo, run_cli):
    """A base that is an LFS pointer without its object must not be measured as a 130-byte
    model (which would make every growth look enormous, or hide a regression)."""
    (repo.root / "models" / "a.onnx").write_bytes(factories.LFS_POINTER)
    repo.commit("a became an LFS pointer")
    factories.mlp(repo.root / "models" / "a.onnx", sizes=(16, 32, 4))
    code, document, err = report(run_cli, "models/a.onnx", "--base", "HEAD")
    assert code == 2
    finding = by_path(document)["models/a.onnx"]["findings"][0]
    assert finding["code"] == "BG000" and finding["details"]["side"] == "base"
    assert "the base version cannot be read" in finding["message"] and "git lfs pull" in finding["message"]
    assert err.count("\n") == 1 and "base version" in err


def test_pre_push_of_a_new_branch_holds_models_to_absolute_budgets(repo, run_cli, monkeypatch):
    factories.mlp(repo.root / "models" / "a.onnx", sizes=(16, 1024, 4))  # over max-params
    pushed = repo.commit("grow")
    factories.mlp(repo.root / "models" / "a.onnx", sizes=(4, 4))  # the dirty tree must not matter
    monkeypatch.setenv("PRE_COMMIT_FROM_REF", "0" * 40)
    monkeypatch.setenv("PRE_COMMIT_TO_REF", pushed)
    code, document, _ = report(run_cli, "models/a.onnx", "--staged")
    a = by_path(document)["models/a.onnx"]
    assert a["status"] == "new" and a["metrics"]["params"] == factories.mlp_params((16, 1024, 4))
    assert [f["code"] for f in a["findings"]] == ["BG002"]
    assert code == 1


def test_pure_rename_reuses_the_base_measurement(repo, run_cli):
    repo.git("mv", "models/a.onnx", "models/moved.onnx")
    repo.commit("move")
    code, document, _ = report(run_cli, "models", "--base", "HEAD~1")
    moved = by_path(document)["models/moved.onnx"]
    assert moved["status"] == "renamed" and code == 0
    assert moved["metrics"] == moved["base"]["metrics"]


def test_pure_rename_is_not_timed_again(repo, run_cli):
    repo.git("mv", "models/b.onnx", "models/b2.onnx")
    repo.commit("move")
    code, out, _ = run_cli("check", "models/b2.onnx", "--base", "HEAD~1", "--latency",
                           "--output-format", "json")
    moved = json.loads(out)["models"][0]
    assert moved["status"] == "renamed"
    assert moved["metrics"]["latency_ms"] is None and not (moved.get("latency") or {}).get("ratio")
