"""BG004's regression protocol on this machine: false positives, power, and a real slowdown.

Run: python benchmarks/latency.py [--reps 20] [--time-budget "10 s"] [--cases aa,power,real]
                                  [--busy N] [--no-confirm]

Each repetition is one full base/head comparison exactly as `bloatguard check --base` runs it
(a child process, interleaved rounds, sign test, Holm, and a confirming second measurement of a
flagged regression), through `bloatguard.measure.latency.attach_latency`. Printed per case: how
many repetitions were flagged as a regression, the median ratio and interval of each, and the
wall time per pair. Targets (issue 5):

- aa:    the same model as base and head: at most 1 of 20 flagged (aim: none);
- power: a head with ~15 % more MatMul work: at least 19 of 20 flagged, ~10 s per pair;
- real:  a Conv-heavy model vs its `quantize_dynamic` version (ConvInteger is slow on CPU):
         flagged every time.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from bloatguard.config import Config
from bloatguard.engine import measure
from bloatguard.measure.latency import attach_latency
from bloatguard.result import ModelResult
from bloatguard.units import parse_time_ms

from factories import matmul_chain  # noqa: E402

OPSET = [helper.make_opsetid("", 17)]


def conv_net(path: Path, blocks: int = 4, channels: int = 64, size: int = 56) -> Path:
    """A MobileNet-style Conv network: a 3x3 stem, then depthwise 3x3 + pointwise 1x1 blocks
    with Relu. The depthwise convs are what `quantize_dynamic` makes slow (ConvInteger has no
    fast grouped kernel on CPU)."""
    rng = np.random.default_rng(1)
    nodes, inits = [], []

    def conv(name: str, source: str, cin: int, cout: int, kernel: int, group: int) -> str:
        weight = (rng.standard_normal((cout, cin // group, kernel, kernel)) * 0.1).astype(np.float32)
        inits.extend([numpy_helper.from_array(weight, f"{name}_w"),
                      numpy_helper.from_array(np.zeros(cout, np.float32), f"{name}_b")])
        nodes.append(helper.make_node("Conv", [source, f"{name}_w", f"{name}_b"], [f"{name}_c"],
                                      pads=[kernel // 2] * 4, group=group))
        nodes.append(helper.make_node("Relu", [f"{name}_c"], [f"{name}_r"]))
        return f"{name}_r"

    current = conv("stem", "x", 3, channels, 3, 1)
    for index in range(blocks):
        current = conv(f"dw{index}", current, channels, channels, 3, channels)
        current = conv(f"pw{index}", current, channels, channels, 1, 1)
    nodes.append(helper.make_node("Identity", [current], ["y"]))
    graph = helper.make_graph(
        nodes, "convnet", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, size, size])],
        initializer=inits)
    onnx.save(helper.make_model(graph, opset_imports=OPSET), str(path))
    return path


def quantized(source: Path, target: Path) -> Path:
    """`quantize_dynamic` with its defaults, as a user trying to shrink the model would."""
    import logging

    from onnxruntime.quantization import quantize_dynamic

    logging.getLogger().setLevel(logging.ERROR)  # its "consider pre-processing" advice
    quantize_dynamic(str(source), str(target))
    return target


def compare(base: Path, head: Path, config: Config) -> tuple[dict | None, float, list[str]]:
    """One comparison as `check --base` runs it; returns (latency_comparison, seconds, notes)."""
    head_facts, base_facts = measure(head, config), measure(base, config)
    result = ModelResult(path=head.name, facts=head_facts, base=base_facts, status="modified",
                         settings_path=head, head_file=head, base_file=lambda: base)
    start = time.perf_counter()
    attach_latency([result], config)
    return head_facts.latency_comparison, time.perf_counter() - start, head_facts.notes


def run_case(label: str, base: Path, head: Path, reps: int, config: Config, target: str) -> None:
    flagged, test_only, ratios, seconds = 0, 0, [], []
    print(f"\n{label}: {base.name} -> {head.name}, {reps} repetitions")
    for rep in range(reps):
        comparison, elapsed, notes = compare(base, head, config)
        seconds.append(elapsed)
        if comparison is None:
            print(f"  {rep + 1:2d}: not compared: {notes}")
            continue
        flagged += comparison["verdict"] == "regression"
        # What the significance test alone (no effect floor, no confirmation) would call a change.
        first = comparison.get("screening") or comparison
        test_only += first["p_value"] < config.latency.alpha
        ratios.append(comparison["ratio"])
        screening = comparison.get("screening")
        extra = (f"; screening x{screening['ratio']:.3f} confirmed={comparison['confirmed']}"
                 if screening else "")
        print(f"  {rep + 1:2d}: x{comparison['ratio']:.3f} [{comparison['ci'][0]:.3f}, "
              f"{comparison['ci'][1]:.3f}] p={comparison['p_value']:.2g} "
              f"rounds={comparison['rounds']} blocks={comparison['runs_per_block']} "
              f"base={comparison['base_median_ms']:.3f} ms -> {comparison['verdict']} "
              f"({elapsed:.1f} s{extra})")
        sys.stdout.flush()
    if ratios:
        print(f"{label}: flagged {flagged}/{reps} as regression (target {target}); the sign "
              f"test alone would call {test_only}/{reps} a change; median ratio "
              f"x{statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f}); "
              f"{statistics.median(seconds):.1f} s per pair (max {max(seconds):.1f} s)")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20, help="repetitions per case (default 20)")
    parser.add_argument("--time-budget", default="10 s", help='per pair (default "10 s")')
    parser.add_argument("--cases", default="aa,power,real", help="comma-separated: aa,power,real")
    parser.add_argument("--no-confirm", action="store_true",
                        help="judge on the first measurement alone (to see what confirmation buys)")
    parser.add_argument("--busy", type=int, default=0, metavar="N",
                        help="run N CPU-burning processes meanwhile (a noisy CI neighbour)")
    args = parser.parse_args(argv)
    config = Config()
    config.latency.time_budget_ms = parse_time_ms(args.time_budget)
    config.latency.confirm = not args.no_confirm
    cases = set(args.cases.split(","))
    workdir = Path(tempfile.mkdtemp(prefix="bloatguard-latency-bench-"))
    neighbours = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                  for _ in range(args.busy)]
    try:
        print(f"latency protocol benchmark: time budget {args.time_budget} per pair, "
              f"min effect {config.latency.min_effect:.0%}, alpha {config.latency.alpha}, "
              f"threads {config.latency.threads}, confirm {config.latency.confirm}, "
              f"{args.busy} busy neighbour process(es)")
        if "aa" in cases:
            base = matmul_chain(workdir / "aa_base.onnx", 20, batch=32)
            head = workdir / "aa_head.onnx"
            shutil.copy(base, head)
            run_case("A/A (identical models)", base, head, args.reps, config, "<= 1 flagged")
        if "power" in cases:
            base = matmul_chain(workdir / "chain20.onnx", 20, batch=32)
            head = matmul_chain(workdir / "chain23.onnx", 23, batch=32)  # 15 % more MatMul + Relu work
            run_case("power (+15% MatMul work)", base, head, args.reps, config, ">= 19 flagged")
        if "real" in cases:
            base = conv_net(workdir / "convnet.onnx")
            head = quantized(base, workdir / "convnet_dynamic_int8.onnx")
            run_case("real (Conv net vs quantize_dynamic)", base, head, args.reps, config,
                     "all flagged")
    finally:
        for neighbour in neighbours:
            neighbour.kill()
            neighbour.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
