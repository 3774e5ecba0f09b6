"""The metric cache may stand in only for what it fully determines: a warm run reports exactly
what a cold one does, for every rule, every report format, --staged, --base and --jobs. And it
is untrusted input like any file in a checkout: forged, committed or linked entries are ignored.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

import factories
import fix_models
import gguf_models
from factories import build, info, init
from gitrepo import Repo

FORMATS = ("text", "json", "markdown", "github", "sarif", "junit")

CONFIG = """
[budgets."models/**"]
max-params = "100K"
max-file-size = "600 KB"
max-macs = "200K"
max-activation-memory = "3 KB"
max-params-increase = "1%"
max-file-size-increase = "1%"
max-macs-increase = "1%"

[rules.unfused-ops]
severity = "error"

[samples]
"models/dense.onnx" = "samples.npz"
"""


class _Payload:
    """Pickles as a call of os.system: BG900 must report it, nothing may run it."""

    def __reduce__(self):
        return os.system, ("echo pwned",)


def kitchen(root: Path) -> None:
    """Models that between them trigger every rule but latency (BG004 needs timings)."""
    models = root / "models"
    models.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    fix_models.messy(models / "messy.onnx")  # BG103
    sparse = rng.standard_normal((256, 256)).astype(np.float32)
    sparse[:, :200] = 0  # BG106
    build([helper.make_node("MatMul", ["x", "w"], ["h"]),
           helper.make_node("Dropout", ["h"], ["d"]),  # BG104
           helper.make_node("Identity", ["d"], ["y"])],
          [info("x", ["batch", 256])], [info("y", ["batch", 256])], [init("w", sparse)],
          models / "sparse.onnx")
    build([helper.make_node("MatMul", ["x", "w"], ["y"])],  # BG105
          [info("x", [1, 64], TensorProto.DOUBLE)], [info("y", [1, 64], TensorProto.DOUBLE)],
          [init("w", rng.standard_normal((64, 64)))], models / "wide.onnx")
    dense = rng.standard_normal((512, 512)).astype(np.float32)  # BG101, BG001-BG003, BG005
    dense[3, :] = 0  # BG102: feature 3 is read by nothing
    build([helper.make_node("MatMul", ["x", "w"], ["y"])],
          [info("x", ["batch", 512])], [info("y", ["batch", 512])], [init("w", dense)],
          models / "dense.onnx")
    samples = rng.standard_normal((8, 1, 512)).astype(np.float32)
    samples[..., 7] = 1.0  # BG102 from the samples: a constant column
    np.savez(root / "samples.npz", x=samples)
    (models / "pointer.onnx").write_bytes(factories.LFS_POINTER)  # BG000
    (models / "unsafe.pt").write_bytes(pickle.dumps({"w": _Payload()}))  # BG900
    gguf_models.llama(models / "chat.gguf", template=gguf_models.HOSTILE_TEMPLATE)  # BG901
    low = rng.standard_normal((128, 4)) @ rng.standard_normal((4, 128))  # BG107: rank 4
    build([helper.make_node("MatMul", ["x", "w"], ["y"])], [info("x", ["batch", 128])],
          [info("y", ["batch", 128])], [init("w", low.astype(np.float32))], models / "lowrank.onnx")
    (root / "bloatguard.toml").write_text(CONFIG)


@pytest.fixture
def repo(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    repo = Repo(tmp_path / "repo")
    kitchen(repo.root)
    repo.commit("initial models")
    monkeypatch.chdir(repo.root)
    return repo


def cache_dir(repo: Repo) -> Path:
    return repo.root / ".git" / "bloatguard-cache"


def run(run_cli, *args):
    return run_cli("check", "models", "--no-latency", *args)


def cold(repo, run_cli, *args):
    shutil.rmtree(cache_dir(repo), ignore_errors=True)
    return run(run_cli, *args)


def codes(out: str) -> set[str]:
    return {f["code"] for m in json.loads(out)["models"] for f in m["findings"]}


def change_a_model(repo: Repo) -> None:
    """A modified model (growth budgets apply) and a new one, staged."""
    shutil.copy(repo.root / "models" / "dense.onnx", repo.root / "models" / "dense2.onnx")
    fix_models.messy(repo.root / "models" / "messy.onnx", external=True)
    repo.git("add", "-A")


MODES = {"staged": ("--staged",), "base": ("--base", "HEAD"), "jobs": ("--staged", "--jobs", "2")}


@pytest.mark.parametrize("mode", MODES)
def test_warm_run_reports_exactly_what_a_cold_run_does(repo, run_cli, mode):
    from bloatguard.registry import all_rules

    change_a_model(repo)
    args = (*MODES[mode], "--output-format", "json")
    first = cold(repo, run_cli, *args)
    assert first[0] == 2  # the LFS pointer cannot be evaluated
    # Every rule that does not need timings has something to say, or the test proves little.
    assert codes(first[1]) == {rule.code for rule in all_rules()} - {"BG004"}
    assert any(cache_dir(repo).rglob("*.json"))
    assert run(run_cli, *args) == first  # warm
    # A config change that concerns none of these models' settings keeps every entry valid...
    with open(repo.root / "bloatguard.toml", "a") as config:
        config.write('\n[latency]\nthreads = 2\n')
    assert run(run_cli, *args) == first
    # ...and one that does is seen at once, exactly as a cold run sees it.
    with open(repo.root / "bloatguard.toml", "a") as config:
        config.write('\n[rules.dead-weights]\nseverity = "error"\n[rules.wide-dtypes]\nmin-elements = 1\n')
    changed = run(run_cli, *args)
    assert changed == cold(repo, run_cli, *args) != first


@pytest.mark.parametrize("output_format", FORMATS)
def test_every_report_format_is_the_same_warm_and_cold(repo, run_cli, output_format):
    change_a_model(repo)
    args = ("--staged", "--output-format", output_format)
    first = cold(repo, run_cli, *args)
    assert first[1]
    assert run(run_cli, *args) == first


def test_jobs_2_reports_what_jobs_1_does(repo, run_cli):
    change_a_model(repo)
    one = cold(repo, run_cli, "--base", "HEAD", "--output-format", "json")
    assert cold(repo, run_cli, "--base", "HEAD", "--output-format", "json", "--jobs", "2") == one
    assert run(run_cli, "--base", "HEAD", "--output-format", "json", "--jobs", "2") == one


def test_editing_the_samples_file_runs_the_rules_that_read_it_again(repo, run_cli):
    args = ("--staged", "--output-format", "json")
    first = cold(repo, run_cli, *args)
    assert "7" in first[1] and run(run_cli, *args) == first
    samples = np.load(repo.root / "samples.npz")["x"].copy()
    samples[..., 7] = np.random.default_rng(1).standard_normal(8)[:, None]
    np.savez(repo.root / "samples.npz", x=samples)
    assert run(run_cli, *args) == cold(repo, run_cli, *args) != first


# --- the cache is untrusted input ------------------------------------------------------------

def use_cache_dir(repo: Repo, directory: str) -> None:
    config = repo.root / "bloatguard.toml"
    config.write_text(f'cache-dir = "{directory}"\n' + config.read_text())


def entries(directory: Path) -> list[Path]:
    return sorted(directory.rglob("*.json"))


def test_cache_lives_in_the_git_directory_not_the_checkout(repo, run_cli):
    run(run_cli, "--staged")
    assert entries(cache_dir(repo))
    assert not (repo.root / ".bloatguard_cache").exists()
    assert repo.git("status", "--porcelain") == ""


def test_an_entry_is_reused_only_with_this_users_signature(repo, run_cli):
    """A doctored entry shows through when signed with the user's key (so the cache is really
    used) and is ignored when it is not (so nobody else can write one)."""
    from bloatguard import secret

    factories.mlp(repo.root / "models" / "dense.onnx", sizes=(16, 40, 4))
    first = run(run_cli, "--base", "HEAD", "--output-format", "json", "--select", "BG002")
    facts_entries = [path for path in entries(cache_dir(repo))
                     if "tensors" in json.loads(json.loads(path.read_text())["payload"])]
    assert facts_entries

    def doctor(sign: bool) -> dict:
        for path in facts_entries:
            entry = json.loads(path.read_text())
            payload = json.loads(entry["payload"])
            payload["tensors"] = payload["tensors"][:0]
            entry["payload"] = json.dumps(payload)
            entry["signature"] = (secret.sign(f"{entry['key']}\0{entry['payload']}".encode())
                                  if sign else "0" * 64)
            path.write_text(json.dumps(entry))
        code, out, _ = run(run_cli, "--base", "HEAD", "--output-format", "json", "--select", "BG002")
        return {m["path"]: m for m in json.loads(out)["models"]}["models/dense.onnx"]

    assert doctor(sign=False)["base"]["metrics"] == {
        m["path"]: m for m in json.loads(first[1])["models"]}["models/dense.onnx"]["base"]["metrics"]
    assert doctor(sign=True)["base"]["metrics"]["params"] == 0


def test_a_committed_forged_cache_cannot_hide_a_finding(repo, run_cli, tmp_path, monkeypatch):
    """An attacker commits a cache (and a config pointing at it) made with their own key: the
    payload, the growth of dense.onnx and the unsafe pickle are all still reported."""
    use_cache_dir(repo, "cache")
    factories.mlp(repo.root / "models" / "dense.onnx", sizes=(16, 40, 4))
    repo.git("add", "-A")
    honest = cold(repo, run_cli, "--staged", "--output-format", "json")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "attacker"))  # the attacker's key
    shutil.rmtree(repo.root / "cache", ignore_errors=True)
    from bloatguard import secret

    run(run_cli, "--staged")
    forged = entries(repo.root / "cache")
    assert forged
    for path in forged:  # the attacker's entries say "nothing to see"
        entry = json.loads(path.read_text())
        payload = json.loads(entry["payload"])
        if "findings" in payload:
            payload["findings"] = []
        else:
            payload["tensors"], payload["unsafe_globals"] = [], []
        entry["payload"] = json.dumps(payload)
        entry["signature"] = secret.sign(f"{entry['key']}\0{entry['payload']}".encode())
        path.write_text(json.dumps(entry))
    repo.git("add", "-f", "cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "victim"))
    victim = run(run_cli, "--staged", "--output-format", "json")
    assert victim == honest
    assert "BG900" in codes(victim[1])


def test_linked_entries_are_never_followed(repo, run_cli, tmp_path):
    """An entry that links to /dev/zero would be read forever; a dangling .gitignore link would
    make bloatguard create its target outside the repository."""
    use_cache_dir(repo, "cache")
    first = run(run_cli, "--staged", "--output-format", "json")
    for path in entries(repo.root / "cache"):
        path.unlink()
        path.symlink_to("/dev/zero")
    outside = tmp_path / "outside-target"
    (repo.root / "cache" / ".gitignore").unlink()
    (repo.root / "cache" / ".gitignore").symlink_to(outside)
    assert run(run_cli, "--staged", "--output-format", "json") == first
    assert not outside.exists()


def test_a_linked_cache_directory_is_not_used(repo, run_cli, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (repo.root / "cache").symlink_to(elsewhere)
    use_cache_dir(repo, "cache")
    code, _, _ = run(run_cli, "--staged")
    assert code == 2  # the LFS pointer, as always
    assert not any(elsewhere.iterdir())


# --- latency (BG004) warm and cold -----------------------------------------------------------

LATENCY_CONFIG = """
[latency]
time-budget = "300 ms"
min-rounds = 3
block-time = "3 ms"
warmup = 1
confirm = false

