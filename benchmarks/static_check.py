"""Static check speed: `bloatguard check --output-format json` against plain `onnx.load`.

Run: python benchmarks/static_check.py [--keep]

Cases (each timed interleaved in one run, printed as ratios):
1. a directory of small real models (silero-vad, magika, the examples): target ratio <= 1.5,
   since interpreter start-up dominates;
2. a generated ~400 MB model with embedded weights: target <= 0.5x of onnx.load alone, because
   counting needs only dims (the wire-format reader skips raw_data over an mmap);
3. a generated 2 GB model with external data: target under 1 s, and the weight bytes are never
   read (checked with the child's read-byte counter from /proc/<pid>/io);
plus `bloatguard --version` start-up (target < 150 ms).
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

from _timing import interleaved, real_models, report

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable


def small_models(target: Path) -> list[Path]:
    target.mkdir(parents=True, exist_ok=True)
    for index, source in enumerate(real_models()):
        shutil.copy(source, target / f"{index:02d}_{source.name}")
    return sorted(target.glob("*.onnx"))


def big_embedded_model(path: Path, megabytes: int = 400) -> Path:
    """A chain of MatMuls whose 1024x1024 float32 weights add up to about `megabytes` MB."""
    layers = megabytes * 10**6 // (1024 * 1024 * 4)
    rng = np.random.default_rng(0)
    nodes, inits, current = [], [], "x"
    for index in range(layers):
        inits.append(numpy_helper.from_array(rng.standard_normal((1024, 1024), dtype=np.float32), f"w{index}"))
        nodes.append(helper.make_node("MatMul", [current, f"w{index}"], [f"h{index}"]))
        current = f"h{index}"
    graph = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1024])],
                              [helper.make_tensor_value_info(current, TensorProto.FLOAT, [1, 1024])],
                              initializer=inits)
    onnx.save_model(helper.make_model(graph), str(path))
    return path


def big_external_model(path: Path, gigabytes: float = 2.0) -> Path:
    """2 GB of weights in a sparse external data file: creating it costs nothing, and a reader
    that never touches the bytes is as fast as one that does not need them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = 8192
    layer_bytes = rows * rows * 4
    layers = int(gigabytes * 10**9 // layer_bytes)
    data_name = path.name + ".data"
    nodes, inits, current = [], [], "x"
    for index in range(layers):
        tensor = TensorProto(name=f"w{index}", data_type=TensorProto.FLOAT, dims=[rows, rows])
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", data_name), ("offset", str(index * layer_bytes)),
                           ("length", str(layer_bytes))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        inits.append(tensor)
        nodes.append(helper.make_node("MatMul", [current, f"w{index}"], [f"h{index}"]))
        current = f"h{index}"
    graph = helper.make_graph(nodes, "ext", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, rows])],
                              [helper.make_tensor_value_info(current, TensorProto.FLOAT, [1, rows])],
                              initializer=inits)
    onnx.save_model(helper.make_model(graph), str(path))
    with open(path.parent / data_name, "wb") as handle:
        handle.truncate(layers * layer_bytes)
    return path


def onnx_load_command(paths: list[Path]) -> list[str]:
    listing = ", ".join(repr(str(p)) for p in paths)
    return [PY, "-c", f"import onnx; [onnx.load(p) for p in [{listing}]]"]


def check_command(*paths: Path) -> list[str]:
    return [PY, "-m", "bloatguard", "check", "--output-format", "json", *map(str, paths)]


