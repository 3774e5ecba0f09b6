"""Lossy ONNX transforms (only with `--unsafe-fixes`): onnxruntime's quantizers, float16 and
float64 weight storage, and removing redundant input features.

The quantizers work file to file (`src` -> `dst`); the others edit a ModelProto like the safe
transforms. Nothing here decides whether a result is good enough: the verifier measures
fidelity and latency against the original and rejects what does not hold up (static int8 QDQ
is usually faster on CPU for Conv layers, `quantize_dynamic` of a Conv model usually slower).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from bloatguard.fix import onnx_edit as edit
from bloatguard.fix.transforms_safe import narrow_storage, weights_outside_initializers, weights_to_initializers
from bloatguard.graph import attribute, reads_columns_linearly, subgraphs

# --- onnxruntime's quantizers ----------------------------------------------------------------
#
# Real exports trip them up in two ways, both handled before quantizing:
# - weights in `Constant` nodes (Paddle, some TF exporters): the quantizers only quantize
#   initializers, so they quantize nothing or fail; `weights_to_initializers` moves them;
# - opset < 13: per-channel QDQ needs DequantizeLinear's `axis` (opset 13); onnx's version
#   converter upgrades the model, and when it cannot, per-tensor quantization is used instead.
# A quantizer can also succeed and write a model onnxruntime refuses to load or run. Each
# variant's result is therefore loaded and run on one sample before it is accepted; a variant
# that fails says why and the next one is tried.

PER_CHANNEL_OPSET = 13


class _Variant(NamedTuple):
    source: Path  # the model the quantizer reads
    per_channel: bool
    how: str  # for the report: "pre-processed, per-channel"


def quantize_dynamic(src: Path, dst: Path, params: dict[str, Any], external: bool) -> list[str]:
    """Dynamic int8: int8 weights, activations quantized on the fly (MatMulInteger,
    ConvInteger). No calibration needed."""
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as quantize

    source, prepared = _weights_as_initializers(src, external)

    def run(variant: _Variant) -> None:
        quantize(str(variant.source), str(dst), weight_type=QuantType.QInt8,
                 per_channel=variant.per_channel, use_external_data_format=external)

    _, dropped = _first_that_runs("quantize_dynamic", [_Variant(source, False, "per-tensor")],
                                  run, dst, params)
    return ["dynamic int8 quantization (weights int8, activations quantized at run time)",
            *prepared, *dropped]


# Static quantization covers the layers that hold the weights. Quantizing every op (the
# quantizer's default) also puts Q/DQ pairs around elementwise arithmetic whose ranges
# calibration cannot bound (magika's one-hot and normalisation: cosine 0.07), for no speed:
# onnxruntime fuses Conv+Relu either way.
STATIC_OPS = ["Conv", "ConvTranspose", "MatMul", "Gemm"]


def quantize_static(src: Path, dst: Path, params: dict[str, Any], external: bool) -> list[str]:
    """Static int8 in QDQ format: int8 weights per channel, uint8 activations with ranges from
    calibration inputs (params["calibration"], an .npz of stacked samples per input), for the
    layers in STATIC_OPS. Variants, best first: pre-processed per-channel, per-channel,
    per-tensor (the original opset: no conversion to go wrong)."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as quantize

    arrays = _load_inputs(params["calibration"])

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            count = min(len(a) for a in arrays.values())
            # np.array: sample i of a scalar input must stay a 0-d array, not a numpy scalar.
            self.feeds = iter([{name: np.array(a[i]) for name, a in arrays.items()}
                               for i in range(count)])

        def get_next(self):
            return next(self.feeds, None)

    def run(variant: _Variant) -> None:
        quantize(str(variant.source), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                 per_channel=variant.per_channel, weight_type=QuantType.QInt8,
                 activation_type=QuantType.QUInt8, calibrate_method=CalibrationMethod.MinMax,
                 op_types_to_quantize=STATIC_OPS, use_external_data_format=external)

    source, prepared = _weights_as_initializers(src, external)
    upgraded, upgrade = _with_opset(source, PER_CHANNEL_OPSET, external)
    variants, dropped = [], []
    if upgraded is not None:
        # Shape inference and graph optimizations first, as onnxruntime recommends: fused
        # Conv+activation patterns quantize into faster QDQ groups.
        preprocessed = _preprocessed(upgraded, dst.with_name("preprocessed.onnx"), external)
        if preprocessed is not None:
            variants.append(_Variant(preprocessed, True, "pre-processed, per-channel"))
        variants.append(_Variant(upgraded, True, "per-channel"))
    else:
        dropped.append(("per-channel", upgrade))
    variants.append(_Variant(source, False, "per-tensor"))
    used, why_dropped = _first_that_runs("quantize_static", variants, run, dst, params, dropped)
    origin = params.get("calibration_source", "samples")
    changes = [f"static int8 QDQ quantization ({used.how} weights), calibrated on {origin}",
               *prepared]
    if used.per_channel and upgrade:
        changes.append(upgrade)
    return changes + why_dropped


