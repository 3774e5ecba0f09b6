"""`bloatguard show`: the per-layer profile adds up to what `check` reports (issue 16 #1)."""

from __future__ import annotations

import csv
import io
import json
import shutil

import numpy as np
import pytest
from onnx import helper

from bloatguard.formats import read_model

import factories
from factories import package_file

SILERO_INPUTS = '[inputs."*.onnx"]\ninput = [1, 512]\nstate = [2, 1, 128]\n'


def show_json(run_cli, path, *args):
    code, out, err = run_cli("show", path, "--output-format", "json", *args)
    assert code == 0, err
    return json.loads(out)


def check_metrics(run_cli, path):
    code, out, err = run_cli("check", path, "--no-latency", "--no-cache", "--output-format", "json")
    return json.loads(out)["models"][0]["metrics"]


def assert_adds_up(document, metrics):
    """Every row sum equals check's total, exactly."""
    rows = document["rows"]
    assert document["totals"]["params"] == metrics["params"] == sum(row["params"] for row in rows)
    assert document["totals"]["weight_bytes"] == metrics["weight_bytes"] == sum(
        row["weight_bytes"] for row in rows)
    assert document["totals"]["macs"] == metrics["macs"]
    if metrics["macs"] is not None:
        assert sum(row["macs"] for row in rows) == metrics["macs"]


@pytest.mark.parametrize("name", ["silero_vad.onnx", "silero_vad_16k_op15.onnx",
                                  "silero_vad_half.onnx", "silero_vad_16k_sequence.onnx"])
def test_rows_add_up_to_check_on_silero_vad(tmp_path, monkeypatch, run_cli, name):
    shutil.copy(package_file("silero_vad", "data", name), tmp_path / name)
    (tmp_path / "bloatguard.toml").write_text(SILERO_INPUTS if "sequence" not in name else "")
    monkeypatch.chdir(tmp_path)
    document = show_json(run_cli, name)
    metrics = check_metrics(run_cli, name)
    assert metrics["macs"]  # the configured shapes make every count known
    assert_adds_up(document, metrics)
    # Each stored tensor is listed once: weights of If branches included.
    listed = sorted(weight["name"] for row in document["rows"] for weight in row["weights"])
    assert listed == sorted(tensor.name for tensor in read_model(tmp_path / name).tensors)


def test_rows_add_up_to_check_on_magika(tmp_path, monkeypatch, run_cli):
    shutil.copy(package_file("magika", "models", "standard_v3_3", "model.onnx"), tmp_path / "m.onnx")
    monkeypatch.chdir(tmp_path)
    document = show_json(run_cli, "m.onnx", "--sort", "macs")
    metrics = check_metrics(run_cli, "m.onnx")
    assert_adds_up(document, metrics)
    macs = [row["macs"] for row in document["rows"]]
    assert macs == sorted(macs, reverse=True)
    assert document["rows"][0]["macs_share"] == pytest.approx(macs[0] / metrics["macs"])


def test_node_rows_name_their_weights_and_activations(tmp_path, monkeypatch, run_cli):
    monkeypatch.chdir(tmp_path)
    factories.conv_net(tmp_path / "m.onnx", widths=(16, 8), extra=True)
    document = show_json(run_cli, "m.onnx", "--sort", "order")
    rows = {row["name"]: row for row in document["rows"]}
    assert [row["name"] for row in document["rows"]] == ["conv1", "conv_mid", "conv2"]
    assert rows["conv_mid"] == {
        "name": "conv_mid", "op": "Conv", "params": 2304, "weight_bytes": 9216,
        "macs": 16 * 16 * 9 * 64, "activation_bytes": 16 * 64 * 4,
        "params_share": pytest.approx(2304 / document["totals"]["params"]),
        "macs_share": pytest.approx(16 * 16 * 9 * 64 / document["totals"]["macs"]),
        "dtypes": ["float32"],
        "weights": [{"name": "w_mid", "dtype": "float32", "shape": [16, 16, 3, 3]}]}


def test_by_op_type_and_top(tmp_path, monkeypatch, run_cli):
    monkeypatch.chdir(tmp_path)
    factories.conv_net(tmp_path / "m.onnx", widths=(16, 8), extra=True)
    document = show_json(run_cli, "m.onnx", "--by", "op-type")
    [conv] = document["rows"]  # Relu computes no MACs and reads no weight: no row
    assert conv["name"] == "Conv" and conv["layers"] == 3
    assert conv["params"] == document["totals"]["params"]
    assert conv["macs"] == document["totals"]["macs"]
    top = show_json(run_cli, "m.onnx", "--top", "1", "--sort", "params")
    assert [row["name"] for row in top["rows"]] == ["conv_mid"] and top["rows_total"] == 3
    _, text, _ = run_cli("show", "m.onnx", "--top", "1")
    assert "… 2 more (--top shows more)" in text
    assert "total (3 rows): 3.89K params" in text


