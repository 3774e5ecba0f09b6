from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from bloatguard.facts import DTYPE_SIZES, TensorInfo, WeightView
from bloatguard.hygiene import capped, listing, parse_fraction, percent, tensor_label
from bloatguard.rule import Finding, Fix, Option, Rule, RuleContext
from bloatguard.units import human_bytes, parse_count, parse_size

FLOAT_WEIGHTS = {"float32", "float16", "bfloat16"}  # float64 is BG105's business first

# What each fix does, and what `bloatguard fix` (onnxruntime's quantizers) needs for it.
KINDS = {
    "quantize-static": "static int8 (QDQ) quantization",
    "quantize-dynamic": "dynamic int8 quantization",
    "quantize-matmulnbits": "4-bit weight-only quantization (MatMulNBits)",
}
NBITS_BLOCK = 128  # onnxruntime's MatMulNBitsQuantizer default: one scale per 128 weights


@dataclass
class Candidate:
    tensor: TensorInfo
    op: str  # the layer's operator (for state dicts, the ONNX op guessed from name and shape)
    layer: str | None  # node label, None without a graph
    kind_of_layer: str  # facts.LAYER_KINDS
    matmul_b: bool = False  # a 2-D MatMul B stored as is: what MatMulNBits can replace
    kind: str | None = None  # the fix that fits it; None without a graph (nothing to fix)

    @property
    def nbytes(self) -> int:
        nbytes = self.tensor.nbytes
        assert nbytes is not None  # a float weight (FLOAT_WEIGHTS): its size is always known
        return nbytes

    @property
    def label(self) -> str:
        return tensor_label(self.tensor.name, self.tensor.where)

    def saved(self) -> int:
        """Bytes the fix of `kind` would save: int8 keeps one byte per weight; 4-bit keeps half
        a byte plus one scale (of the weight's own dtype) per block."""
        t = self.tensor
        if self.kind == "quantize-matmulnbits":
            kept = t.numel / 2 + t.numel / NBITS_BLOCK * DTYPE_SIZES[t.dtype]
        else:
            kept = t.numel
        return max(0, int(self.nbytes - kept))