def _first_that_runs(quantizer: str, variants: list[_Variant], run, dst: Path,
                     params: dict[str, Any], tried=()) -> tuple[_Variant, list[str]]:
    """Quantize with each variant in turn until onnxruntime loads and runs the result on one
    sample. Returns the variant used and, for the report, why the ones before it were dropped
    (`tried`: (variant, reason) pairs dropped before any ran); raises RuntimeError naming every
    failure when no variant works."""
    failures = list(tried)
    sample = _first_sample(params)
    for variant in variants:
        try:
            run(variant)
        except Exception as exc:  # onnxruntime's quantizer raises anything
            failures.append((variant.how, f"{quantizer} failed: {type(exc).__name__}: "
                                          f"{_first_line(exc)}"))
            continue
        problem = _does_not_run(dst, sample)
        if problem is None:
            return variant, [f"tried {how} first: {reason}" for how, reason in failures]
        failures.append((variant.how, problem))
    raise RuntimeError("no variant works: " + "; ".join(f"{how}: {reason}"
                                                        for how, reason in failures))


def _weights_as_initializers(src: Path, external: bool) -> tuple[Path, list[str]]:
    """`src`, or a copy next to it with its weights where the quantizers look (initializers).
    The structure decides whether there is anything to do: a large model's weights are read
    only when there is."""
    import onnx

    if not weights_outside_initializers(onnx.load(str(src), load_external_data=False)):
        return src, []
    model = onnx.load(str(src))
    changes = weights_to_initializers(model)
    if not changes:
        return src, []
    path = src.with_name(f"{src.stem}-initializers.onnx")
    edit.save(model, path, external)
    return path, changes


def _with_opset(src: Path, needed: int, external: bool) -> tuple[Path | None, str | None]:
    """(`src` at opset `needed` or later, what was done, if anything), or (None, why not) when
    onnx's version converter cannot convert it."""
    import onnx
    from onnx import version_converter

    structure = onnx.load(str(src), load_external_data=False)
    current = next((o.version for o in structure.opset_import if o.domain in ("", "ai.onnx")),
                   needed)
    if current >= needed:
        return src, None
    try:
        converted = version_converter.convert_version(onnx.load(str(src)), needed)
        onnx.checker.check_model(converted)
    except Exception as exc:  # the converter raises RuntimeError, ValidationError, ...
        return None, (f"it needs opset {needed} (DequantizeLinear's axis), and onnx's version "
                      f"converter cannot convert this model from opset {current}: "
                      f"{_first_line(exc)}")
    path = src.with_name(f"{src.stem}-opset{needed}.onnx")
    edit.save(converted, path, external)
    return path, (f"converted from opset {current} to {needed} with onnx's version converter "
                  "(per-channel QDQ needs DequantizeLinear's axis)")


def _preprocessed(src: Path, dst: Path, external: bool) -> Path | None:
    from onnxruntime.quantization import quant_pre_process

    try:
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=True,
                          save_as_external_data=external)
    except Exception:  # pre-processing is an optimization; quantize the model as it is
        return None
    return dst


def _first_sample(params: dict[str, Any]) -> dict[str, np.ndarray] | None:
    if not params.get("calibration"):
        return None
    return {name: np.array(array[0]) for name, array in _load_inputs(params["calibration"]).items()}


