"""Warm-cache re-check: what `bloatguard check --base HEAD` costs per unchanged model.

Run: python benchmarks/cache.py [--models 40]

Builds a temporary git repository with N distinct small models (silero-vad, magika, example and
generated ONNX files), commits them, then times in one run, interleaved:
  A. `check --base HEAD --no-latency` on the repository with a warm metric cache,
  B. the same command on a repository holding one small model (start-up, config, git plumbing;
     a repository with no model at all is an error),
and prints (A - B) / N, the marginal cost per unchanged model. Target: under 50 ms per model.
A cold run (cache cleared) is printed for comparison.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import factories  # noqa: E402
from _timing import real_models, time_command  # noqa: E402


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=bench@example.com", *args],
                   cwd=root, check=True, capture_output=True)


def make_repo(root: Path, count: int) -> None:
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    models = root / "models"
    models.mkdir()
    factories.mlp(models / "base.onnx", sizes=(8, 8))  # in both repositories
    if count:
        real = real_models()
        for index in range(count):
            if index < len(real):
                shutil.copy(real[index], models / f"{index:03d}_{real[index].name}")
            else:
                factories.mlp(models / f"{index:03d}_mlp.onnx", sizes=(64, 64 + index, 8), seed=index)
    (root / "README").write_text("bench\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "models")


def timed(root: Path) -> float:
    return time_command([sys.executable, "-m", "bloatguard", "check", ".", "--base", "HEAD",
                         "--no-latency", "--output-format", "json"], cwd=root)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bloatguard-cache-bench-"))
    try:
        full, empty = work / "full", work / "empty"
        make_repo(full, args.models)
        make_repo(empty, 0)  # just base.onnx
        cold = []
        for _ in range(3):
            shutil.rmtree(full / ".git" / "bloatguard-cache", ignore_errors=True)
            cold.append(timed(full))
        warm_times, empty_times = [], []
        for _ in range(args.rounds):
            warm_times.append(timed(full))
            empty_times.append(timed(empty))
        warm, base = statistics.median(warm_times), statistics.median(empty_times)
        per_model = (warm - base) / args.models * 1000
        print(f"{args.models} unchanged models: cold {statistics.median(cold) * 1000:.0f} ms, warm "
              f"{warm * 1000:.0f} ms, one-model repository {base * 1000:.0f} ms (medians) -> "
              f"{per_model:.1f} ms per model with a warm cache; target < 50 ms")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
