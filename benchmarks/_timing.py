"""Shared helpers for benchmarks: run commands interleaved and report ratios from one run.

These machines are noisy, so every comparison times both sides in the same run, alternating
A B A B ..., and reports the ratio of medians (and of minimums, the least noisy estimate).
"""

from __future__ import annotations

import importlib.util
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# bloatguard check exits 1 for findings: a result. Anything else (2: cannot evaluate, a crash)
# would be timed as a suspiciously fast run, so it stops the benchmark instead.
EXPECTED_CODES = (0, 1)


def time_command(argv: list[str], *, cwd=None) -> float:
    start = time.perf_counter()
    result = subprocess.run(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if result.returncode not in EXPECTED_CODES:
        sys.exit(f"benchmark command failed with exit code {result.returncode}: {' '.join(argv)}\n"
                 f"{result.stderr.decode(errors='replace')[-2000:]}")
    return elapsed


def real_models() -> list[Path]:
    """The published ONNX models the PyPI test dependencies ship, then the examples."""
    def package_dir(name: str) -> Path:
        return Path(importlib.util.find_spec(name).origin).parent

    return [*sorted((package_dir("silero_vad") / "data").glob("*.onnx")),
            package_dir("magika") / "models" / "standard_v3_3" / "model.onnx",
            *sorted((REPO / "examples" / "models").glob("*.onnx"))]


def interleaved(a: list[str], b: list[str], *, rounds: int = 7, cwd=None) -> tuple[list[float], list[float]]:
    times_a, times_b = [], []
    time_command(a, cwd=cwd)  # warm the page cache for both sides
    time_command(b, cwd=cwd)
    for _ in range(rounds):
        times_a.append(time_command(a, cwd=cwd))
        times_b.append(time_command(b, cwd=cwd))
    return times_a, times_b


def report(label: str, times_a: list[float], times_b: list[float], target: str) -> float:
    ratio = statistics.median(times_a) / statistics.median(times_b)
    ratio_min = min(times_a) / min(times_b)
    print(f"{label}: bloatguard {statistics.median(times_a) * 1000:.0f} ms vs baseline "
          f"{statistics.median(times_b) * 1000:.0f} ms (medians of {len(times_a)}) -> ratio "
          f"{ratio:.2f} (min/min {ratio_min:.2f}); target {target}")
    sys.stdout.flush()
    return ratio
