"""A gate that never opens by accident: config tables that match nothing, empty scopes, metrics
that were not measured, fix hints that would do nothing, and the small ways a run could mislead
(a closed pipe, a doubled message, a repeated name, `--jobs 0`, a report left in the checkout).
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import factories

BLOATGUARD = [sys.executable, "-m", "bloatguard"]


@pytest.fixture
def project(tmp_path, monkeypatch):
    """models/cnn.onnx and models/mlp.onnx under a bloatguard.toml; cwd is the project."""
    factories.conv_model(tmp_path / "models" / "cnn.onnx")
    factories.mlp(tmp_path / "models" / "mlp.onnx")
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "train.py").write_text("print('train')\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def config(root: Path, text: str) -> Path:
    path = root / "bloatguard.toml"
    path.write_text(text)
    return path


# --- config tables that match no model -----------------------------------------------------------

def test_a_budget_for_a_mistyped_path_is_a_warning_that_names_it(project, run_cli):
    config(project, '[budgets."model/cnn.onnx"]\nmax-params = "1"\n')
    code, out, err = run_cli("check", "models", "--output-format", "json")
    assert code == 0  # a warning: the run still passes...
    [warning] = json.loads(out)["config_warnings"]
    assert warning["table"] == 'budgets."model/cnn.onnx"'
    assert warning["config"].endswith("bloatguard.toml")
    assert warning["suggestion"] == "models/cnn.onnx"
    assert "did you mean 'models/cnn.onnx'?" in err  # ...and says so on stderr
    code, out, _ = run_cli("check", "models")
    assert 'warning: ' in out and '[budgets."model/cnn.onnx"] matches no model' in out
    # --strict: a config that enforces nothing cannot be evaluated.
    code, _, err = run_cli("check", "models", "--strict")
    assert code == 2 and "--strict" in err


@pytest.mark.parametrize("table", ['[inputs."model/cnn.onnx"]\nx = [1, 3, 8, 8]',
                                   '[samples]\n"model/**" = "s.npz"',
                                   '[per-file-ignores]\n"legacy/**" = ["BG002"]',
                                   '[fix."model/**"]\nmin-cosine = 0.9',
                                   '[latency.values."model/**"]\nsr = 16000'])
def test_every_kind_of_glob_table_is_checked(project, run_cli, table):
    config(project, table + "\n")
    code, out, _ = run_cli("check", "models", "--output-format", "json")
    assert [w["table"].split(".")[0] for w in json.loads(out)["config_warnings"]] == [
        table.strip("[").split("]")[0].split(".")[0].split('"')[0]]


def test_a_run_scoped_to_one_directory_does_not_warn_about_the_others(project, run_cli):
    factories.mlp(project / "other" / "m.onnx")
    config(project, '[budgets."other/**"]\nmax-params = "1M"\n[budgets."models/**"]\nmax-params = "1M"\n')
    code, out, _ = run_cli("check", "models", "--output-format", "json")
    assert json.loads(out)["config_warnings"] == []


def test_files_named_one_by_one_are_not_judged(project, run_cli):
    """The pre-commit hook passes the staged files: the other models' tables are not stale."""
    config(project, '[budgets."models/cnn.onnx"]\nmax-params = "1M"\n')
    code, out, err = run_cli("check", "models/mlp.onnx", "--output-format", "json")
    assert json.loads(out)["config_warnings"] == [] and "warning" not in err


