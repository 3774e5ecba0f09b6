"""Sample inputs from `[tool.bloatguard.samples]`: `.npz` (one array per input name) or `.csv`
(a header row of column names, one row per sample, for a model with a single 2-D input).

Arrays come back as (N, *input shape): samples stacked on a new leading axis (DESIGN.md §3). An
`.npz` array with exactly the input's rank is taken as a single sample, so a tabular `X` of shape
(rows, features) works for an input [batch, features] without reshaping. Every problem is a
ConfigError naming the file: a samples file that silently feeds the wrong input is worse than none.
"""

from __future__ import annotations

import csv
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bloatguard.errors import ConfigError
from bloatguard.facts import NUMPY_DTYPES, ValueInfo



@dataclass
class Samples:
    path: Path
    arrays: dict[str, np.ndarray]  # input name -> (N, *input shape)
    columns: dict[str, list[str]] = field(default_factory=dict)  # csv header, by input

    @property
    def count(self) -> int:
        return next(iter(self.arrays.values())).shape[0] if self.arrays else 0

    def rows(self, name: str) -> np.ndarray | None:
        """A 2-D input's samples as a (rows, features) table, every batch row of every sample."""
        array = self.arrays.get(name)
        if array is None or array.ndim != 3:
            return None
        return array.reshape(-1, array.shape[-1])


def load(path: Path, inputs: list[ValueInfo]) -> Samples:
    if not path.is_file():
        raise ConfigError(f"{path}: samples file not found (configured in [tool.bloatguard.samples])")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        samples = _load_npz(path, inputs)
    elif suffix == ".csv":
        samples = _load_csv(path, inputs)
    else:
        raise ConfigError(f"{path}: samples must be a .npz (one array per input) or a .csv file")
    counts = {name: array.shape[0] for name, array in samples.arrays.items()}
    if len(set(counts.values())) > 1:
        raise ConfigError(f"{path}: inputs hold different numbers of samples {counts}; stack the "
                          "same samples of every input on the leading axis")
    return samples


def _load_npz(path: Path, inputs: list[ValueInfo]) -> Samples:
    by_name = {value.name: value for value in inputs}
    try:
        with np.load(path, allow_pickle=False) as archive:  # never unpickle (DESIGN.md §7)
            raw = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ConfigError(f"{path}: not a readable .npz file ({exc})") from None
    unknown = sorted(set(raw) - set(by_name))
    if unknown:
        raise ConfigError(f"{path}: arrays {unknown} match no model input; the inputs are "
                          f"{sorted(by_name)}")
    arrays = {name: _conform(path, by_name[name], array) for name, array in raw.items()}
    return Samples(path, arrays)


def _conform(path: Path, value: ValueInfo, array: np.ndarray) -> np.ndarray:
    """Check an array against the input's dtype and shape; return it as (N, *shape)."""
    where = f"{path}: array {value.name!r}"
    if value.dtype not in NUMPY_DTYPES:
        raise ConfigError(f"{where}: input type {value.dtype} cannot be fed from a samples file")
    if array.dtype.kind not in "biuf":
        raise ConfigError(f"{where}: expected numbers, got dtype {array.dtype}")
    if value.shape is not None:
        rank = len(value.shape)
        if array.ndim == rank:
            array = array[np.newaxis]
        if array.ndim != rank + 1:
            raise ConfigError(f"{where}: shape {array.shape} does not fit input shape "
                              f"{_dims(value.shape)}; stack samples on a new leading axis "
                              f"(N, {', '.join(_dims(value.shape))})")
        for axis, (want, got) in enumerate(zip(value.shape, array.shape[1:])):
            if isinstance(want, int) and want != got:
                raise ConfigError(f"{where}: dimension {axis} is {got}, the input needs {want} "
                                  f"(input shape {_dims(value.shape)})")
    if array.shape[0] == 0:
        raise ConfigError(f"{where}: holds no samples")
    target = np.dtype(value.dtype)
    if target.kind in "iub" and array.dtype.kind == "f" and not np.all(np.mod(array, 1) == 0):
        raise ConfigError(f"{where}: input is {value.dtype} but the samples are fractional")
    return array.astype(target, copy=False)


def _load_csv(path: Path, inputs: list[ValueInfo]) -> Samples:
    tabular = [v for v in inputs if v.shape is None or len(v.shape) == 2]
    if len(inputs) != 1 or not tabular:
        names = ", ".join(f"{v.name} {_dims(v.shape) if v.shape is not None else '?'}" for v in inputs)
        raise ConfigError(f"{path}: a .csv samples file feeds a model with one 2-D input "
                          f"[batch, features]; this model has {names}; use a .npz file")
    value = tabular[0]
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            table = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"{path}: cannot read CSV ({exc})") from None
    if len(table) < 2:
        raise ConfigError(f"{path}: expected a header row of column names and at least one row")
    header, rows = [c.strip() for c in table[0]], table[1:]
    width = value.shape[1] if value.shape is not None else None
    if isinstance(width, int) and len(header) != width:
        raise ConfigError(f"{path}: {len(header)} columns, input {value.name!r} has {width} features")
    data = np.empty((len(rows), len(header)), dtype=np.float64)
    for number, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise ConfigError(f"{path}: line {number} has {len(row)} cells, the header {len(header)}")
        try:
            data[number - 2] = [float(cell) for cell in row]
        except ValueError:
            raise ConfigError(f"{path}: line {number} holds a value that is not a number") from None
    # Each row is one sample of batch 1; the runner batches them again where the model allows.
    stacked = data[:, np.newaxis, :]
    shaped = ValueInfo(value.name, value.dtype, value.shape if value.shape is not None else (None, None))
    return Samples(path, {value.name: _conform(path, shaped, stacked)}, {value.name: header})


def _dims(shape) -> list[str]:
    return [str(d) if isinstance(d, int) else (d or "?") for d in shape]
