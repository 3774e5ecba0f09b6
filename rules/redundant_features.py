from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, cast

from bloatguard.errors import ConfigError
from bloatguard.facts import ValueInfo
from bloatguard.hygiene import listing, parse_fraction, parse_tolerance
from bloatguard.opgraph import Node, Scope, Tensor, reads_columns_linearly
from bloatguard.rule import Finding, Fix, Option, Rule, RuleContext, Severity
from bloatguard.units import parse_count

if TYPE_CHECKING:
    import numpy as np

# Ops that map feature i of their input to feature i of their output and nothing else, so a
# feature the next layer ignores is ignored by the model (checked further in _passes_through).
_ELEMENTWISE = ("Add", "Sub", "Mul", "Div")
_TREES = ("TreeEnsembleClassifier", "TreeEnsembleRegressor", "TreeEnsemble")
_DOT_KERNELS = ("LINEAR", "POLY", "SIGMOID")  # kernels that read x only through <sv, x>


@dataclass
class _Input:
    """What was found about one model input."""

    name: str
    count: int | None = None  # features along the feature axis
    axis: int | None = None
    unused: bool = False
    reasons: dict[int, list[str]] = field(default_factory=dict)  # index -> why
    static: set[int] = field(default_factory=set)  # indices that cannot affect the output
    columns: list[str] = field(default_factory=list)  # names from a CSV header
    changes: dict[int, float] = field(default_factory=dict)  # index -> permutation effect
    removable: bool = False  # remove-features can act on its findings

    def add(self, index: int, reason: str, static: bool = False) -> None:
        self.reasons.setdefault(index, []).append(reason)
        if static:
            self.static.add(index)

    def label(self, index: int) -> str:
        return self.columns[index] if index < len(self.columns) else str(index)


@dataclass
class _Terminal:
    """A consumer that reads the input's features directly: which of them it ignores."""

    axis: int  # negative: counted from the last axis, so it holds for any batch rank
    count: int | None
    dead: set[int]
    reason: str