def _does_not_run(path: Path, sample: dict[str, np.ndarray] | None) -> str | None:
    """Why onnxruntime cannot load `path` (or run it on `sample`), or None when it can."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        return f"onnxruntime cannot load the result: {_first_line(exc)}"
    try:
        if sample is not None:
            session.run(None, sample)
    except Exception as exc:
        return f"onnxruntime cannot run the result: {_first_line(exc)}"
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def quantize_nbits(src: Path, dst: Path, params: dict[str, Any], external: bool) -> list[str]:
    """4-bit weight-only quantization of MatMul weights (MatMulNBits), one scale per block."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    block = int(params.get("block_size", 128))
    source, prepared = _weights_as_initializers(src, external)

    def run(variant: _Variant) -> None:
        quantizer = MatMulNBitsQuantizer(onnx.load(str(variant.source)), bits=4, block_size=block,
                                         is_symmetric=False,
                                         accuracy_level=params.get("accuracy_level"))
        quantizer.process()
        quantizer.model.save_model_to_file(str(dst), external)

    _, dropped = _first_that_runs("MatMulNBitsQuantizer", [_Variant(source, False, "blockwise")],
                                  run, dst, params)
    return [f"4-bit weight-only MatMulNBits (block {block})", *prepared, *dropped]


def convert_fp16(model, params: dict[str, Any]) -> list[str]:
    """float32 weights stored as float16, cast back to float32 where they are read: half the
    bytes, and compute stays float32 (CPU execution providers have few fp16 kernels)."""
    return narrow_storage(model, {"from": "float32", "to": "float16",
                                  "min_elements": params.get("min_elements", 1024)})


def narrow_dtypes(model, params: dict[str, Any]) -> list[str]:
    """BG105's narrow-dtypes: float64 weights to float32 (unsafe), or int64 weights whose values
    fit to int32 (safe), each with a Cast back."""
    if params.get("from") == "float64":
        return narrow_float64(model, params)
    return narrow_storage(model, {**params, "min_elements": 1})


def narrow_float64(model, params: dict[str, Any]) -> list[str]:
    """float64 weights stored as float32 with a Cast back: the graph and its I/O keep their
    types, the weights lose precision."""
    return narrow_storage(model, {"from": "float64", "to": "float32",
                                  "tensors": params.get("tensors"), "min_elements": 1})


# --- remove-features --------------------------------------------------------------------------

def remove_features(model, params: dict[str, Any]) -> list[str]:
    """Remove redundant inputs and input columns. Rewrites the model's input signature.

    A whole input no node reads is dropped. Columns of a 2-D input whose every reader is a
    MatMul or Gemm with a constant weight are cut out of the input, and the matching weight
    rows removed; what such a column contributed is folded into the layer: nothing for a
    zero weight row, W[j] added to the row of the column it duplicates in the samples, and
    otherwise the least-squares line through the column it correlates with most (a constant
    column: its value) folded into that column's row and the bias.
    `params["input_map"]` receives, per input, the columns kept (or "drop"), so the verifier
    can feed the candidate the same samples."""
    samples = _load_inputs(params["samples"]) if params.get("samples") else {}
    wanted: dict[str, set] = {}
    for feature in params.get("features", []):
        wanted.setdefault(feature["input"], set()).add(feature["index"])
    changes: list[str] = []
    input_map: dict[str, Any] = params.setdefault("input_map", {})
    graph = model.graph
    scope = edit.graph_scopes(model)[0]
    namer = edit.Namer(model)
    for name, indices in wanted.items():
        value = next((v for v in graph.input if v.name == name), None)
        if value is None:
            continue
        if None in indices:
            if not edit.read_anywhere(graph, name):
                graph.input.remove(value)
                input_map[name] = "drop"
                changes.append(f"removed input {name!r} (no node reads it)")
            continue
        done = _remove_columns(model, scope, value, sorted(indices), samples.get(name), namer)
        if done is not None:
            keep, note = done
            input_map[name] = {"axis": 1, "keep": keep, "width": len(keep) + len(indices)}
            changes.append(note)
    if changes:
        edit.prune_value_info(model)
    return changes


