"""Inputs for timing a model: a plan made in the linter process, arrays made in the child.

The plan fixes every input's dtype, shape and where its values come from, and checks the total
size against the feed cap, without allocating anything: a model declaring a [1, 100000, 100000]
input is refused here, not discovered by the OOM killer. The child (bloatguard.measure.latency)
turns the plan into arrays with `materialize`.

Dims are resolved in this order:
1. `[tool.bloatguard.inputs]` (a full shape per input name);
2. a pinned value from `[tool.bloatguard.latency.values]` (its shape, unless it is a scalar);
3. the first sample of the `[tool.bloatguard.samples]` .npz (arrays stacked on a leading axis);
4. a symbolic dim with the same name already fixed on another input (`batch` is one `batch`);
5. an unknown leading dim of an input of rank >= 2 is batch 1 (the convention of bloatguard's
   MAC counts, so latency and compute describe the same inference).
Whatever is still unknown makes the plan fail with a note that says which input and dim.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bloatguard.facts import DTYPE_SIZES, NUMPY_DTYPES, ValueInfo
from bloatguard.measure.dims import resolve_dims
from bloatguard.units import human_bytes

# dtype name (ModelFacts spelling) -> bytes per element, for the types numpy and onnxruntime
# both understand. bfloat16, float8 and int4 inputs have no numpy dtype to feed them with.
FEEDABLE = {dtype: int(DTYPE_SIZES[dtype]) for dtype in NUMPY_DTYPES}  # dtype -> bytes

_HINT = "set it in [tool.bloatguard.inputs] or give a samples file"


class FeedError(Exception):
    """Feeds cannot be built for this model; the message is the note shown to the user."""


@dataclass
class Feed:
    """How to make one input array. `source` is "random", "pinned" or "sample"."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    source: str = "random"
    value: Any = None  # the pinned value (a number or nested list)
    sample: str | None = None  # the .npz holding the sample, for source == "sample"
    int_range: tuple[int, int] = (0, 9)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * FEEDABLE[self.dtype]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape),
                "source": self.source, "value": self.value, "sample": self.sample,
                "int_range": list(self.int_range)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Feed":
        return cls(name=data["name"], dtype=data["dtype"], shape=tuple(data["shape"]),
                   source=data["source"], value=data["value"], sample=data["sample"],
                   int_range=tuple(data["int_range"]))


@dataclass
class FeedPlan:
    feeds: list[Feed]
    notes: list[str] = field(default_factory=list)  # assumptions worth telling the user

    @property
    def nbytes(self) -> int:
        return sum(feed.nbytes for feed in self.feeds)