class RedundantFeatures(Rule):
    """## What it does
    Finds model inputs, and input feature columns, that cannot affect the outputs:

    - inputs no node reads (also not from inside `If`/`Loop`/`Scan` bodies), or that only feed
      nodes whose results reach no output;
    - feature columns whose weights are all zero (`|w| <= tolerance`) in the first `MatMul`,
      `Gemm` (`transA`/`transB` respected) or `Conv` (input channels) reading the input, also
      through `Cast`, `Identity`, `Flatten`/`Reshape` that keep the feature axis, and elementwise
      scaling by constants (`Scaler`, `Sub`/`Div` by a mean and deviation);
    - features that no tree of a `TreeEnsembleClassifier`/`TreeEnsembleRegressor`/`TreeEnsemble`
      ever splits on (out of the feature count of the input's shape);
    - zero coefficients of `LinearClassifier`/`LinearRegressor` (all targets) and features that
      are zero in every support vector of a linear, polynomial or sigmoid `SVMClassifier`/
      `SVMRegressor`.

    A feature counts only when every consumer of the input ignores it.

    With sample inputs configured in `[tool.bloatguard.samples]` (`.npz`: one array per input,
    samples on a new leading axis; `.csv`: a header of column names, one row per sample, for a
    single 2-D input), it also reports columns of float `[batch, features]` inputs that are
    constant, exact duplicates of an earlier column, or correlated with an earlier column
    (`|r| >= correlation`), and runs a permutation test: the model runs (onnxruntime, CPU, one
    thread, in a child process) with one column at a time shuffled across the samples, and
    columns whose shuffling moves the outputs by less than `permutation-tolerance` (relative to
    the outputs' largest magnitude) are reported. A samples file that cannot be used (missing,
    or not matching the model's inputs) is reported as a warning that names the file and the
    problem; the graph checks still run.

    ## Why is this bad?
    Every input feature must be collected, validated, stored and sent to the model in
    production, and its weights stored and multiplied. A feature the model ignores costs all of
    that for nothing; an L1-regularised model or a tree ensemble often ignores many.

    ## Example
    A logistic regression trained with `penalty="l1"` on 20 columns whose coefficients for 3 of
    them are exactly 0:
    `3 of 20 features of input 'X' cannot affect the output: 4, 9, 17 (zero coefficients in
    LinearClassifier)`.

    ## Use instead
    Drop the columns from the training data and the feature pipeline and retrain (or slice them
    out of the first layer's weights), so that the model's input has only what it uses.

    ## Fix safety
    Unsafe (`remove-features`): removing features changes the model's input signature, so every
    caller must change too. Sample-based findings hold for the samples given, not for all data.

    ## Options
    """

    code = "BG102"
    name = "redundant-features"
    summary = "Model inputs or input feature columns that do not affect the outputs"
    options = {
        "tolerance": Option(parse_tolerance, 0.0, "weights with `|w| <= tolerance` count as zero.",
                            "0"),
        "correlation": Option(parse_fraction, 0.999, "`|r|` at or above which two sample columns "
                              "are redundant."),
        "permutation-tolerance": Option(parse_tolerance, 1e-6, "relative output change below "
                                        "which a shuffled feature is reported.", "1e-6"),
        "permutation-max-features": Option(parse_count, 512, "inputs with more features are not "
                                           "permuted (the test runs the model once per feature)."),
    }
    reads = frozenset({"model"})

    def check(self, ctx: RuleContext) -> Iterator[Finding]:
        graph = ctx.op_graph()
        if graph is None:
            return
        tolerance = self.option(ctx, "tolerance")
        root = graph.main
        live = graph.live_nodes(root)
        # Only readers that reach an output count: an input feeding a dead branch is unused.
        readers = {name: [n for n in nodes if n in live]
                   for name, nodes in graph.consumers(root).items()}
        found = {value.name: _static(ctx, root, readers, value, tolerance)
                 for value in ctx.facts.inputs}
        consumers = graph.consumers(root)
        # Columns remove-features can cut out (an unused input it can always drop): others, like
        # those of an ai.onnx.ml LinearClassifier, get no fix hint that would do nothing.
        for name, entry in found.items():
            entry.removable = entry.unused or (
                reads_columns_linearly(consumers.get(name, []), name) and name not in root.outputs)
        notes: list[str] = []
        unusable = None
        if ctx.settings.samples is not None:
            try:
                notes = self._samples(ctx, found)
            except ConfigError as exc:  # a broken samples file must not hide the static findings
                unusable = str(exc)
        yield from self._report(ctx, found)
        samples = {"samples": str(ctx.settings.samples)}
        if unusable:
            yield self.finding(ctx, f"sample-based checks skipped: {unusable}",
                               details={**samples, "error": unusable})
        for note in notes:
            yield self.finding(ctx, note, details=samples, severity=Severity.INFO)

    # --- samples -------------------------------------------------------------------------------

    def _samples(self, ctx: RuleContext, found: dict[str, _Input]) -> list[str]:
        loaded = ctx.samples()
        source = loaded.path.name
        threshold = self.option(ctx, "correlation")
        permute: dict[str, list[int]] = {}
        for name, entry in found.items():
            # Only float [batch, features] inputs have feature columns: the columns of an
            # integer [batch, n] input are positions (token ids, bytes), not features.
            rows = loaded.rows(name)
            if rows is None or rows.dtype.kind != "f" or entry.unused or entry.axis not in (None, 1):
                continue  # (axis 0: a Gemm with transA reads it transposed; not columns)
            entry.axis, entry.count = 1, entry.count or rows.shape[1]
            entry.columns = loaded.columns.get(name, [])
            varying = _column_stats(rows, entry, source, threshold)
            # Columns the graph already ignores need no model runs to prove it.
            permute[name] = [j for j in varying if j not in entry.static]
        return self._permutation(ctx, loaded, found, permute)

    def _permutation(self, ctx: RuleContext, loaded, found: dict[str, _Input],
                     permute: dict[str, list[int]]) -> list[str]:
        limit = self.option(ctx, "permutation-max-features")
        missing = [v.name for v in ctx.facts.inputs if v.name not in loaded.arrays]
        skip = [f"input {n!r} has {len(c)} features (permutation-max-features = {limit})"
                for n, c in permute.items() if len(c) > limit]
        permute = {n: c for n, c in permute.items() if c and len(c) <= limit
                   and loaded.rows(n).shape[0] >= 2}
        if not permute:
            return [f"permutation test skipped: {'; '.join(skip)}"] if skip else []
        if missing:
            return [f"permutation test skipped: {loaded.path.name} has no samples for inputs "
                    f"{missing}"]
        if ctx.facts.file is None:
            return []
        try:
            effects = ctx.permutation_effects(loaded.arrays, permute)
        except RuntimeError as exc:  # PermutationError: the model did not run on the samples
            return [f"permutation test could not run the model on {loaded.path.name}: {exc}"]
        tolerance = self.option(ctx, "permutation-tolerance")
        for name, columns in permute.items():
            for column, change in zip(columns, effects[name]):
                found[name].changes[column] = change
                if change < tolerance:
                    found[name].add(column, f"shuffling it in {loaded.path.name} moves the "
                                    f"outputs by less than {tolerance:g}")
        return [f"permutation test skipped: {s}" for s in skip]

    # --- report --------------------------------------------------------------------------------

    def _report(self, ctx: RuleContext, found: dict[str, _Input]) -> Iterator[Finding]:
        features: list[dict[str, Any]] = []
        parts: list[str] = []
        for entry in found.values():
            if entry.unused:
                features.append({"input": entry.name, "index": None, "axis": None,
                                 "reasons": ["no node that reaches an output reads it"]})
                parts.append(f"input {entry.name!r} is never used")
                continue
            if not entry.reasons:
                continue
            indices = sorted(entry.reasons)
            for index in indices:
                feature = {"input": entry.name, "index": index, "axis": entry.axis,
                           "reasons": entry.reasons[index]}
                if entry.columns:
                    feature["name"] = entry.label(index)
                if index in entry.changes:
                    feature["permutation_change"] = entry.changes[index]
                features.append(feature)
            verb = ("cannot affect the output" if set(indices) <= entry.static
                    else "are redundant")
            of = f" of {entry.count}" if entry.count is not None else ""
            parts.append(f"{len(indices)}{of} features of input {entry.name!r} {verb}: "
                         + _describe(entry, indices))
        if not features:
            return
        removable = [{"input": f["input"], "index": f["index"]} for f in features
                     if found[f["input"]].removable]
        yield self.finding(
            ctx, "; ".join(parts), details={"features": features},
            fix=Fix("remove-features", safe=False, details={"features": removable}) if removable else None)