def external_read_bytes(model: Path, data: Path) -> tuple[float, int, bool]:
    """Wall time of the metric check (budget rules) of `model` in-process (after imports), the
    bytes the process read (read() syscalls plus major page faults), and whether any process of
    the check, forked MACs children included, opened `data` at all. The last one is the verdict:
    mmap reads of a sparse file fault pages in without a major fault, so byte counts alone
    cannot prove the weights were never read."""
    code = ("import os, resource, sys, tempfile, time\n"
            "log = tempfile.TemporaryFile()\n"  # inherited by forked children; os.write is no open
            f"data = {str(data)!r}\n"
            "def hook(event, args):\n"
            "    if event == 'open' and isinstance(args[0], (str, bytes, os.PathLike)) \\\n"
            "            and os.path.abspath(os.fsdecode(args[0])) == data:\n"
            "        os.write(log.fileno(), b'x')\n"
            "sys.addaudithook(hook)\n"
            "from bloatguard.cli import main\nt = time.perf_counter()\n"
            f"main(['check', '--output-format', 'json', '--select', 'BG0', {str(model)!r}])\n"
            "elapsed = time.perf_counter() - t\n"
            "rchar = int([l for l in open('/proc/self/io') if l.startswith('rchar')][0].split()[1])\n"
            "majflt = resource.getrusage(resource.RUSAGE_SELF).ru_majflt\n"
            "print('RESULT', elapsed, rchar + majflt * 4096, os.fstat(log.fileno()).st_size, file=sys.stderr)\n")
    result = subprocess.run([PY, "-c", code], capture_output=True, text=True)
    line = next(text for text in result.stderr.splitlines() if text.startswith("RESULT")).split()
    return float(line[1]), int(line[2]), int(line[3]) > 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keep", action="store_true", help="keep the generated models")
    parser.add_argument("--big-mb", type=int, default=400)
    args = parser.parse_args()
    # Time what users run: pip writes bytecode at install, onnx's included. A checkout edited
    # under PYTHONDONTWRITEBYTECODE=1 would otherwise recompile every changed module on every
    # run (~15 ms of the small-models case).
    subprocess.run([PY, "-m", "compileall", "-q", str(REPO / "bloatguard"), str(REPO / "rules")],
                   check=True, stdout=subprocess.DEVNULL)
    work = Path(tempfile.mkdtemp(prefix="bloatguard-bench-"))
    try:
        models = small_models(work / "small")
        a, b = interleaved([*check_command(work / "small"), "--select", "BG0"], onnx_load_command(models))
        report(f"1. {len(models)} small real models, budget rules (BG0xx)", a, b, "<= 1.5")
        a, b = interleaved(check_command(work / "small"), onnx_load_command(models))
        report(f"1b. {len(models)} small real models, every rule (hygiene rules read the weights)",
               a, b, "none set")

        print(f"   generating a ~{args.big_mb} MB model ...", flush=True)
        big = big_embedded_model(work / "big.onnx", args.big_mb)
        size_mb = big.stat().st_size / 1e6
        a, b = interleaved([*check_command(big), "--select", "BG001,BG002,BG003"],
                           onnx_load_command([big]), rounds=5)
        report(f"2. one {size_mb:.0f} MB model, embedded weights", a, b, "<= 0.5")

        ext = big_external_model(work / "ext" / "model.onnx")
        data_size = (work / "ext" / "model.onnx.data").stat().st_size
        runs = [external_read_bytes(ext, ext.parent / "model.onnx.data") for _ in range(5)]
        elapsed = statistics.median(r[0] for r in runs)
        read = max(r[1] for r in runs)
        opened = any(r[2] for r in runs)
        print(f"3. {data_size / 1e9:.1f} GB of external data: metric check took {elapsed * 1000:.0f} ms "
              f"(median of 5, in-process, after imports); the process read {read / 1e6:.1f} MB in "
              f"total; the data file was opened: {opened}; target < 1 s, never opened")

        times = []
        for _ in range(11):
            start = time.perf_counter()
            # This interpreter's bloatguard (the checkout just compiled), not whatever is on PATH.
            subprocess.run([PY, "-m", "bloatguard", "--version"], stdout=subprocess.DEVNULL, check=True)
            times.append(time.perf_counter() - start)
        print(f"4. bloatguard --version: {statistics.median(times) * 1000:.0f} ms (median of 11); "
              "target < 150 ms")
    finally:
        if args.keep:
            print(f"models kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
