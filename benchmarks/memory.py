"""BG005 on real models: the static peak activation memory vs the measured peak memory.

Run: python benchmarks/memory.py [--reps 3] [--models silero,magika,light]

For each published model the test dependencies ship (silero-vad's ONNX files, magika, and the
"light" ImageNet models onnx ships for its backend tests, whose weights are ConstantOfShape
nodes that onnxruntime folds at load), and for two synthetic residual blocks, prints:

- weights: the stored weight bytes (what `bloatguard check` reports as weight bytes);
- static: the static peak activation memory, and how much of it is computed constants
  (tensors computed from weights alone, held once folded);
- measured: the peak resident memory an onnxruntime session costs a fresh process (creation
  and two runs, latency's default session options), over `--reps` processes: min-max;
- ratio: measured / (weights + static), and whether measured >= weights;
- the time the static walk adds to the MACs count (same shape inference), in-process.

Targets (issue 15): the static figure is exactly the same on every run; the measured figure
is at least the weight bytes and within the bound the README documents:
weights + static <= measured <= 3 x (weights + static) + 16 MB (onnxruntime's fixed per-session
cost, and the copies of the weights its session creation holds at once). Exits 1 otherwise.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from bloatguard.config import LatencyConfig
from bloatguard.formats import read_model
from bloatguard.measure.compute import analyze
from bloatguard.measure.feeds import plan_feeds
from bloatguard.measure.latency import _Side, measure_peak_memory
from bloatguard.units import format_amount

from factories import save  # noqa: E402

# The documented bound: measured <= FACTOR x (weights + static) + FIXED.
FACTOR, FIXED = 3, 16 * 10**6
SILERO_SHAPES = {"input": [1, 512], "state": [2, 1, 128]}
SILERO_PINS = {"sr": 16000}


def package_dir(name: str) -> Path:
    return Path(importlib.util.find_spec(name).origin).parent


def cases(groups: set[str], scratch: Path) -> list[tuple[str, Path, dict, dict]]:
    """(label, path, input shapes, pinned values) of each model to measure."""
    found = []
    if "silero" in groups:
        for path in sorted((package_dir("silero_vad") / "data").glob("*.onnx")):
            found.append((f"silero-vad {path.stem}", path, SILERO_SHAPES, SILERO_PINS))
    if "magika" in groups:
        found.append(("magika standard_v3_3",
                      package_dir("magika") / "models" / "standard_v3_3" / "model.onnx",
                      {"bytes": [1, 2048]}, {}))
    if "light" in groups:
        light = package_dir("onnx") / "backend" / "test" / "data" / "light"
        for name in ("resnet50", "vgg19", "squeezenet", "densenet121", "inception_v1",
                     "shufflenet", "bvlc_alexnet"):
            if (light / f"light_{name}.onnx").exists():
                found.append((f"onnx light {name}", light / f"light_{name}.onnx", {}, {}))
    if "synthetic" in groups:
        from test_memory import residual

        for size in (64, 128):
            path = save(residual(size=size), scratch / f"residual{size}.onnx")
            found.append((f"residual 64x{size}x{size}", path, {}, {}))
    return found


def fitting(facts, shapes: dict) -> dict:
    """The configured shapes that fit the model's declared inputs (silero-vad's files differ:
    the sequence model takes [sequence_length, 576] frames)."""
    declared = {value.name: value.shape for value in facts.inputs}
    return {name: dims for name, dims in shapes.items()
            if name in declared and declared[name] is not None and len(declared[name]) == len(dims)
            and all(not isinstance(d, int) or d == c for d, c in zip(declared[name], dims))}


def static(path: Path, shapes: dict):
    """(MemoryResult, seconds of MACs alone, seconds of MACs + memory), each the best of 3."""
    proto = read_model(path).handle.proto
    alone, both, result = [], [], None
    for _ in range(3):
        start = time.perf_counter()
        analyze(proto, shapes, memory=False)
        alone.append(time.perf_counter() - start)
        start = time.perf_counter()
        result = analyze(proto, shapes)[1]
        both.append(time.perf_counter() - start)
    return result, min(alone), min(both)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="fresh processes per model")
    parser.add_argument("--models", default="silero,magika,light,synthetic")
    args = parser.parse_args()
    settings = LatencyConfig()
    rows, ok = [], True
    with tempfile.TemporaryDirectory() as scratch:
        for label, path, shapes, pins in cases(set(args.models.split(",")), Path(scratch)):
            facts = read_model(path)
            shapes = fitting(facts, shapes)
            result, alone, both = static(path, shapes)
            again = analyze(facts.handle.proto, shapes)[1]
            stable = again.activation_memory == result.activation_memory
            pins = {name: value for name, value in pins.items()
                    if name in {value.name for value in facts.inputs}}
            plan = plan_feeds(facts.inputs, shapes=shapes, pins=pins, int_range=settings.int_range,
                              cap=settings.feed_cap)
            side = _Side(label=label, path=path, plan=plan, nbytes=facts.file_size)
            peaks = [measure_peak_memory(side, settings) for _ in range(args.reps)]
            weights = facts.weight_bytes or 0
            activation = result.activation_memory
            constants = result.peak["computed_constants"] if result.peak else 0
            ratio = (statistics.median(peaks) / (weights + activation)) if activation else None
            spread = (max(peaks) - min(peaks)) / statistics.median(peaks)
            at_least = min(peaks) >= weights
            within = activation is not None and \
                weights + activation <= min(peaks) and max(peaks) <= FACTOR * (weights + activation) + FIXED
            ok &= stable and at_least and within
            rows.append((label, weights, activation, constants, peaks, ratio, spread, at_least,
                         stable, both - alone, alone, within))
            print(f"{label}: weights {format_amount(weights, 'bytes')}, static "
                  f"{format_amount(activation, 'bytes')} ({format_amount(constants, 'bytes')} computed "
                  f"constants), measured {format_amount(min(peaks), 'bytes')}-"
                  f"{format_amount(max(peaks), 'bytes')}", flush=True)
    print()
    print(f"{'model':32} {'weights':>9} {'static':>9} {'(consts)':>9} {'measured median':>16} "
          f"{'spread':>7} {'measured/(w+s)':>15} {'>=w':>4} {'bound':>5} {'stable':>6} {'walk ms':>8} "
          f"{'MACs ms':>8}")
    for (label, weights, activation, constants, peaks, ratio, spread, at_least, stable, walk,
         alone, within) in rows:
        print(f"{label:32} {format_amount(weights, 'bytes'):>9} {format_amount(activation, 'bytes'):>9} "
              f"{format_amount(constants, 'bytes'):>9} {format_amount(statistics.median(peaks), 'bytes'):>16} "
              f"{spread:>7.1%} {('x%.2f' % ratio) if ratio else '-':>15} {'yes' if at_least else 'NO':>4} "
              f"{'yes' if within else 'NO':>5} {'yes' if stable else 'NO':>6} {walk * 1000:>8.1f} {alone * 1000:>8.1f}")
    ratios = [row[5] for row in rows if row[5]]
    print(f"\nmeasured / (weights + static): x{min(ratios):.2f} to x{max(ratios):.2f}; "
          f"largest spread between processes {max(row[6] for row in rows):.1%}; "
          f"within weights + static <= measured <= {FACTOR} x (weights + static) + "
          f"{FIXED / 1e6:g} MB: {sum(row[11] for row in rows)} of {len(rows)}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
