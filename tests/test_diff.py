"""Why a model grew: the base/head layer diff in `check --base` (issue 16 #2). Each pair of models
is built so that the answer is known, and the rows are asserted exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import helper

import factories
from gitrepo import Repo


def fc_net(path, *, quantized: bool):
    """x[1,64] -> MatMul fc (64x32) -> y. Quantized: the weight is stored int8 with a scale and
    zero point and reaches the MatMul through DequantizeLinear."""
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((64, 32)).astype(np.float32)
    if quantized:
        inits = [factories.init("fc.weight_q", (weight * 20).astype(np.int8)),
                 factories.init("fc.scale", np.float32(0.05)),
                 factories.init("fc.zero", np.int8(0))]
        nodes = [helper.make_node("DequantizeLinear", ["fc.weight_q", "fc.scale", "fc.zero"], ["w"],
                                  name="fc_dq"),
                 helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")]
    else:
        inits = [factories.init("fc.weight", weight)]
        nodes = [helper.make_node("MatMul", ["x", "fc.weight"], ["y"], name="fc")]
    return factories.build(nodes, [factories.info("x", [1, 64])], [factories.info("y", [1, 32])],
                           inits, path)


@pytest.fixture
def repo(tmp_path, monkeypatch):
    repo = Repo(tmp_path / "repo")
    monkeypatch.chdir(repo.root)
    return repo


def check_json(run_cli, *args):
    code, out, err = run_cli("check", "models", "--no-latency", "--base", "HEAD", "--no-cache",
                             "--output-format", "json", *args)
    document = json.loads(out)
    return code, document["models"][0]


def commit_pair(repo, build_base, build_head):
    build_base(repo.root / "models" / "m.onnx")
    repo.commit("base")
    build_head(repo.root / "models" / "m.onnx")


def conv_macs(out_channels, in_channels, size=8):
    return out_channels * in_channels * 9 * size * size


def test_widened_conv_resizes_it_and_its_reader(repo, run_cli):
    commit_pair(repo, lambda p: factories.conv_net(p, widths=(16, 8)), lambda p: factories.conv_net(p, widths=(64, 8)))
    _, model = check_json(run_cli)
    rows = {row["name"]: row for row in model["diff"]}
    assert set(rows) == {"conv1", "conv2"}
    assert rows["conv1"]["change"] == rows["conv2"]["change"] == "resized"
    assert rows["conv1"]["op"] == "Conv"
    assert rows["conv1"]["params_delta"] == (64 - 16) * 27
    assert rows["conv1"]["bytes_delta"] == (64 - 16) * 27 * 4
    assert rows["conv1"]["macs_delta"] == conv_macs(64, 3) - conv_macs(16, 3)
    assert rows["conv2"]["params_delta"] == 8 * (64 - 16) * 9
    assert rows["conv2"]["macs_delta"] == conv_macs(8, 64) - conv_macs(8, 16)
    assert rows["conv1"]["base"]["weights"] == [{"name": "w1", "dtype": "float32", "shape": [16, 3, 3, 3]}]
    assert rows["conv1"]["head"]["weights"] == [{"name": "w1", "dtype": "float32", "shape": [64, 3, 3, 3]}]
    # Largest first: conv2 grew by 3456 params, conv1 by 1296.
    assert [row["name"] for row in model["diff"]] == ["conv2", "conv1"]
    assert model["op_changes"] == {}
    # The rows explain the whole change in the totals.
    delta = model["metrics"]["params"] - model["base"]["metrics"]["params"]
    assert sum(row["params_delta"] for row in model["diff"]) == delta
    assert sum(row["macs_delta"] for row in model["diff"]) == (model["metrics"]["macs"]
                                                              - model["base"]["metrics"]["macs"])


def test_inserted_block_is_one_added_layer_and_new_op_counts(repo, run_cli):
    commit_pair(repo, lambda p: factories.conv_net(p), lambda p: factories.conv_net(p, extra=True))
    _, model = check_json(run_cli)
    assert model["diff"] == [{
        "name": "conv_mid", "op": "Conv", "change": "added", "base": None,
        "head": {"params": 16 * 16 * 9, "weight_bytes": 16 * 16 * 9 * 4, "macs": conv_macs(16, 16),
                 "weights": [{"name": "w_mid", "dtype": "float32", "shape": [16, 16, 3, 3]}]},
        "params_delta": 16 * 16 * 9, "bytes_delta": 16 * 16 * 9 * 4, "macs_delta": conv_macs(16, 16)}]
    assert model["op_changes"] == {"Conv": {"base": 2, "head": 3}, "Relu": {"base": 1, "head": 2}}


def test_weight_back_to_float32_is_retyped(repo, run_cli):
    commit_pair(repo, lambda p: fc_net(p, quantized=True), lambda p: fc_net(p, quantized=False))
    _, model = check_json(run_cli)
    [row] = model["diff"]
    assert (row["name"], row["op"], row["change"]) == ("fc", "MatMul", "retyped")
    # int8 weight, float32 scale and int8 zero point -> one float32 weight.
    assert row["params_delta"] == -2
    assert row["bytes_delta"] == 64 * 32 * 4 - (64 * 32 + 4 + 1)
    assert row["macs_delta"] == 0
    assert [w["dtype"] for w in row["base"]["weights"]] == ["int8", "float32", "int8"]
    assert row["head"]["weights"] == [{"name": "fc.weight", "dtype": "float32", "shape": [64, 32]}]
    assert model["op_changes"] == {"DequantizeLinear": {"base": 1, "head": 0}}


def test_renamed_export_matches_by_position(repo, run_cli):
    """Every node and weight renamed (a module renamed before export), and the first conv
    widened: the layers still pair up, and the rows say what they were called."""
    commit_pair(repo, lambda p: factories.conv_net(p),
                lambda p: factories.conv_net(p, widths=(32, 8), names=("stem.conv", "head.conv"),
                                   weights=("stem.w", "head.w")))
    _, model = check_json(run_cli)
    rows = {row["name"]: row for row in model["diff"]}
    assert set(rows) == {"stem.conv", "head.conv"}
    assert rows["stem.conv"]["renamed_from"] == "conv1"
    assert rows["head.conv"]["renamed_from"] == "conv2"
    assert rows["stem.conv"]["change"] == "resized"
    assert rows["stem.conv"]["params_delta"] == (32 - 16) * 27


def test_renamed_nodes_with_the_same_weights_are_unchanged(repo, run_cli):
    """A re-export that only renamed its nodes explains nothing: no rows."""
    commit_pair(repo, lambda p: factories.conv_net(p), lambda p: factories.conv_net(p, names=("a", "b")))
    _, model = check_json(run_cli)
    assert model["diff"] == [] and model["op_changes"] == {}


def test_larger_input_resizes_the_layers_that_compute_on_it(repo, run_cli):
    """Same weights, a larger input: the layers' MACs changed, so they are resized."""
    commit_pair(repo, lambda p: factories.conv_net(p, size=8), lambda p: factories.conv_net(p, size=16))
    _, model = check_json(run_cli)
    rows = {row["name"]: row for row in model["diff"]}
    assert rows["conv1"]["change"] == "resized"
    assert rows["conv1"]["params_delta"] == 0
    assert rows["conv1"]["macs_delta"] == conv_macs(16, 3, 16) - conv_macs(16, 3, 8)