def test_a_config_from_elsewhere_says_its_globs_are_relative_to_it(project, run_cli, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("ci-configs")
    path = config(elsewhere, '[budgets."models/**"]\nmax-params = "1"\n')
    code, out, err = run_cli("check", "models", "--config", path, "--output-format", "json")
    assert code == 0  # the budget of 1 parameter was never applied: that is the point
    [warning] = json.loads(out)["config_warnings"]
    assert "outside" in warning["message"] and str(elsewhere) in warning["message"]


@pytest.mark.parametrize("output_format", ["markdown", "github", "sarif", "junit", "text"])
def test_every_report_format_shows_the_warning(project, run_cli, output_format):
    config(project, '[budgets."model/cnn.onnx"]\nmax-params = "1"\n')
    code, out, _ = run_cli("check", "models", "--output-format", output_format)
    assert 'model/cnn.onnx' in out and "matches no model" in out


def test_unknown_keys_suggest_the_closest_known_one(project, run_cli):
    config(project, '[budgets."models/**"]\nmax-filesize = "1 MB"\n')
    code, _, err = run_cli("check", "models")
    assert code == 2 and "did you mean `max-file-size`?" in err
    config(project, 'exclde = ["x"]\n')
    assert "did you mean `exclude`?" in run_cli("check", "models")[2]
    config(project, '[rules.unfused-op]\nseverity = "error"\n')
    assert "did you mean `unfused-ops`?" in run_cli("check", "models")[2]


# --- empty scopes --------------------------------------------------------------------------------

def test_a_directory_without_models_is_an_error_not_a_pass(project, run_cli):
    code, out, err = run_cli("check", "scripts")
    assert code == 2 and out == ""
    assert err.startswith("bloatguard: error: scripts: no model files found") and "check the path" in err
    config(project, 'exclude = ["models/**"]\n')
    code, _, err = run_cli("check", "models")
    assert code == 2 and "after include/exclude in" in err


def test_the_hook_with_no_model_among_its_files_passes(project, run_cli):
    config(project, 'exclude = ["models/cnn.onnx"]\n')
    code, out, err = run_cli("check", "models/cnn.onnx")
    assert code == 0 and "0 models checked" in out and err == ""


def test_init_without_models_writes_nothing(project, run_cli):
    code, _, err = run_cli("init", "scripts")
    assert code == 2 and "no model files found" in err
    assert not (project / "bloatguard.toml").exists()
    (project / "scripts" / "data.pt").write_bytes(b"not a model at all")
    code, _, err = run_cli("init", "scripts/data.pt")
    assert code == 2 and "nothing was written" in err
    assert not (project / "bloatguard.toml").exists()


# --- unknown is not zero -------------------------------------------------------------------------

def skl_models(root: Path) -> dict[str, Path]:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from test_hygiene_features_dead_fused import skl_export, tabular

    X, y = tabular()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logreg = LogisticRegression(penalty="l1", solver="liblinear", C=0.05).fit(X, y)
        pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)
        forest = RandomForestClassifier(n_estimators=4, max_depth=3, random_state=0).fit(X, y)
    root.mkdir(parents=True, exist_ok=True)
    return {"logreg": skl_export(logreg, 12, root / "logreg.onnx"),
            "pipe": skl_export(pipe, 12, root / "pipe.onnx"),
            "forest": skl_export(forest, 12, root / "forest.onnx"), "X": X}


def test_ml_models_get_macs_by_convention_or_unknown_never_zero(tmp_path, run_cli, monkeypatch):
    models = skl_models(tmp_path / "models")
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cli("check", "models", "--output-format", "json")
    by_name = {Path(m["path"]).stem: m for m in json.loads(out)["models"]}
    import onnx

    def coefficients(path) -> int:
        node = next(n for n in onnx.load(str(path)).graph.node if n.op_type == "LinearClassifier")
        return len(next(a for a in node.attribute if a.name == "coefficients").floats)

    # One multiply-accumulate per coefficient per sample (batch 1), through a Scaler too.
    assert by_name["logreg"]["metrics"]["macs"] == coefficients(models["logreg"])
    assert by_name["pipe"]["metrics"]["macs"] == coefficients(models["pipe"])
    forest = by_name["forest"]
    assert forest["metrics"]["macs"] is None
    assert any("tree ensemble (4 trees" in note for note in forest["notes"])
    code, out, _ = run_cli("check", "models/forest.onnx")
    assert "MACs               -" in out and "TreeEnsembleClassifier TreeEnsembleClassifier" not in out
    # The PR comment says why too: the `-` cell, and the reason under "unknown figures".
    code, out, _ = run_cli("check", "models/forest.onnx", "--output-format", "markdown")
    [row] = [line for line in out.splitlines() if line.startswith("| ") and "forest.onnx" in line]
    assert "| - |" in row
    [reason] = [line for line in out.splitlines() if line.startswith("- `models/forest.onnx`: MACs: ")]
    assert reason.endswith("MACs unknown: every op that computes in this model lacks a MAC convention")
    # init writes no MACs budget for what it could not measure.
    code, _, _ = run_cli("init", "models", "--config-file", "bloatguard.toml")
    assert code == 0
    written = (tmp_path / "bloatguard.toml").read_text()
    section = written.split('[budgets."models/forest.onnx"]')[1].split("[")[0]
    assert "max-params" in section and "max-macs" not in section


# --- only hints that work ------------------------------------------------------------------------

def test_no_fix_hint_for_features_of_an_ml_linear_model(tmp_path, run_cli, monkeypatch):
    skl_models(tmp_path / "models")
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cli("check", "models/logreg.onnx", "--select", "BG102")
    assert "BG102 warning" in out and "fix:" not in out
    code, out, _ = run_cli("check", "models/logreg.onnx", "--select", "BG102", "--output-format", "markdown")
    assert "bloatguard fix" not in out
    # fix agrees: there is nothing for it to do.
    code, out, err = run_cli("fix", "models/logreg.onnx", "--unsafe-fixes", "--dry-run", "--no-latency")
    assert "remove-features" not in out


