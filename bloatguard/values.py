"""Tensor values for the rules that need more than shapes (zeros, duplicates, dead columns).

Values are read one tensor at a time and, where the layout allows, straight from an mmap of the
file (raw ONNX data, external data, safetensors), so checking a 2 GB model does not cost 2 GB of
extra memory. Everything read here was validated by the readers first: external data locations,
offsets and lengths, safetensors header ranges.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from bloatguard.facts import NUMPY_DTYPES, ModelFacts

if TYPE_CHECKING:
    from bloatguard import opgraph

_DIRECT = NUMPY_DTYPES  # raw little-endian bytes of these can be viewed as arrays directly


@dataclass
class Tensor:
    name: str
    where: str
    dtype: str
    array: np.ndarray


class TensorValues:
    """Values of a model's stored tensors. Use as a context manager so the mmaps are closed."""

    def __init__(self, facts: ModelFacts, path: Path | None = None) -> None:
        self.facts = facts
        self.path = path or facts.file
        self._maps: dict[Path, mmap.mmap] = {}

    def __enter__(self) -> TensorValues:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for mapped in self._maps.values():
            try:
                mapped.close()
            except BufferError:
                pass  # an array view is still alive; the GC unmaps it
        self._maps.clear()

    def _map(self, path: Path) -> mmap.mmap:
        if path not in self._maps:
            with open(path, "rb") as handle:
                self._maps[path] = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        return self._maps[path]

    @property
    def _raw(self):
        """The reader's list of tensors stored as plain arrays (facts.RawTensor), or None."""
        return getattr(self.facts.handle, "raw_tensors", None)

    @property
    def available(self) -> bool:
        return self.path is not None and (self.facts.format == "onnx" or self._raw is not None)

    def __iter__(self) -> Iterator[Tensor]:
        if self.path is None:
            return
        if self.facts.format == "onnx":
            yield from self._onnx()
        elif self._raw is not None:
            yield from self._arrays(self._raw)

    # ONNX ------------------------------------------------------------------------------------

    def _onnx(self) -> Iterator[Tensor]:
        from bloatguard.formats.onnx import stored_tensors
        from bloatguard.graph import dtype_name

        for where, tensor in stored_tensors(self.facts.handle.proto):
            array = self.onnx_array(tensor)
            if array is not None:
                yield Tensor(tensor.name, where, dtype_name(tensor.data_type), array)

    def onnx_array(self, tensor) -> np.ndarray | None:
        """The value of a (weightless) TensorProto from the ONNX reader."""
        from onnx import numpy_helper

        from bloatguard.formats.onnx_wire import EMBEDDED_KEY
        from bloatguard.graph import dtype_name

        entries = {e.key: e.value for e in tensor.external_data}
        dtype = dtype_name(tensor.data_type)
        shape = tuple(tensor.dims)
        if tensor.data_location == 1:  # EXTERNAL, validated by the reader
            target = self.path.parent / entries["location"]
            offset = int(entries.get("offset", "0"))
            return self._view(self._map(target), offset, dtype, shape) if dtype in _DIRECT else None
        if EMBEDDED_KEY in entries:
            field, offset, length = entries[EMBEDDED_KEY].split(":")
            offset, length = int(offset), int(length)
            if field == "raw_data" and dtype in _DIRECT:
                return self._view(self._map(self.path), offset, dtype, shape)
            return self._decode_field(tensor, field, offset, length)
        try:
            return numpy_helper.to_array(tensor)
        except Exception:
            return None

    def array(self, tensor: opgraph.Tensor) -> np.ndarray | None:
        """The value of a constant of the op graph (bloatguard.opgraph.Tensor), read from the
        model's file when the graph does not hold it (weights); None when it cannot be read.
        A tensor the view made up (a Constant's `value_ints`) has no `ref`: the graph holds it."""
        if self.path is not None and self.facts.format == "onnx" and tensor.ref is not None:
            return self.onnx_array(tensor.ref)
        return tensor.inline()

    @staticmethod
    def _view(mapped: mmap.mmap, offset: int, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
        count = int(np.prod(shape)) if shape else 1
        array = np.frombuffer(mapped, dtype=np.dtype(dtype).newbyteorder("<"), count=count, offset=offset)
        return array.reshape(shape)

    def _decode_field(self, tensor, field: str, offset: int, length: int) -> np.ndarray | None:
        """Rebuild a tensor whose data field was skipped: copy the dims/dtype, put the field's
        bytes back, and let onnx decode it (packed varints, float16 in int32_data, ...)."""
        import onnx
        from onnx import numpy_helper

        from bloatguard.formats.onnx_wire import _TENSOR_DATA_FIELDS, _key_and_len

        number = next(n for n, name in _TENSOR_DATA_FIELDS.items() if name == field)
        shell = onnx.TensorProto()
        shell.dims.extend(tensor.dims)
        shell.data_type = tensor.data_type
        payload = self._map(self.path)[offset:offset + length]
        rebuilt = onnx.TensorProto.FromString(shell.SerializeToString() + _key_and_len(number, length) + payload)
        try:
            return numpy_helper.to_array(rebuilt)
        except Exception:
            return None

    # formats that store plain little-endian arrays (safetensors, TFLite buffers, GGUF) ---------

    def _arrays(self, raw) -> Iterator[Tensor]:
        mapped = self._map(self.path)
        for tensor in raw:
            if tensor.dtype in _DIRECT:
                yield Tensor(tensor.name, tensor.where, tensor.dtype,
                             self._view(mapped, tensor.offset, tensor.dtype, tensor.shape))
