"""Reproduces the README's "Before and after" transcripts of `bloatguard fix` (run: python
examples/fix_demo.py; the classifier part needs torch, `pip install torch==2.13.0`).

1. examples/models/detector.onnx with its input shape set to [1, 3, 128, 128] and 16 seeded
   random calibration samples: `fix --unsafe-fixes`, then `check` of the result.
2. A small Conv classifier exported from torch in eval mode but with its BatchNorms left in
   (do_constant_folding=False, as some export scripts do): plain `fix`.

Everything happens in a temporary directory; the shipped examples are not touched. Sizes, MACs
and the chosen candidate are deterministic; latency ratios and p-values vary from run to run.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent

CONFIG = """\
[inputs."models/detector.onnx"]
images = [1, 3, 128, 128]

[samples]
"models/detector.onnx" = "det_samples.npz"
"""


def bloatguard(workdir: Path, *args: str) -> None:
    print(f"$ bloatguard {' '.join(args)}", flush=True)
    subprocess.run([sys.executable, "-m", "bloatguard", *args], cwd=workdir, check=False)
    print(flush=True)


def classifier(path: Path) -> bool:
    try:
        import torch
    except ImportError:
        print("(torch is not installed: skipping the classifier)")
        return False
    torch.manual_seed(0)
    body = torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.BatchNorm2d(64), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(64, 10))
    with torch.no_grad():  # trained-looking statistics (fresh ones are all equal, and torch
        for layer in body:  # would dedupe them behind Identity nodes)
            if isinstance(layer, torch.nn.BatchNorm2d):
                layer.running_mean.uniform_(-1, 1)
                layer.running_var.uniform_(0.5, 2)
                layer.weight.uniform_(0.5, 1.5)
                layer.bias.uniform_(-0.5, 0.5)
    net = torch.nn.Sequential()
    net.add_module("body", body)
    net.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.randn(1, 3, 64, 64),), str(path), dynamo=False,
                          input_names=["x"], output_names=["logits"], do_constant_folding=False)
    return True


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bloatguard-fix-demo-"))
    try:
        (workdir / "models").mkdir()
        shutil.copy(HERE / "models" / "detector.onnx", workdir / "models" / "detector.onnx")
        (workdir / "bloatguard.toml").write_text(CONFIG)
        rng = np.random.default_rng(0)
        np.savez(workdir / "det_samples.npz",
                 images=rng.standard_normal((16, 1, 3, 128, 128)).astype(np.float32))
        bloatguard(workdir, "fix", "--unsafe-fixes", "models/detector.onnx")
        bloatguard(workdir, "check", "models/detector.onnx")
        if classifier(workdir / "models" / "classifier.onnx"):
            bloatguard(workdir, "fix", "models/classifier.onnx")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
