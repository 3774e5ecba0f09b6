"""TFLite and GGUF cost nothing to those who do not use them, and a static check of them loads
no runtime: checking ONNX files imports neither reader nor their libraries, and checking TFLite
and GGUF files imports no onnxruntime, LiteRT, torch or onnx, and not the `gguf` or `tflite`
packages (the readers are bloatguard's own)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gguf_models
import tflite_models

REPO = Path(__file__).resolve().parent.parent
NEW = ("bloatguard.formats.tflite", "bloatguard.formats.gguf", "bloatguard.formats.flatbuf",
       "ai_edge_litert", "gguf", "tflite", "flatbuffers", "jinja2")


def _imported(paths: list[Path], watched: tuple[str, ...]) -> str:
    code = ("import sys\nfrom bloatguard.cli import main\n"
            f"code = main(['check', *{[str(p) for p in paths]!r}, '--no-latency', '--output-format', 'json'])\n"
            f"print('CODE', code, sorted(m for m in {watched!r} if m in sys.modules), file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    return result.stderr


def test_checking_onnx_imports_none_of_the_new_formats():
    examples = REPO / "examples" / "models"
    assert "[]" in _imported([examples / "classifier.onnx"], NEW).splitlines()[-1]


def test_a_static_check_of_tflite_and_gguf_loads_no_runtime(tmp_path):
    tflite = tflite_models.mlp(tmp_path / "m.tflite")
    gguf = gguf_models.llama(tmp_path / "m.gguf")
    last = _imported([tflite, gguf], ("onnxruntime", "ai_edge_litert", "torch", "onnx", "gguf",
                                      "tflite", "flatbuffers")).splitlines()[-1]
    assert last.startswith("CODE") and last.endswith("[]"), last
