"""ModelFacts: everything a reader learns about one model file, independent of its format.

Rules see these facts (and the base version's) and the format-neutral views built from them
(the WeightView, the op graph of `bloatguard.opgraph`, the weight values, the samples), never a
pickle, a protobuf or a reader, so a new format is a new reader and a rule works on every format
that provides what it reads. The two rules that read a graph's structure (BG102's column
tracing, BG104's fusion patterns) walk the neutral OpGraph (RuleContext.op_graph); only the
ONNX reader builds one today, so they say nothing about formats without it.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, TypedDict

from bloatguard.metrics import METRICS, STATIC_MEASURED

# Bytes per element. Sub-byte types are fractional; "string" has no fixed size.
DTYPE_SIZES: dict[str, float] = {
    "float64": 8, "float32": 4, "float16": 2, "bfloat16": 2,
    "float8e4m3fn": 1, "float8e4m3fnuz": 1, "float8e5m2": 1, "float8e5m2fnuz": 1, "float8e8m0": 1,
    "float4e2m1": 0.5, "float6e2m3": 0.75, "float6e3m2": 0.75,
    "int64": 8, "int32": 4, "int16": 2, "int8": 1, "int4": 0.5, "int2": 0.25,
    "uint64": 8, "uint32": 4, "uint16": 2, "uint8": 1, "uint4": 0.5, "uint2": 0.25,
    "bool": 1, "complex64": 8, "complex128": 16,
}
# llama.cpp's block-quantized GGML types (GGUF files), by their GGML names: (weights per block,
# bytes per block). A tensor's row length is a whole number of blocks, so its bytes are exact.
GGML_BLOCKS: dict[str, tuple[int, int]] = {
    "Q4_0": (32, 18), "Q4_1": (32, 20), "Q5_0": (32, 22), "Q5_1": (32, 24), "Q8_0": (32, 34),
    "Q8_1": (32, 40), "Q2_K": (256, 84), "Q3_K": (256, 110), "Q4_K": (256, 144),
    "Q5_K": (256, 176), "Q6_K": (256, 210), "Q8_K": (256, 292), "IQ2_XXS": (256, 66),
    "IQ2_XS": (256, 74), "IQ3_XXS": (256, 98), "IQ1_S": (256, 50), "IQ4_NL": (32, 18),
    "IQ3_S": (256, 110), "IQ2_S": (256, 82), "IQ4_XS": (256, 136), "IQ1_M": (256, 56),
    "TQ1_0": (256, 54), "TQ2_0": (256, 66), "MXFP4": (32, 17), "NVFP4": (64, 36),
    "Q1_0": (128, 18),
}
DTYPE_SIZES.update({name: size / block for name, (block, size) in GGML_BLOCKS.items()})


# Dtypes numpy has natively: raw little-endian bytes can be viewed as them, and samples and
# generated feeds can hold them.
NUMPY_DTYPES = frozenset({"float64", "float32", "float16", "int64", "int32", "int16", "int8",
                          "uint64", "uint32", "uint16", "uint8", "bool"})


def dtype_nbytes(dtype: str, numel: int) -> int | None:
    size = DTYPE_SIZES.get(dtype)
    return None if size is None else math.ceil(numel * size)


@dataclass
class TensorInfo:
    """One stored weight tensor.

    `where` says where the model keeps it: "initializer", "constant" (a Constant node),
    "sparse", "state_dict", ... prefixed by the subgraph or function it lives in, so that rules and
    humans can find it again.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    where: str = "initializer"
    external: bool = False
    # Elements actually stored, when the format stores fewer than the shape holds (a TFLite
    # sparse tensor keeps its nonzero values): `numel` is the dense count, `nbytes` what is stored.
    stored: int | None = None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int | None:
        return dtype_nbytes(self.dtype, self.numel if self.stored is None else self.stored)


@dataclass
class ValueInfo:
    """A model input or output. Dims are ints when known, strings when symbolic, None when absent."""

    name: str
    dtype: str
    shape: tuple[int | str | None, ...] | None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype,
                "shape": None if self.shape is None else list(self.shape)}


class LatencyInfo(TypedDict, total=False):
    """One side's timing (bloatguard.measure.latency), or why there is none (`error`)."""

    median_ms: float
    p90_ms: float
    min_ms: float
    iqr_ms: float
    spread: float | None
    runs: int
    rounds: int
    threads: int
    inter_op_threads: int
    graph_optimization: str
    machine: str
    onnxruntime: str | None
    runtime: str  # what timed it when not onnxruntime ("ai-edge-litert 2.3.0")
    error: str  # not measured, and why
    comparison_error: str  # measured, but not compared with the base, and why