def plan_feeds(inputs: list[ValueInfo], *, shapes: dict[str, list[int]] | None = None,
               pins: dict[str, Any] | None = None, samples: Path | None = None,
               int_range: tuple[int, int] = (0, 9), cap: int = 2**30) -> FeedPlan:
    """The feed plan for a model with these inputs; raises FeedError with the reason."""
    shapes, pins = shapes or {}, pins or {}
    plan = FeedPlan(feeds=[])
    sample_shapes = _sample_shapes(samples, plan.notes) if samples is not None else {}
    declared: dict[str, list[int | str | None] | None] = {}
    chosen: dict[str, tuple[list[int], str]] = {}  # input -> (dims, source)
    for value in inputs:
        if value.dtype not in FEEDABLE:
            raise FeedError(f"input {value.name!r} has type {value.dtype}, which bloatguard "
                            "cannot feed from numpy")
        dims = None if value.shape is None else [_clean(d) for d in value.shape]
        declared[value.name] = dims
        found = _explicit_dims(value, dims, shapes, pins, sample_shapes, plan.notes)
        if found is not None:
            chosen[value.name] = found

    # The rest as MACs counting assumes them (measure.dims), so both describe one inference.
    resolved, notes = resolve_dims(declared, {name: dims for name, (dims, _) in chosen.items()})
    plan.notes += notes
    for value in inputs:
        if value.name in chosen:
            continue
        if declared[value.name] is None:
            raise FeedError(f"input {value.name!r} declares no shape; {_HINT}")
        dims = resolved[value.name]
        unknown = [f"{d!r}" if isinstance(d, str) else f"axis {axis}"
                   for axis, d in enumerate(dims) if not isinstance(d, int)]
        if unknown:
            raise FeedError(f"input {value.name!r} has unknown dims {', '.join(unknown)} "
                            f"(shape {_show(dims)}); {_HINT}")
        ints = [d for d in dims if isinstance(d, int)]  # every dim, now that none is unknown
        chosen[value.name] = (ints, "pinned" if value.name in pins else "random")

    for value in inputs:
        shape, source = chosen[value.name]
        plan.feeds.append(Feed(
            name=value.name, dtype=value.dtype, shape=tuple(shape), source=source,
            value=pins.get(value.name) if source == "pinned" else None,
            sample=str(samples) if source == "sample" else None, int_range=int_range))
    for name in pins:
        if name not in declared:
            plan.notes.append(f"pinned value for {name!r} ignored: the model has no such input")
    if plan.nbytes > cap:
        raise FeedError(f"the inputs would take {human_bytes(plan.nbytes)}, above the feed cap of "
                        f"{human_bytes(cap)} (feed-cap in [tool.bloatguard.latency]); configure "
                        "smaller shapes in [tool.bloatguard.inputs]")
    return plan


def _clean(dim: int | str | None) -> int | str | None:
    """Exporters spell "unknown" as -1, "" or None, and symbolic dims with any name."""
    if isinstance(dim, int):
        return dim if dim >= 0 else None
    return dim or None


def _show(dims) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def _fits(dims: list | None, shape: tuple[int, ...] | list[int]) -> bool:
    return dims is None or (len(dims) == len(shape) and all(
        not isinstance(d, int) or d == s for d, s in zip(dims, shape)))


def _explicit_dims(value: ValueInfo, dims, shapes, pins, sample_shapes,
                   notes: list[str]) -> tuple[list[int], str] | None:
    """Dims the user gave (config shape, pinned value, sample), with where the values come from."""
    name = value.name
    pin_shape = _pin_shape(pins[name]) if name in pins else None
    if name in shapes:
        configured = list(shapes[name])
        if not _fits(dims, configured):
            raise FeedError(f"configured shape {configured} for input {name!r} does not fit the "
                            f"model's shape {_show(dims)}")
        if pin_shape and pin_shape != tuple(configured):
            raise FeedError(f"pinned value for input {name!r} has shape {list(pin_shape)}, the "
                            f"configured shape is {configured}")
        return configured, "pinned" if name in pins else "random"
    if pin_shape:  # a non-scalar pin carries its own shape
        if not _fits(dims, pin_shape):
            raise FeedError(f"pinned value for input {name!r} has shape {list(pin_shape)}, the "
                            f"model's shape is {_show(dims)}")
        return list(pin_shape), "pinned"
    if pin_shape == () and (dims is None or not dims):
        return [], "pinned"  # a scalar input, such as a sample rate
    sample = sample_shapes.get(name)
    if sample is None:
        return None
    from bloatguard.samples import layout

    sample_dtype, stored = sample
    # The same two layouts fidelity reads: (N, *shape), or (N, *shape[1:]) for a free batch.
    found = layout(dims, stored) if dims is not None else None
    shape = found[1] if found is not None else tuple(stored[1:])
    if sample_dtype not in FEEDABLE:
        notes.append(f"samples for {name!r} ignored: dtype {sample_dtype} cannot be fed")
    elif dims is not None and found is None or not _fits(dims, shape):
        notes.append(f"samples for {name!r} ignored: shape {list(shape)} does not fit the "
                     f"input's {_show(dims)}")
    else:  # the sample's values too, unless a pin overrides them
        return list(shape), "pinned" if name in pins else "sample"
    return None


