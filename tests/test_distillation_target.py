"""The distillation target of `bloatguard fix --unsafe-fixes`: when a params, MACs or size budget
is out of reach of every verified candidate, how far the best one is and what a student would
have to be (width from the scaling of params and MACs, depth from the numbered layers)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import arch_models
import numpy as np
import pytest
from onnx import TensorProto, helper

from factories import build, info, init

pytestmark = pytest.mark.usefixtures("debug_mode")


def blocks(path: Path, *, vocab: int = 100, width: int = 32, layers: int = 8) -> Path:
    """token ids -> an embedding table [vocab, width] -> `layers` numbered [width, width]
    MatMuls (`layers.<i>.fc.weight`): 3200 params that scale with width and 8 x 1024 with
    width^2, 1024 of them per numbered layer."""
    rng = np.random.default_rng(0)
    inits = [init("embed.weight", rng.standard_normal((vocab, width)).astype(np.float32))]
    nodes = [helper.make_node("Gather", ["embed.weight", "ids"], ["h0"], name="embed")]
    for index in range(layers):
        inits.append(init(f"layers.{index}.fc.weight",
                          (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)))
        out = "y" if index == layers - 1 else f"h{index + 1}"
        nodes.append(helper.make_node("MatMul", [f"h{index}", f"layers.{index}.fc.weight"], [out],
                                      name=f"/layers.{index}/fc/MatMul"))
    return build(nodes, [info("ids", [1, 16], TensorProto.INT64)], [info("y", [1, 16, width])],
                 inits, path)


def fix_json(run_cli, path: Path, *args: str) -> dict:
    code, out, err = run_cli("fix", "--dry-run", "--no-latency", "--output-format", "json",
                             *args, str(path))
    assert code == 0, err
    return json.loads(out)["models"][0]


def test_composition_finds_width_and_depth_scaling(tmp_path):
    from bloatguard.engine import measure
    from bloatguard.fix.distill import composition, layers_for, width_for

    facts = measure(blocks(tmp_path / "m.onnx"), _config(tmp_path, ""))
    comp = composition(facts)
    assert (comp.linear, comp.quadratic, comp.blocks, comp.params_in_blocks) == (3200, 8192, 8, 8192)
    assert comp.family == "transformer"
    share = 8000 / 11392
    # 3200 w + 8192 w^2 = 8000
    assert width_for(share, comp, "params") == pytest.approx(
        (-3200 + math.sqrt(3200 ** 2 + 4 * 8192 * 8000)) / (2 * 8192))
    assert layers_for(share, comp, "params") == 4  # 3200 + 4 x 1024 <= 8000 < 3200 + 5 x 1024
    assert width_for(0.25, comp, "macs") == 0.5  # MACs scale with width^2
    assert layers_for(0.25, comp, "macs") == 2  # the MACs are all in the layers: 2 of 8
    # From names and shapes alone (facts from the metric cache), the same here.
    assert composition(facts, names_only=True) == comp


def _config(directory: Path, toml: str):
    from bloatguard.config import loads

    return loads(toml, directory / "bloatguard.toml")


def test_the_target_when_nothing_meets_max_params(tmp_path, run_cli):
    path = blocks(tmp_path / "m.onnx")
    (tmp_path / "bloatguard.toml").write_text('[budgets."*.onnx"]\nmax-params = "8K"\n')
    model = fix_json(run_cli, path, "--unsafe-fixes")
    [target] = model["distillation"]
    width = (-3200 + math.sqrt(3200 ** 2 + 4 * 8192 * 8000)) / (2 * 8192)
    assert target == {
        "budget": "max-params", "metric": "params", "limit": 8000,
        "best_candidate": "the original, unchanged", "best_value": 11392,
        "factor": round(11392 / 8000, 4), "width": round(width, 4), "layers": 4,
        "layers_total": 8, "family": "transformer", "text": target["text"]}
    assert target["text"] == (
        "max-params (8K) is out of reach of every verified fix: needs 1.4x fewer params than the "
        "best verified candidate (the original, unchanged, 11.4K): a student at width x0.81 or "
        "one with 4 of 8 layers would fit (params scale with width^2, embeddings and biases with "
        "width; 8 numbered transformer layers found). Distillation needs training data and a "
        "training loop, which bloatguard does not run: train the student on the teacher's "
        "outputs, then verify it against this model with bloatguard compare.")
    code, out, _ = run_cli("fix", "--dry-run", "--no-latency", "--unsafe-fixes", str(path))
    assert "distillation target: max-params (8K) is out of reach of every verified fix" in out
    assert "which bloatguard does not run" in out.replace("\n    ", " ")


def test_no_target_without_unsafe_fixes_or_within_reach(tmp_path, run_cli):
    path = blocks(tmp_path / "m.onnx")
    (tmp_path / "bloatguard.toml").write_text('[budgets."*.onnx"]\nmax-params = "8K"\n')
    assert fix_json(run_cli, path)["distillation"] == []  # unsafe fixes not tried yet
    (tmp_path / "bloatguard.toml").write_text('[budgets."*.onnx"]\nmax-params = "12K"\n')
    assert fix_json(run_cli, path, "--unsafe-fixes")["distillation"] == []


def test_a_size_budget_a_verified_candidate_meets_has_no_target(tmp_path, run_cli):
    """fp16 halves the file: a max-file-size it meets needs no student; max-macs, which no
    storage change lowers, does: a conv net's MACs scale with width^2."""
    path = arch_models.dense_conv(tmp_path / "conv.onnx")
    size = path.stat().st_size
    (tmp_path / "bloatguard.toml").write_text(
        f'[budgets."*.onnx"]\nmax-file-size = "{size * 6 // 10} B"\nmax-macs = "50M"\n')
    model = fix_json(run_cli, path, "--unsafe-fixes", "--only", "convert-fp16")
    [candidate] = model["candidates"]
    assert candidate["verdict"] == "winner" and candidate["file_size"] < size * 0.6
    [target] = model["distillation"]
    assert (target["budget"], target["family"], target["layers"]) == ("max-macs", "convolutional", None)
    assert target["best_value"] == 150_994_944
    assert target["factor"] == round(150_994_944 / 50e6, 4)
    assert target["width"] == round(math.sqrt(50e6 / 150_994_944), 4)  # MACs scale with width^2
    assert "a student at width x0.58 would fit (MACs scale with width^2)" in target["text"]


