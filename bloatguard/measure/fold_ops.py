"""Numpy evaluation of the ops exporters use for shape arithmetic, for the constant folder.

onnx's ReferenceEvaluator runs any op, but importing it costs about 40 ms in every MACs child,
more than folding a whole model takes, and builds a graph per node. The few ops that real exports
fold (Slice, Concat, Unsqueeze, Reshape, Cast, Gather... on tensors of a handful of integers) are
evaluated here directly. `evaluate` returns None for anything it does not cover exactly (an op,
an attribute, a dtype or an edge case), and the folder then falls back to the reference, so this
module only ever needs to be right, never complete. tests/test_fold_ops.py holds each op to the
reference's output (and, where the reference departs from the spec, to the spec).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from onnx import helper, numpy_helper

Arrays = list  # of np.ndarray, one per node input ("" inputs as None)


class _NotCovered(Exception):
    """Raised by an implementation for a case left to the reference evaluator."""


def evaluate(node, inputs: Arrays, opset: int) -> list[np.ndarray] | None:
    """The outputs of `node` for `inputs`, or None when the case is not covered here."""
    implementation = _OPS.get(node.op_type)
    if implementation is None:
        return None
    attributes = {a.name: a for a in node.attribute}
    try:
        with np.errstate(all="ignore"):  # inf from a float division is a value, not a warning
            outputs = implementation(inputs, attributes, opset)
    except (_NotCovered, ValueError, IndexError, TypeError, OverflowError, ZeroDivisionError,
            AttributeError):  # AttributeError: an empty name where an input is required
        return None
    return [np.asarray(output) for output in outputs]


def _attr(attributes: dict, name: str, default=None):
    attribute = attributes.get(name)
    return default if attribute is None else helper.get_attribute_value(attribute)


def _ints(array) -> list[int]:
    if array.dtype.kind not in "iu":
        raise _NotCovered
    return [int(v) for v in array.reshape(-1)]


def _axes(inputs: Arrays, attributes: dict, opset: int, since: int, index: int = 1):
    """Axes given as an attribute before opset `since` and as an optional input from it on."""
    if opset < since:
        axes = _attr(attributes, "axes")
        return None if axes is None else list(axes)
    if len(inputs) > index and inputs[index] is not None:
        return _ints(inputs[index])
    return None


def _identity(inputs, attributes, opset):
    return [inputs[0].copy()]


_PLAIN_DTYPES = {1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13}  # numbers and bool; no bfloat16/float8/strings


def _cast(inputs, attributes, opset):
    target, source = _attr(attributes, "to"), inputs[0]
    if target not in _PLAIN_DTYPES or source.dtype.kind not in "biuf":
        raise _NotCovered
    dtype = helper.tensor_dtype_to_np_dtype(target)
    if source.dtype.kind == "f" and dtype.kind in "iu" and not np.all(np.abs(source) < 2**31):
        raise _NotCovered  # float -> int of NaN, inf or huge values is platform-defined
    return [source.astype(dtype)]


def _concat(inputs, attributes, opset):
    if "axis" not in attributes:
        raise _NotCovered  # required from opset 4; numpy would flatten instead
    _same_dtype(inputs)
    return [np.concatenate(inputs, axis=_attr(attributes, "axis"))]


def _unsqueeze(inputs, attributes, opset):
    axes = _axes(inputs, attributes, opset, since=13)
    if axes is None:
        raise _NotCovered
    rank = inputs[0].ndim + len(axes)
    normalized = sorted(a + rank if a < 0 else a for a in axes)
    if len(set(normalized)) != len(normalized) or any(not 0 <= a < rank for a in normalized):
        raise _NotCovered
    return [np.expand_dims(inputs[0], tuple(normalized))]


def _squeeze(inputs, attributes, opset):
    data = inputs[0]
    axes = _axes(inputs, attributes, opset, since=13)
    if not axes:  # absent or empty: every dim of size 1, as the reference does
        return [np.squeeze(data)]
    normalized = tuple(a + data.ndim if a < 0 else a for a in axes)
    if any(not 0 <= a < data.ndim or data.shape[a] != 1 for a in normalized):
        raise _NotCovered
    return [np.squeeze(data, axis=normalized)]


def _reshape(inputs, attributes, opset):
    if opset < 5 or (opset < 14 and "allowzero" in attributes):
        raise _NotCovered  # allowzero exists from opset 14 on
    data, shape = inputs[0], _ints(inputs[1])
    if not _attr(attributes, "allowzero", 0):
        shape = [data.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    if any(d < -1 for d in shape) or shape.count(-1) > 1:
        raise _NotCovered
    return [data.reshape(shape)]


def _transpose(inputs, attributes, opset):
    perm = _attr(attributes, "perm")
    return [np.transpose(inputs[0], None if perm is None else list(perm))]


def _gather(inputs, attributes, opset):
    data, indices = inputs
    if indices.dtype.kind not in "iu":
        raise _NotCovered
    axis = _attr(attributes, "axis", 0)
    size = data.shape[axis]
    if indices.size and (indices.min() < -size or indices.max() >= size):
        raise _NotCovered
    return [np.take(data, indices.astype(np.int64), axis=axis)]


def _slice(inputs, attributes, opset):
    # ONNX's clamping of starts/ends is exactly Python's slice clamping, so a Python slice per
    # axis gives the same result for every sign of start, end and step.
    data = inputs[0]
    if opset < 10:
        starts, ends = list(_attr(attributes, "starts")), list(_attr(attributes, "ends"))
        axes = _attr(attributes, "axes")
        steps = [1] * len(starts)
    else:
        starts, ends = _ints(inputs[1]), _ints(inputs[2])
        axes = _ints(inputs[3]) if len(inputs) > 3 and inputs[3] is not None else None
        steps = _ints(inputs[4]) if len(inputs) > 4 and inputs[4] is not None else [1] * len(starts)
    axes = list(range(len(starts))) if axes is None else [a + data.ndim if a < 0 else a for a in axes]
    if not len(starts) == len(ends) == len(axes) == len(steps) or len(set(axes)) != len(axes):
        raise _NotCovered
    index = [slice(None)] * data.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps):
        if step == 0 or not 0 <= axis < data.ndim:
            raise _NotCovered
        index[axis] = slice(start, end, step)
    return [data[tuple(index)].copy()]


def _constant_of_shape(inputs, attributes, opset):
    shape = _ints(inputs[0])
    value = attributes.get("value")
    fill = np.zeros(1, dtype=np.float32) if value is None else numpy_helper.to_array(value.t)
    if fill.size != 1 or any(d < 0 for d in shape):
        raise _NotCovered
    return [np.full(shape, fill.reshape(-1)[0], dtype=fill.dtype)]


def _range(inputs, attributes, opset):
    _same_dtype(inputs)
    start, limit, delta = (int(a.reshape(-1)[0]) if a.dtype.kind in "iu" else None for a in inputs)
    if start is None or delta == 0:
        raise _NotCovered  # float ranges accumulate rounding differently
    # Python ints: numpy would work out the length in the inputs' dtype and overflow.
    return [np.arange(start, limit, delta).astype(inputs[0].dtype)]


def _same_dtype(inputs) -> None:
    if len({a.dtype for a in inputs}) != 1:
        raise _NotCovered


def _binary(function: Callable) -> Callable:
    def run(inputs, attributes, opset):
        if "broadcast" in attributes or "axis" in attributes:
            raise _NotCovered  # opset < 7 broadcasting, which numpy's rules do not follow
        _same_dtype(inputs)
        if inputs[0].dtype.kind not in "iuf":
            raise _NotCovered
        return [np.asarray(function(*inputs)).astype(inputs[0].dtype, copy=False)]
    return run


def _integer_divide(a, b):
    if a.dtype.kind in "iu":
        if not np.all(b):
            raise _NotCovered
        quotient = np.abs(a) // np.abs(b)  # truncation toward zero, as onnxruntime does
        return np.where((a < 0) != (b < 0), -quotient, quotient)
    return np.divide(a, b)


def _compare(function: Callable) -> Callable:
    def run(inputs, attributes, opset):
        _same_dtype(inputs)
        return [np.asarray(function(*inputs))]
    return run


def _variadic(function: Callable) -> Callable:
    def run(inputs, attributes, opset):
        _same_dtype(inputs)
        result = inputs[0]
        for other in inputs[1:]:
            result = function(result, other)
        return [np.asarray(result)]
    return run


def _where(inputs, attributes, opset):
    condition, a, b = inputs
    if condition.dtype != np.bool_:
        raise _NotCovered
    _same_dtype([a, b])
    return [np.where(condition, a, b)]


def _expand(inputs, attributes, opset):
    shape = np.broadcast_shapes(inputs[0].shape, tuple(_ints(inputs[1])))
    return [np.broadcast_to(inputs[0], shape).copy()]


def _unary(function: Callable, kinds: str = "iuf") -> Callable:
    def run(inputs, attributes, opset):
        if inputs[0].dtype.kind not in kinds:
            raise _NotCovered
        return [np.asarray(function(inputs[0])).astype(inputs[0].dtype, copy=False)]
    return run


def _logical(function: Callable) -> Callable:
    def run(inputs, attributes, opset):
        if any(a.dtype != np.bool_ for a in inputs):
            raise _NotCovered
        return [np.asarray(function(*inputs))]
    return run


_OPS: dict[str, Callable] = {
    "Identity": _identity,
    "Cast": _cast,
    "Concat": _concat,
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Reshape": _reshape,
    "Transpose": _transpose,
    "Gather": _gather,
    "Slice": _slice,
    "ConstantOfShape": _constant_of_shape,
    "Range": _range,
    "Expand": _expand,
    "Where": _where,
    "Add": _binary(np.add),
    "Sub": _binary(np.subtract),
    "Mul": _binary(np.multiply),
    "Div": _binary(_integer_divide),
    "Min": _variadic(np.minimum),
    "Max": _variadic(np.maximum),
    "Equal": _compare(np.equal),
    "Less": _compare(np.less),
    "LessOrEqual": _compare(np.less_equal),
    "Greater": _compare(np.greater),
    "GreaterOrEqual": _compare(np.greater_equal),
    "Neg": _unary(np.negative, "if"),
    "Abs": _unary(np.abs),
    "Floor": _unary(np.floor, "f"),
    "Ceil": _unary(np.ceil, "f"),
    "Sqrt": _unary(np.sqrt, "f"),
    "Not": _logical(np.logical_not),
    "And": _logical(np.logical_and),
    "Or": _logical(np.logical_or),
    "Xor": _logical(np.logical_xor),
}