def test_csv_has_a_header_and_one_row_per_layer(tmp_path, monkeypatch, run_cli):
    monkeypatch.chdir(tmp_path)
    factories.conv_net(tmp_path / "m.onnx")
    _, out, _ = run_cli("show", "m.onnx", "--output-format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0])[:6] == ["name", "op", "params", "weight_bytes", "macs", "activation_bytes"]
    assert len(rows) == 2
    assert sum(int(row["params"]) for row in rows) == 16 * 27 + 8 * 16 * 9
    assert {row["weights"] for row in rows} == {"w1:float32[16,3,3,3]", "w2:float32[8,16,3,3]"}


def test_csv_cells_never_become_spreadsheet_formulas(tmp_path, monkeypatch, run_cli):
    monkeypatch.chdir(tmp_path)
    weight = factories.init("=HYPERLINK(\"http://evil\")", np.ones((4, 4), np.float32))
    factories.build([helper.make_node("MatMul", ["x", weight.name], ["y"], name="@cmd")],
                    [factories.info("x", [1, 4])], [factories.info("y", [1, 4])], [weight],
                    tmp_path / "m.onnx")
    _, out, _ = run_cli("show", "m.onnx", "--output-format", "csv")
    [row] = list(csv.DictReader(io.StringIO(out)))
    assert row["name"] == "'@cmd"
    assert row["weights"].startswith("'=HYPERLINK")


def test_state_dict_rows_are_modules(tmp_path, monkeypatch, run_cli):
    torch = pytest.importorskip("torch")
    monkeypatch.chdir(tmp_path)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    torch.save(net.state_dict(), tmp_path / "m.pt")
    document = show_json(run_cli, "m.pt")
    assert {row["name"]: row["params"] for row in document["rows"]} == {"0": 8 * 16 + 16, "2": 16 * 2 + 2}
    assert document["totals"]["macs"] is None
    assert sum(row["params"] for row in document["rows"]) == check_metrics(run_cli, "m.pt")["params"]


def test_safetensors_by_dtype(tmp_path, monkeypatch, run_cli):
    from safetensors.numpy import save_file

    monkeypatch.chdir(tmp_path)
    save_file({"encoder.layer.0.q.weight": np.zeros((8, 8), np.float16),
               "encoder.layer.0.q.bias": np.zeros((8,), np.float32)}, str(tmp_path / "m.safetensors"))
    document = show_json(run_cli, "m.safetensors", "--by", "dtype")
    assert {row["name"]: (row["tensors"], row["params"], row["weight_bytes"])
            for row in document["rows"]} == {"float16": (1, 64, 128), "float32": (1, 8, 32)}
    layers = show_json(run_cli, "m.safetensors")
    assert [row["name"] for row in layers["rows"]] == ["encoder.layer.0.q"]


def test_unreadable_model_is_one_line_and_exit_2(tmp_path, monkeypatch, run_cli):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.onnx").write_bytes(b"\x08\x07garbage that is not a model")
    code, out, err = run_cli("show", "m.onnx")
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "m.onnx" in err
    code, _, err = run_cli("show", "missing.onnx")
    assert code == 2 and "missing.onnx" in err


def test_markdown_table(tmp_path, monkeypatch, run_cli):
    monkeypatch.chdir(tmp_path)
    factories.conv_net(tmp_path / "m.onnx")
    _, out, _ = run_cli("show", "m.onnx", "--output-format", "markdown")
    assert out.startswith("### `m.onnx` by layer\n")
    assert "| `conv2` | `Conv` | 1.15K | 72.7% |" in out


def test_tflite_rows_are_operators_and_add_up(tmp_path, monkeypatch, run_cli):
    """MediaPipe's published face landmark model: operators with their weights and MACs."""
    from published import FACE_DETECTION, published

    [source] = [p for p in published(FACE_DETECTION, "face_landmark.tflite")]
    shutil.copy(source, tmp_path / "m.tflite")
    monkeypatch.chdir(tmp_path)
    document = show_json(run_cli, "m.tflite", "--sort", "order")
    assert_adds_up(document, check_metrics(run_cli, "m.tflite"))
    first = document["rows"][0]
    assert (first["name"], first["op"]) == ("conv2d", "CONV_2D")
    assert [w["name"] for w in first["weights"]] == ["conv2d/Kernel", "conv2d/Bias"]
    by_op = {row["name"]: row for row in show_json(run_cli, "m.tflite", "--by", "op-type")["rows"]}
    assert by_op["CONV_2D"]["macs"] + by_op["DEPTHWISE_CONV_2D"]["macs"] <= document["totals"]["macs"]
