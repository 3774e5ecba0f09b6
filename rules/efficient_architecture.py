from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterator

from bloatguard.facts import ModelFacts, TensorInfo, WeightUse, WeightView
from bloatguard.hygiene import capped, listing, parse_fraction, percent, tensor_label
from bloatguard.rule import Finding, Fix, Option, Rule, RuleContext
from bloatguard.units import human_count, parse_count

FLOATS = {"float64", "float32", "float16"}
# Conv weights keep their output channels on the weight view's channel axis and their input
# channels next to it ([out, in, *kernel]: ONNX Conv, torch); TFLite's CONV_2D stores
# [out, *kernel, in]. Convs whose weight layout is not known here are not judged.
CONV_INPUT_AXIS = {"Conv": 1, "CONV_2D": -1}
# The ALBERT embedding width: a vocabulary table V x H factorized into V x E and E x H (E = 128
# for H >= 512, a quarter of the width below).
ALBERT_E = 128
# A weight counts as dense for the regularization hint when fewer than this share of its values
# are near zero, and as not prunable when halving it by magnitude leaves a cosine below this.
DENSE_SHARE = 0.5
PRUNE_COSINE = 0.99


def parse_energy(value: Any) -> float:
    share = parse_fraction(value)
    if share <= 0:
        raise ValueError("the energy share must be above 0%")
    return share


