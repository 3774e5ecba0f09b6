"""Quantization on real exports (issue 14 #3): weights in Constant nodes, opset 12 and unfused
BatchNorm (a PP-OCR detector as paddle2onnx writes it) still give quantized candidates that
onnxruntime loads, runs and times; a variant whose result it cannot load is dropped, saying
why, and the next one is tried."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import helper

from bloatguard.fix import transforms_quant as quant
from bloatguard.fix import transforms_safe as safe

from fix_models import assert_same_outputs, const, info, paddle_detector, rand, run, save


@pytest.fixture(scope="module")
def paddle(tmp_path_factory):
    """The model, its samples as a user stacks them (samples.npz), and as `fix` hands them to
    the quantizers, (N, *input_shape) (calibration.npz)."""
    root = tmp_path_factory.mktemp("paddle")
    images = np.random.default_rng(0).random((8, 3, 32, 32), dtype=np.float32)
    np.savez(root / "samples.npz", x=images)
    np.savez(root / "calibration.npz", x=images[:, np.newaxis])
    return paddle_detector(root / "det.onnx")


def test_quantizers_give_loadable_measured_candidates_on_a_paddle_export(run_cli, paddle):
    code, out, err = run_cli("fix", paddle, "--unsafe-fixes", "--dry-run", "--samples",
                             paddle.parent / "samples.npz", "--latency-budget", "0.5 s",
                             "--only", "quantize-static,quantize-dynamic", "--output-format", "json")
    assert code == 0, err
    candidates = {c["candidate"]: c for c in json.loads(out)["models"][0]["candidates"]}
    assert set(candidates) == {"quantize-static", "quantize-dynamic"}
    for candidate in candidates.values():
        # Built, run by onnxruntime on every sample, timed against the original.
        assert "error" not in candidate["fidelity"] and candidate["fidelity"]["outputs"]["maps"]["cosine"] > 0.99
        assert candidate["latency"]["rounds"] >= 10
        assert candidate["size_ratio"] < 0.3  # the Constant-node weights were quantized too
        assert "stored 16 Constant node value(s) as initializers, where onnxruntime's quantizers " \
               "look for weights" in candidate["changes"]
        assert not any(r.startswith(("onnxruntime cannot", "could not be built", "larger"))
                       for r in candidate["reasons"])
    static = candidates["quantize-static"]["changes"]
    assert static[0].startswith("static int8 QDQ quantization (pre-processed, per-channel weights)")
    assert ("converted from opset 12 to 13 with onnx's version converter (per-channel QDQ needs "
            "DequantizeLinear's axis)") in static


def test_a_variant_onnxruntime_cannot_load_is_dropped_and_the_next_tried(tmp_path, paddle, monkeypatch):
    """The old failure: per-channel QDQ written at opset 12 does not load, and only an
    exception from the quantizer led to the per-tensor fallback."""
    monkeypatch.setattr(quant, "_with_opset", lambda src, needed, external: (src, None))
    params = {"calibration": str(paddle.parent / "calibration.npz"), "calibration_source": "samples"}
    changes = quant.quantize_static(paddle, tmp_path / "q.onnx", params, external=False)
    assert changes[0] == "static int8 QDQ quantization (per-tensor weights), calibrated on samples"
    dropped = [c for c in changes if c.startswith("tried ")]
    assert [c.split(":")[0] for c in dropped] == ["tried pre-processed, per-channel first",
                                                  "tried per-channel first"]
    assert all("onnxruntime cannot load the result: " in c for c in dropped)
    [maps] = run(tmp_path / "q.onnx", {"x": rand(1, 3, 32, 32)})
    assert maps.shape == (1, 1, 32, 32)


def test_per_tensor_when_the_version_converter_cannot_upgrade(tmp_path, paddle, monkeypatch):
    def refuse(model, version):
        raise RuntimeError("no adapter for op Frobnicate")

    monkeypatch.setattr(onnx.version_converter, "convert_version", refuse)
    params = {"calibration": str(paddle.parent / "calibration.npz")}
    changes = quant.quantize_static(paddle, tmp_path / "q.onnx", params, external=False)
    assert changes[0].startswith("static int8 QDQ quantization (per-tensor weights)")
    assert ("tried per-channel first: it needs opset 13 (DequantizeLinear's axis), and onnx's "
            "version converter cannot convert this model from opset 12: no adapter for op "
            "Frobnicate") in changes
    assert run(tmp_path / "q.onnx", {"x": rand(2, 3, 32, 32)})[0].shape == (2, 1, 32, 32)


def test_weights_computed_from_constants_become_initializers(tmp_path):
    """A TF-style weight path (Constant -> Transpose -> MatMul) and a Paddle-style Constant
    weight: both end up as initializers; shape constants of other ops move too, harmlessly."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 16)).astype(np.float32)
    nodes = [const("w_t", w.T.copy()), helper.make_node("Transpose", ["w_t"], ["w"], name="t"),
             helper.make_node("MatMul", ["x", "w"], ["h"]),
             const("w2", rng.standard_normal((16, 4)).astype(np.float32)),
             helper.make_node("MatMul", ["h", "w2"], ["y"])]
    path = save(nodes, [info("x", [1, 8])], [info("y", [1, 4])], path=tmp_path / "m.onnx")
    model = onnx.load(str(path))
    changes = safe.weights_to_initializers(model)
    assert changes == ["folded Transpose t",
                       "stored 1 Constant node value(s) as initializers, where onnxruntime's "
                       "quantizers look for weights"]
    assert [n.op_type for n in model.graph.node] == ["MatMul", "MatMul"]
    assert sorted(t.name for t in model.graph.initializer) == ["w", "w2"]
    assert_same_outputs(path, model, [{"x": rand(1, 8)}], rtol=0)