class ActivationPeak(TypedDict):
    """Where the static activation memory peaks (measure.memory, bloatguard.lifetimes): the
    bytes, the node and its op, the graph it is in, the tensors alive there (largest first,
    [name, bytes]) and the computed constants held throughout."""

    bytes: int
    node: str
    op: str
    graph: str
    tensors: list[list[Any]]
    computed_constants: int
    computed_constant_count: int


class MacsFormula(TypedDict):
    """MACs as a formula of symbolic input dims (measure.symbolic): `exact` in rationals for
    machines, `text` for people (`216·height·width`)."""

    exact: str
    text: str


class LatencyComparison(TypedDict, total=False):
    """The paired base/head verdict of one model (bloatguard.measure.latency)."""

    ratio: float
    ci: list[float]
    p_value: float
    verdict: str
    rounds: int
    slower_rounds: int
    base_median_ms: float
    head_median_ms: float
    runs_per_block: list[int]
    min_effect: float
    alpha: float
    comparisons: int
    confirmed: bool | None  # None: no confirmation was needed (or possible)
    screening: dict[str, Any]


@dataclass
class BlobSource:
    """Where facts measured from a git blob came from: the metric cache's key for the blob and
    the settings that shaped the measurement, and how to write the blob out again (facts
    restored from the cache have no file or handle until a rule needs the model's bytes)."""

    key: str
    write: Callable[[], Any] = field(repr=False)


# --- where weights go: the neutral view the weight rules read ------------------------------------

# What a layer does with a weight, in no format's terms. Readers map their operators onto these
# (ONNX Conv with one input channel per group -> depthwise, TFLite FULLY_CONNECTED -> matmul, a
# GGUF token_embd table -> embedding, ...), so that BG101, BG103, BG105 and BG106 never branch on
# a file format.
LAYER_KINDS = ("conv", "depthwise", "matmul", "embedding", "recurrent")


@dataclass(frozen=True)
class WeightUse:
    """A layer that takes a stored weight as (one of) its weights."""

    kind: str  # one of LAYER_KINDS
    op: str  # the layer's operator in the format's own terms: Conv, FULLY_CONNECTED, ...
    layer: str | None = None  # where the layer is (a node label); None when recognised by name
    index: int = 1  # the layer input the weight arrives at
    via: tuple[str, ...] = ()  # layout and type ops on the way (Cast, Transpose, DEQUANTIZE, ...)
    channel_axis: int | None = None  # the weight's axis of output channels; None: none to prune
    groups: int = 1  # a conv's groups (1: dense; depthwise convs are kind "depthwise")


@dataclass
class DeadCode:
    """Operators whose results reach no output, and what only they use."""

    nodes: list[str]  # labels of the dead operators
    node_count: int  # with the operators of their subgraphs
    weights: list[str]  # labels of the weights only they read
    wasted_bytes: int


@dataclass
class WeightView:
    """Where a model's stored weights go: the format-neutral view BG101, BG103, BG105 and BG106
    read. A reader fills it from the model's graph (ONNX, TFLite), or, for formats without one,
    from the weights' names and shapes (PyTorch state dicts, safetensors, GGUF).

    `toolchain` names what rewrites models of this format ("onnxruntime", "torch", "litert",
    "llama.cpp"): advice such as how to quantize is keyed by it, never by the file format.
    """

    toolchain: str
    from_graph: bool  # uses come from a graph; False: recognised by names and shapes
    # (where, name) of a stored tensor (as in ModelFacts.tensors) -> the layers it feeds.
    uses: dict[tuple[str, str], list[WeightUse]] = field(default_factory=dict)
    # Already quantized (quantized operators, int8/int4 layer weights): the float layers left
    # are taken to be kept on purpose.
    quantized: bool = False
    stored_noun: str = "initializer"  # what the format calls a stored tensor, for messages
    # (where, name, bytes) of stored tensors nothing reads; None: the format cannot tell.
    unused: list[tuple[str, str, int]] | None = None
    dead: DeadCode | None = None  # operators that reach no output; None: none, or no graph
    float64_ops: list[str] = field(default_factory=list)  # labels of operators producing float64

    def __call__(self, where: str, name: str) -> list[WeightUse]:
        return self.uses.get((where, name), [])


