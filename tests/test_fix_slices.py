"""Fidelity per output slice (issue 14 #1): a candidate that destroys a small-valued part of an
output (the class scores of a detector head) is rejected, however well the whole output's
cosine holds up, and the report names the output, axis and index range that failed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bloatguard.fix import verify

from fix_models import conv_net, detector_head

STATIC = ("--unsafe-fixes", "--dry-run", "--no-latency", "--only", "quantize-static")


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    """The detector head and 8 sample images, in a directory of their own."""
    root = tmp_path_factory.mktemp("detector")
    path = detector_head(root / "models" / "det.onnx")
    np.savez(root / "samples.npz", images=np.random.default_rng(5).random((8, 3, 16, 16), dtype=np.float32))
    return path


def fix_json(run_cli, path, *args):
    code, out, err = run_cli("fix", path, *STATIC, "--samples", path.parent.parent / "samples.npz",
                             "--output-format", "json", *args)
    assert code in (0, 2), err
    return code, (json.loads(out) if out.strip() else None), err


def test_a_quantization_that_zeroes_the_scores_is_rejected_naming_the_slice(run_cli, detector):
    code, report, err = fix_json(run_cli, detector)
    assert code == 0, err
    [static] = report["models"][0]["candidates"]
    whole = static["fidelity"]["outputs"]["output0"]
    # What the old verifier looked at: the whole output passes min-cosine 0.99 comfortably.
    assert whole["cosine"] > 0.999
    assert static["verdict"] == "rejected"
    [reason] = static["reasons"]
    assert reason.startswith("slice output0[:, 4:84, :]: cos 0.0000 < 0.99 (judged at its own scale")
    assert static["fidelity"]["worst_slice"] == {
        "output": "output0", "label": "output0[:, 4:84, :]", "passed": False, "axis": 1,
        "start": 4, "stop": 84, "metric": "cosine", "cosine": 0.0, "max_error": 1.0,
        "scale": pytest.approx(0.59, abs=0.02)}
    # The box channels are a slice of their own, and they hold up.
    boxes = [s for s in whole["slices"] if (s["start"], s["stop"]) == (0, 4)]
    assert boxes and boxes[0]["cosine"] > 0.999 and boxes[0]["scale"] > 300


def test_the_table_names_the_worst_slice(run_cli, detector):
    code, out, err = run_cli("fix", detector, *STATIC, "--samples",
                             detector.parent.parent / "samples.npz")
    assert code == 0, err
    assert "worst slice output0[:, 4:84, :] cos 0.0000" in out
    assert "rejected: slice output0[:, 4:84, :]: cos 0.0000 < 0.99" in out
    assert "=> no candidate passed verification; nothing written" in out


def test_an_output_on_one_scale_has_no_slices_to_judge(run_cli, tmp_path):
    """Bands split only where scales differ: a plain Conv output keeps the whole-output
    verdict, and static quantization still wins."""
    path = conv_net(tmp_path / "det.onnx", channels=64, blocks=3, size=16)
    code, out, err = run_cli("fix", path, *STATIC, "--output-format", "json")
    assert code == 0, err
    [static] = json.loads(out)["models"][0]["candidates"]
    assert static["verdict"] == "winner" and static["fidelity"]["outputs"]["boxes"]["slices"] == []
    assert "worst_slice" not in static["fidelity"]


def config(detector, text: str) -> None:
    (detector.parent.parent / "bloatguard.toml").write_text(text)


@pytest.fixture
def configured(detector):
    yield detector
    (detector.parent.parent / "bloatguard.toml").unlink(missing_ok=True)


def test_declared_slices_are_judged_by_their_metric(run_cli, configured):
    config(configured, '[fix."models/*.onnx".outputs.output0]\n'
                       'slices = [[0, 4], [4, 84]]\naxis = 1\nmetric = "top1"\n')
    code, report, err = fix_json(run_cli, configured)
    assert code == 0, err
    [static] = report["models"][0]["candidates"]
    slices = static["fidelity"]["outputs"]["output0"]["slices"]
    assert [(s["start"], s["stop"], s["metric"], s["declared"]) for s in slices] == [
        (0, 4, "top1", True), (4, 84, "top1", True)]
    # Every score rounded to zero: the argmax over classes is class 0 everywhere.
    [reason] = static["reasons"]
    assert reason.startswith("slice output0[:, 4:84, :]: top-1 ") and "< 95%" in reason
    assert slices[1]["top1"] < 0.2


def test_max_error_slices_need_a_bound(run_cli, configured):
    config(configured, '[fix."models/*.onnx"]\nmin-cosine = 0.5\n'
                       '[fix."models/*.onnx".outputs.output0]\n'
                       'slices = [[4, 84]]\naxis = 1\nmetric = "max-error"\n')
    code, report, err = fix_json(run_cli, configured)
    assert code == 2 and "Traceback" not in err
    assert ('outputs.output0]: metric "max-error" needs a bound: set max-error in the model\'s '
            "[tool.bloatguard.fix] table or pass --max-error") in err
    code, report, err = fix_json(run_cli, configured, "--max-error", "0.1")
    [static] = report["models"][0]["candidates"]
    [reason] = static["reasons"]  # min-cosine 0.5: the max-error slice alone rejects it
    assert reason.startswith("slice output0[:, 4:84, :]: max err 1 > 0.1")


@pytest.mark.parametrize("table, message", [
    ('[fix."**".outputs.output0]\nslices = [[4, 2]]\naxis = 1\n',
     'fix."**".outputs.output0: {\'slices\': [[4, 2]], \'axis\': 1} is invalid: `slices` must be'),
    ('[fix."**".outputs.output0]\nslices = [[0, 4]]\naxis = 1\nmetric = "cos"\n',
     "`metric` must be one of cosine, max-error, top1"),
    ('[fix."**".outputs.boxes]\nslices = [[0, 4]]\naxis = 1\n',
     "[tool.bloatguard.fix.\"<glob>\".outputs.boxes]: the model has no output 'boxes' "
     "(outputs: 'output0'); fix the name"),
    ('[fix."**".outputs.output0]\nslices = [[0, 4], [4, 90]]\naxis = 1\n',
     "slice [4, 90] ends beyond axis 1 of size 84"),
    ('[fix."**".outputs.output0]\nslices = [[0, 4]]\naxis = 3\n',
     "axis 3, but the output has rank 3"),
])
def test_output_semantics_that_cannot_apply_are_config_errors(run_cli, configured, table, message):
    config(configured, table)
    code, _, err = fix_json(run_cli, configured)
    assert code == 2 and message in err and "Traceback" not in err


# --- the slice figures themselves -----------------------------------------------------------

def totals(declared=None, **arrays):
    """The child's figures for one output; arrays hold one sample per row of their first axis."""
    result = verify._Totals(declared)
    for want, got in zip(arrays["want"], arrays["got"]):
        result.add("y", want, got)
    return result.result()