def _describe(entry: _Input, indices: list[int]) -> str:
    """Group features by their first reason: `2, 5 (zero weights in MatMul mm)`."""
    groups: dict[str, list[str]] = {}
    for index in indices:
        groups.setdefault(entry.reasons[index][0], []).append(entry.label(index))
    return "; ".join(f"{listing(labels, limit=8)} ({reason})" for reason, labels in groups.items())


# --- static analysis ---------------------------------------------------------------------------

def _static(ctx: RuleContext, root: Scope, readers: dict[str, list[Node]], value: ValueInfo,
            tolerance: float) -> _Input:
    entry = _Input(value.name)
    if not readers.get(value.name) and value.name not in root.outputs:
        entry.unused = True
        return entry
    rank = len(value.shape) if value.shape is not None else None
    terminals = _terminals(ctx, root, readers, value, rank, tolerance)
    if not terminals:
        return entry
    axes = {t.axis for t in terminals}
    counts = {t.count for t in terminals if t.count is not None}
    axis = terminals[0].axis
    declared = value.shape[axis] if value.shape and len(value.shape) >= -axis else None
    if isinstance(declared, int):
        counts.add(declared)
    if len(axes) != 1 or len(counts) > 1:
        return entry  # consumers disagree about what a feature is: stay silent
    entry.axis = axis if rank is None else rank + axis
    entry.count = counts.pop() if counts else None
    dead = set.intersection(*(t.dead for t in terminals))
    if entry.count is not None:
        dead = {i for i in dead if i < entry.count}
    reason = " and ".join(dict.fromkeys(t.reason for t in terminals))
    for index in sorted(dead):
        entry.add(index, reason, static=True)
    return entry


