"""TFLite and GGUF through the whole CLI: budgets with --base, `init`, the PR comment
(markdown) and SARIF, all derived from the findings and metrics with no per-format code."""

from __future__ import annotations

import json

import pytest

import gguf_models
import tflite_models as tm
from gitrepo import Repo

CONFIG = """
[budgets."models/**"]
max-params = "30K"  # det.tflite grows to 38.4K; chat.gguf holds 22.8K
max-file-size-increase = "5%"
max-params-increase = "5%"
max-macs-increase = "5%"
"""


@pytest.fixture
def repo(tmp_path, monkeypatch):
    repo = Repo(tmp_path / "repo")
    tm.mlp(repo.root / "models" / "det.tflite", (64, 128, 10))
    gguf_models.llama(repo.root / "models" / "chat.gguf", embd=32, ff=64)
    repo.write("bloatguard.toml", CONFIG)
    repo.commit("models")
    monkeypatch.chdir(repo.root)
    return repo


def grow(repo: Repo) -> None:
    tm.mlp(repo.root / "models" / "det.tflite", (64, 512, 10))  # 4x the first layer
    gguf_models.llama(repo.root / "models" / "chat.gguf", embd=32, ff=64,
                      template=gguf_models.HOSTILE_TEMPLATE)


def test_budgets_and_growth_against_the_base(repo, run_cli):
    grow(repo)
    code, out, err = run_cli("check", "models", "--base", "HEAD", "--no-latency", "--output-format", "json")
    assert code == 1, err
    models = {m["path"]: m for m in json.loads(out)["models"]}
    det = models["models/det.tflite"]
    assert det["status"] == "modified" and det["format"] == "tflite"
    assert det["base"]["metrics"]["params"] == 64 * 128 + 128 + 128 * 10 + 10
    assert det["metrics"]["params"] == 64 * 512 + 512 + 512 * 10 + 10
    assert det["metrics"]["macs"] == 64 * 512 + 512 * 10
    codes = sorted(f["code"] for f in det["findings"])
    assert codes == ["BG001", "BG002", "BG002", "BG003", "BG101"]  # over 30K, and 4x growth
    chat = models["models/chat.gguf"]
    assert [f["code"] for f in chat["findings"]] == ["BG901"]
    assert chat["metrics"]["architecture"] == "llama"


def test_pr_comment_and_sarif(repo, run_cli):
    from test_ci_reports import sarif_schema_validator

    grow(repo)
    code, markdown, _ = run_cli("check", "models", "--base", "HEAD", "--no-latency", "--output-format", "markdown")
    assert code == 1
    assert "`models/det.tflite`" in markdown and "`models/chat.gguf`" in markdown
    assert "BG901" in markdown and "unsafe-chat-template" in markdown
    code, out, _ = run_cli("check", "models", "--base", "HEAD", "--no-latency", "--output-format", "sarif")
    log = json.loads(out)
    assert not sorted(sarif_schema_validator().iter_errors(log), key=str)
    results = log["runs"][0]["results"]
    located = {(r["ruleId"], r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]) for r in results}
    assert ("BG901", "models/chat.gguf") in located and ("BG002", "models/det.tflite") in located


def test_init_writes_budgets_for_the_new_formats(repo, run_cli):
    code, out, err = run_cli("init", "models", "--config-file", "budgets.toml")
    assert code == 0, err
    text = (repo.root / "budgets.toml").read_text()
    assert '"models/det.tflite"' in text and '"models/chat.gguf"' in text


def test_text_report_shows_what_only_the_format_reports(repo, run_cli):
    """A GGUF's bits per weight, architecture, context length and bytes by GGML type reach the
    text report as they reach JSON's metrics, from the reader's format metrics."""
    code, out, _ = run_cli("check", "models/chat.gguf", "--no-latency", "--output-format", "json")
    metrics = json.loads(out)["models"][0]["metrics"]
    code, text, _ = run_cli("check", "models/chat.gguf", "--no-latency")
    assert (f"  bits per weight {metrics['bits_per_weight']}, architecture llama, context length "
            f"{metrics['context_length']}") in text.splitlines()
    [by_type] = [line for line in text.splitlines() if line.startswith("  bytes by type: ")]
    assert by_type.count("(") == len(metrics["bytes_by_dtype"])
