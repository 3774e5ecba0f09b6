from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator

from bloatguard.facts import DTYPE_SIZES, ModelFacts, TensorInfo, WeightView
from bloatguard.hygiene import (
    capped,
    listing,
    parse_fraction,
    parse_tolerance,
    percent,
    tensor_label,
)
from bloatguard.rule import Finding, Fix, Option, Rule, RuleContext
from bloatguard.units import human_bytes, parse_count

if TYPE_CHECKING:
    import numpy as np

FLOATS = {"float64", "float32", "float16"}
# A layer with fewer (near-)zero weights than this share shows no sparsity to prune.
DENSE_SHARE = 0.05
CHUNK_ELEMENTS = 1 << 20  # 4 MB of float32 per temporary, whatever the tensor's size


class PrunableWeights(Rule):
    """## What it does
    Reads the layer weights (those feeding MatMul, Gemm, Conv, ConvTranspose, Gather, LSTM/GRU/
    RNN; in state dicts, 2-D+ tensors named `*weight*`) one tensor at a time and measures:

    - the share of exact zeros and near-zeros per layer and overall; a weight counts as near-zero
      when `|w| <= tolerance x rms(w)`, the root mean square of its tensor (scale-free, and not
      thrown off by the few huge weights of re-parameterised layers as the maximum would be);
    - whole output channels that are (near-)zero: rows along axis 0 of a Conv weight, output
      columns of a MatMul B `[K, N]` (axis 1), Gemm's B by `transB`, ConvTranspose's axis 1 and
      axis 0 of state-dict weights (torch's `[out, in, ...]` layout).

    It reports layers whose (near-)zero share reaches `min-zero-share`, every whole zero channel,
    and what pruning would save. Works on ONNX (initializers, `Constant` nodes, subgraphs,
    external data), safetensors, TFLite (CONV_2D's axis 0, DEPTHWISE_CONV_2D's axis 3,
    FULLY_CONNECTED's axis 0) and GGUF float matrices (axis 0), from the reader's weight view;
    PyTorch checkpoints are never unpickled, so their values are not read.

    ## Why is this bad?
    A zero output channel still costs its weights, its multiply-accumulates and the next
    layer's input slice on every inference: structured pruning removes all of that. A tensor
    that is mostly zeros (magnitude pruning, L1 regularisation, dead units) is stored densely
    at full size; a sparse or compressed layout keeps only the nonzero values.

    ## Example
    silero-vad computes its STFT with a Conv whose kernels are cosines and sines; the sines of
    the DC and Nyquist frequencies are zero everywhere:
    ```text
    BG106 warning: [prunable-weights] 2 whole output channels are exactly zero in 1 layer;
    structured pruning would remove them and save 2.05 KB (plus the next layers' matching
    inputs): stft.forward_basis_buffer (2 of 258 channels, Conv)
    ```

    ## Use instead
    Remove the zero channels (`torch.nn.utils.prune.ln_structured` followed by physically
    slicing the layer and the next layer's inputs), or store the pruned weights sparsely.

    ## Fix safety
    `prune-weights` is safe when the exact zeros alone reach `min-zero-share` in every reported
    layer (a sparse layout of those holds the same values) and unsafe when it relies on rounding
    near-zeros to zero. `prune-channels` is safe when some layer's zero channels are exactly zero:
    `bloatguard fix` removes those that also have a zero bias, which changes no output. Near-zero
    channels, and zero channels with a bias (folded into the next layer), go only with
    `--unsafe-fixes`, and the verifier confirms the outputs; `exact` in the details says
    whether every channel is exactly zero.

    ## Options
    """

    code = "BG106"
    name = "prunable-weights"
    summary = "Layers with a large share of (near-)zero weights or whole zero channels"
    options = {
        "tolerance": Option(parse_tolerance, 1e-3, "near-zero threshold relative to the tensor's "
                            "root mean square: a weight a thousand times smaller than a typical one "
                            "contributes nothing measurable. `0` counts exact zeros only.", "1e-3"),
        "min-zero-share": Option(parse_fraction, 0.5, "report a layer when at least this share of "
                                 "its weights is (near-)zero. Below about half, sparse storage saves "
                                 "little for float32.", '"50%"'),
        "min-elements": Option(parse_count, 1024, "smaller tensors are skipped (biases, tiny "
                               "projections)."),
    }
    reads = frozenset({"model"})

    def check(self, ctx: RuleContext) -> Iterator[Finding]:
        facts = ctx.facts
        view = ctx.weight_uses()
        if facts.unreadable or view is None:
            return
        values = ctx.values()
        if not values.available:
            return
        tolerance = self.option(ctx, "tolerance")
        min_share = self.option(ctx, "min-zero-share")
        min_elements = self.option(ctx, "min-elements")
        layers = _layer_weights(facts, view)
        sparse: list[Layer] = []
        channels: list[Layer] = []
        dense: list[Layer] = []
        checked = zeros = 0
        for tensor in values:
            layer = layers.get((tensor.where, tensor.name))
            if layer is None or tensor.dtype not in FLOATS or tensor.array.size < min_elements:
                continue
            layer.stats = zero_stats(tensor.array, tolerance, layer.axis)
            checked += layer.stats.numel
            zeros += layer.stats.near
            if layer.stats.near >= min_share * layer.stats.numel:
                layer.exact_enough = layer.stats.exact >= min_share * layer.stats.numel
                sparse.append(layer)
            if layer.stats.zero_channels:
                channels.append(layer)
            elif layer.stats.near < DENSE_SHARE * layer.stats.numel:
                dense.append(layer)
        overall = {"checked_weights": checked, "zero_weights": zeros,
                   "zero_share": round(zeros / checked, 4) if checked else None,
                   "tolerance": tolerance}
        found = ([self._channels(ctx, channels, overall)] if channels else []) + (
            [self._sparse(ctx, sparse, overall)] if sparse else [])
        if found and dense:
            _regularization_hint(found[0], dense, checked)
        yield from found

    def _channels(self, ctx: RuleContext, layers: list[Layer], overall: dict) -> Finding:
        layers.sort(key=lambda layer: -layer.channel_bytes())
        count = sum(len(layer.stats.zero_channels) for layer in layers)
        saved = sum(layer.channel_bytes() for layer in layers)
        exact = all(layer.stats.exact_channels for layer in layers)
        entries = [{"name": layer.info.name, "where": layer.info.where, "op": layer.op, "axis": layer.axis,
                    "channels": layer.stats.zero_channels[:100], "zero_channels": len(layer.stats.zero_channels),
                    "total_channels": layer.stats.channels, "exact": layer.stats.exact_channels,
                    "bytes": layer.channel_bytes()} for layer in layers]
        message = (
            f"{count} whole output channel{'s are' if count > 1 else ' is'} "
            f"{'exactly ' if exact else '(near-)'}zero in {len(layers)} "
            f"layer{'s' if len(layers) > 1 else ''}; structured pruning would remove "
            f"{'them' if count > 1 else 'it'} and save {human_bytes(saved)} (plus the next "
            "layers' matching inputs): " + listing(
                [f"{layer.label} ({len(layer.stats.zero_channels)} of {layer.stats.channels} channels, {layer.op})"
                 for layer in layers]))
        return self.finding(ctx, message,
                            details={"zero_channels": count, "bytes_saved": saved,
                                     "layers": capped(entries), "layers_count": len(layers), **overall},
                            fix=Fix("prune-channels",
                                    safe=any(layer.stats.exact_channels for layer in layers),
                                    details={"exact": exact, "bytes_saved": saved,
                                             "tensors": capped(entries)}))

    def _sparse(self, ctx: RuleContext, layers: list[Layer], overall: dict) -> Finding:
        layers.sort(key=lambda layer: -layer.sparse_saving())
        saved = sum(layer.sparse_saving() for layer in layers)
        # Safe when the exact zeros alone make every layer sparse: storing those changes nothing.
        exact = all(layer.exact_enough for layer in layers)
        entries = [{"name": layer.info.name, "where": layer.info.where, "op": layer.op,
                    "bytes": layer.info.nbytes,
                    "zero_share": round(layer.stats.near / layer.stats.numel, 4),
                    "exact_zero_share": round(layer.stats.exact / layer.stats.numel, 4),
                    "bytes_saved": layer.sparse_saving()} for layer in layers]
        message = (
            f"{len(layers)} layer weight{'s are' if len(layers) > 1 else ' is'} mostly "
            f"{'' if exact else '(near-)'}zero: " + listing(
                [f"{layer.label} ({percent(layer.stats.near, layer.stats.numel)} zero, "
                 f"{human_bytes(layer.info.nbytes)}, {layer.op})" for layer in layers])
            + f"; {percent(overall['zero_weights'], overall['checked_weights'])} of all checked "
            f"layer weights are (near-)zero. Stored sparsely (a bitmask plus the nonzero values) "
            f"they would save about {human_bytes(saved)}")
        return self.finding(ctx, message,
                            details={"bytes_saved": saved, "layers": capped(entries),
                                     "layers_count": len(layers), **overall},
                            fix=Fix("prune-weights", safe=exact,
                                    details={"exact": exact, "tolerance": overall["tolerance"],
                                             "bytes_saved": saved,
                                             "tensors": [layer.info.name for layer in layers][:50]}))