@dataclass
class Layer:
    """One layer of a model, for its per-layer profile (`bloatguard show`) and the base/head
    layer diff: a node that reads stored weights or computes (formats with a graph), with the
    stored tensors it reads as (where, name) keys into ModelFacts.tensors. Each tensor belongs
    to one layer only (the first that reads it), so layers add up to the model's totals."""

    name: str
    op: str
    weights: list[tuple[str, str]] = field(default_factory=list)
    macs: int | None = None  # None: not counted (the model's MACs are unknown)
    # The bytes of the values it computes; only `bloatguard show` measures them (not cached).
    activation_bytes: int | None = field(default=None, compare=False)

    def to_list(self) -> list:
        return [self.name, self.op, [list(key) for key in self.weights], self.macs]

    @classmethod
    def from_list(cls, entry: list) -> Layer:
        name, op, weights, macs = entry
        return cls(str(name), str(op), [(str(where), str(tensor)) for where, tensor in weights],
                   None if macs is None else int(macs))


class RawTensor(NamedTuple):
    """A tensor whose value lies in the model file as a little-endian array: `offset` bytes from
    the start, validated by the reader against the file's size (bloatguard.values reads it)."""

    name: str
    where: str
    dtype: str
    shape: tuple[int, ...]
    offset: int


@dataclass
class ModelFacts:
    """What one model file is made of.

    Metrics that could not be measured are None, with the reason in `notes` so the report can say
    what is missing and why instead of printing a misleading zero.
    """

    path: str
    format: str
    file_size: int
    tensors: list[TensorInfo] = field(default_factory=list)
    ops: Counter = field(default_factory=Counter)
    inputs: list[ValueInfo] = field(default_factory=list)
    outputs: list[ValueInfo] = field(default_factory=list)
    opsets: dict[str, int] = field(default_factory=dict)
    external_files: list[str] = field(default_factory=list)
    # Measured metrics by their key in bloatguard.metrics (MACs, latency, ...): absent or None
    # when not measured, with the reason in `notes`.
    measured: dict[str, Any] = field(default_factory=dict)
    macs_by_op: dict[str, int] = field(default_factory=dict)
    # The model's layers, from its graph (formats that have one); empty otherwise, and the
    # per-layer views group tensors by module name instead (bloatguard.layers).
    layers: list[Layer] = field(default_factory=list)
    # MACs by node (measure.compute), None when the model's MACs are unknown: what the reader's
    # handle builds `layers` from on first use (layer_table). Never serialized: cached facts
    # carry their layers.
    macs_by_node: dict[str, int] | None = field(default=None, repr=False, compare=False)
    latency: LatencyInfo | None = None
    latency_comparison: LatencyComparison | None = None
    activation_peak: ActivationPeak | None = None  # where measured["activation_memory"] peaks
    macs_formula: MacsFormula | None = None  # MACs unknown only for symbolic dims' values
    notes: list[str] = field(default_factory=list)
    # Globals a pickle refers to that are not on the allowlist (BG900 reports them).
    unsafe_globals: list[str] = field(default_factory=list)
    # Jinja chat templates a runtime renders (GGUF `tokenizer.chat_template`, by metadata key);
    # BG901 checks them.
    chat_templates: dict[str, str] = field(default_factory=dict)
    # Set when the weights were deliberately not read (an unsafe pickle): counts are unknown.
    weights_unknown: bool = False
    # Set when the file could not be read at all; BG000 reports it.
    unreadable: str | None = None
    remedy: str = ""
    # Where the bytes were read from (a temporary copy for git blobs); not serialized.
    file: Any = field(default=None, repr=False, compare=False)
    # The format-specific handle for rules that need more than counts (e.g. the ONNX graph), and
    # the source of the weight view: `handle.weight_view(facts)` builds it. Never serialized;
    # may be None for a cached or unreadable model.
    handle: Any = field(default=None, repr=False, compare=False)
    # Set for facts measured from a git blob; never serialized.
    blob: BlobSource | None = field(default=None, repr=False, compare=False)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def macs(self) -> int | None:
        return self.measured.get("macs")

    @macs.setter
    def macs(self, value: int | None) -> None:
        self.measured["macs"] = value

    @property
    def params(self) -> int | None:
        if self.unreadable or self.weights_unknown:
            return None
        return sum(t.numel for t in self.tensors)

    @property
    def params_by_dtype(self) -> dict[str, int]:
        counts: Counter = Counter()
        for tensor in self.tensors:
            counts[tensor.dtype] += tensor.numel
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))

    @property
    def weight_bytes(self) -> int | None:
        if self.unreadable or self.weights_unknown:
            return None
        sizes = [t.nbytes for t in self.tensors]
        known = [s for s in sizes if s is not None]
        return sum(known) if len(known) == len(sizes) else None

    def metrics(self) -> dict[str, Any]:
        """The measured numbers, in the JSON report's spelling (bloatguard.metrics)."""
        values: dict[str, Any] = {}
        for metric in METRICS:
            values[metric.key] = metric.value(self)
            if metric.key == "params":
                values["params_by_dtype"] = self.params_by_dtype if not self.unreadable else {}
        if not self.unreadable:
            # What only some formats have (bits per weight, stored params of sparse tensors, an
            # LLM's architecture): informational, after the declared metrics.
            values.update(self.extra.get("format_metrics", {}))
        return values

    def weight_view(self) -> WeightView | None:
        """Where the stored weights go (WeightView), built by the reader's handle on first use
        (the handle keeps it); None for an unreadable model, or facts restored without their
        model."""
        if self.unreadable or self.handle is None or not hasattr(self.handle, "weight_view"):
            return None
        return self.handle.weight_view(self)

    def layer_table(self) -> list[Layer]:
        """The model's layers (Layer): as the reader or the cache gave them, else built by the
        reader's handle on first use (ONNX: from the graph and the MACs per node), so that a
        plain `check` sees the same layers as one whose facts the cache keeps; [] for formats
        whose layers are their modules (bloatguard.layers groups those by name)."""
        if not self.layers and not self.unreadable and hasattr(self.handle, "layers"):
            self.layers = self.handle.layers(self, self.macs_by_node)
        return self.layers

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


