"""Every fix kind, declared once: which rules name it, for which formats `bloatguard fix` has a
transform, whether it keeps the outputs, where it goes in a chain, and how a finding's hint
becomes steps.

`bloatguard check` derives its `fix:` hints from this table (bloatguard.fix.suggestion),
`bloatguard fix` its candidates (candidates.py) and transforms (build.py), so a hint and a fix
cannot disagree. Adding a kind is one entry here plus its transform (docs/architecture.md).

This module imports nothing heavy: `check` reads it on every run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

ONNX = frozenset({"onnx"})

# A planned step: (kind, params, safe).
PlannedStep = tuple[str, dict[str, Any], bool]
Planner = Callable[[str, dict[str, Any], bool], list[PlannedStep]]


def _as_hinted(kind: str, details: dict[str, Any], safe: bool) -> list[PlannedStep]:
    return [(kind, {}, safe)]


def _nodes(kind: str, details: dict[str, Any], safe: bool) -> list[PlannedStep]:
    return [(kind, {"nodes": details.get("nodes", [])}, True)]


def _deduplicate(kind: str, details: dict[str, Any], safe: bool) -> list[PlannedStep]:
    return [(kind, {"min_bytes": 1000}, True)]


def _prune_channels(kind: str, details: dict[str, Any], safe: bool) -> list[PlannedStep]:
    # Exactly zero channels with a zero bias go safely; near-zero ones (and a nonzero bias
    # folded into the next layer) only with --unsafe-fixes. The safe step only when the hint
    # is safe (some channel is exactly zero): otherwise it would find nothing to remove, and
    # `fix --dry-run` would list a safe row for a hint `check` called unsafe.
    tolerance = details.get("tolerance") or 1e-3
    unsafe_step: PlannedStep = (kind, {"tolerance": tolerance}, False)
    return [(kind, {}, True), unsafe_step] if safe else [unsafe_step]


def _prune_weights(kind: str, details: dict[str, Any], safe: bool) -> list[PlannedStep]:
    params = {"tensors": details.get("tensors", [])}
    if safe:
        return [(kind, params, True)]
    return [(kind, {**params, "tolerance": details.get("tolerance", 1e-3)}, False)]


def _narrow(kind: str, details: dict[str, Any], safe: bool) -> list[PlannedStep]:
    return [(kind, {"from": details.get("from"), "to": details.get("to"),
                    "tensors": details.get("tensors", [])}, safe)]


def _factorize(kind: str, details: dict[str, Any], safe: bool) -> list[PlannedStep]:
    return [(kind, {"weights": details.get("weights", [])}, False)]


def _features(kind: str, details: dict[str, Any], safe: bool) -> list[PlannedStep]:
    return [(kind, {"features": details.get("features", [])}, False)]


# 4-bit blocks of 32 weights (BG101 estimates with onnxruntime's default of 128): a few % more
# bytes, a cosine of 0.992 instead of 0.986 on a random-weight transformer; accuracy level 4
# computes in int8 on CPU, faster than float32 (11-14 ms vs 18 ms there) where level 0 is not.
NBITS = {"block_size": 32, "accuracy_level": 4}


def _quantize(kind: str, details: dict[str, Any], safe: bool) -> list[PlannedStep]:
    """Every quantizer the finding names (the primary kind, `also`, `alternatives`), and the
    naive dynamic quantization always: the table shows why it was, or was not, kept."""
    named = {kind, "quantize-dynamic"} | {a["kind"] for a in details.get("also", [])}
    named |= {a["kind"] for a in details.get("alternatives", [])}
    return [(name, dict(NBITS) if name == "quantize-matmulnbits" else {}, False)
            for name in QUANTIZERS if name in named]


@dataclass(frozen=True)
class FixKind:
    name: str
    answers: tuple[str, ...]  # codes of the rules whose findings name it
    # "safe": keeps the outputs; "unsafe": changes them (needs --unsafe-fixes); "either": the
    # hint says (exact zeros are safe to drop, near-zero ones are not).
    safety: str
    summary: str  # what it does, for the docs
    # Model formats `bloatguard fix` has a transform for; empty: the hint needs a human.
    formats: frozenset[str] = ONNX
    transform: str | None = None  # "module:function" applying it
    file_to_file: bool = False  # the transform reads and writes model files (ORT's quantizers)
    storage_only: bool = False  # only changes how weights are stored (not for a quantizer's base)
    plan: Planner = _as_hinted
    interface: str | None = None  # how it changes the model's interface, said in the report


_SAFE = "bloatguard.fix.transforms_safe"
_QUANT = "bloatguard.fix.transforms_quant"
_LOWRANK = "bloatguard.fix.transforms_lowrank"

# Safe kinds in the order they are chained: renames first, then folds that create new weights,
# then dead-weight removal (it also collects what folds orphaned), then storage changes.
KINDS: tuple[FixKind, ...] = (
    FixKind("strip-dropout-identity", ("BG104",), "safe",
            "removes inference Dropout and Identity nodes by renaming",
            transform=f"{_SAFE}:strip_passthrough"),
    FixKind("fold-batchnorm", ("BG104",), "safe",
            "folds an inference BatchNormalization into the Conv, ConvTranspose or Gemm before it",
            transform=f"{_SAFE}:fold_batchnorm"),
    FixKind("fold-constants", ("BG104",), "safe",
            "evaluates the constant-only nodes the rule names and stores the results",
            transform=f"{_SAFE}:fold_constants", plan=_nodes),
    FixKind("prune-channels", ("BG106",), "either",
            "removes Conv output channels that are exactly zero (with a zero bias) and the "
            "matching input channels of the Conv reading them; near-zero ones with "
            "--unsafe-fixes", transform=f"{_SAFE}:prune_channels", plan=_prune_channels),
    FixKind("deduplicate-weights", ("BG103",), "safe",
            "stores byte-identical tensors once", transform=f"{_SAFE}:deduplicate",
            plan=_deduplicate),
    FixKind("remove-dead-weights", ("BG103",), "safe",
            "removes nodes that reach no output, initializers nothing reads, uncalled functions",
            transform=f"{_SAFE}:remove_dead"),
    FixKind("narrow-dtypes", ("BG105",), "either",
            "stores int64 weights whose values fit as int32 (float64 as float32 with "
            "--unsafe-fixes), with a Cast back", transform=f"{_QUANT}:narrow_dtypes",
            storage_only=True, plan=_narrow),
    FixKind("prune-weights", ("BG106",), "either",
            "stores mostly-zero weights as sparse initializers (exact zeros; near-zero ones with "
            "--unsafe-fixes); magnitude pruning of a PyTorch state dict",
            formats=frozenset({"onnx", "pytorch"}), transform=f"{_SAFE}:sparse_weights",
            storage_only=True, plan=_prune_weights),
    # Unsafe kinds, in the order they are tried.
    FixKind("quantize-static", ("BG101",), "unsafe",
            "int8 QDQ of Conv/ConvTranspose/MatMul/Gemm layers, calibrated on the samples",
            transform=f"{_QUANT}:quantize_static", file_to_file=True, plan=_quantize),
    FixKind("quantize-dynamic", ("BG101",), "unsafe",
            "onnxruntime.quantization.quantize_dynamic", transform=f"{_QUANT}:quantize_dynamic",
            file_to_file=True, plan=_quantize),
    FixKind("quantize-matmulnbits", ("BG101",), "unsafe",
            "4-bit weight-only MatMulNBits for large MatMuls",
            transform=f"{_QUANT}:quantize_nbits", file_to_file=True, plan=_quantize),
    FixKind("convert-fp16", ("BG101",), "unsafe",
            "float32 weights stored as float16, cast back to float32 where read",
            transform=f"{_QUANT}:convert_fp16", plan=_quantize),
    FixKind("remove-features", ("BG102",), "unsafe",
            "drops unused inputs and redundant input columns, folding what a column "
            "contributed into the first layer", transform=f"{_QUANT}:remove_features",
            plan=_features,
            interface="removes model inputs or input columns: callers must feed the new inputs"),
    FixKind("factorize-lowrank", ("BG107",), "unsafe",
            "replaces a low-rank MatMul/Gemm weight by the two factors of its truncated SVD at "
            "the rank BG107 found, as two MatMuls", transform=f"{_LOWRANK}:factorize_lowrank",
            plan=_factorize),
    # Hints that need a human: no transform.
    FixKind("re-export-eval", ("BG104",), "unsafe",
            "re-export from model.eval() with TrainingMode.EVAL", formats=frozenset()),
)
BY_NAME: dict[str, FixKind] = {kind.name: kind for kind in KINDS}
SAFE_ORDER: tuple[str, ...] = tuple(kind.name for kind in KINDS if kind.safety != "unsafe")
QUANTIZERS: tuple[str, ...] = tuple(kind.name for kind in KINDS if kind.plan is _quantize)
APPLICABLE: frozenset[str] = frozenset(kind.name for kind in KINDS if kind.formats)


def applicable(kind: str, model_format: str) -> bool:
    """Whether `bloatguard fix` has a transform for this hint kind on this format."""
    spec = BY_NAME.get(kind)
    return spec is not None and model_format in spec.formats