def _terminals(ctx, scope: Scope, readers, value: ValueInfo, rank, tolerance) -> list[_Terminal] | None:
    """Follow the input through feature-preserving ops to the nodes that mix features."""
    count = value.shape[-1] if value.shape and isinstance(value.shape[-1], int) else None
    found: list[_Terminal] = []
    stack, seen = [value.name], set()
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in scope.outputs:
            return None  # the features themselves are an output
        for node in readers.get(name, []):
            if name not in node.inputs:
                return None  # read from inside a subgraph: not followed
            if _passes_through(scope, node, name, rank, count):
                stack.append(node.outputs[0])
                continue
            terminal = _terminal(ctx, scope, node, name, tolerance, count)
            if terminal is None:
                return None
            found.append(terminal)
    return found


def _passes_through(scope: Scope, node: Node, name: str, rank, count) -> bool:
    op = node.op
    if node.inputs[0] != name or len(node.outputs) < 1:
        return False
    if op in ("Cast", "Identity") or (op == "Scaler" and node.domain == "ai.onnx.ml"):
        return True
    if op == "Flatten":
        return rank == 2 and node.attribute("axis", 1) in (1, -1)
    if op == "Reshape":
        # The target as the graph holds it: a shape is small, never a weight to read.
        target = _array(None, scope.constant(node.inputs[1])) if len(node.inputs) > 1 else None
        return (rank == 2 and count is not None and target is not None and target.size == 2
                and int(target[-1]) == count)
    if op in _ELEMENTWISE and node.standard and len(node.inputs) == 2:
        other = scope.constant(node.inputs[1])
        # Broadcasting a constant of shape (), (1,), (F,) or (1, F) keeps every feature apart.
        dims = list(other.shape) if other is not None else None
        return dims is not None and len(dims) <= 2 and all(d == 1 for d in dims[:-1]) and (
            not dims or dims[-1] in (1, count))
    return False


def _array(ctx: RuleContext | None, tensor: Tensor | None) -> np.ndarray | None:
    """A constant's value: read from the model (weights) with a context, else only what the
    graph holds."""
    if tensor is None:
        return None
    if ctx is not None:
        return ctx.values().array(tensor)
    return tensor.inline()


def _zero(values: np.ndarray, tolerance: float, axis: int) -> set[int]:
    """Indices along `axis` whose slice is all (near) zero."""
    import numpy as np

    moved = np.moveaxis(np.abs(values.astype(np.float64)), axis, 0).reshape(values.shape[axis], -1)
    return set(np.flatnonzero(np.all(moved <= tolerance, axis=1)).tolist())


def _terminal(ctx, scope: Scope, node: Node, name: str, tolerance: float, count) -> _Terminal | None:
    op, label = node.op, node.label
    if node.inputs.count(name) != 1:
        return None  # e.g. Gemm(x, W, x): x also arrives as the bias, every feature counts
    if node.standard and node.inputs[0] == name:
        weight = _array(ctx, scope.constant(node.inputs[1])) if len(node.inputs) > 1 else None
        if weight is None:
            return None
        if op == "MatMul" and weight.ndim == 2:
            return _Terminal(-1, weight.shape[0], _zero(weight, tolerance, 0), f"zero weights in {label}")
        if op == "Gemm" and weight.ndim == 2:
            axis = 1 if node.attribute("transB", 0) else 0
            return _Terminal(-2 if node.attribute("transA", 0) else -1, weight.shape[axis],
                             _zero(weight, tolerance, axis), f"zero weights in {label}")
        if op == "Conv" and weight.ndim >= 3:
            return _conv(node, weight, tolerance, label)
        return None
    if node.domain == "ai.onnx.ml" and node.inputs[0] == name:
        return _ml(node, op, label, tolerance, count)
    return None


