"""The command line end to end: exit codes, reports, and one-line errors for bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import factories

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


@pytest.fixture
def examples(tmp_path):
    target = tmp_path / "examples"
    shutil.copytree(EXAMPLES, target)
    return target


def test_examples_fail_the_deliberately_tight_budget(run_cli, examples):
    code, out, err = run_cli("check", examples)
    assert code == 1
    assert "BG002 error: [param-count] parameter count 94K exceeds the budget of 90K" in out
    assert "models/detector.onnx" in out and "models/classifier.onnx" in out
    assert out.splitlines()[-1].startswith("3 models checked: 1 error, ")
    assert err == ""


def test_json_report_schema(run_cli, examples):
    code, out, _ = run_cli("check", examples, "--output-format", "json")
    assert code == 1
    report = json.loads(out)
    assert report["version"] == 1
    assert {k: report["summary"][k] for k in ("models", "errors", "unreadable")} == {
        "models": 3, "errors": 1, "unreadable": 0}
    by_name = {Path(m["path"]).name: m for m in report["models"]}
    detector = by_name["detector.onnx"]
    assert detector["format"] == "onnx"
    assert detector["metrics"]["params"] == 94022
    assert detector["metrics"]["params_by_dtype"] == {"float32": 94022}
    assert detector["metrics"]["file_size"] == (examples / "models" / "detector.onnx").stat().st_size
    assert detector["metrics"]["macs"] > 0
    assert detector["metrics"]["latency_ms"] is None
    finding = next(f for f in detector["findings"] if f["severity"] == "error")
    assert finding["code"] == "BG002" and finding["rule"] == "param-count"
    assert finding["severity"] == "error"
    assert finding["details"]["value"] == 94022 and finding["details"]["limit"] == 90000
    assert by_name["vad.onnx"]["metrics"]["params"] == 512 * 64 + 64 + 256 * 64 + 64 + 7


def test_select_and_ignore(run_cli, examples):
    assert run_cli("check", examples, "--ignore", "BG002")[0] == 0
    assert run_cli("check", examples, "--select", "BG001,BG003")[0] == 0
    assert run_cli("check", examples, "--select", "param-count")[0] == 1


def test_output_file(run_cli, examples, tmp_path):
    target = tmp_path / "report.json"
    code, out, _ = run_cli("check", examples, "--output-format", "json", "--output-file", target)
    assert code == 1 and out == ""
    assert json.loads(target.read_text())["summary"]["errors"] == 1


def test_config_error_exits_2_with_one_line(run_cli, examples):
    (examples / "bloatguard.toml").write_text('[budgets."**"]\nmax-file-size = 25\n')
    code, out, err = run_cli("check", examples)
    assert code == 2 and out == ""
    assert err.count("\n") == 1
    assert "bloatguard.toml" in err and "max-file-size" in err and "unit" in err


def test_missing_path_exits_2(run_cli, tmp_path):
    code, _, err = run_cli("check", tmp_path / "nope")
    assert code == 2 and "no such file" in err


def test_lfs_pointer_and_corrupt_files_exit_2_but_others_are_reported(run_cli, tmp_path):
    factories.mlp(tmp_path / "good.onnx")
    (tmp_path / "model.onnx").write_bytes(factories.LFS_POINTER)
    (tmp_path / "broken.onnx").write_bytes(b"\x08\x07\x12\xff\xff\xff\xff\x0f")
    code, out, err = run_cli("check", tmp_path, "--output-format", "json")
    assert code == 2
    report = json.loads(out)
    by_name = {Path(m["path"]).name: m for m in report["models"]}
    assert by_name["good.onnx"]["metrics"]["params"] == factories.mlp_params()
    assert by_name["model.onnx"]["findings"][0]["code"] == "BG000"
    assert "git lfs pull" in by_name["model.onnx"]["findings"][0]["message"]
    assert by_name["broken.onnx"]["findings"][0]["code"] == "BG000"
    lines = err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("bloatguard: ") for line in lines)
    assert "Traceback" not in err


def test_explain_prints_rule_docs(run_cli):
    code, out, _ = run_cli("explain", "BG001")
    assert code == 0
    assert "## What it does" in out and "## Why is this bad?" in out and "file-size" in out
    assert run_cli("explain", "compute")[1].startswith("# BG003 compute")
    code, _, err = run_cli("explain", "BG999")
    assert code == 2 and "unknown rule" in err


def test_rules_lists_every_rule(run_cli):
    code, out, _ = run_cli("rules")
    assert code == 0
    for code_name in ("BG000", "BG001", "BG002", "BG003", "BG900"):
        assert code_name in out


def test_every_rules_module_is_registered():
    from bloatguard.registry import all_rules

    modules = {p.stem for p in (REPO / "rules").glob("*.py") if p.stem != "__init__"}
    registered = {type(rule).__module__.rsplit(".", 1)[-1] for rule in all_rules()}
    assert modules == registered
    for rule in all_rules():
        doc = type(rule).__doc__ or ""
        for section in ("## What it does", "## Why is this bad?", "## Fix safety", "## Options"):
            assert section in doc, (rule.code, section)


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)


def test_onnx_check_imports_neither_torch_nor_onnxruntime(examples):
    result = _run(
        "import sys\n"
        "from bloatguard.cli import main\n"
        f"main(['check', {str(examples)!r}, '--output-format', 'json'])\n"
        "heavy = sorted(m for m in ('torch', 'onnxruntime') if m in sys.modules)\n"
        "print('HEAVY', heavy, file=sys.stderr)\n")
    assert "HEAVY []" in result.stderr, result.stderr


def test_checking_pytorch_files_does_not_import_onnx():
    # No ONNX file, no MACs child, so no reason to pay for importing onnx.
    from factories import package_file

    files = [package_file("silero_vad", "data", name) for name in ("silero_vad.jit", "silero_vad_16k.safetensors")]
    result = _run(
        "import sys\n"
        "from bloatguard.cli import main\n"
        f"code = main(['check', *{[str(f) for f in files]!r}, '--select', 'BG0', '--output-format', 'json'])\n"
        "print('CODE', code, sorted(m for m in ('onnx', 'torch', 'onnxruntime') if m in sys.modules),"
        " file=sys.stderr)\n")
    assert "CODE 0 []" in result.stderr, result.stderr


def test_listing_and_explaining_rules_is_light():
    # Every rule module is imported to list them; none may pull numpy (or onnx) in to do so.
    result = _run("import sys\nfrom bloatguard.cli import main\n"
                  "main(['rules']); main(['explain', 'BG106'])\n"
                  "print('HEAVY', sorted(m for m in ('numpy', 'onnx', 'torch') if m in sys.modules))")
    assert "HEAVY []" in result.stdout, result.stdout[-500:]


def test_version_is_light():
    result = _run("import sys\nfrom bloatguard.cli import main\n"
                  "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
                  "print(sorted(m for m in ('onnx', 'numpy', 'tabulate', 'torch') if m in sys.modules))")
    assert result.stdout.strip().endswith("[]"), result.stdout
