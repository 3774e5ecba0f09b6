from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from bloatguard.facts import DTYPE_SIZES, ModelFacts, TensorInfo
from bloatguard.hygiene import (
    capped,
    guess_layer_op,
    layer_uses,
    listing,
    named_like_layer_weight,
    parse_fraction,
    percent,
    tensor_label,
)
from bloatguard.rule import Finding, Fix, Option, Rule, RuleContext
from bloatguard.units import human_bytes, parse_count, parse_size

FLOAT_WEIGHTS = {"float32", "float16", "bfloat16"}  # float64 is BG105's business first
QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "MatMulInteger", "ConvInteger",
                 "MatMulNBits", "QGemm", "QAttention", "MatMulBnb4", "GatherBlockQuantized"}
LOW_BIT = {"int8", "uint8", "int4", "uint4", "int2", "uint2", "float8e4m3fn", "float8e4m3fnuz",
           "float8e5m2", "float8e5m2fnuz", "float4e2m1"}

# What each fix does, and what `bloatguard fix` (onnxruntime's quantizers) needs for it.
KINDS = {
    "quantize-static": "static int8 (QDQ) quantization",
    "quantize-dynamic": "dynamic int8 quantization",
    "quantize-matmulnbits": "4-bit weight-only quantization (MatMulNBits)",
}
NBITS_BLOCK = 128  # onnxruntime's MatMulNBitsQuantizer default: one scale per 128 weights


def is_quantized_op(op: str) -> bool:
    return op in QUANTIZED_OPS or op.startswith(("QLinear", "DynamicQuantize"))