def _regularization_hint(finding: Finding, dense: list[Layer], checked: int) -> None:
    """Say which layers pruning cannot help: those with almost no (near-)zero weights. Zeroing
    weights that carry signal changes the outputs (BG107 measures which of the large ones are
    also full rank); sparsity there has to come from training."""
    sizes = {id(layer): layer.stats.numel if layer.stats else 0 for layer in dense}
    weights = sum(sizes.values())
    several = len(dense) > 1
    finding.message += (
        f". The other {len(dense)} checked layer weight{'s' if several else ''} "
        f"({percent(weights, checked)} of the checked weights) ha{'ve' if several else 's'} "
        f"under {percent(DENSE_SHARE, 1)} (near-)zero weights: pruning "
        f"{'them' if several else 'it'} after training would remove real signal, so sparsity "
        "there has to be trained in (L1 regularization, gradual magnitude pruning while "
        "fine-tuning)")
    finding.details["dense_layers"] = {
        "count": len(dense), "weights": weights,
        "share": round(weights / checked, 4) if checked else None,
        "names": [layer.info.name for layer in sorted(dense, key=lambda item: -sizes[id(item)])][:50]}


@dataclass
class ZeroStats:
    numel: int
    exact: int  # elements == 0
    near: int  # elements with |w| <= tolerance * rms(w) (exact zeros included)
    channels: int = 0  # along the channel axis; 0 when the axis is unknown
    zero_channels: list[int] = field(default_factory=list)
    exact_channels: bool = True  # every zero channel is exactly zero