def _pin_shape(value: Any) -> tuple[int, ...]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        value = value[0]
    return tuple(shape)


# --- .npz headers -------------------------------------------------------------------------------

def _sample_shapes(path: Path, notes: list[str]) -> dict[str, tuple[str, tuple[int, ...]]]:
    """{array name: (dtype, shape)} from the .npy headers, without reading the data."""
    from bloatguard.errors import ConfigError
    from bloatguard.samples import check_file

    if path.suffix.lower() != ".npz":
        return {}  # .csv samples describe one [batch, features] input: batch 1 covers it
    try:
        check_file(path)  # a regular file of the project, not a link to anywhere
    except ConfigError as exc:
        notes.append(f"samples file not used for latency: {exc}")
        return {}
    try:
        with zipfile.ZipFile(path) as archive:
            out = {}
            for member in archive.namelist():
                if not member.endswith(".npy"):
                    continue
                with archive.open(member) as handle:
                    dtype, shape, _ = _npy_header(handle)
                out[member[:-4]] = (dtype.name if dtype.name in FEEDABLE else str(dtype), shape)
            return out
    except (OSError, ValueError, zipfile.BadZipFile, zlib.error) as exc:
        notes.append(f"samples file {path} not used for latency: {exc}")
        return {}


def _npy_header(handle):
    """(dtype, shape, fortran order) of an .npy stream, leaving it at the first data byte."""
    import numpy as np

    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
    return dtype, tuple(shape), fortran


def read_first_sample(path: str, name: str, shape: tuple[int, ...]):
    """Sample 0 of array `name`, reading only its bytes: the leading axis is the outermost in C
    order, so the first sample is the first chunk of the data. Never unpickles."""
    import numpy as np

    with zipfile.ZipFile(path) as archive, archive.open(f"{name}.npy") as handle:
        dtype, stored, fortran = _npy_header(handle)
        if dtype.hasobject:
            raise ValueError(f"array {name!r} holds Python objects; bloatguard never unpickles")
        count = math.prod(shape)
        if fortran or tuple(stored) == tuple(shape):
            array = np.frombuffer(handle.read(), dtype=dtype).reshape(stored, order="F" if fortran else "C")
            array = array.reshape(shape) if tuple(stored) == tuple(shape) else array[0]
        else:
            array = np.frombuffer(handle.read(count * dtype.itemsize), dtype=dtype).reshape(shape)
    return array


# --- arrays (in the child) ----------------------------------------------------------------------

def materialize(feeds: list[Feed]) -> dict[str, Any]:
    """The arrays of a plan. Random values are seeded by the input's name, so base and head,
    and every run, see identical inputs."""
    import numpy as np

    arrays = {}
    for feed in feeds:
        dtype = np.dtype(feed.dtype)
        rng = np.random.default_rng(zlib.crc32(feed.name.encode()))
        if feed.source == "sample":
            assert feed.sample is not None  # plan_feeds names the .npz of every sample feed
            array = read_first_sample(feed.sample, feed.name, feed.shape)
        elif feed.source == "pinned":
            array = np.broadcast_to(np.asarray(feed.value, dtype=dtype), feed.shape)
        elif dtype.kind == "f":
            array = rng.random(feed.shape, dtype=np.float64).astype(dtype)
        elif dtype.kind == "b":
            array = rng.integers(0, 2, feed.shape).astype(bool)
        else:
            info = np.iinfo(dtype)
            low = min(max(feed.int_range[0], info.min), info.max)
            high = max(min(feed.int_range[1], info.max), low)
            array = rng.integers(low, high, feed.shape, dtype=dtype, endpoint=True)
        # A real C-contiguous copy (ascontiguousarray would turn a scalar into shape (1,)).
        arrays[feed.name] = np.array(array, dtype=dtype, order="C", copy=True)
    return arrays