def test_text_and_markdown_explain_growth_layer_by_layer(repo, run_cli):
    commit_pair(repo, lambda p: factories.conv_net(p), lambda p: factories.conv_net(p, widths=(64, 8), extra=True))
    _, text, _ = run_cli("check", "models", "--no-latency", "--base", "HEAD")
    assert "what changed: 3 layers changed: +" in text
    assert "+ conv_mid (Conv) added float32[64, 64, 3, 3]: +36.9K params" in text
    assert "~ conv2 (Conv) resized float32[8, 16, 3, 3] → float32[8, 64, 3, 3]" in text
    assert "ops: Conv 2 → 3, Relu 1 → 2" in text
    _, markdown, _ = run_cli("check", "models", "--no-latency", "--base", "HEAD",
                             "--output-format", "markdown")
    assert "<details><summary><code>models/m.onnx</code>: 3 layers changed: +" in markdown
    assert "| `conv_mid` | `Conv` | added | `-` | `float32[64, 64, 3, 3]` | +36.9K |" in markdown
    assert "</details>" in markdown


def test_merge_keeps_the_diff(repo, run_cli, tmp_path):
    commit_pair(repo, lambda p: factories.conv_net(p), lambda p: factories.conv_net(p, extra=True))
    _, out, _ = run_cli("check", "models", "--no-latency", "--base", "HEAD", "--output-format", "json")
    report = tmp_path / "shard.json"
    report.write_text(out)
    _, merged, _ = run_cli("merge", str(report), "--output-format", "json")
    assert json.loads(merged)["models"][0]["diff"] == json.loads(out)["models"][0]["diff"]
    assert json.loads(merged)["models"][0]["op_changes"] == json.loads(out)["models"][0]["op_changes"]
    _, direct, _ = run_cli("check", "models", "--no-latency", "--base", "HEAD",
                           "--output-format", "markdown")
    _, via_merge, _ = run_cli("merge", str(report), "--output-format", "markdown")
    assert via_merge == direct