[budgets."models/slow.onnx"]
max-latency-increase = "10%"

[budgets."models/tight/**"]
max-latency = "1 us"
"""


@pytest.fixture
def latency_repo(tmp_path, monkeypatch):
    """On branch feature, against main: slow.onnx does four times the MatMul work (a regression
    however noisy the machine), ext.onnx (external data) changed, new.onnx is new and same.onnx
    is unchanged; the three under tight/ break an absolute 1 us budget whenever they are timed.
    Heads whose metrics come from the cache must still be written out and timed."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    repo = Repo(tmp_path / "repo")
    repo.write("bloatguard.toml", LATENCY_CONFIG)
    models = repo.root / "models"
    factories.matmul_chain(models / "slow.onnx", 2)
    factories.matmul_chain(models / "tight" / "same.onnx", 1, width=64)
    factories.mlp(models / "tight" / "ext.onnx", sizes=(32, 32), external=True)
    repo.commit("base models")
    repo.git("checkout", "-q", "-b", "feature")
    factories.matmul_chain(models / "slow.onnx", 8)
    factories.mlp(models / "tight" / "ext.onnx", sizes=(32, 64), external=True)
    factories.matmul_chain(models / "tight" / "new.onnx", 1, width=32)
    monkeypatch.chdir(repo.root)
    return repo