class UnquantizedLayers(Rule):
    """## What it does
    Finds float weights (float32, float16, bfloat16) above a size threshold that feed MatMul,
    Gemm, Conv, ConvTranspose, Gather (embeddings) or LSTM/GRU/RNN layers - directly or
    through Cast, Transpose, Reshape, Slice/Concat and other layout ops, wherever they are stored:
    initializers, `Constant` nodes, `If`/`Loop` subgraphs, functions, external data. It reports
    their bytes, their share of the model's weights, the layers, and which quantization fits:

    - static int8 QDQ for Conv layers (fast on CPUs; needs calibration samples),
    - dynamic int8 for MatMul, Gemm, Gather and LSTM layers (no samples needed),
    - 4-bit weight-only `MatMulNBits` for large transformer MatMuls (`nbits-min-elements`),
    - float16 as an alternative where the target runs it (GPUs, NPUs, recent ARM CPUs).

    Models that are already quantized pass: any QDQ pair, QLinear*, MatMulInteger, ConvInteger,
    MatMulNBits or DynamicQuantize* operator marks the float layers left as kept on purpose; for
    PyTorch checkpoints and safetensors (no graph), 2-D+ tensors named `*weight*`/`*kernel` are
    judged by shape, and an int8/int4 state dict passes.

    The rule reads the format-neutral weight view its reader fills, so the same check covers
    TFLite (float32 or float16-behind-DEQUANTIZE weights of CONV_2D, DEPTHWISE_CONV_2D,
    FULLY_CONNECTED, TRANSPOSE_CONV, BATCH_MATMUL and the LSTM/RNN ops; int8 layer weights mean
    the model is quantized) and GGUF (2-D+ float32/float16/bfloat16 `*.weight` matrices; any
    block-quantized matrix means the model is quantized). The advice follows the toolchain that
    rewrites the format: onnxruntime's quantizers for ONNX, full-integer or dynamic-range
    post-training quantization for TFLite, `llama-quantize` to Q8_0 or Q4_K_M (with the file
    size each would give) for GGUF.

    ## Why is this bad?
    float32 weights take four times the bytes of int8 and eight times those of 4-bit weights,
    in the repository, in every download and in memory, and int8 kernels are usually faster on
    CPUs. For most Conv and MatMul layers the accuracy cost is small and measurable.

    ## Example
    A float32 Conv detector (`examples/models/detector.onnx`):
    ```text
    BG101 warning: [unquantized-layers] 2 float32 weight tensors (369 KB, 98% of the model's
    weights) feed unquantized layers (Conv): conv2.weight (295 KB, Conv), conv1.weight (73.7 KB,
    Conv). Static int8 (QDQ) quantization of the Conv layers would save about 276 KB; static
    quantization needs calibration samples: add the model to [tool.bloatguard.samples]
    ```

    ## Use instead
    ```python
    from onnxruntime.quantization import quantize_dynamic, quantize_static, QuantType
    quantize_dynamic("model.onnx", "model.int8.onnx", weight_type=QuantType.QInt8)
    ```
    or `quantize_static` with a calibration reader for Conv-heavy models, or
    `onnxruntime.quantization.matmul_nbits_quantizer.MatMulNBitsQuantizer` for large MatMuls.
    `bloatguard fix --unsafe-fixes` tries the candidates and keeps the best one that meets the
    budgets and the fidelity tolerance.

    ## Fix safety
    Unsafe: quantization changes the outputs. The fix hint names the kind (`quantize-static`,
    `quantize-dynamic`, `quantize-matmulnbits`), the op types and weights it covers, other kinds
    for the remaining layers (`also`) and `convert-fp16` as an alternative. Static quantization
    needs calibration inputs: add the model to `[tool.bloatguard.samples]`. PyTorch checkpoints
    and safetensors files get no fix hint (there is no graph to quantize): the message says how
    to quantize where the model is built, or to store float16/bfloat16. TFLite and GGUF files get
    no fix hint either: their converters quantize them.

    ## Options
    """

    code = "BG101"
    name = "unquantized-layers"
    summary = "Float weights of MatMul/Gemm/Conv/Gather/LSTM layers that could be quantized"
    options = {
        "min-weight-bytes": Option(parse_size, 64 * 2**10, "weights of at most this size are "
                                   "ignored; small layers gain little and are often the most "
                                   "sensitive ones.", '"64 KiB"'),
        "min-share": Option(parse_fraction, 0.10, "report only when the quantizable weights hold "
                            "at least this share of the model's weight bytes.", '"10%"'),
        "nbits-min-elements": Option(parse_count, 1_000_000, "MatMul weights with at least this "
                                     "many elements are recommended for 4-bit `MatMulNBits`.",
                                     '"1M"'),
    }
    reads = frozenset({"model"})

    def check(self, ctx: RuleContext) -> Iterator[Finding]:
        facts = ctx.facts
        view = ctx.weight_uses()
        if facts.unreadable or view is None or view.quantized:
            return
        candidates = _candidates(facts.tensors, view)
        min_bytes = self.option(ctx, "min-weight-bytes")
        candidates = [c for c in candidates if c.nbytes > min_bytes]
        model_bytes = facts.weight_bytes or facts.file_size
        total = sum(c.nbytes for c in candidates)
        if not candidates or total < self.option(ctx, "min-share") * model_bytes:
            return
        candidates.sort(key=lambda c: -c.nbytes)
        advice = TOOLCHAINS.get(view.toolchain, UnquantizedLayers._generic_finding)
        yield advice(self, ctx, candidates, total, model_bytes)

    def _weights_file_finding(self, ctx: RuleContext, candidates: list[Candidate], total: int,
                              model_bytes: int) -> Finding:
        """A state dict or safetensors file has no graph to quantize: no `bloatguard fix` and no
        calibration samples, but what the team can do where the model is built."""
        wide = sum(c.nbytes // 2 for c in candidates if c.tensor.dtype == "float32")
        message = (
            f"{_weights_phrase(candidates, total, model_bytes)}, recognised by name and shape. "
            f"This {ctx.facts.format} file has no graph for bloatguard to quantize: quantize "
            "where the model is built, with torch.ao.quantization.quantize_dynamic for "
            "Linear/LSTM layers or onnxruntime's quantizers on the ONNX export (int8 would save "
            f"about {human_bytes(sum(c.saved() for c in candidates))})"
            + (f", or store the weights as float16/bfloat16 (saves {human_bytes(wide)})"
               if wide else ""))
        return self.finding(ctx, message, details=self._details(ctx, candidates, total, model_bytes,
                                                                _notes(candidates)))

    def _onnxruntime_finding(self, ctx: RuleContext, candidates: list[Candidate], total: int,
                             model_bytes: int) -> Finding:
        """onnxruntime's quantizers, which `bloatguard fix` can apply: a fix hint per kind."""
        nbits_min = self.option(ctx, "nbits-min-elements")
        groups: dict[str, list[Candidate]] = {}
        for candidate in candidates:
            candidate.kind = fits = _onnxruntime_kind(candidate, nbits_min)
            groups.setdefault(fits, []).append(candidate)
        # The primary fix is the one covering the most bytes; the others go in `also`.
        ranked = sorted(groups.items(), key=lambda item: -sum(c.nbytes for c in item[1]))
        kind, primary = ranked[0]
        samples_needed = "quantize-static" in groups and ctx.settings.samples is None
        plans = [f"{KINDS[k]} of the {_ops(group)} layers would save about "
                 f"{human_bytes(sum(c.saved() for c in group))}" for k, group in ranked]
        message = (
            _weights_phrase(candidates, total, model_bytes) + ". " + _sentence("; ".join(plans))
            + ("; static quantization needs calibration samples: add the model to "
               "[tool.bloatguard.samples]" if samples_needed else ""))
        float32 = sum(c.nbytes for c in candidates if c.tensor.dtype == "float32")
        fix = Fix(kind=kind, safe=False, details={
            "op_types": sorted({c.op for c in primary}),
            "weights": [c.tensor.name for c in primary][:50],
            "bytes_saved": sum(c.saved() for c in primary),
            **({"bits": 4, "block_size": NBITS_BLOCK} if kind == "quantize-matmulnbits" else {}),
            "needs_samples": kind == "quantize-static",
            "also": [{"kind": k, "op_types": sorted({c.op for c in group}),
                      "bytes_saved": sum(c.saved() for c in group),
                      "needs_samples": k == "quantize-static"} for k, group in ranked[1:]],
            "alternatives": [{"kind": "convert-fp16", "bytes_saved": float32 // 2}] if float32 else [],
        })
        return self.finding(ctx, message, details=self._details(ctx, candidates, total, model_bytes,
                                                                _notes(candidates)), fix=fix)

    def _litert_finding(self, ctx: RuleContext, candidates: list[Candidate], total: int,
                        model_bytes: int) -> Finding:
        """A TFLite/LiteRT model is quantized by the converter that wrote it."""
        saved = sum(c.saved() for c in candidates)
        message = (
            f"{_weights_phrase(candidates, total, model_bytes)}. Full-integer post-training "
            "quantization (TFLiteConverter with optimizations=[tf.lite.Optimize.DEFAULT], a "
            "representative_dataset and TFLITE_BUILTINS_INT8 ops) would store them as int8 and "
            f"save about {human_bytes(saved)}, with integer kernels for CPUs, microcontrollers and "
            "NPUs; dynamic-range quantization (Optimize.DEFAULT without a dataset) saves the same "
            "weight bytes and keeps float activations")
        return self.finding(ctx, message, details=self._details(
            ctx, candidates, total, model_bytes, [], bytes_saved=saved))

    def _llama_cpp_finding(self, ctx: RuleContext, candidates: list[Candidate], total: int,
                           model_bytes: int) -> Finding:
        """A GGUF file is quantized by llama.cpp's llama-quantize: name a type and the size the
        file would have."""
        numel = sum(c.tensor.numel for c in candidates)
        estimates = {name: int(ctx.facts.file_size - total + numel * bits / 8)
                     for name, bits in LLAMA_CPP_TYPES.items()}
        message = (
            f"{_weights_phrase(candidates, total, model_bytes)}. llama.cpp's llama-quantize "
            f"would make the file about {human_bytes(estimates['Q8_0'])} as Q8_0 (8.5 bits per "
            f"weight, near-lossless) or about {human_bytes(estimates['Q4_K_M'])} as Q4_K_M "
            f"(about {LLAMA_CPP_TYPES['Q4_K_M']} bits per weight), instead of "
            f"{human_bytes(ctx.facts.file_size)}: `llama-quantize model.gguf model-Q4_K_M.gguf "
            "Q4_K_M`")
        return self.finding(ctx, message, details=self._details(
            ctx, candidates, total, model_bytes, [], estimated_file_size=estimates))

    def _generic_finding(self, ctx: RuleContext, candidates: list[Candidate], total: int,
                         model_bytes: int) -> Finding:
        saved = sum(c.saved() for c in candidates)
        message = (f"{_weights_phrase(candidates, total, model_bytes)}. int8 weights would save "
                   f"about {human_bytes(saved)}")
        return self.finding(ctx, message, details=self._details(
            ctx, candidates, total, model_bytes, [], bytes_saved=saved))

    def _details(self, ctx: RuleContext, candidates: list[Candidate], total: int,
                 model_bytes: int, notes: list[str], **extra) -> dict:
        return {
            "bytes": total, "share": round(total / model_bytes, 4) if model_bytes else None,
            "by_op": _bytes_by(candidates, lambda c: c.op),
            "by_dtype": _bytes_by(candidates, lambda c: c.tensor.dtype),
            "weights_count": len(candidates),
            "weights": capped([{"name": c.tensor.name, "where": c.tensor.where,
                                "dtype": c.tensor.dtype, "shape": list(c.tensor.shape),
                                "bytes": c.nbytes, "op": c.op, "layer": c.layer,
                                "fix": c.kind} for c in candidates]),
            "samples_configured": ctx.settings.samples is not None,
            "notes": notes,
            **extra,
        }


# The advice of each toolchain that rewrites models (facts.WeightView.toolchain): how its users
# quantize, and whether `bloatguard fix` can do it for them. Keyed by toolchain, never by format.
TOOLCHAINS = {
    "onnxruntime": UnquantizedLayers._onnxruntime_finding,
    "torch": UnquantizedLayers._weights_file_finding,
    "litert": UnquantizedLayers._litert_finding,
    "llama.cpp": UnquantizedLayers._llama_cpp_finding,
}
# llama.cpp types BG101 names, with their bits per weight: Q8_0 stores 32 int8 weights and one
# float16 scale in 34 bytes; Q4_K_M stores most tensors as Q4_K (144 bytes per 256 weights, 4.5
# bits) and some (attn_v, half of ffn_down, output) as Q6_K (6.56 bits): about 4.8 overall on
# llama-style models, the figure used for the estimate.
LLAMA_CPP_TYPES = {"Q8_0": 8.5, "Q4_K_M": 4.8}


def _weights_phrase(candidates: list[Candidate], total: int, model_bytes: int) -> str:
    """"2 float32 weight tensors (369 KB, 98% of the model's weights) feed unquantized layers
    (Conv): conv2.weight (295 KB, Conv), ..." """
    dtypes = "/".join(sorted({c.tensor.dtype for c in candidates}))
    ops = "/".join(sorted({c.op for c in candidates}))
    several = len(candidates) > 1
    return (f"{len(candidates)} {dtypes} weight tensor{'s' if several else ''} "
            f"({human_bytes(total)}, {percent(total, model_bytes)} of the model's weights) "
            f"feed{'' if several else 's'} unquantized layers ({ops}): "
            + listing([f"{c.label} ({human_bytes(c.nbytes)}, {c.op})" for c in candidates]))


def _candidates(tensors: list[TensorInfo], view: WeightView) -> list[Candidate]:
    found = []
    for tensor in tensors:
        if tensor.dtype not in FLOAT_WEIGHTS:
            continue
        layers = view(tensor.where, tensor.name)
        if layers:
            # A 2-D MatMul B stored as is: what MatMulNBits can replace.
            b = next((u for u in layers if u.op == "MatMul" and u.index == 1 and not u.via), None)
            use = b or layers[0]
            found.append(Candidate(tensor, use.op, use.layer, use.kind,
                                   matmul_b=b is not None and len(tensor.shape) == 2))
    return found


def _onnxruntime_kind(candidate: Candidate, nbits_min: int) -> str:
    if candidate.kind_of_layer in ("conv", "depthwise"):
        return "quantize-static"
    if candidate.matmul_b and candidate.tensor.numel >= nbits_min:
        return "quantize-matmulnbits"
    return "quantize-dynamic"


def _notes(candidates: list[Candidate]) -> list[str]:
    notes = []
    ops = {c.op for c in candidates}
    if "Gemm" in ops:
        notes.append("onnxruntime's quantize_dynamic leaves Gemm in float: rewrite Gemm as "
                     "MatMul + Add (exact) first, or quantize statically")
    if ops & {"GRU", "RNN"}:
        notes.append("onnxruntime has no int8 GRU/RNN kernels: consider float16 for those layers")
    if any(c.tensor.dtype != "float32" for c in candidates):
        notes.append("onnxruntime's quantizers expect float32 weights: quantize the float32 "
                     "export rather than the float16/bfloat16 one")
    return notes


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _ops(group: list[Candidate]) -> str:
    return "/".join(sorted({c.op for c in group}))


def _bytes_by(candidates: list[Candidate], key) -> dict[str, int]:
    totals: dict[str, int] = {}
    for candidate in candidates:
        totals[key(candidate)] = totals.get(key(candidate), 0) + candidate.nbytes
    return dict(sorted(totals.items(), key=lambda item: -item[1]))