def test_a_matmul_model_keeps_its_remove_features_hint(tmp_path, run_cli, monkeypatch):
    from test_hygiene_features_dead_fused import dense, weights

    dense(tmp_path / "m.onnx", weights(5, 2, zero_rows=(3,)))
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cli("check", "m.onnx", "--select", "BG102")
    assert "fix: bloatguard fix --unsafe-fixes m.onnx" in out


def test_state_dicts_get_advice_that_applies_to_them(tmp_path, run_cli, monkeypatch):
    torch = pytest.importorskip("torch")
    torch.save({"conv.weight": torch.randn(128, 64, 3, 3), "fc.weight": torch.randn(512, 256)},
               tmp_path / "model.pt")
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cli("check", "model.pt", "--select", "BG101", "--output-format", "markdown")
    assert "quantize-static" not in out and "samples" not in out and "bloatguard fix" not in out
    assert r"torch.ao.quantization.quantize\_dynamic" in out  # escaped: inert markdown


# --- small honesty fixes -------------------------------------------------------------------------

def test_a_closed_pipe_ends_quietly(project):
    for argv, expected in ((["rules"], 0), (["explain", "BG101"], 0),
                           (["check", "models", "--select", "BG002"], 0)):
        process = subprocess.Popen([*BLOATGUARD, *argv], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, cwd=project)
        process.stdout.readline()
        process.stdout.close()  # `| head -1`
        _, err = process.communicate(timeout=120)
        assert process.returncode == expected, (argv, err)
        assert b"Error" not in err and b"internal error" not in err, (argv, err)


def test_a_closed_pipe_keeps_checks_exit_code(project):
    config(project, '[budgets."models/**"]\nmax-params = "10"\n')
    process = subprocess.Popen([*BLOATGUARD, "check", "models"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, cwd=project)
    process.stdout.readline()
    process.stdout.close()
    _, err = process.communicate(timeout=120)
    assert process.returncode == 1 and b"internal error" not in err


def test_an_unreadable_model_is_reported_once_on_a_terminal(project):
    (project / "models" / "lfs.onnx").write_bytes(factories.LFS_POINTER)
    primary, secondary = pty.openpty()
    process = subprocess.Popen([*BLOATGUARD, "check", "models/lfs.onnx"], stdout=secondary,
                               stderr=secondary, cwd=project)
    os.close(secondary)
    output = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(primary)
    assert process.wait(timeout=120) == 2
    assert output.count(b"git lfs pull") == 1, output


def test_jobs_must_be_at_least_one(project, run_cli):
    code, _, err = run_cli("check", "models", "--jobs", "0")
    assert code == 2 and "must be at least 1" in err


def test_ci_keeps_its_report_out_of_the_checkout(monkeypatch):
    import tempfile

    from bloatguard.ci import Inputs

    assert Inputs.from_env({}).report.parent == Path(tempfile.gettempdir())
    assert Inputs.from_env({"RUNNER_TEMP": "/runner/tmp"}).report == Path("/runner/tmp/bloatguard-report.json")


def test_progress_in_a_log_is_one_line_per_step_once_the_run_is_long():
    import io

    from bloatguard.progress import Progress

    quick = io.StringIO()
    Progress(quick, quiet_for=60)(0, 2, "models/a.onnx")
    assert quick.getvalue() == ""  # a short run prints nothing extra
    log = io.StringIO()
    progress = Progress(log, quiet_for=0)
    progress(0, 2, "latency: models/a.onnx (vs base)")
    progress(1, 2, "evil\n::error::name.onnx")
    assert log.getvalue().splitlines() == [
        "bloatguard: [1/2] latency: models/a.onnx (vs base)",
        "bloatguard: [2/2] evil\\n::error::name.onnx"]  # a newline in a name cannot start a line


def test_latency_reports_each_model_to_the_progress(tmp_path):
    from bloatguard.config import Config
    from bloatguard.engine import measure
    from bloatguard.measure.latency import attach_latency
    from bloatguard.result import ModelResult

    config = Config(root=tmp_path)
    config.latency.time_budget_ms, config.latency.min_rounds, config.latency.max_rounds = 200, 2, 2
    results = []
    for name in ("a", "b"):
        path = factories.mlp(tmp_path / f"{name}.onnx", sizes=(8, 8), batch=1)
        results.append(ModelResult(path=path.name, facts=measure(path, config), head_file=path))
    heard = []
    attach_latency(results, config, lambda index, total, text: heard.append((index, total, text)))
    assert heard == [(0, 2, "latency: a.onnx (absolute)"), (1, 2, "latency: b.onnx (absolute)"),
                     (0, 2, "peak memory: a.onnx"), (1, 2, "peak memory: b.onnx")]