def latency_verdicts(result: tuple[int, str, str]) -> dict:
    """What must not depend on the cache: the exit code, each model's findings (code, severity,
    which budget) and whether latency was measured; the regression verdict of slow.onnx. Not
    the timings, which vary from run to run."""
    code, out, _ = result
    models = {m["path"]: m for m in json.loads(out)["models"]}
    return {
        "exit": code,
        "findings": {path: sorted((f["code"], f["severity"], str(f["details"].get("key")))
                                  for f in m["findings"]) for path, m in models.items()},
        "timed": {path: m["metrics"]["latency_ms"] is not None for path, m in models.items()},
        "slow": models["models/slow.onnx"]["latency"]["verdict"],
    }


# The head side: the working tree; the index; a pushed commit (pre-push with --latency).
LATENCY_MODES = {"working tree": ("--base", "main"), "staged": ("--staged", "--latency"),
                 "pushed": ("--staged", "--latency")}


@pytest.mark.slow
@pytest.mark.parametrize("mode", LATENCY_MODES)
def test_latency_findings_are_the_same_warm_and_cold(latency_repo, run_cli, monkeypatch, mode):
    repo = latency_repo
    if mode == "staged":
        repo.git("add", "-A")
    elif mode == "pushed":
        monkeypatch.setenv("PRE_COMMIT_FROM_REF", repo.git("rev-parse", "main"))
        monkeypatch.setenv("PRE_COMMIT_TO_REF", repo.commit("grow the models"))
    args = ("check", "models", *LATENCY_MODES[mode], "--output-format", "json")
    shutil.rmtree(cache_dir(repo), ignore_errors=True)
    first = latency_verdicts(run_cli(*args))
    # The cold run itself is right, or agreeing with it would prove little.
    assert first["exit"] == 1 and first["slow"] == "regression", first
    assert {path: [f for f in findings if f[0] == "BG004"]
            for path, findings in first["findings"].items()} == {
        "models/slow.onnx": [("BG004", "error", "max-latency-increase")],
        **{f"models/tight/{name}.onnx": [("BG004", "error", "max-latency")]
           for name in ("ext", "new", "same")}}, first
    assert all(first["timed"].values()), first
    assert any(cache_dir(repo).rglob("*.json"))
    assert latency_verdicts(run_cli(*args)) == first  # warm
