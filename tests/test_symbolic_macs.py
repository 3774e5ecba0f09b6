"""MACs as a formula of the input dims left symbolic (issue 16 #5)."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
from onnx import helper

from bloatguard.formats.onnx import read_proto
from bloatguard.measure import symbolic
from bloatguard.measure.compute import SHOW_FORMULA_WORK, analyze, count_macs

import factories


def attention(path, dim: str = "seq"):
    """x[1, seq, 16] -> q = x·W (16x16) -> scores = q·qᵀ [1, seq, seq]: 256·seq + 16·seq²."""
    weight = factories.init("w", np.ones((16, 16), np.float32))
    nodes = [helper.make_node("MatMul", ["x", "w"], ["q"], name="proj"),
             helper.make_node("Transpose", ["q"], ["qt"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["q", "qt"], ["scores"], name="scores")]
    return factories.build(nodes, [factories.info("x", [1, dim, 16])],
                           [factories.info("scores", [1, dim, dim])], [weight], path)


def strided(path):
    """A 3x3 conv with stride 2 and padding 1 on [1, 3, h, w] to 8 channels: h/2·w/2·216."""
    weight = factories.init("w", np.ones((8, 3, 3, 3), np.float32))
    node = helper.make_node("Conv", ["x", "w"], ["y"], strides=[2, 2], pads=[1, 1, 1, 1])
    return factories.build([node], [factories.info("x", [1, 3, "h", "w"])],
                           [factories.info("y", [1, 8, None, None])], [weight], path)


def test_quadratic_attention_formula(tmp_path):
    result, _ = analyze(read_proto(attention(tmp_path / "m.onnx")))
    assert result.macs is None
    assert result.formula == "16·seq² + 256·seq"
    assert any(note.startswith("MACs = 16·seq² + 256·seq for symbolic seq") for note in result.notes)


def test_the_formula_gives_the_count_at_other_values(tmp_path):
    model = read_proto(factories.conv_model(tmp_path / "m.onnx"))
    result, _ = analyze(model)
    assert result.formula == "216·height·width"
    assert count_macs(model, {"x": [1, 3, 224, 224]}).macs == 216 * 224 * 224


def test_strided_formula_has_fractional_coefficients(tmp_path):
    result, _ = analyze(read_proto(strided(tmp_path / "m.onnx")))
    assert result.formula == "54·h·w"  # 216 MACs per output pixel, a quarter as many pixels
    assert count_macs(read_proto(tmp_path / "m.onnx"), {"x": [1, 3, 448, 320]}).macs == 54 * 448 * 320


def test_a_count_that_is_no_polynomial_stays_unknown(tmp_path):
    """silero-vad's count switches between If branches as the sequence grows: no formula, and
    MACs stay unknown with the usual note."""
    model = read_proto(factories.package_file("silero_vad", "data", "silero_vad_op18_ifless.onnx"))
    result, _ = analyze(model, formula=SHOW_FORMULA_WORK)  # what `show` allows: really fitted
    assert result.macs is None and result.formula is None
    assert any("model inputs with unknown dims" in note for note in result.notes)


def test_check_fits_only_small_graphs_show_fits_larger(tmp_path):
    """In `check` the fit may cost about 500 nodes counted, whatever the machine's load (a
    report must not depend on it); `show` allows more."""
    model = read_proto(matmul_chain(tmp_path / "m.onnx", layers=150))
    assert analyze(model)[0].formula is None  # 150 nodes x 8 counts
    assert analyze(model, formula=SHOW_FORMULA_WORK)[0].formula == f"{150 * 16 * 16}·seq"


def matmul_chain(path, layers: int):
    """x[1, seq, 16] through `layers` MatMuls with 16x16 weights."""
    nodes, inits, current = [], [], "x"
    for index in range(layers):
        inits.append(factories.init(f"w{index}", np.ones((16, 16), np.float32)))
        nodes.append(helper.make_node("MatMul", [current, f"w{index}"], [f"h{index}"]))
        current = f"h{index}"
    return factories.build(nodes, [factories.info("x", [1, "seq", 16])],
                           [factories.info(current, [1, "seq", 16])], inits, path)


def test_odd_dim_names_get_no_formula(tmp_path):
    """Dim names reach every report; a name that is not plain text is not quoted in a formula."""
    result, _ = analyze(read_proto(attention(tmp_path / "m.onnx", dim="s\n`@x`")))
    assert result.macs is None and result.formula is None


def test_fit_recovers_polynomials_and_refuses_the_rest():
    def quadratic(values):
        return 3 * values["a"] ** 2 * values["b"] + 5 * values["b"] + 7

    coefficients, multiple = symbolic.fit(["a", "b"], quadratic)
    assert multiple == 64
    assert coefficients == {(2, 1): Fraction(3), (0, 1): Fraction(5), (0, 0): Fraction(7)}
    assert symbolic.render(["a", "b"], coefficients, exact=True) == "3·a²·b + 5·b + 7"
    assert symbolic.render(["a"], {(1,): Fraction(4050)}, exact=False) == "4.05K·a"
    assert symbolic.fit(["a"], lambda values: values["a"] ** 3) is None  # cubic: fails the check
    assert symbolic.fit(["a"], lambda values: min(values["a"], 512) * 10) is not None  # fits the small ladder
    assert symbolic.fit(["a"], lambda values: None) is None


def test_check_reports_the_formula(tmp_path, monkeypatch, run_cli):
    monkeypatch.chdir(tmp_path)
    attention(tmp_path / "m.onnx")
    _, out, _ = run_cli("check", "m.onnx", "--no-latency", "--output-format", "json")
    model = json.loads(out)["models"][0]
    assert model["metrics"]["macs"] is None  # budgets need numbers: still unknown
    assert model["macs_formula"] == {"exact": "16·seq² + 256·seq", "text": "16·seq² + 256·seq"}
    _, text, _ = run_cli("check", "m.onnx", "--no-latency")
    assert "MACs               16·seq² + 256·seq" in text
    _, markdown, _ = run_cli("check", "m.onnx", "--no-latency", "--output-format", "markdown")
    assert "| 16·seq² \\+ 256·seq |" in markdown
    _, shown, _ = run_cli("show", "m.onnx")
    assert "16·seq² + 256·seq MACs" in shown


def test_configured_dims_give_a_number_not_a_formula(tmp_path, monkeypatch, run_cli):
    monkeypatch.chdir(tmp_path)
    attention(tmp_path / "m.onnx")
    (tmp_path / "bloatguard.toml").write_text('[inputs."m.onnx"]\nx = [1, 100, 16]\n')
    _, out, _ = run_cli("check", "m.onnx", "--no-latency", "--output-format", "json")
    model = json.loads(out)["models"][0]
    assert model["metrics"]["macs"] == 16 * 100 ** 2 + 256 * 100
    assert "macs_formula" not in model

