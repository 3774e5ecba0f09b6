"""BG107 efficient-architecture on real architectures, and what it adds to `check`.

Run: python benchmarks/efficient_architecture.py [--models light,minilm,published,synthetic]

For each model prints BG107's layers (suggestion, params and MACs before -> after), the
regularization hint's dense full-rank layers, and times, in one process after imports:

- check: `engine.check` of the model with every rule but BG107 (--no-latency), median and
  minimum of `--reps` (5);
- BG107: the rule alone on the measured facts (values opened afresh each time), median and
  minimum of `--reps`, and the median's share of check's.

Models:
- light: onnx's "light" ResNet-50 and VGG-19 (onnx/backend/test/data/light). Their weights are
  ConstantOfShape fills, not stored tensors; the benchmark stores each as an initializer of
  He-initialised random values (the shapes are the real architecture, the values random:
  trained weights cannot be downloaded here), so the conv findings are the architecture's
  and no weight is low rank;
- minilm: a MiniLM-L6-sized encoder (tests/arch_models.encoder: 30522 x 384 embeddings, 6
  layers, 22.6M params), random weights;
- published: silero-vad and magika, the trained models the test dependencies ship;
- synthetic: a MatMul of exact rank 8 (plus 1e-4 noise) and its `fix --unsafe-fixes` result.

Per-layer MACs: measured as `check --base`/`--staged` measure them (the engine's MacsBatch
with layers), so BG107 reports MACs before and after.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import arch_models  # noqa: E402


def package_dir(name: str) -> Path:
    return Path(importlib.util.find_spec(name).origin).parent


def materialize(source: Path, target: Path, seed: int = 0) -> Path:
    """The light model with every ConstantOfShape weight stored as an initializer of
    He-initialised values (N(0, 2 / fan_in)); shapes come from the int64 shape initializers."""
    rng = np.random.default_rng(seed)
    model = onnx.load(str(source))
    graph = model.graph
    shapes = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    kept = []
    for node in graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in shapes:
            shape = tuple(int(d) for d in shapes[node.input[0]])
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else max(shape[0], 1)
            values = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2 / fan_in))
            if len(shape) == 1:
                values = np.zeros(shape, np.float32)  # biases
            graph.initializer.append(numpy_helper.from_array(values, node.output[0]))
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    # IR 3 wants every initializer listed as a graph input too; from IR 4 on it need not be.
    model.ir_version = max(model.ir_version, 4)
    onnx.save(model, str(target))
    return target


def cases(groups: set[str], scratch: Path) -> list[tuple[str, Path]]:
    found = []
    if "synthetic" in groups:
        found.append(("rank-8 MatMul 1024x1024", arch_models.matmul(
            scratch / "rank8.onnx", arch_models.low_rank(8, 1024, 1024))))
        found.append(("dense 3x3 conv 128ch", arch_models.dense_conv(scratch / "dense.onnx")))
        found.append(("separable 3x3 block 128ch",
                      arch_models.separable_block(scratch / "separable.onnx")))
    if "light" in groups:
        light = package_dir("onnx") / "backend" / "test" / "data" / "light"
        for name in ("resnet50", "vgg19"):
            found.append((f"light {name} (random He weights)",
                          materialize(light / f"light_{name}.onnx", scratch / f"{name}.onnx")))
    if "minilm" in groups:
        found.append(("MiniLM-L6-sized encoder", arch_models.encoder(scratch / "minilm.onnx")))
    if "published" in groups:
        found.append(("silero-vad", package_dir("silero_vad") / "data" / "silero_vad.onnx"))
        found.append(("magika standard_v3_3",
                      package_dir("magika") / "models" / "standard_v3_3" / "model.onnx"))
    return found


def run_bg107(path: Path, config):
    """BG107's findings on `path`, with the model's layers and their MACs in the facts."""
    from bloatguard.engine import MacsBatch, apply_rules, measure
    from bloatguard.registry import find_rule
    from bloatguard.result import ModelResult

    batch = MacsBatch(layers=True)
    facts = measure(path, config, macs=batch)
    batch.run()
    result = ModelResult(path=str(path), facts=facts)
    rule = find_rule("BG107")
    start = time.perf_counter()
    apply_rules(result, path, config, [rule])
    return result.findings, time.perf_counter() - start, facts


def time_check(path: Path, config) -> float:
    from bloatguard import engine

    selection = engine.Selection(ignore=["BG107"])
    start = time.perf_counter()
    engine.check([path], config, selection, latency=False)
    return time.perf_counter() - start


def human(n) -> str:
    from bloatguard.units import human_count

    return "-" if n is None else human_count(n)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="synthetic,light,minilm,published")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)
    from bloatguard.config import Config

    config = Config()
    with tempfile.TemporaryDirectory(prefix="bg107-bench-") as scratch:
        for label, path in cases(set(args.models.split(",")), Path(scratch)):
            checks = [time_check(path, config) for _ in range(args.reps)]
            rule_times = []
            for _ in range(args.reps):
                findings, elapsed, facts = run_bg107(path, config)
                rule_times.append(elapsed)
            check_s, rule_s = statistics.median(checks), statistics.median(rule_times)
            print(f"== {label}: {human(facts.params)} params, {human(facts.macs)} MACs, "
                  f"{facts.file_size / 1e6:.1f} MB")
            print(f"   check (every other rule): median {check_s:.3f} s, min {min(checks):.3f} s; "
                  f"BG107 alone: median {rule_s:.3f} s, min {min(rule_times):.3f} s "
                  f"(+{rule_s / check_s:.0%} of check)")
            if not findings:
                print("   BG107: nothing to report")
            for finding in findings:
                details = finding.details
                print(f"   BG107: {len(details['layers'])} layer(s), "
                      f"{human(details['params_saved'])} params saved in all")
                for layer in details["layers"][:8]:
                    extra = (f"rank {layer['rank']} of {layer['full_rank']}" if layer.get("rank")
                             and layer["suggestion"] == "low-rank" else
                             f"1/Cout + 1/K = {layer['macs_ratio']:.4f}" if layer["suggestion"] ==
                             "depthwise-separable" else f"share {layer.get('share')}")
                    print(f"     {layer['name'][:48]:48} {layer['suggestion']:21} params "
                          f"{human(layer['params_before'])} -> {human(layer['params_after'])}, MACs "
                          f"{human(layer['macs_before'])} -> {human(layer['macs_after'])} ({extra})")
                if len(details["layers"]) > 8:
                    print(f"     ... and {len(details['layers']) - 8} more")
                for dense in details["incompressible"][:4]:
                    print(f"     dense, not low-rank: {dense['name'][:40]} rank {dense['rank']} of "
                          f"{dense['full_rank']}, cosine after pruning half {dense['prune_half_cosine']}")
                for note in details["notes"][:3]:
                    print(f"     note: {note}")
            if label.startswith("rank-8"):
                fixed = subprocess.run(
                    [sys.executable, "-m", "bloatguard", "fix", "--unsafe-fixes", "--dry-run",
                     "--only", "factorize-lowrank", "--output-format", "json", str(path)],
                    capture_output=True, text=True, check=True)
                [candidate] = json.loads(fixed.stdout)["models"][0]["candidates"]
                latency = candidate["latency"] or {}
                print(f"   fix factorize-lowrank: {candidate['verdict']}, params "
                      f"{human(candidate['params'])}, size ratio {candidate['size_ratio']}, cosine "
                      f"{candidate['fidelity']['outputs']['y']['cosine']:.6f}, latency "
                      f"x{latency.get('ratio', float('nan')):.2f}")
            print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