def test_warm_cache_gives_the_same_diff(repo, run_cli):
    commit_pair(repo, lambda p: factories.conv_net(p), lambda p: factories.conv_net(p, widths=(64, 8), extra=True))
    repo.commit("head")
    args = ("check", "models", "--no-latency", "--base", "HEAD~1", "--output-format", "json")
    _, cold, _ = run_cli(*args)
    _, warm, _ = run_cli(*args)
    assert json.loads(cold)["models"][0]["diff"]
    assert warm == cold


def test_state_dict_rows_are_modules(repo, run_cli):
    """Formats without a graph: tensors grouped by module; a widened Linear is resized."""
    from safetensors.numpy import save_file

    path = repo.root / "models" / "m.safetensors"
    path.parent.mkdir(parents=True)

    def write(width):
        save_file({"encoder.fc.weight": np.zeros((width, 16), np.float32),
                   "encoder.fc.bias": np.zeros((width,), np.float32),
                   "head.weight": np.zeros((4, width), np.float16)}, str(path))

    write(32)
    repo.commit("base")
    write(48)
    _, model = check_json(run_cli)
    rows = {row["name"]: row for row in model["diff"]}
    assert set(rows) == {"encoder.fc", "head"}
    assert rows["encoder.fc"]["change"] == "resized"
    assert rows["encoder.fc"]["params_delta"] == 16 * 16 + 16
    assert rows["head"]["bytes_delta"] == 4 * 16 * 2
    assert rows["head"]["macs_delta"] is None  # no graph, no MACs per layer


def test_unchanged_and_new_models_have_no_diff(repo, run_cli):
    factories.conv_net(repo.root / "models" / "m.onnx")
    repo.commit("base")
    factories.conv_net(repo.root / "models" / "n.onnx", widths=(4, 4))
    code, out, _ = run_cli("check", "models", "--no-latency", "--base", "HEAD", "--output-format", "json")
    models = {m["path"]: m for m in json.loads(out)["models"]}
    assert "diff" not in models["models/m.onnx"] and "diff" not in models["models/n.onnx"]



def test_tflite_layers_diff_adds_up(repo, run_cli):
    """Two published MediaPipe detectors at one path: the rows explain the whole change."""
    import shutil

    from published import FACE_DETECTION, published

    files = {p.name: p for p in published(FACE_DETECTION, "face_detection_*.tflite")}
    target = repo.root / "models" / "m.tflite"
    target.parent.mkdir(parents=True)
    shutil.copy(files["face_detection_short_range.tflite"], target)
    repo.commit("base")
    shutil.copy(files["face_detection_full_range.tflite"], target)
    _, model = check_json(run_cli)
    assert model["diff"]
    assert {row["op"] for row in model["diff"]} >= {"CONV_2D"}
    for key, metric in (("params_delta", "params"), ("macs_delta", "macs")):
        assert sum(row[key] for row in model["diff"]) == (model["metrics"][metric]
                                                          - model["base"]["metrics"][metric])