def _remove_columns(model, scope, value, columns: list[int], sample, namer):
    graph = model.graph
    dims = value.type.tensor_type.shape.dim
    if len(dims) != 2 or not dims[1].HasField("dim_value"):
        return None
    width = dims[1].dim_value
    readers = edit.readers(graph).get(value.name, [])
    if not reads_columns_linearly(readers, value.name) or value.name in {v.name for v in graph.output}:
        return None
    if any(edit.read_anywhere(sub, value.name) for n in graph.node for sub in subgraphs(n)):
        return None
    rows = sample.reshape(-1, width).astype(np.float64) if sample is not None else None
    keep = [j for j in range(width) if j not in set(columns)]
    if not keep:
        return None
    plans = []
    for reader in readers:
        weight = edit.constant_array(scope, reader.input[1])
        if weight is None or weight.ndim != 2:
            return None
        trans_b = reader.op_type == "Gemm" and attribute(reader, "transB", 0)
        w = (weight.T if trans_b else weight).astype(np.float64)  # [features, outputs]
        if w.shape[0] != width:
            return None
        extra = np.zeros(w.shape[1])
        w = w.copy()
        for j in columns:
            if not np.any(w[j]):
                continue  # a zero weight row: the column never mattered
            if rows is None:
                return None  # a nonzero row with no samples to say what the column holds
            folded = _fold_column(rows, j, keep)
            for k, scale in folded["into"]:
                w[k] += scale * w[j]
            extra += folded["offset"] * w[j]
        plans.append((reader, weight.dtype, trans_b, w[keep], extra))
    old = [reader.input[1] for reader in readers]
    old += [r.input[2] for r in readers if r.op_type == "Gemm" and len(r.input) > 2 and r.input[2]]
    for reader, dtype, trans_b, w, extra in plans:
        stored = (w.T if trans_b else w).astype(dtype)
        edit.store(model, graph, w_name := namer(f"{reader.input[1]}_features"), stored, before=reader)
        reader.input[1] = w_name
        if np.any(extra != 0):
            _add_bias(model, graph, reader, extra.astype(dtype), namer)
    dims[1].dim_value = len(keep)
    removed = edit.drop_if_unread(model, old)
    for reader, name in zip(readers, old):
        edit.reclaim_name(graph, reader, 1, name, removed)
    return keep, (f"removed {len(columns)} of {width} columns of input {value.name!r} "
                  f"and the matching rows of " + ", ".join(edit.label(scope, r) for r in readers))


def _fold_column(rows: np.ndarray, j: int, keep: list[int]) -> dict[str, Any]:
    """Express column j through the kept columns, as it behaves in the samples: a duplicate
    is that column; a constant is its value; otherwise the least-squares line on the kept
    column it correlates with most (its mean when it correlates with none)."""
    column = rows[:, j]
    for k in keep:
        if np.array_equal(rows[:, k], column):
            return {"into": [(k, 1.0)], "offset": 0.0}
    if np.all(column == column[0]) or column.std() == 0:
        return {"into": [], "offset": float(column[0])}
    best, best_r = None, 0.0
    for k in keep:
        other = rows[:, k]
        if other.std() == 0:
            continue
        r = abs(float(np.corrcoef(column, other)[0, 1]))
        if r > best_r:
            best, best_r = k, r
    if best is None:
        return {"into": [], "offset": float(column.mean())}
    slope, intercept = np.polyfit(rows[:, best], column, 1)
    return {"into": [(best, float(slope))], "offset": float(intercept)}


def _add_bias(model, graph, reader, extra: np.ndarray, namer) -> None:
    """Add `extra` to a layer's output: into Gemm's constant C, else with an Add after it."""
    has_c = reader.op_type == "Gemm" and len(reader.input) > 2 and bool(reader.input[2])
    c = edit.constant_array(edit.graph_scopes(model)[0], reader.input[2]) if has_c else None
    if reader.op_type == "Gemm" and (c is not None or not has_c):
        alpha = float(attribute(reader, "alpha", 1.0))
        beta = float(attribute(reader, "beta", 1.0))
        base = beta * c.astype(np.float64) if c is not None else 0
        edit.store(model, graph, c_name := namer(f"{reader.output[0]}_bias"),
                   np.asarray(base + alpha * extra, dtype=extra.dtype), before=reader)
        if has_c:
            reader.input[2] = c_name
        else:
            reader.input.append(c_name)
        edit.set_attribute(reader, "beta", 1.0)
        return
    from onnx import helper

    out = reader.output[0]
    partial = namer(f"{out}_partial")
    edit.store(model, graph, b_name := namer(f"{out}_bias"), extra, before=reader)
    reader.output[0] = partial
    position = next(i for i, n in enumerate(graph.node) if n is reader)
    graph.node.insert(position + 1, helper.make_node("Add", [partial, b_name], [out]))


def _load_inputs(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}
