"""`bloatguard fix --unsafe-fixes` on three models: what each candidate costs and what is kept.

Run: python benchmarks/fix.py [--models conv,matmul,magika] [--latency-budget "6 s"] [--reps 1]

Models:
- conv:   a detector-style Conv-heavy model built here (3x3 Conv+Relu blocks at 160x160,
          stride-2 downsampling, a 1x1 head; about 3M parameters);
- matmul: a transformer-style MatMul-heavy model built here (4 layers of attention and MLP,
          width 512, MLP 2048, 128 tokens; about 12.6M parameters);
- magika: the Conv-heavy model magika ships on PyPI (models/standard_v3_3/model.onnx), with
          samples made from real files by magika's own feature extraction.

Each model is fixed exactly as the CLI does it (`python -m bloatguard fix --unsafe-fixes
--dry-run --output-format json`, samples given with --samples, so calibration is on samples).
Printed per candidate: size ratio, latency ratio against the original with its 95 % interval
(interleaved in one child, as BG004 does), fidelity, verdict and the reason. Targets (issue 6):

- Conv-heavy: the kept candidate is >= 3x smaller and not slower; plain quantize_dynamic
  (ConvInteger) is several times slower on CPU and must be rejected;
- MatMul-heavy: the kept candidate is >= 3x smaller with cosine similarity >= 0.99.

Figures are printed, not asserted: they depend on the machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 17)]
REPO = Path(__file__).resolve().parent.parent


# --- models -------------------------------------------------------------------------------------

def conv_detector(path: Path, size: int = 160) -> Path:
    """3x3 Conv+Relu blocks (32 -> 256 channels, four stride-2 steps) and a 1x1 detection head
    with 85 outputs per cell (YOLO-like): about 3M parameters."""
    rng = np.random.default_rng(0)
    widths = [3, 32, 64, 128, 128, 256, 256, 256, 256, 256]
    strides = {0: 2, 1: 2, 2: 2, 4: 2}
    nodes, inits, current = [], [], "images"
    for index, (cin, cout) in enumerate(zip(widths, widths[1:])):
        w = (rng.standard_normal((cout, cin, 3, 3)) * np.sqrt(2 / (cin * 9))).astype(np.float32)
        b = (rng.standard_normal(cout) * 0.05).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"conv{index}.weight"), numpy_helper.from_array(b, f"conv{index}.bias")]
        stride = strides.get(index, 1)
        nodes += [helper.make_node("Conv", [current, f"conv{index}.weight", f"conv{index}.bias"], [f"c{index}"],
                                   pads=[1] * 4, strides=[stride] * 2, kernel_shape=[3, 3], name=f"conv{index}"),
                  helper.make_node("Relu", [f"c{index}"], [f"r{index}"])]
        current = f"r{index}"
    head = (rng.standard_normal((85, widths[-1], 1, 1)) * 0.05).astype(np.float32)
    inits.append(numpy_helper.from_array(head, "head.weight"))
    nodes.append(helper.make_node("Conv", [current, "head.weight"], ["detections"], name="head"))
    cells = size // 16
    graph = helper.make_graph(nodes, "detector",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
                              [helper.make_tensor_value_info("detections", TensorProto.FLOAT, [1, 85, cells, cells])],
                              initializer=inits)
    onnx.save(helper.make_model(graph, opset_imports=OPSET), str(path))
    return path


def transformer(path: Path, layers: int = 4, width: int = 512, hidden: int = 2048, tokens: int = 128) -> Path:
    """Pre-norm transformer encoder layers: LayerNorm, Q/K/V/O projections with 8 heads,
    softmax attention, a Relu MLP, residuals. The projections and MLP are 2-D MatMul weights."""
    rng = np.random.default_rng(0)
    nodes, inits = [], []

    def weight(name, shape):
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32), name))
        return name

    def vector(name, size, value=None):
        data = (np.full(size, value, np.float32) if value is not None
                else (rng.standard_normal(size) * 0.02).astype(np.float32))
        inits.append(numpy_helper.from_array(data, name))
        return name

    heads = 8
    inits += [numpy_helper.from_array(np.array([1, tokens, heads, width // heads], np.int64), "split"),
              numpy_helper.from_array(np.array([1, tokens, width], np.int64), "merge"),
              numpy_helper.from_array(np.array(1 / np.sqrt(width // heads), np.float32), "scale")]
    x = "tokens"
    for layer in range(layers):
        p = f"layer{layer}."
        norm_inputs = [x, vector(p + "ln1.g", width, 1.0), vector(p + "ln1.b", width)]
        nodes.append(helper.make_node("LayerNormalization", norm_inputs, [p + "ln1"], axis=-1))
        for name in "qkv":
            projection = weight(p + name + ".weight", (width, width))
            nodes += [helper.make_node("MatMul", [p + "ln1", projection], [p + name + ".mm"]),
                      helper.make_node("Add", [p + name + ".mm", vector(p + name + ".bias", width)], [p + name]),
                      helper.make_node("Reshape", [p + name, "split"], [p + name + ".heads"]),
                      helper.make_node("Transpose", [p + name + ".heads"], [p + name + ".t"],
                                       perm=[0, 2, 3, 1] if name == "k" else [0, 2, 1, 3])]
        nodes += [helper.make_node("MatMul", [p + "q.t", p + "k.t"], [p + "scores"]),
                  helper.make_node("Mul", [p + "scores", "scale"], [p + "scaled"]),
                  helper.make_node("Softmax", [p + "scaled"], [p + "attention"], axis=-1),
                  helper.make_node("MatMul", [p + "attention", p + "v.t"], [p + "context"]),
                  helper.make_node("Transpose", [p + "context"], [p + "context.t"], perm=[0, 2, 1, 3]),
                  helper.make_node("Reshape", [p + "context.t", "merge"], [p + "context.m"]),
                  helper.make_node("MatMul", [p + "context.m", weight(p + "o.weight", (width, width))], [p + "o.mm"]),
                  helper.make_node("Add", [p + "o.mm", vector(p + "o.bias", width)], [p + "o"]),
                  helper.make_node("Add", [x, p + "o"], [p + "residual"]),
                  helper.make_node("LayerNormalization", [p + "residual", vector(p + "ln2.g", width, 1.0),
                                                          vector(p + "ln2.b", width)], [p + "ln2"], axis=-1),
                  helper.make_node("MatMul", [p + "ln2", weight(p + "fc1.weight", (width, hidden))], [p + "fc1.mm"]),
                  helper.make_node("Add", [p + "fc1.mm", vector(p + "fc1.bias", hidden)], [p + "fc1"]),
                  helper.make_node("Relu", [p + "fc1"], [p + "act"]),
                  helper.make_node("MatMul", [p + "act", weight(p + "fc2.weight", (hidden, width))], [p + "fc2.mm"]),
                  helper.make_node("Add", [p + "fc2.mm", vector(p + "fc2.bias", width)], [p + "fc2"])]
        out = "hidden" if layer == layers - 1 else p + "out"
        nodes.append(helper.make_node("Add", [p + "residual", p + "fc2"], [out]))
        x = out
    graph = helper.make_graph(nodes, "encoder",
                              [helper.make_tensor_value_info("tokens", TensorProto.FLOAT, [1, tokens, width])],
                              [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, [1, tokens, width])],
                              initializer=inits)
    onnx.save(helper.make_model(graph, opset_imports=OPSET), str(path))
    return path


def magika_model() -> Path | None:
    spec = importlib.util.find_spec("magika")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "models" / "standard_v3_3" / "model.onnx"
    return path if path.is_file() else None


# --- samples -------------------------------------------------------------------------------------

def conv_samples(path: Path, count: int = 24, size: int = 160) -> Path:
    """Smooth random images (blurred noise in [0, 1]): closer to photos than white noise."""
    rng = np.random.default_rng(7)
    noise = rng.random((count, 1, 3, size // 8, size // 8), dtype=np.float32)
    images = noise.repeat(8, axis=-1).repeat(8, axis=-2)
    images += rng.normal(0, 0.05, images.shape).astype(np.float32)
    np.savez(path, images=np.clip(images, 0, 1).astype(np.float32))
    return path


def transformer_samples(path: Path, count: int = 16, tokens: int = 128, width: int = 512) -> Path:
    rng = np.random.default_rng(7)
    np.savez(path, tokens=rng.standard_normal((count, 1, tokens, width)).astype(np.float32))
    return path


def magika_samples(path: Path, count: int = 64) -> Path:
    """Model inputs for real files of this Python installation (sources, binaries, JSON,
    images, archives...), extracted by magika's own feature code when it is available."""
    from magika import Magika

    files = []
    roots = [Path(sys.prefix) / "lib", Path(np.__file__).parent, REPO]
    for root in roots:
        for file in sorted(root.rglob("*")):
            if file.is_file() and file.stat().st_size > 64 and "__pycache__" not in file.parts:
                files.append(file)
    rng = np.random.default_rng(7)
    chosen = [files[i] for i in rng.choice(len(files), size=min(count, len(files)), replace=False)]
    magika = Magika()
    config = magika._model_config
    rows = []
    for file in chosen:
        rows.append(_magika_features(magika, config, file))
    np.savez(path, bytes=np.asarray(rows, dtype=np.int32)[:, None, :])
    return path


