"""Sample inputs from `[tool.bloatguard.samples]`: `.npz` (one array per input name) or `.csv`
(a header row of column names, one row per sample, for a model with a single 2-D input).

An `.npz` array holds N samples in one of two layouts (the README's `fix` section documents them):

- `(N, *input_shape)`: samples stacked on a new leading axis, e.g. (16, 1, 3, 320, 320) for an
  input [1, 3, 320, 320];
- `(N, *input_shape[1:])`, when the input's leading (batch) dim is 1 or symbolic: the natural way
  to stack images or table rows, e.g. (16, 3, 320, 320) for the same input, or (rows, features)
  for an input [batch, features]. Each sample is fed with a batch of 1.

Arrays come back as (N, *input shape) either way, and `Samples.layouts` says which layout each
array was read in, for the report. An array that fits neither is a ConfigError naming the file,
the array, its shape and the shapes expected: a samples file that silently feeds the wrong input
(16 images read as one batch of 16) is worse than none.
"""

from __future__ import annotations

import csv
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bloatguard.errors import ConfigError
from bloatguard.facts import NUMPY_DTYPES, ValueInfo

STACKED = "(N, *input_shape)"
UNBATCHED = "(N, *input_shape[1:])"


@dataclass
class Samples:
    path: Path
    arrays: dict[str, np.ndarray]  # input name -> (N, *input shape)
    columns: dict[str, list[str]] = field(default_factory=dict)  # csv header, by input
    layouts: dict[str, str] = field(default_factory=dict)  # input name -> STACKED or UNBATCHED

    @property
    def count(self) -> int:
        return next(iter(self.arrays.values())).shape[0] if self.arrays else 0

    def describe(self) -> list[str]:
        """How each array was read, one line each: the layout, the sample count and shape."""
        return [f"{self.path.name}: {name!r} read as {self.layouts[name]}: {array.shape[0]} "
                f"samples of shape {list(array.shape[1:])}"
                for name, array in self.arrays.items() if name in self.layouts]

    def rows(self, name: str) -> np.ndarray | None:
        """A 2-D input's samples as a (rows, features) table, every batch row of every sample."""
        array = self.arrays.get(name)
        if array is None or array.ndim != 3:
            return None
        return array.reshape(-1, array.shape[-1])


# What a samples file may cost the main process, which reads it: as much as `fix` ever feeds
# (fix.inputs.INPUT_BYTES_CAP), far less than a compression bomb unpacks to.
MAX_BYTES = 512 << 20


def load(path: Path, inputs: list[ValueInfo]) -> Samples:
    check_file(path)
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


def check_file(path: Path) -> None:
    """A samples file is a regular file, not a link (a committed link could point anywhere on
    the machine) or a device, and not larger than MAX_BYTES."""
    try:
        info = path.lstat()
    except OSError:
        raise ConfigError(f"{path}: samples file not found (configured in "
                          "[tool.bloatguard.samples])") from None
    if stat.S_ISLNK(info.st_mode):
        raise ConfigError(f"{path}: the samples file is a symbolic link; bloatguard opens only "
                          "regular files in the project: put the file itself there")
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{path}: the samples file is not a regular file")
    if info.st_size > MAX_BYTES:
        raise ConfigError(f"{path}: the samples file is larger than {MAX_BYTES >> 20} MiB; a few "
                          "hundred samples are all bloatguard uses")


def _npz_size(path: Path) -> None:
    """Refuse an .npz whose arrays unpack beyond MAX_BYTES before unpacking any: the declared
    sizes bound what zipfile decompresses, so a compression bomb is refused up front."""
    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(member.file_size for member in archive.infolist())
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ConfigError(f"{path}: not a readable .npz file ({exc})") from None
    if unpacked > MAX_BYTES:
        raise ConfigError(f"{path}: the samples unpack to {unpacked >> 20} MiB, more than "
                          f"{MAX_BYTES >> 20} MiB; a few hundred samples are all bloatguard uses")


