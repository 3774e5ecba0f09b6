"""BG004 on TFLite: LiteRT timing in the same isolated child and interleaved protocol as
onnxruntime; a model LiteRT cannot run (a custom op it lacks) is a note, never a crash.

Budgets are shrunk as in tests/test_latency.py; the protocol itself is tested there.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

import tflite_models as tm
from gitrepo import Repo
from tflite_models import Op, T

pytest.importorskip("ai_edge_litert", reason="LiteRT (ai-edge-litert) is in the test extra")
pytestmark = pytest.mark.slow

FAST = """
[latency]
time-budget = "300 ms"
min-rounds = 12
max-rounds = 40
block-time = "3 ms"
warmup = 2
threads = 1
"""


def custom_op_model(path: Path) -> Path:
    return tm.model(path, [T("x", [1, 4]), T("y", [1, 4])], [Op("custom:Frobnicate", [0], [1])], [0], [1])


def test_litert_times_a_tflite_model_and_says_so(tmp_path, run_cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tm.mlp(tmp_path / "models" / "mlp.tflite", (64, 256, 10))
    custom_op_model(tmp_path / "models" / "custom.tflite")
    (tmp_path / "bloatguard.toml").write_text(FAST + '[budgets."**/*.tflite"]\nmax-latency = "1 s"\n')
    code, out, err = run_cli("check", "models", "--latency", "--output-format", "json", "--no-cache")
    assert code == 0, err  # BG004 warns that the custom-op model's budget could not be checked
    models = {m["path"]: m for m in json.loads(out)["models"]}
    timed = models["models/mlp.tflite"]
    assert 0 < timed["metrics"]["latency_ms"] < 1000
    assert timed["latency"]["runtime"].startswith("ai-edge-litert ")
    assert timed["latency"]["threads"] == 1 and timed["latency"]["rounds"] >= 12
    custom = models["models/custom.tflite"]
    assert custom["metrics"]["latency_ms"] is None
    note = next(n for n in custom["notes"] if n.startswith("latency not measured"))
    assert "LiteRT cannot run models/custom.tflite" in note and "Frobnicate" in note
    (finding,) = custom["findings"]
    assert finding["code"] == "BG004" and "cannot check max-latency" in finding["message"]
    assert "Traceback" not in err


def test_base_and_head_are_timed_interleaved(tmp_path, run_cli, monkeypatch):
    repo = Repo(tmp_path / "repo")
    tm.mlp(repo.root / "models" / "m.tflite", (64, 128, 10))
    repo.write("bloatguard.toml", FAST)
    repo.commit("small")
    tm.mlp(repo.root / "models" / "m.tflite", (64, 1024, 10))  # 8x the MACs
    monkeypatch.chdir(repo.root)
    code, out, err = run_cli("check", "models", "--base", "HEAD", "--latency", "--output-format", "json")
    (model,) = json.loads(out)["models"]
    latency = model["latency"]
    assert latency["runtime"].startswith("ai-edge-litert ") and latency["rounds"] >= 12
    assert latency["ratio"] > 1 and len(latency["ci"]) == 2
    assert model["base"]["metrics"]["latency_ms"] > 0


def test_without_litert_the_note_says_how_to_install_it(tmp_path, run_cli, monkeypatch):
    """The child imports LiteRT; here it cannot (a stub that fails to import shadows it)."""
    stub = tmp_path / "stub" / "ai_edge_litert"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ImportError('no LiteRT here')\n")
    monkeypatch.setenv("PYTHONPATH", str(stub.parent))
    monkeypatch.chdir(tmp_path)
    tm.mlp(tmp_path / "m.tflite")
    (tmp_path / "bloatguard.toml").write_text(FAST)
    code, out, err = run_cli("check", "m.tflite", "--latency", "--output-format", "json", "--no-cache")
    (model,) = json.loads(out)["models"]
    assert code == 0 and model["metrics"]["latency_ms"] is None
    assert any("pip install bloatguard[tflite]" in note for note in model["notes"]), model["notes"]
    assert shutil.which(sys.executable)


def test_peak_memory_of_a_tflite_model_is_measured_with_litert(tmp_path, run_cli, monkeypatch):
    """Measured peak memory (BG005) runs where latency runs, for TFLite as for ONNX: a LiteRT
    interpreter in a fresh process, its high-water mark beyond the process's baseline."""
    monkeypatch.chdir(tmp_path)
    tm.mlp(tmp_path / "models" / "mlp.tflite", (256, 1024, 10))
    (tmp_path / "bloatguard.toml").write_text(FAST + '[budgets."**/*.tflite"]\nmax-peak-memory = "1 GB"\n')
    code, out, err = run_cli("check", "models", "--latency", "--output-format", "json", "--no-cache")
    assert code == 0, err
    [model] = json.loads(out)["models"]
    peak = model["metrics"]["peak_memory"]
    weights = model["metrics"]["weight_bytes"]
    assert peak is not None and weights <= peak < 1_000_000_000, (peak, weights, model["notes"])