@dataclass
class Layer:
    info: TensorInfo
    op: str
    axis: int | None  # the output-channel axis, None when pruning channels is not defined
    # Set by check() when the tensor is read, before anything looks at it: only layers whose
    # tensor was read are reported.
    stats: ZeroStats = field(init=False)
    exact_enough: bool = False  # its exact zeros alone reach min-zero-share

    @property
    def label(self) -> str:
        return tensor_label(self.info.name, self.info.where)

    def channel_bytes(self) -> int:
        nbytes = self.info.nbytes
        assert nbytes is not None  # a float weight (FLOATS): its size is known
        per_channel = nbytes // max(self.stats.channels, 1)
        return per_channel * len(self.stats.zero_channels)

    def sparse_saving(self) -> int:
        """Bytes saved by one bit per element plus the nonzero values (what a bitmask sparse
        format, or roughly a compressor, stores)."""
        itemsize = DTYPE_SIZES[self.info.dtype]
        return max(0, int(self.stats.near * itemsize - self.stats.numel / 8))


def zero_stats(array: np.ndarray, tolerance: float, axis: int | None) -> ZeroStats:
    """Zero counts of one tensor in two streaming passes over chunks of axis 0, so an mmap-backed
    tensor is never copied whole: the first finds the root mean square (and each channel's
    largest |w|), the second counts the near-zeros against it."""
    import numpy as np

    stats = ZeroStats(numel=int(array.size), exact=0, near=0)
    squares = 0.0
    channel_peaks: list[np.ndarray] = []
    for chunk in _chunks(array):
        magnitude = np.abs(chunk)
        squares += float(np.sum(np.square(magnitude, dtype=np.float64)))
        stats.exact += int(magnitude.size - np.count_nonzero(magnitude))
        if axis is not None:
            others = tuple(i for i in range(magnitude.ndim) if i != axis)
            channel_peaks.append(magnitude.max(axis=others) if others else magnitude)
    threshold = tolerance * (squares / max(stats.numel, 1)) ** 0.5
    stats.near = stats.exact if threshold == 0 else sum(
        int(np.count_nonzero(np.abs(chunk) <= threshold)) for chunk in _chunks(array))
    if axis is not None and channel_peaks:
        # Chunks split axis 0: along it the pieces line up; along any other axis, combine.
        peaks = (np.concatenate(channel_peaks) if axis == 0
                 else np.maximum.reduce(channel_peaks))
        stats.channels = int(peaks.size)
        zero = np.flatnonzero(peaks <= threshold)
        stats.zero_channels = [int(i) for i in zero]
        stats.exact_channels = bool(np.all(peaks[zero] == 0))
    return stats


def _chunks(array: np.ndarray) -> Iterator[np.ndarray]:
    if array.ndim == 0 or array.size == 0:
        if array.size:
            yield array.reshape(1)
        return
    per_row = array.size // array.shape[0]
    step = max(1, CHUNK_ELEMENTS // max(per_row, 1))
    for start in range(0, array.shape[0], step):
        yield array[start:start + step]


def _layer_weights(facts: ModelFacts, view: WeightView) -> dict[tuple[str, str], Layer]:
    """(where, name) -> Layer for every tensor that feeds a layer as its weight."""
    found = {}
    for info in facts.tensors:
        layers = view(info.where, info.name)
        if layers:
            axes = {use.channel_axis for use in layers}
            # A weight shared by layers that disagree on its channel axis has none.
            axis = axes.pop() if len(axes) == 1 else None
            found[(info.where, info.name)] = Layer(info, layers[0].op, axis)
    return found
