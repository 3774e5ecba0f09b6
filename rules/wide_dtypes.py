from __future__ import annotations

from typing import Iterator

from bloatguard.facts import TensorInfo
from bloatguard.hygiene import capped, listing, tensor_label
from bloatguard.rule import Finding, Fix, Option, Rule, RuleContext, Severity
from bloatguard.units import human_bytes, parse_count

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


class WideDtypes(Rule):
    """## What it does
    Finds wider types than a model needs:

    - float64 weights, nodes that produce float64 (`Cast` to DOUBLE, random/`EyeLike` nodes
      with a double `dtype`, `ConstantOfShape` with a double value) and float64 model inputs or
      outputs;
    - int64 weights whose values all fit int32. Values are read one tensor at a time (ONNX,
      external data, safetensors). Tensors under `min-elements` are skipped: int64 is the ONNX
      norm for shape and axis constants, and narrowing a handful of them saves nothing.

    PyTorch checkpoints are never unpickled, so their values are not read: float64 is reported
    from the dtype alone, and large int64 tensors get an informational note that they were not
    checked. TFLite buffers and GGUF tensors (F64, I64) are read like safetensors; TFLite
    operators with a float64 output are reported like ONNX nodes.

    ## Why is this bad?
    float64 doubles the bytes of every weight and runs slower everywhere: most accelerators and
    many onnxruntime execution providers have no double kernels, so the graph falls back to the
    CPU. It usually comes from numpy's default dtype leaking into an export
    (`torch.from_numpy(np.zeros(...))`, scikit-learn pipelines). int64 index tables whose values
    fit int32 waste half their bytes.

    ## Example
    An MLP trained on a float64 numpy array and exported as is:
    ```text
    BG105 warning: [wide-dtypes] float64 where float32 would do: 4 weight tensors (4.28 MB;
    float32 would save 2.14 MB): w0 (4.19 MB), w1 (81.9 KB), b0 (8.19 KB), b1 (80 B); float64
    inputs x and outputs y
    ```

    ## Use instead
    Cast weights to float32 before export (`model.float()`, `X.astype(np.float32)` before
    fitting or converting), and store index tables as int32 with a `Cast` to int64 where an
    operator requires it.

    ## Fix safety
    `narrow-dtypes` from int64 to int32 is safe: the values fit, so the outputs are identical.
    From float64 to float32 it is unsafe: it rounds every weight, and changing a float64 model
    input or output changes the model's interface for its callers.

    ## Options
    """

    code = "BG105"
    name = "wide-dtypes"
    summary = "float64 weights or ops, and int64 weights whose values fit int32"
    options = {"min-elements": Option(parse_count, 1024, "int64 tensors with fewer elements are "
                                      "not checked.")}
    reads = frozenset({"model"})

    def check(self, ctx: RuleContext) -> Iterator[Finding]:
        if ctx.facts.unreadable:
            return
        finding = self._float64(ctx)
        if finding:
            yield finding
        finding = self._int64(ctx)
        if finding:
            yield finding

    def _float64(self, ctx: RuleContext) -> Finding | None:
        facts = ctx.facts
        weights = sorted((t for t in facts.tensors if t.dtype == "float64"), key=lambda t: -t.numel)
        view = ctx.weight_uses()
        nodes = list(view.float64_ops) if view is not None else []
        inputs = [v.name for v in facts.inputs if v.dtype == "float64"]
        outputs = [v.name for v in facts.outputs if v.dtype == "float64"]
        if not (weights or nodes or inputs or outputs):
            return None
        total = sum(t.nbytes or 0 for t in weights)  # float64: the size is always known
        parts = []
        if weights:
            parts.append(f"{_count(len(weights), 'weight tensor')} ({human_bytes(total)}; float32 "
                         f"would save {human_bytes(total // 2)}): " + _names(weights))
        if nodes:
            parts.append(f"{_count(len(nodes), 'node')} produce{'s' if len(nodes) == 1 else ''} "
                         "float64: " + listing(nodes))
        if inputs or outputs:
            parts.append("float64 " + " and ".join(
                f"{kind} {listing(names)}" for kind, names in (("inputs", inputs), ("outputs", outputs))
                if names))
        details = {"bytes": total, "bytes_saved": total // 2, "weights": _entries(weights),
                   "weights_count": len(weights), "nodes": nodes[:50], "nodes_count": len(nodes),
                   "inputs": inputs, "outputs": outputs}
        fix = Fix("narrow-dtypes", safe=False, details={
            "from": "float64", "to": "float32", "tensors": [t.name for t in weights][:50],
            "bytes_saved": total // 2, "changes_interface": bool(inputs or outputs)})
        return self.finding(ctx, "float64 where float32 would do: " + "; ".join(parts),
                            details=details, fix=fix)

    def _int64(self, ctx: RuleContext) -> Finding | None:
        min_elements = self.option(ctx, "min-elements")
        wide = {(t.where, t.name): t for t in ctx.facts.tensors
                if t.dtype == "int64" and t.numel >= min_elements}
        if not wide:
            return None
        values = ctx.values()
        if not values.available:
            # Without values we cannot tell index tables from int64 data; say so, no warning.
            return self.finding(
                ctx, f"{_count(len(wide), 'int64 tensor')} ({human_bytes(_bytes(wide.values()))}) "
                f"may fit int32, but {ctx.facts.format} values are not read (bloatguard never "
                "unpickles): " + _names(wide.values()),
                details={"unchecked": _entries(list(wide.values())), "values_read": False},
                severity=Severity.INFO)
        fitting = []
        for tensor in values:
            info = wide.get((tensor.where, tensor.name))
            if info is not None and tensor.dtype == "int64" and _fits_int32(tensor.array):
                fitting.append(info)
        if not fitting:
            return None
        fitting.sort(key=lambda t: -t.numel)
        total = _bytes(fitting)
        return self.finding(
            ctx, f"{_count(len(fitting), 'int64 tensor')} ({human_bytes(total)}) hold only values "
            f"that fit int32; int32 would save {human_bytes(total // 2)}: " + _names(fitting),
            details={"bytes": total, "bytes_saved": total // 2, "weights": _entries(fitting),
                     "weights_count": len(fitting), "values_read": True},
            fix=Fix("narrow-dtypes", safe=True, details={
                "from": "int64", "to": "int32", "tensors": [t.name for t in fitting][:50],
                "bytes_saved": total // 2}))


def _fits_int32(array) -> bool:
    # min/max stream over the mmap without a copy; an empty tensor fits trivially.
    return array.size == 0 or (int(array.min()) >= INT32_MIN and int(array.max()) <= INT32_MAX)


def _bytes(tensors) -> int:
    return sum(t.nbytes for t in tensors)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _names(tensors) -> str:
    tensors = list(tensors)
    return listing([f"{tensor_label(t.name, t.where)} ({human_bytes(t.nbytes)})" for t in tensors])


def _entries(tensors: list[TensorInfo]) -> list[dict]:
    return capped([{"name": t.name, "where": t.where, "shape": list(t.shape), "bytes": t.nbytes}
                   for t in tensors])
