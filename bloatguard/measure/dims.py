"""Which dims a model's inputs run with when the config does not give them all: one policy,
shared by MACs counting and by the feeds latency and `fix` generate, so that both describe the
same inference.

- Dims the user fixed (configured shapes, pinned values, samples) are taken as they are, and a
  symbolic dim fixed on one input is fixed on every input using the same name: `batch` in
  images[batch, 3, 224, 224] is the `batch` of state[2, batch, 128].
- An unknown leading dim of an input of rank >= 2 is batch 1 (the published convention), and
  binds its name for the other inputs too.
- Whatever is still unknown stays unknown, for the caller to report.

The result does not depend on the order of the inputs.
"""

from __future__ import annotations

from typing import Mapping, Sequence

Dims = list  # of int (known), str (symbolic name) or None (anonymous unknown)


def resolve_dims(declared: dict[str, Dims | None], fixed: dict[str, list[int]]
                 ) -> tuple[dict[str, Dims], list[str]]:
    """(input -> dims, notes). `declared`: every input's declared dims, in input order (None
    when it declares no shape); `fixed`: the inputs whose dims the user gave. Inputs that are
    neither fixed nor shaped are left out of the result."""
    bindings: dict[str, tuple[int, str]] = {}  # dim name -> (value, input it was fixed on)
    for name, dims in fixed.items():
        for want, got in zip(declared.get(name) or (), dims):
            if isinstance(want, str):
                bindings.setdefault(want, (got, name))
    free = {name: list(dims) for name, dims in declared.items()
            if name not in fixed and dims is not None}
    notes: list[str] = []
    for name, dims in free.items():
        lead = dims[0] if len(dims) >= 2 else 0
        if isinstance(lead, int) or lead in bindings:
            continue
        if isinstance(lead, str):
            bindings[lead] = (1, name)
        dims[0] = 1
        notes.append(f"assumed batch 1 for input {name!r}")
    for name, dims in free.items():
        for axis, dim in enumerate(dims):
            bound = bindings.get(dim) if isinstance(dim, str) else None
            if bound is not None and bound[1] != name:
                dims[axis] = bound[0]
                note = f"input {name!r}: dim {dim!r} = {bound[0]}, as on input {bound[1]!r}"
                if note not in notes:
                    notes.append(note)
    return {**{name: list(dims) for name, dims in fixed.items()}, **free}, notes


def check_configured(model: str, declared: Mapping[str, Sequence[int | str | None] | None],
                     configured: dict[str, list[int]]) -> None:
    """Refuse a configured shape that contradicts the model: a dim the model fixes can only be
    run at that value (onnxruntime refuses any other), so counting or timing another one would
    describe an inference that cannot happen. Raises ConfigError naming the model, the input,
    the axis and both values; symbolic and unknown dims take any configured value."""
    from bloatguard.errors import ConfigError

    for name, shape in configured.items():
        dims = declared.get(name)
        if dims is None:
            continue  # no such input, or no declared shape: nothing to contradict
        where = (f"{model}: [tool.bloatguard.inputs] shape {list(shape)} for input {name!r} "
                 f"contradicts the model's {_show(dims)}")
        if len(dims) != len(shape):
            raise ConfigError(f"{where}: rank {len(shape)}, the model's is {len(dims)}; give "
                              "one dim per axis")
        for axis, (fixed, value) in enumerate(zip(dims, shape)):
            if isinstance(fixed, int) and fixed >= 0 and fixed != value:
                raise ConfigError(f"{where}: axis {axis} is fixed at {fixed} in the model, "
                                  f"configured {value}; configure {fixed}, or export the model "
                                  "with that axis dynamic")


def _show(dims: Sequence[int | str | None]) -> str:
    def one(dim) -> str:
        if isinstance(dim, int):
            return str(dim) if dim >= 0 else "?"  # exporters write -1 for unknown
        return dim or "?"

    return "[" + ", ".join(one(d) for d in dims) + "]"