def test_the_check_hint_for_a_budget_finding(tmp_path):
    """What `check` can say for a broken budget before any fix is verified (the budget rules
    and report call bloatguard.fix.distill.check_hint)."""
    from bloatguard.engine import measure
    from bloatguard.fix.distill import check_hint

    facts = measure(blocks(tmp_path / "m.onnx"), _config(tmp_path, ""))
    assert check_hint(facts, "max-params", 20_000) is None  # within
    hint = check_hint(facts, "max-params", 8000)
    assert (hint["best_candidate"], hint["best_value"], hint["layers"]) == (None, 11392, 4)
    assert hint["text"].startswith("to meet max-params (8K) without other fixes, a distilled "
                                   "student needs 1.4x fewer params: a student at width x0.81 or "
                                   "one with 4 of 8 layers would fit")
    assert hint["text"].endswith("Run bloatguard fix --unsafe-fixes first: it says what the "
                                 "verified fixes reach.")


def test_check_puts_the_target_under_the_budget_finding(tmp_path, monkeypatch, run_cli):
    """`check`'s hint for BG002 over max-params: in JSON details, the text report and the PR
    comment; nothing when the model is within its budget."""
    blocks(tmp_path / "m.onnx")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bloatguard.toml").write_text('[budgets."m.onnx"]\nmax-params = 8000\n')
    code, out, _ = run_cli("check", "m.onnx", "--no-latency", "--output-format", "json")
    [finding] = [f for f in json.loads(out)["models"][0]["findings"] if f["code"] == "BG002"]
    assert code == 1
    target = finding["details"]["distillation"]
    assert (target["factor"], target["layers"], target["layers_total"]) == (round(11392 / 8000, 4), 4, 8)
    _, text, _ = run_cli("check", "m.onnx", "--no-latency")
    assert ("    distillation target: to meet max-params (8K) without other fixes, a distilled "
            "student needs 1.4x fewer params: a student at width x0.81 or one with 4 of 8 layers "
            "would fit") in text
    _, markdown, _ = run_cli("check", "m.onnx", "--no-latency", "--output-format", "markdown")
    assert "  - distillation target: to meet max-params \\(8K\\) without other fixes" in markdown
    [line] = [line for line in markdown.splitlines() if line.startswith("  - distillation target")]
    assert "`" not in line  # escaped backticks show as literal ones on GitHub
    (tmp_path / "bloatguard.toml").write_text('[budgets."m.onnx"]\nmax-params = 20000\n')
    _, text, _ = run_cli("check", "m.onnx", "--no-latency")
    assert "distillation target" not in text