def test_bands_group_channels_by_scale_not_one_by_one():
    """Absent classes (tiny scores) join the score band instead of being judged alone on
    their rounding noise; boxes form their own band."""
    rng = np.random.default_rng(0)
    want = rng.random((3, 1, 12, 50))
    want[:, :, :4] *= 320  # boxes
    want[:, :, 4:] *= 0.9  # scores...
    want[:, :, 6:9] *= 1e-4  # ...three classes nobody detects
    got = want + rng.standard_normal(want.shape) * 1e-3  # rounding noise, not destruction
    figures = totals(want=want, got=got)
    assert [(s["axis"], s["start"], s["stop"]) for s in figures["slices"]] == [(1, 0, 4), (1, 4, 12)]
    assert all(s["cosine"] > 0.999 for s in figures["slices"])


def test_slices_skip_the_batch_axis_and_long_axes_and_numerical_zeros():
    want = np.ones((2, 4, 3, verify.MAX_SLICES + 1))  # two samples of [4, 3, 1025]
    want[:, :, 2] = 1e-9  # numerically zero next to the rest
    figures = totals(want=want, got=want.copy())
    assert figures["slices"] == [{"axis": 1, "start": 0, "stop": 2, "metric": "cosine",
                                  "declared": False, "cosine": 1.0, "max_error": 0.0, "scale": 1.0}]


def test_a_safe_candidate_keeps_every_slice_within_tolerance_at_its_own_scale():
    want = np.ones((1, 1, 8, 10))
    want[:, :, 4:] = 1e-3
    got = want.copy()
    got[:, :, 4:] *= 1.01  # 1 % of the small slice, 1e-5 of the output's scale
    evaluation = verify.Evaluation(verify.Candidate("c", "fold", [], safe=True))
    verify._judge_fidelity(evaluation, {"outputs": {"y": totals(want=want, got=got)}},
                           verify.Thresholds())
    [reason] = evaluation.reasons
    assert reason.startswith("slice y[:, 4:8, :]: max err 0.01 > 0.0001")
