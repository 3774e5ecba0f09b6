"""Builds a small git repository whose model grows a little in each of five commits, then draws
its history (the chart in docs/history.png) and checks the last change against the drift
reference. Run: python examples/history_demo.py [DIRECTORY] (default: a temporary directory).

Each step grows the hidden layer of an MLP keyword spotter by 4 units, about +6 % params: under
the per-change budget (`max-params-increase = "10%"`), but +25 % in all since v1.0, which the
drift budget (`max-params-drift = "20%"`) catches.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CONFIG = """\
[drift]
reference = "v1.0"

[budgets."models/**"]
max-params-increase = "10%"
max-params-drift = "20%"
"""
STEPS = [(64, "keyword spotter v1", "2026-09-01"), (68, "wider hidden layer", "2026-09-15"),
         (72, "two more keywords", "2026-10-01"), (76, "retrain with noise augmentation", "2026-10-20"),
         (80, "wider again for accuracy", "2026-11-10")]


def spotter(hidden: int) -> onnx.ModelProto:
    """x[batch, 40] -> MatMul -> Add -> Relu -> MatMul -> logits[batch, 12]."""
    rng = np.random.default_rng(hidden)

    def weight(name: str, *shape: int):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(np.float32), name)

    nodes = [helper.make_node("MatMul", ["x", "fc1.weight"], ["h"], name="fc1"),
             helper.make_node("Add", ["h", "fc1.bias"], ["hb"], name="fc1_bias"),
             helper.make_node("Relu", ["hb"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "fc2.weight"], ["logits"], name="fc2")]
    graph = helper.make_graph(
        nodes, "kws", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 40])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 12])],
        [weight("fc1.weight", 40, hidden), weight("fc1.bias", hidden), weight("fc2.weight", hidden, 12)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def git(root: Path, *args: str, date: str | None = None) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "Dana Dev", "GIT_AUTHOR_EMAIL": "dana@example.com",
           "GIT_COMMITTER_NAME": "Dana Dev", "GIT_COMMITTER_EMAIL": "dana@example.com"}
    if date:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = f"{date}T10:00:00+00:00"
    subprocess.run(["git", *args], cwd=root, env=env, check=True)


def build(root: Path) -> None:
    git(root, "init", "-q", "-b", "main")
    (root / "bloatguard.toml").write_text(CONFIG)
    (root / "models").mkdir()
    for index, (hidden, subject, date) in enumerate(STEPS):
        onnx.save(spotter(hidden), root / "models" / "kws.onnx")
        git(root, "add", "-A")
        git(root, "commit", "-q", "-m", subject, date=date)
        if index == 0:
            git(root, "tag", "v1.0")


def main() -> int:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="bloatguard-history-"))
    root.mkdir(parents=True, exist_ok=True)
    build(root)
    chart = Path(__file__).resolve().parent.parent / "docs" / "history.png"
    for command in (["history", "models/kws.onnx", "--plot", str(chart)],
                    ["check", "models", "--base", "HEAD~1", "--no-latency"]):
        print(f"$ bloatguard {' '.join(command)}", flush=True)
        subprocess.run([sys.executable, "-m", "bloatguard", *command], cwd=root, check=False)
    print(f"repository: {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
