"""Where a static check's MACs children spend their time, on static_check.py's small models.

Run: python benchmarks/macs_child.py [--rounds 5]

Counts each model in this process, as a child does (`measure.compute.analyze`), three ways: MACs
alone, MACs and activation memory, and everything `check` does (the MACs formula fit too). Prints
the CPU time of each over the models, the minimum of the rounds (the least noisy estimate), so
the cost of each part is the difference between two lines.
"""

from __future__ import annotations

import argparse
import time

from _timing import real_models


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds

    from bloatguard.formats.onnx import read_proto
    from bloatguard.measure.compute import analyze

    protos = [read_proto(path) for path in real_models()]
    ways = {"MACs alone": {"memory": False, "formula": 0},
            "+ activation memory": {"memory": True, "formula": 0},
            "+ MACs formula (what check does)": {}}
    for model in protos:  # warm: imports and onnx's schema registry, as a forked child inherits them
        analyze(model, {})
    print(f"{len(protos)} models, CPU time, minimum of {rounds} rounds:")
    for label, options in ways.items():
        best = min(_cpu(lambda: [analyze(model, {}, **options) for model in protos])
                   for _ in range(rounds))
        print(f"  {label:34s} {best * 1000:6.1f} ms")


def _cpu(work) -> float:
    start = time.process_time()
    work()
    return time.process_time() - start


if __name__ == "__main__":
    main()