@dataclass
class Weight:
    """A layer weight BG107 looks at."""

    tensor: TensorInfo
    use: WeightUse
    macs: int | None  # the MACs of the layer that owns it (facts.layers), when counted
    groups: int = 1
    energies: Any = None  # squared singular values, when measured
    rank: int | None = None
    profile: tuple[float, float] | None = None  # (near-zero share, cosine after 50 % pruning)
    entries: list[dict[str, Any]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return tensor_label(self.tensor.name, self.tensor.where)

    @property
    def numel(self) -> int:
        return self.tensor.numel


class EfficientArchitecture(Rule):
    """## What it does
    Looks at the layers that dominate the model (each holding at least `min-share` of its
    parameters or of its MACs) and computes, from their real shapes and weights, what a leaner
    form of each would cost:

    - a dense k x k Conv (k >= 3, one group) with at least `min-channels` input and output
      channels: a depthwise-separable replacement (a k x k depthwise conv, then a 1 x 1 conv)
      has `Cin*k^2 + Cin*Cout` weights instead of `Cout*Cin*k^2`, and cuts the layer's MACs by
      the factor `1/Cout + 1/k^2`;
    - a MatMul, Gemm or Conv weight whose effective rank is low: its singular values (from the
      weight's values, for weights of at most `max-svd-elements`) say how many of them keep
      `energy` of the spectral energy; two factors of that rank r hold `r*(m+n)` weights
      instead of `m*n`, reported when that at least halves the layer;
    - an embedding (vocabulary) table holding at least `embedding-share` of the parameters: its
      rank where it is low, else the size of an ALBERT-style factorized table (E = 128, or a
      quarter of the width below 512).

    Each layer's MACs before and after come from the model's per-layer MAC counts (the layers
    `show` lists), where the input shapes make them known; the ratio follows from the shapes
    either way. Works on every format whose reader fills
    the weight view (ONNX, TFLite, GGUF, safetensors; PyTorch checkpoints only by shape, since
    their values are never unpickled).

    When it reports layers, the other dominant weights that are dense (no sparsity) and not of
    low rank are named too: neither pruning nor factorization shrinks them after training
    (halving one by magnitude leaves a weight cosine of about 0.97), so they need
    regularization while training (L1 or group lasso for sparsity, a low-rank penalty) or a
    distilled student; over a `max-params`, `max-file-size` or `max-macs` budget, the message
    points to the distillation target `bloatguard fix --unsafe-fixes` computes.

    ## Why is this bad?
    A dense 3 x 3 conv with 256 channels spends 8 to 9 times the MACs of its depthwise-separable
    counterpart (MobileNet's building block), and a weight matrix of rank 8 stored as 1024 x 1024
    spends 64 times the weights its information needs. These layers set the model's size and
    speed, and nothing a linter can do after training (quantization, pruning) recovers that.

    ## Example
    magika's published model (per-node MACs at its input shape), and a MatMul of rank 8:
    ```text
    BG107 warning: [efficient-architecture] 1 layer that dominates the model has a leaner form:
    jax2tf_get_logits_/pjit_get_logits_/MagikaV2/Conv_0/Conv2D (Conv 5x1, 256->512 channels,
    91% of the MACs): depthwise-separable cuts its MACs 5.0x (333M -> 67.2M) and its weights
    655K -> 132K. jax2tf_get_logits_/Const_24:0 (rank 197 of 214, 0.09% near zero),
    jax2tf_get_logits_/Const:0 (rank 61 of 64, 0.07% near zero) are dense and not low-rank
    (126K weights): pruning half of each by magnitude would keep a weight cosine of only 0.967,
    so neither pruning nor factorization shrinks them after training; regularize while
    training (L1 or group lasso for sparsity, a low-rank penalty) or distil a smaller student
    BG107 warning: [efficient-architecture] 1 layer that dominates the model has a leaner form:
    proj (MatMul 256x256, 100% of the params): rank 8 of 256 keeps 99% of the energy, two
    factors hold 4.1K instead of 65.5K weights (16.0x fewer, MACs 65.5K -> 4.1K)
    ```

    ## Use instead
    Depthwise-separable convs (MobileNet, EfficientNet blocks) where the channel count is
    large; factorized layers (`torch.nn.Linear(n, r)` then `Linear(r, m)`), fine-tuned after
    the truncated SVD; an ALBERT-style factorized embedding or a trimmed vocabulary.

    ## Fix safety
    Unsafe: `factorize-lowrank` (with `--unsafe-fixes`) replaces each listed MatMul/Gemm weight
    by the two factors of its truncated SVD at the rank found, as two MatMuls; the verifier
    keeps it only if it is smaller, no slower and faithful. Architecture changes (depthwise-
    separable convs, factorized embeddings) need retraining: no fix hint.

    ## Options
    """

    code = "BG107"
    name = "efficient-architecture"
    summary = "Dense convs, low-rank weights and dominant embeddings, with computed savings"
    options = {
        "min-share": Option(parse_fraction, 0.05, "look at a layer when its weight holds at least "
                            "this share of the model's parameters, or the layer this share of its "
                            "MACs.", '"5%"'),
        "energy": Option(parse_energy, 0.99, "the share of a weight's spectral energy (sum of "
                         "squared singular values) its effective rank keeps.", '"99%"'),
        "max-svd-elements": Option(parse_count, 4_000_000, "weights with more elements are not "
                                   "decomposed (a note says so): the spectrum of a 1024 x 4096 "
                                   "matrix takes about 0.4 s on 2 cores, and grows with "
                                   "m*n*min(m, n).", '"4M"'),
        "min-channels": Option(parse_count, 64, "a dense conv is reported when both its input and "
                               "output channels reach this."),
        "embedding-share": Option(parse_fraction, 0.30, "an embedding table is reported when it "
                                  "holds at least this share of the model's parameters.", '"30%"'),
    }
    reads = frozenset({"model"})

    def check(self, ctx: RuleContext) -> Iterator[Finding]:
        facts = ctx.facts
        view = ctx.weight_uses()
        total = facts.params
        if facts.unreadable or view is None or not total:
            return
        min_share = self.option(ctx, "min-share")
        weights = _layer_weights(facts, view)
        dominant = [w for w in weights if _dominates(w, facts, min_share)
                    or (w.use.kind == "embedding"
                        and w.numel >= self.option(ctx, "embedding-share") * total)]
        notes: list[str] = []
        self._spectra(ctx, dominant, notes)
        for weight in dominant:
            if weight.use.kind == "embedding":
                if weight.numel >= self.option(ctx, "embedding-share") * total:
                    weight.entries.append(_embedding(weight, total, self.option(ctx, "energy")))
                continue
            lowrank = _lowrank(weight, self.option(ctx, "energy"))
            if lowrank is not None:
                weight.entries.append(lowrank)
                continue
            separable = _separable(weight, self.option(ctx, "min-channels"))
            if separable is not None:
                weight.entries.append(separable)
        entries = [entry for w in dominant for entry in w.entries]
        dense = [w for w in dominant if _incompressible(w)]
        over = _over_budget(ctx)
        if not entries:
            return  # a dense model alone is no finding: the hint goes with what it reports
        yield self._finding(ctx, view, entries, dense, over, notes)

    def _spectra(self, ctx: RuleContext, weights: list[Weight], notes: list[str]) -> None:
        """Squared singular values (and the magnitude profile) of the weights that need them,
        reading each tensor's values once."""
        cap = self.option(ctx, "max-svd-elements")
        wanted: dict[tuple[str, str], Weight] = {}
        for weight in weights:
            if not _decomposable(weight):
                continue
            if weight.numel > cap:
                notes.append(f"{weight.label} ({_shape(weight.tensor)}, {human_count(weight.numel)} "
                             f"elements) was not decomposed: above max-svd-elements "
                             f"({human_count(cap)})")
                continue
            wanted[(weight.tensor.where, weight.tensor.name)] = weight
        if not wanted:
            return
        values = ctx.values()
        if not values.available:
            notes.append("weight values could not be read: effective ranks were not measured")
            return
        from bloatguard.measure import lowrank

        energy = self.option(ctx, "energy")
        for tensor in values:
            key = (tensor.where, tensor.name)
            if key not in wanted:
                continue
            weight = wanted.pop(key)
            spectrum = lowrank.energies(lowrank.as_matrix(tensor.array, _out_axis(weight)))
            if spectrum is None:
                notes.append(f"{weight.label} holds NaN or infinite values: not decomposed")
            else:
                weight.energies = spectrum
                weight.rank = lowrank.energy_rank(spectrum, energy)
                weight.profile = lowrank.magnitude_profile(tensor.array)
            if not wanted:
                break

    def _finding(self, ctx: RuleContext, view: WeightView, entries: list[dict[str, Any]],
                 dense: list[Weight], over: list[str], notes: list[str]) -> Finding:
        facts = ctx.facts
        parts = [_describe(entry, facts) for entry in entries]
        several = len(entries) > 1
        message = (f"{len(entries)} layer{'s' if several else ''} that dominate"
                   f"{'' if several else 's'} the model ha{'ve' if several else 's'} a leaner "
                   "form: " + "; ".join(parts[:5])
                   + (f"; and {len(parts) - 5} more" if len(parts) > 5 else ""))
        if dense:
            message += ". " + _regularization(dense, over)
        params_saved = sum(e["params_before"] - e["params_after"] for e in entries)
        details: dict[str, Any] = {
            "layers": capped(entries), "layers_count": len(entries),
            "params_saved": params_saved,
            "incompressible": capped([_incompressible_entry(w) for w in dense]),
            "energy": self.option(ctx, "energy"), "notes": notes,
        }
        factorizable = [e for e in entries if e["suggestion"] == "low-rank"
                        and e["op"] in ("MatMul", "Gemm")]
        fix = None
        if factorizable and view.toolchain == "onnxruntime":
            fix = Fix("factorize-lowrank", safe=False, details={
                "weights": [{"name": e["weight"], "where": e["where"], "rank": e["rank"],
                             "op": e["op"]} for e in factorizable][:50],
                "energy": details["energy"],
                "params_saved": sum(e["params_before"] - e["params_after"] for e in factorizable),
            })
        return self.finding(ctx, message, details=details, fix=fix)


def _layer_weights(facts: ModelFacts, view: WeightView) -> list[Weight]:
    """Float weights of conv, matmul and embedding layers (not depthwise, not recurrent), with
    the MACs of the layer that owns each where the facts hold the model's layers."""
    macs_of = {key: layer.macs for layer in facts.layer_table() for key in layer.weights}
    found = []
    for tensor in facts.tensors:
        if tensor.dtype not in FLOATS:
            continue
        uses = [u for u in view(tensor.where, tensor.name)
                if u.kind in ("conv", "matmul", "embedding")]
        if not uses:
            continue
        # A tied table (embedding and output head) is judged as the embedding.
        use = next((u for u in uses if u.kind == "embedding"), uses[0])
        macs = macs_of.get((tensor.where, tensor.name))
        found.append(Weight(tensor, use, macs, use.groups))
    found.sort(key=lambda w: -w.numel)
    return found


def _dominates(weight: Weight, facts: ModelFacts, share: float) -> bool:
    if weight.use.kind == "embedding":
        return False  # judged by embedding-share
    if weight.numel >= share * (facts.params or 0):
        return True
    return bool(weight.macs and facts.macs and weight.macs >= share * facts.macs)


def _decomposable(weight: Weight) -> bool:
    shape = weight.tensor.shape
    if weight.use.kind == "conv":
        return weight.groups == 1 and len(shape) >= 3 and weight.use.channel_axis is not None
    return len(shape) == 2


def _out_axis(weight: Weight) -> int:
    return weight.use.channel_axis if weight.use.channel_axis is not None else 0


def _layer_name(weight: Weight) -> str:
    """The layer's name without its op ("conv1" for the node label "Conv conv1", scope prefix
    kept); the weight's name for formats that recognise layers by their weights' names."""
    label = weight.use.layer
    if not label:
        return weight.tensor.name
    return re.sub(rf"(^|/){re.escape(weight.use.op)} ", r"\1", label, count=1)


def _shape(tensor: TensorInfo) -> str:
    return "x".join(str(d) for d in tensor.shape)


def _ratio_macs(macs: int | None, ratio: float) -> int | None:
    return None if macs is None else round(macs * ratio)


def _base_entry(weight: Weight, suggestion: str, before: int, after: int,
                ratio: float) -> dict[str, Any]:
    return {"name": _layer_name(weight), "weight": weight.tensor.name,
            "where": weight.tensor.where, "op": weight.use.op, "shape": list(weight.tensor.shape),
            "suggestion": suggestion, "params_before": before, "params_after": after,
            "macs_before": weight.macs, "macs_after": _ratio_macs(weight.macs, ratio),
            "macs_ratio": round(ratio, 6)}


def _lowrank(weight: Weight, energy: float) -> dict[str, Any] | None:
    if weight.rank is None or weight.energies is None:
        return None
    from bloatguard.measure import lowrank

    tensor = weight.tensor
    axis = _out_axis(weight)
    rows = tensor.shape[axis]
    cols = tensor.numel // max(rows, 1)
    if not lowrank.worth_factorizing(rows, cols, weight.rank):
        return None
    after = lowrank.lowrank_params(rows, cols, weight.rank)
    entry = _base_entry(weight, "low-rank", tensor.numel, after, after / tensor.numel)
    entry.update(rank=weight.rank, full_rank=min(rows, cols), energy=energy)
    return entry


def _separable(weight: Weight, min_channels: int) -> dict[str, Any] | None:
    """A dense k x k conv as a k x k depthwise conv plus a 1 x 1 conv: the MACs per output
    position go from Cout*Cin*K to Cin*K + Cin*Cout (K = kernel elements), a factor of
    1/Cout + 1/K."""
    use, shape = weight.use, weight.tensor.shape
    in_axis = CONV_INPUT_AXIS.get(use.op)
    if (use.kind != "conv" or in_axis is None or weight.groups != 1 or len(shape) < 3
            or use.channel_axis is None):
        return None
    out_axis = use.channel_axis
    in_axis = in_axis % len(shape)
    kernel = [d for axis, d in enumerate(shape) if axis not in (out_axis, in_axis)]
    cout, cin = shape[out_axis], shape[in_axis]
    if max(kernel, default=1) < 3 or min(cout, cin) < min_channels:
        return None
    k = 1
    for d in kernel:
        k *= d
    after = cin * k + cin * cout
    entry = _base_entry(weight, "depthwise-separable", weight.numel, after, 1 / cout + 1 / k)
    entry.update(kernel=kernel, in_channels=cin, out_channels=cout)
    return entry


def _embedding(weight: Weight, total: int, energy: float) -> dict[str, Any]:
    """A dominant vocabulary table V x H: its low rank where the spectrum shows one, else an
    ALBERT-style factorized table V x E + E x H (E = 128), which needs retraining."""
    from bloatguard.measure import lowrank

    shape = weight.tensor.shape
    vocab, width = (shape[0], weight.numel // max(shape[0], 1)) if shape else (0, 0)
    share = round(weight.numel / total, 4)
    if weight.rank is not None and lowrank.worth_factorizing(vocab, width, weight.rank):
        after = lowrank.lowrank_params(vocab, width, weight.rank)
        entry = _base_entry(weight, "low-rank", weight.numel, after, 1.0)
        entry.update(rank=weight.rank, full_rank=min(vocab, width), energy=energy, share=share)
    else:
        e = ALBERT_E if width >= 4 * ALBERT_E else max(1, width // 4)
        after = vocab * e + e * width
        entry = _base_entry(weight, "factorized-embedding", weight.numel, after, 1.0)
        entry.update(embedding_width=e, share=share, rank=weight.rank,
                     full_rank=min(vocab, width) if weight.rank is not None else None,
                     energy=energy)
    # A lookup costs no MACs; the factorized table adds E x H per token, which the per-model
    # count cannot say without the number of tokens.
    entry["macs_before"] = entry["macs_after"] = None
    entry["macs_ratio"] = None
    return entry


def _incompressible(weight: Weight) -> bool:
    """Dense and not low-rank: pruning or factorizing it after training would cost accuracy."""
    if weight.profile is None or weight.entries or weight.use.kind == "embedding":
        return False
    near, cosine = weight.profile
    return near < DENSE_SHARE and cosine < PRUNE_COSINE


def _incompressible_entry(weight: Weight) -> dict[str, Any]:
    near, cosine = weight.profile or (None, None)
    matrix_rank = min(weight.tensor.shape[_out_axis(weight)],
                      weight.numel // max(weight.tensor.shape[_out_axis(weight)], 1))
    return {"name": _layer_name(weight), "weight": weight.tensor.name,
            "where": weight.tensor.where, "op": weight.use.op, "params": weight.numel,
            "rank": weight.rank, "full_rank": matrix_rank,
            "zero_share": None if near is None else round(near, 4),
            "prune_half_cosine": None if cosine is None else round(cosine, 4)}


def _over_budget(ctx: RuleContext) -> list[str]:
    """The size budgets (max-params, max-file-size, max-macs) this model breaks."""
    metrics = ctx.facts.metrics()
    over = []
    for key, metric in (("max-params", "params"), ("max-file-size", "file_size"),
                        ("max-macs", "macs")):
        limit, value = ctx.budgets.get(key), metrics.get(metric)
        if limit is not None and value is not None and value > limit:
            over.append(key)
    return over


def _describe(entry: dict[str, Any], facts: ModelFacts) -> str:
    shape = "x".join(map(str, entry["shape"]))
    before, after = entry["params_before"], entry["params_after"]
    fewer = before / max(after, 1)
    if entry["suggestion"] == "depthwise-separable":
        kernel = "x".join(map(str, entry["kernel"]))
        head = (f"{entry['name']} ({entry['op']} {kernel}, {entry['in_channels']}->"
                f"{entry['out_channels']} channels{_share(entry, facts)})")
        macs = (f" ({human_count(entry['macs_before'])} -> {human_count(entry['macs_after'])})"
                if entry["macs_before"] is not None else "")
        return (f"{head}: depthwise-separable cuts its MACs {1 / entry['macs_ratio']:.1f}x{macs} "
                f"and its weights {human_count(before)} -> {human_count(after)}")
    if entry["suggestion"] == "low-rank":
        head = f"{entry['name']} ({entry['op']} {shape}{_share(entry, facts)})"
        return (f"{head}: rank {entry['rank']} of {entry['full_rank']} keeps "
                f"{percent(entry['energy'], 1)} of the energy, two factors hold "
                f"{human_count(after)} instead of {human_count(before)} "
                f"weights ({fewer:.1f}x fewer" + (
                    f", MACs {human_count(entry['macs_before'])} -> "
                    f"{human_count(entry['macs_after'])}" if entry["macs_before"] is not None
                    else "") + ")")
    rank = (f"has no low rank (rank {entry['rank']} of {entry['full_rank']} keeps "
            f"{percent(entry['energy'], 1)} of its energy)" if entry.get("rank") is not None
            else "was not decomposed (above max-svd-elements)")
    return (f"{entry['name']} ({entry['op']} {shape}, {percent(before, facts.params or 0)} of the "
            f"params): the vocabulary table dominates the model and {rank}; an ALBERT-style "
            f"factorized table ({shape.split('x')[0]}x{entry['embedding_width']} + "
            f"{entry['embedding_width']}x{entry['shape'][-1]}) would hold {human_count(after)} "
            f"weights ({fewer:.1f}x fewer) but needs retraining, as does trimming the vocabulary "
            "to the tokens your data uses")


def _share(entry: dict[str, Any], facts: ModelFacts) -> str:
    """", 12% of the MACs" or ", 40% of the params": whichever is larger."""
    params = entry["params_before"] / facts.params if facts.params else 0
    macs = entry["macs_before"] / facts.macs if entry["macs_before"] and facts.macs else 0
    if macs > params:
        return f", {percent(entry['macs_before'], facts.macs or 0)} of the MACs"
    return f", {percent(entry['params_before'], facts.params or 0)} of the params"


def _regularization(dense: list[Weight], over: list[str]) -> str:
    params = sum(w.numel for w in dense)
    cosines = [w.profile[1] for w in dense if w.profile]
    names = listing([f"{w.label} (rank {w.rank} of {_incompressible_entry(w)['full_rank']}, "
                     f"{percent(w.profile[0], 1) if w.profile else '?'} near zero)" for w in dense])
    return (f"{names} {'are' if len(dense) > 1 else 'is'} dense and not low-rank "
            f"({human_count(params)} weights): pruning half of "
            f"{'each' if len(dense) > 1 else 'it'} by magnitude would keep a weight cosine of only "
            f"{min(cosines):.3f}, so neither pruning nor factorization shrinks "
            f"{'them' if len(dense) > 1 else 'it'} after training; regularize while training "
            "(L1 or group lasso for sparsity, a low-rank penalty) or distil a smaller student"
            + (f" (`bloatguard fix --unsafe-fixes` says how small for {', '.join(over)})"
               if over else ""))