def _load_npz(path: Path, inputs: list[ValueInfo]) -> Samples:
    by_name = {value.name: value for value in inputs}
    _npz_size(path)
    try:
        with np.load(path, allow_pickle=False) as archive:  # never unpickle: a pickle runs code
            raw = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ConfigError(f"{path}: not a readable .npz file ({exc})") from None
    unknown = sorted(set(raw) - set(by_name))
    if unknown:
        raise ConfigError(f"{path}: arrays {unknown} match no model input; the inputs are "
                          f"{sorted(by_name)}")
    samples = Samples(path, {})
    for name, array in raw.items():
        samples.arrays[name], samples.layouts[name] = _conform(path, by_name[name], array)
    return samples


def _conform(path: Path, value: ValueInfo, array: np.ndarray) -> tuple[np.ndarray, str]:
    """Check an array against the input's dtype and shape; return it as (N, *shape), with the
    layout it was read in."""
    where = f"{path}: array {value.name!r}"
    if value.dtype not in NUMPY_DTYPES:
        raise ConfigError(f"{where}: input type {value.dtype} cannot be fed from a samples file")
    if array.dtype.kind not in "biuf":
        raise ConfigError(f"{where}: expected numbers, got dtype {array.dtype}")
    layout = STACKED
    if value.shape is not None:
        array, layout = _stacked(where, tuple(value.shape), array)
    elif array.ndim == 0:
        raise ConfigError(f"{where}: a single value; stack samples on a leading axis (N, ...)")
    if array.shape[0] == 0:
        raise ConfigError(f"{where}: holds no samples")
    target = np.dtype(value.dtype)
    if target.kind in "iub" and array.dtype.kind == "f" and not np.all(np.mod(array, 1) == 0):
        raise ConfigError(f"{where}: input is {value.dtype} but the samples are fractional")
    return array.astype(target, copy=False), layout


def layout(shape, stored: tuple[int, ...]) -> tuple[str, tuple[int, ...]] | None:
    """(layout, shape of one sample) of an array of shape `stored` for an input declared
    `shape` (ints, names or None per dim), or None when it fits neither layout; their ranks
    differ by one, so at most one fits. Needs only the array's header: the latency feeds
    (bloatguard.measure.feeds) can read a sample file the way fidelity does."""
    shape = tuple(shape)
    if len(stored) == len(shape) + 1 and _fits(shape, stored[1:]):
        return STACKED, tuple(stored[1:])
    if len(shape) >= 1 and _free_batch(shape[0]) and len(stored) == len(shape) \
            and _fits(shape[1:], stored[1:]):
        return UNBATCHED, (1, *stored[1:])
    return None


def _stacked(where: str, shape: tuple, array: np.ndarray) -> tuple[np.ndarray, str]:
    """The array as (N, *shape), read in the layout its shape fits; else a ConfigError naming
    both layouts."""
    found = layout(shape, array.shape)
    if found is not None:
        return (array if found[0] == STACKED else array[:, np.newaxis]), found[0]
    unbatched = len(shape) >= 1 and _free_batch(shape[0])
    expected = _with_n(shape) + (f" or {_with_n(shape[1:])}" if unbatched else "")
    problem = f"shape {array.shape} does not fit input shape {_show(shape)}"
    if array.ndim == len(shape) + 1:  # the stacked layout's rank: say which dim is off
        axis, got, want = next((axis, got, want) for axis, (want, got)
                               in enumerate(zip(shape, array.shape[1:]))
                               if isinstance(want, int) and want != got)
        problem = (f"shape {array.shape}: dimension {axis} is {got}, the input needs {want} "
                   f"(input shape {_show(shape)})")
    raise ConfigError(f"{where}: {problem}; expected {expected}: N samples stacked on a new "
                      "leading axis")


def _fits(dims: tuple, shape: tuple) -> bool:
    return len(dims) == len(shape) and all(not isinstance(want, int) or want == got
                                           for want, got in zip(dims, shape))


def _free_batch(dim) -> bool:
    """A leading dim a sample may leave out: batch 1, or symbolic (then each sample is one)."""
    return not isinstance(dim, int) or dim == 1


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
    array, layout = _conform(path, shaped, stacked)
    return Samples(path, {value.name: array}, {value.name: header}, {value.name: layout})


def _dims(shape) -> list[str]:
    return [str(d) if isinstance(d, int) else (d or "?") for d in shape]


def _with_n(shape) -> str:
    return f"({', '.join(['N', *_dims(shape)])}{',' if not shape else ''})"


def _show(shape) -> str:
    return f"[{', '.join(_dims(shape))}]"