def _magika_features(magika, config, file: Path) -> list[int]:
    try:
        _, features = magika._get_result_or_features_from_path(file)
        if features is not None:
            return list(features.beg) + list(features.end)
    except Exception:  # private API moved: fall back to the documented layout, by hand
        pass
    data = file.read_bytes()[:config.block_size].lstrip()[:config.beg_size]
    tail = file.read_bytes()[-config.block_size:].rstrip()[-config.end_size:]
    beg = list(data) + [config.padding_token] * (config.beg_size - len(data))
    end = [config.padding_token] * (config.end_size - len(tail)) + list(tail)
    return beg + end


# --- running -------------------------------------------------------------------------------------

def run_fix(model: Path, samples: Path, latency_budget: str) -> tuple[dict, float]:
    argv = [sys.executable, "-m", "bloatguard", "fix", str(model), "--unsafe-fixes", "--dry-run",
            "--output-format", "json", "--samples", str(samples), "--latency-budget", latency_budget]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=model.parent)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"bloatguard fix failed ({done.returncode}): {done.stderr}")
    return json.loads(done.stdout)["models"][0], elapsed


def report(label: str, model: dict, elapsed: float, target: str) -> None:
    original = model["original"]
    print(f"\n{label}: {original['file_size'] / 1e6:.2f} MB, {original['params'] / 1e6:.2f}M params, "
          f"{(original['macs'] or 0) / 1e9:.2f} GMACs; fix took {elapsed:.1f} s")
    print(f"  {'candidate':<36} {'size':>7} {'smaller':>8} {'latency ratio [95% CI]':>24} "
          f"{'cosine':>9} {'top-1':>6}  verdict")
    for c in model["candidates"]:
        ratio = c["size_ratio"]
        latency = c["latency"]
        lat = (f"x{latency['ratio']:.2f} [{latency['ci'][0]:.2f}, {latency['ci'][1]:.2f}]"
               if latency else "-")
        outputs = (c["fidelity"] or {}).get("outputs", {})
        cosines = [o["cosine"] for o in outputs.values() if o.get("kind") == "float"]
        top1 = [o["top1"] for o in outputs.values() if o.get("top1") is not None]
        cosine = f"{min(cosines):.5f}" if cosines else "-"
        agree = f"{min(top1):.0%}" if top1 else "-"
        why = "; ".join(c["reasons"])
        print(f"  {c['candidate']:<36} {ratio if ratio is None else f'{ratio:.0%}':>7} "
              f"{'-' if not ratio else f'{1 / ratio:.1f}x':>8} {lat:>24} {cosine:>9} {agree:>6}  "
              f"{c['verdict']}{': ' + why if why else ''}")
    winner = next((c for c in model["candidates"] if c["verdict"] == "winner"), None)
    if winner is None:
        print(f"  => nothing kept. Target: {target}")
    else:
        lat = winner["latency"]
        print(f"  => keeps {winner['candidate']}: {1 / winner['size_ratio']:.2f}x smaller, latency "
              f"x{lat['ratio']:.2f} ({lat['verdict']}). Target: {target}")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="conv,matmul,magika")
    parser.add_argument("--latency-budget", default="6 s",
                        help="time budget for timing one model's candidates (default: 6 s)")
    parser.add_argument("--reps", type=int, default=1, help="repeat each fix this many times")
    args = parser.parse_args(argv)
    wanted = [m.strip() for m in args.models.split(",") if m.strip()]
    with tempfile.TemporaryDirectory(prefix="bloatguard-bench-fix-") as tmp:
        work = Path(tmp)
        cases = []
        if "conv" in wanted:
            cases.append(("Conv-heavy detector (built)", conv_detector(work / "detector.onnx"),
                          conv_samples(work / "detector_samples.npz"),
                          ">= 3x smaller, not slower; quantize_dynamic rejected"))
        if "matmul" in wanted:
            cases.append(("MatMul-heavy transformer (built)", transformer(work / "encoder.onnx"),
                          transformer_samples(work / "encoder_samples.npz"),
                          ">= 3x smaller, cosine >= 0.99"))
        if "magika" in wanted:
            source = magika_model()
            if source is None:
                print("magika is not installed: skipping the published model")
            else:
                copy = work / "magika.onnx"
                copy.write_bytes(source.read_bytes())
                cases.append(("magika standard_v3_3 (published, Conv-heavy)", copy,
                              magika_samples(work / "magika_samples.npz"),
                              ">= 3x smaller, not slower; quantize_dynamic rejected"))
        for label, model, samples, target in cases:
            for rep in range(args.reps):
                result, elapsed = run_fix(model, samples, args.latency_budget)
                report(label + (f" #{rep + 1}" if args.reps > 1 else ""), result, elapsed, target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