# What facts_to_dict writes; part of the metric cache's key, so that entries written before a
# field was added are never read as if the field were empty.
FACTS_SCHEMA = 5


def facts_to_dict(facts: ModelFacts) -> dict[str, Any]:
    """Everything but the format handle, for the metric cache."""
    return {
        "format": facts.format, "file_size": facts.file_size,
        "tensors": [[t.name, t.dtype, list(t.shape), t.where, t.external]
                    + ([t.stored] if t.stored is not None else []) for t in facts.tensors],
        "ops": dict(facts.ops),
        "inputs": [v.to_json() for v in facts.inputs],
        "outputs": [v.to_json() for v in facts.outputs],
        "opsets": facts.opsets, "external_files": facts.external_files,
        # What each run measures again (latency) is not kept.
        "measured": {key: facts.measured.get(key) for key in STATIC_MEASURED},
        "macs_by_op": facts.macs_by_op,
        "activation_peak": facts.activation_peak, "macs_formula": facts.macs_formula,
        "layers": [layer.to_list() for layer in facts.layers],
        "notes": facts.notes, "unsafe_globals": facts.unsafe_globals,
        "chat_templates": facts.chat_templates,
        "unreadable": facts.unreadable, "remedy": facts.remedy, "extra": facts.extra,
        "weights_unknown": facts.weights_unknown,
    }


def facts_from_dict(path: str, data: dict[str, Any]) -> ModelFacts:
    """The inverse of facts_to_dict; raises KeyError/TypeError/ValueError on a malformed entry."""

    def value_info(entry: dict[str, Any]) -> ValueInfo:
        shape = entry["shape"]
        return ValueInfo(str(entry["name"]), str(entry["dtype"]),
                         None if shape is None else tuple(shape))

    return ModelFacts(
        path=path, format=str(data["format"]), file_size=int(data["file_size"]),
        tensors=[_tensor_from_list(entry) for entry in data["tensors"]],
        ops=Counter({str(k): int(v) for k, v in data["ops"].items()}),
        inputs=[value_info(v) for v in data["inputs"]],
        outputs=[value_info(v) for v in data["outputs"]],
        opsets={str(k): int(v) for k, v in data["opsets"].items()},
        external_files=list(data["external_files"]),
        measured={str(key): value for key, value in dict(data["measured"]).items()
                  if key in STATIC_MEASURED and (value is None or isinstance(value, (int, float)))},
        macs_by_op={str(k): int(v) for k, v in dict(data["macs_by_op"]).items()},
        activation_peak=_typed(data["activation_peak"], ActivationPeak),
        macs_formula=_typed(data["macs_formula"], MacsFormula),
        layers=[Layer.from_list(entry) for entry in data["layers"]],
        notes=list(data["notes"]), unsafe_globals=list(data["unsafe_globals"]),
        chat_templates={str(k): str(v) for k, v in dict(data.get("chat_templates", {})).items()},
        unreadable=data["unreadable"], remedy=str(data["remedy"]), extra=dict(data["extra"]),
        weights_unknown=bool(data.get("weights_unknown", False)),
    )


def _typed(value: Any, kind: Any) -> Any:
    """A cached TypedDict back, its keys checked (a foreign entry raises, and is re-measured)."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != set(kind.__annotations__):
        raise ValueError(f"not a {kind.__name__}")
    return value


def _tensor_from_list(entry: list) -> TensorInfo:
    name, dtype, shape, where, external, *stored = entry
    return TensorInfo(str(name), str(dtype), tuple(int(x) for x in shape), str(where), bool(external),
                      int(stored[0]) if stored else None)