@dataclass
class Candidate:
    tensor: TensorInfo
    op: str  # the ONNX op type of the layer (guessed from name and shape for state dicts)
    layer: str | None  # node label, None without a graph
    matmul_b: bool = False  # a 2-D MatMul B stored as is: what MatMulNBits can replace
    kind: str | None = None  # the fix that fits it; None without a graph (nothing to fix)

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
        return max(0, int(t.nbytes - kept))


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
    to quantize where the model is built, or to store float16/bfloat16.

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
        if facts.unreadable or _already_quantized(facts):
            return
        if facts.format == "onnx":
            uses = ctx.weight_uses()
            if uses is None:
                return
            candidates = _graph_candidates(facts, uses)
        else:
            candidates = _named_candidates(facts)
        min_bytes = self.option(ctx, "min-weight-bytes")
        candidates = [c for c in candidates if c.tensor.nbytes > min_bytes]
        model_bytes = facts.weight_bytes or facts.file_size
        total = sum(c.tensor.nbytes for c in candidates)
        if not candidates or total < self.option(ctx, "min-share") * model_bytes:
            return
        nbits_min = self.option(ctx, "nbits-min-elements")
        for candidate in candidates:
            # Without a graph there is nothing for `bloatguard fix` to quantize: no kind.
            candidate.kind = _kind(candidate, nbits_min) if facts.format == "onnx" else None
        if facts.format == "onnx":
            yield self._finding(ctx, candidates, total, model_bytes)
        else:
            yield self._weights_file_finding(ctx, candidates, total, model_bytes)

    def _weights_file_finding(self, ctx: RuleContext, candidates: list[Candidate], total: int,
                              model_bytes: int) -> Finding:
        """A state dict or safetensors file has no graph to quantize: no `bloatguard fix` and no
        calibration samples, but what the team can do where the model is built."""
        candidates.sort(key=lambda c: -c.tensor.nbytes)
        wide = sum(c.tensor.nbytes // 2 for c in candidates if c.tensor.dtype == "float32")
        message = (
            f"{_weights_phrase(candidates, total, model_bytes)}, recognised by name and shape. "
            f"This {ctx.facts.format} file has no graph for bloatguard to quantize: quantize "
            "where the model is built, with torch.ao.quantization.quantize_dynamic for "
            "Linear/LSTM layers or onnxruntime's quantizers on the ONNX export (int8 would save "
            f"about {human_bytes(sum(c.saved() for c in candidates))})"
            + (f", or store the weights as float16/bfloat16 (saves {human_bytes(wide)})"
               if wide else ""))
        return self.finding(ctx, message, details=self._details(ctx, candidates, total, model_bytes))

    def _finding(self, ctx: RuleContext, candidates: list[Candidate], total: int,
                 model_bytes: int) -> Finding:
        candidates.sort(key=lambda c: -c.tensor.nbytes)
        groups: dict[str, list[Candidate]] = {}
        for candidate in candidates:
            groups.setdefault(candidate.kind, []).append(candidate)
        # The primary fix is the one covering the most bytes; the others go in `also`.
        ranked = sorted(groups.items(), key=lambda item: -sum(c.tensor.nbytes for c in item[1]))
        kind, primary = ranked[0]
        samples_needed = "quantize-static" in groups and ctx.settings.samples is None
        plans = [f"{KINDS[k]} of the {_ops(group)} layers would save about "
                 f"{human_bytes(sum(c.saved() for c in group))}" for k, group in ranked]
        message = (
            _weights_phrase(candidates, total, model_bytes) + ". " + _sentence("; ".join(plans))
            + ("; static quantization needs calibration samples: add the model to "
               "[tool.bloatguard.samples]" if samples_needed else ""))
        float32 = sum(c.tensor.nbytes for c in candidates if c.tensor.dtype == "float32")
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
        return self.finding(ctx, message, details=self._details(ctx, candidates, total, model_bytes),
                            fix=fix)

    def _details(self, ctx: RuleContext, candidates: list[Candidate], total: int,
                 model_bytes: int) -> dict:
        return {
            "bytes": total, "share": round(total / model_bytes, 4) if model_bytes else None,
            "by_op": _bytes_by(candidates, lambda c: c.op),
            "by_dtype": _bytes_by(candidates, lambda c: c.tensor.dtype),
            "weights_count": len(candidates),
            "weights": capped([{"name": c.tensor.name, "where": c.tensor.where,
                                "dtype": c.tensor.dtype, "shape": list(c.tensor.shape),
                                "bytes": c.tensor.nbytes, "op": c.op, "layer": c.layer,
                                "fix": c.kind} for c in candidates]),
            "samples_configured": ctx.settings.samples is not None,
            "notes": _notes(candidates, ctx.facts),
        }


def _weights_phrase(candidates: list[Candidate], total: int, model_bytes: int) -> str:
    """"2 float32 weight tensors (369 KB, 98% of the model's weights) feed unquantized layers
    (Conv): conv2.weight (295 KB, Conv), ..." """
    dtypes = "/".join(sorted({c.tensor.dtype for c in candidates}))
    ops = "/".join(sorted({c.op for c in candidates}))
    several = len(candidates) > 1
    return (f"{len(candidates)} {dtypes} weight tensor{'s' if several else ''} "
            f"({human_bytes(total)}, {percent(total, model_bytes)} of the model's weights) "
            f"feed{'' if several else 's'} unquantized layers ({ops}): "
            + listing([f"{c.label} ({human_bytes(c.tensor.nbytes)}, {c.op})" for c in candidates]))


def _already_quantized(facts: ModelFacts) -> bool:
    if any(is_quantized_op(op) for op in facts.ops):
        return True
    # Without a graph, low-bit matrices are what a quantized state dict looks like.
    return facts.format != "onnx" and any(t.dtype in LOW_BIT and len(t.shape) >= 2
                                           for t in facts.tensors)


def _graph_candidates(facts: ModelFacts, uses) -> list[Candidate]:
    found = []
    for tensor in facts.tensors:
        if tensor.dtype not in FLOAT_WEIGHTS:
            continue
        layers = layer_uses(uses(tensor.where, tensor.name))
        if layers:
            b = next((u for u in layers if u.op == "MatMul" and u.index == 1 and not u.via), None)
            use = b or layers[0]
            found.append(Candidate(tensor, use.op, use.label,
                                   matmul_b=b is not None and len(tensor.shape) == 2))
    return found


def _named_candidates(facts: ModelFacts) -> list[Candidate]:
    found = []
    for tensor in facts.tensors:
        if tensor.dtype in FLOAT_WEIGHTS and named_like_layer_weight(tensor.name, tensor.shape):
            op = guess_layer_op(tensor.name, tensor.shape)
            found.append(Candidate(tensor, op, None, matmul_b=op == "MatMul" and len(tensor.shape) == 2))
    return found


def _kind(candidate: Candidate, nbits_min: int) -> str:
    if candidate.op in ("Conv", "ConvTranspose"):
        return "quantize-static"
    if candidate.matmul_b and candidate.tensor.numel >= nbits_min:
        return "quantize-matmulnbits"
    return "quantize-dynamic"


def _notes(candidates: list[Candidate], facts: ModelFacts) -> list[str]:
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
        totals[key(candidate)] = totals.get(key(candidate), 0) + candidate.tensor.nbytes
    return dict(sorted(totals.items(), key=lambda item: -item[1]))
