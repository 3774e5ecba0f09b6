"""`bloatguard compare BASE CANDIDATE` (issue 14 #2): the fix verifier on two models made
elsewhere. onnxruntime's own default static quantization of a detector head zeroes its scores
and keeps a whole-output cosine of 0.9999: compare fails it and names the slice."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from bloatguard.fix import transforms_quant as quant

from fix_models import conv_net, detector_head, messy

FAST = ("--no-latency",)


def compare_json(run_cli, *args):
    code, out, err = run_cli("compare", *args, "--output-format", "json")
    return code, (json.loads(out) if out.strip() else None), err


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    """The detector head, 8 samples, and what a user's own pipeline makes of it:
    onnxruntime.quantization.quantize_static with its defaults (every op quantized)."""
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    root = tmp_path_factory.mktemp("compare")
    base = detector_head(root / "det.onnx")
    images = np.random.default_rng(5).random((8, 3, 16, 16), dtype=np.float32)
    np.savez(root / "samples.npz", images=images)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter({"images": image[np.newaxis]} for image in images)

        def get_next(self):
            return next(self.feeds, None)

    quantize_static(str(base), str(root / "det.int8.onnx"), Reader())
    return base, root / "det.int8.onnx", root / "samples.npz"


def test_compare_fails_the_quantization_that_zeroes_the_scores(run_cli, detector):
    base, candidate, samples = detector
    code, report, err = compare_json(run_cli, base, candidate, "--samples", samples, *FAST)
    assert code == 1, err
    assert report["verdict"] == "fail"
    whole = report["fidelity"]["outputs"]["output0"]
    assert whole["cosine"] > 0.999  # what a single cosine would have passed
    assert report["fidelity"]["worst_slice"]["label"] == "output0[:, 4:84, :]"
    [reason] = report["reasons"]
    assert reason.startswith("slice output0[:, 4:84, :]: cos 0.0000 < 0.99")
    # The same readers as check: the int8 candidate is about a quarter of the bytes.
    assert report["candidate"]["metrics"]["file_size"] < report["base"]["metrics"]["file_size"] / 3
    assert report["base"]["metrics"]["macs"] == report["candidate"]["metrics"]["macs"] > 0
    assert report["signature"]["same"] and report["signature"]["outputs"] == [
        {"name": "output0", "dtype": "float32", "shape": [1, 84, 256]}]


def test_the_text_report_names_the_slice_and_the_verdict(run_cli, detector):
    base, candidate, samples = detector
    code, out, err = run_cli("compare", base, candidate, "--samples", samples, *FAST)
    assert code == 1, err
    assert "worst slice output0[:, 4:84, :] cos 0.0000" in out
    assert "  - slice output0[:, 4:84, :]: cos 0.0000 < 0.99" in out
    assert out.rstrip().endswith("=> FAIL: 1 check(s) failed")
    assert "I/O signature: same (images float32 [1, 3, 16, 16] -> output0 float32 [1, 84, 256])" in out
    for row in ("file size", "params", "weight bytes", "MACs"):
        assert f"\n  {row} " in out


@pytest.fixture(scope="module")
def conv_pair(tmp_path_factory):
    """A Conv net and its float16-stored copy: outputs within about 1e-3."""
    root = tmp_path_factory.mktemp("fp16")
    base = conv_net(root / "det.onnx", channels=32, blocks=2, size=16)
    model = onnx.load(str(base))
    quant.convert_fp16(model, {"min_elements": 1})
    onnx.save(model, str(root / "det.fp16.onnx"))
    return base, root / "det.fp16.onnx"


def test_a_faithful_candidate_passes_and_latency_is_timed_with_the_base(run_cli, conv_pair):
    base, candidate = conv_pair
    code, report, err = compare_json(run_cli, base, candidate, "--latency-budget", "0.5 s")
    latency = report["latency"]
    assert latency["rounds"] >= 10 and latency["ci"][0] <= latency["ratio"] <= latency["ci"][1]
    assert report["base"]["metrics"]["latency_ms"] == latency["reference_ms"] > 0
    assert report["candidate"]["metrics"]["latency_ms"] == latency["median_ms"] > 0
    # Timing on a shared machine may flag a slowdown; the fidelity verdict must not.
    assert all(r.startswith("slower:") for r in report["reasons"]), report["reasons"]
    assert code == (0 if not report["reasons"] else 1) and report["verdict"] in ("pass", "fail")
    code, report, err = compare_json(run_cli, base, candidate, *FAST)
    assert code == 0 and report["verdict"] == "pass" and report["reasons"] == [], err
    assert "fidelity is measured on random inputs: give real ones with --samples FILE.npz or " \
           "[tool.bloatguard.samples]" in report["notes"]


def test_thresholds_from_the_command_line_and_the_base_config(run_cli, conv_pair, tmp_path):
    base, candidate = conv_pair
    code, report, _ = compare_json(run_cli, base, candidate, "--min-cosine", "0.99999999", *FAST)
    assert code == 1 and report["reasons"][0].startswith("cosine similarity 0.99")
    code, report, _ = compare_json(run_cli, base, candidate, "--max-error", "1e-9", *FAST)
    assert code == 1 and "max error" in report["reasons"][0]
    # BASE's [fix."<glob>"] thresholds apply, from the config found from BASE.
    for model in (base, candidate):
        (tmp_path / "models").mkdir(exist_ok=True)
        (tmp_path / "models" / model.name).write_bytes(model.read_bytes())
    (tmp_path / "bloatguard.toml").write_text('[fix."models/det.onnx"]\nmin-cosine = 0.99999999\n')
    code, report, _ = compare_json(run_cli, tmp_path / "models" / base.name,
                                   tmp_path / "models" / candidate.name, *FAST)
    assert code == 1 and report["reasons"][0].startswith("cosine similarity 0.99")


def test_a_changed_signature_fails(run_cli, conv_pair, tmp_path):
    base, _ = conv_pair
    model = onnx.load(str(base))
    model.graph.output[0].name = "boxes_renamed"
    model.graph.node[-1].output[0] = "boxes_renamed"
    renamed = tmp_path / "renamed.onnx"
    onnx.save(model, str(renamed))
    code, out, err = run_cli("compare", base, renamed, *FAST)
    assert code == 1, err
    assert "I/O signature: changed: outputs ['boxes'] became ['boxes_renamed']" in out


@pytest.mark.parametrize("case, message", [
    ("missing", "missing.onnx: no such file (CANDIDATE)"),
    ("corrupt", "cannot read the model (CANDIDATE)"),
    ("formats", "compare needs two ONNX models or two PyTorch state dicts"),
])
def test_what_cannot_be_compared_exits_2_with_one_line(run_cli, conv_pair, tmp_path, case, message):
    base, _ = conv_pair
    candidate = tmp_path / "missing.onnx"
    if case == "corrupt":
        candidate = tmp_path / "corrupt.onnx"
        candidate.write_bytes(b"\x08\x07garbage")
    elif case == "formats":
        from safetensors.numpy import save_file

        candidate = tmp_path / "weights.safetensors"
        save_file({"w": np.zeros((2, 2), np.float32)}, str(candidate))
    code, out, err = run_cli("compare", base, candidate, *FAST)
    assert code == 2 and out == "" and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_a_base_onnxruntime_cannot_run_is_an_error_not_a_failure(run_cli, tmp_path):
    """A Conv whose weight has the wrong channel count: the reader takes it, onnxruntime
    does not. Nothing can be said about any candidate then: exit 2, not 1."""
    from onnx import helper

    from fix_models import info, init

    w = np.zeros((4, 5, 1, 1), np.float32)  # 5 input channels for a 3-channel input
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "g",
                              [info("x", [1, 3, 4, 4])], [info("y", [1, 4, 4, 4])], [init("w", w)])
    broken = tmp_path / "broken.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(broken))
    copy = tmp_path / "copy.onnx"
    copy.write_bytes(broken.read_bytes())
    code, out, err = run_cli("compare", broken, copy, *FAST)
    assert code == 2 and "onnxruntime cannot run the original model" in err, (out, err)


def test_state_dicts_compare_by_their_weights(run_cli, tmp_path):
    torch = pytest.importorskip("torch")
    weights = {"fc.weight": torch.randn(16, 16), "fc.bias": torch.randn(16)}
    torch.save(weights, tmp_path / "base.pt")
    torch.save({k: v.half().float() for k, v in weights.items()}, tmp_path / "rounded.pt")
    torch.save({k: torch.zeros_like(v) for k, v in weights.items()}, tmp_path / "zeroed.pt")
    code, report, err = compare_json(run_cli, tmp_path / "base.pt", tmp_path / "rounded.pt")
    assert code == 0 and report["fidelity_summary"].startswith("weights cos 1.000000, rel err "), err
    code, report, err = compare_json(run_cli, tmp_path / "base.pt", tmp_path / "zeroed.pt")
    assert code == 1 and report["reasons"][0].startswith("weight cosine similarity 0.0000 < 0.99")


def test_compare_is_listed_and_messy_models_still_check(run_cli, tmp_path):
    code, out, _ = run_cli("--help")
    assert "compare" in out
    path = messy(tmp_path / "m.onnx")
    assert run_cli("check", path)[0] == 0