def _conv(node: Node, weight: np.ndarray, tolerance: float, label: str) -> _Terminal:
    """Input channel c of a grouped Conv is read by its group's output channels only."""
    import numpy as np

    groups = node.attribute("group", 1)
    per_group, out_per_group = weight.shape[1], weight.shape[0] // groups
    dead = set()
    for channel in range(per_group * groups):
        group = channel // per_group
        block = weight[group * out_per_group:(group + 1) * out_per_group, channel % per_group]
        if np.all(np.abs(block) <= tolerance):
            dead.add(channel)
    return _Terminal(-(weight.ndim - 1), per_group * groups, dead, f"zero input channel in {label}")


def _ml(node: Node, op: str, label: str, tolerance: float, count) -> _Terminal | None:
    import numpy as np

    if op in _TREES:
        if count is None:
            return None  # cannot list features never used without knowing how many there are
        features = node.attribute("nodes_featureids", [])
        modes = node.attribute("nodes_modes", None)
        if op == "TreeEnsemble":  # opset 5: nodes_* describe interior nodes only
            used = set(features)
        else:
            used = {f for f, mode in zip(features, modes or []) if mode != "LEAF"}
        return _Terminal(-1, count, set(range(count)) - used, f"no tree of {label} splits on it")
    if op in ("LinearClassifier", "LinearRegressor"):
        coefficients = np.asarray(node.attribute("coefficients", []), dtype=np.float64)
        rows = len(node.attribute("intercepts", [])) or node.attribute("targets", 1)
        width = count or (coefficients.size // rows if rows else None)
        if not width or coefficients.size % width:
            return None
        table = coefficients.reshape(-1, width)  # [n_targets, n_features]
        return _Terminal(-1, width, _zero(table, tolerance, 1), f"zero coefficients in {label}")
    if op in ("SVMClassifier", "SVMRegressor"):
        if node.attribute("kernel_type", "LINEAR") not in _DOT_KERNELS:
            return None  # RBF reads every feature through ||sv - x||
        vectors = np.asarray(node.attribute("support_vectors", []), dtype=np.float64)
        if vectors.size == 0 and op == "SVMRegressor":  # a linear SVR stores w directly
            vectors = np.asarray(node.attribute("coefficients", []), dtype=np.float64)
        width = count or None
        if width is None:
            supports = node.attribute("n_supports", 0) or sum(node.attribute("vectors_per_class", []))
            width = vectors.size // supports if supports else None
        if not width or vectors.size % width:
            return None
        return _Terminal(-1, width, _zero(vectors.reshape(-1, width), tolerance, 1),
                         f"zero in every support vector of {label}")
    return None


# --- samples -----------------------------------------------------------------------------------

def _column_stats(rows: np.ndarray, entry: _Input, source: str, threshold: float) -> list[int]:
    """Constant, duplicate and correlated columns; returns the columns worth permuting."""
    import numpy as np

    width = rows.shape[1]
    constant = [j for j in range(width) if np.all(rows[:, j] == rows[0, j])]
    for j in constant:
        entry.add(j, f"constant ({rows[0, j]:g}) in {source}")
    first: dict[bytes, int] = {}
    distinct = []
    for j in range(width):
        if j in constant:
            continue
        key = np.ascontiguousarray(rows[:, j]).tobytes()
        if key in first:
            entry.add(j, f"duplicates column {entry.label(first[key])} in {source}")
        else:
            first[key] = j
            distinct.append(j)
    if rows.shape[0] >= 3 and len(distinct) > 1:
        with np.errstate(invalid="ignore", divide="ignore"):
            # Two columns or more: a matrix (numpy's stubs also allow the scalar of one column).
            r = cast("np.ndarray", np.corrcoef(rows[:, distinct].astype(np.float64), rowvar=False))
        kept: list[int] = []
        for position, j in enumerate(distinct):
            partners = [p for p in kept if abs(r[position, p]) >= threshold]
            if partners:
                p = partners[0]
                entry.add(j, f"correlated with column {entry.label(distinct[p])} "
                          f"(r={r[position, p]:.4f}) in {source}")
            else:
                kept.append(position)
    return [j for j in range(width) if j not in constant]
