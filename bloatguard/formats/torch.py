"""PyTorch reader: ModelFacts from torch.save checkpoints and TorchScript archives, statically.

A .pt/.pth/.bin file is a pickle, and unpickling it runs whatever code it names. So this reader
never calls `pickle.load`, `torch.load` or `torch.jit.load`, and never imports torch. Instead:

1. every pickle in the file is scanned for the globals it references (`pickle_scan`); if any is
   outside the allowlist the file is reported (BG900) and not unpickled at all;
2. only then is it unpickled by `_RestrictedUnpickler`, whose `find_class` hands out bloatguard's
   own inert placeholders (a tensor placeholder records dtype, shape and where its bytes live)
   and whose `persistent_load` resolves storage references to zip records, never reading them;
3. the tensors reachable from the result are the model's weights, named like state dict keys.

Layouts handled: the zip archive torch.save has written since 1.6 (`<prefix>/data.pkl` plus one
record per storage under `<prefix>/data/`), TorchScript archives (the same, plus `code/` and
`constants.pkl`), the legacy format (a sequence of pickles followed by raw storages), and plain
pickles that are not checkpoints at all (scanned the same way).
"""

from __future__ import annotations

import io
import itertools
import math
import pickle
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable

from bloatguard.errors import UnreadableModel
from bloatguard.facts import ModelFacts, TensorInfo
from bloatguard.formats.pickle_scan import (
    ALLOWLIST,
    STORAGE_TYPES,
    PickleScanError,
    PickleTooLarge,
    WorkBudget,
    disallowed,
    global_name,
    is_torchscript_class,
    read_pickle,
    scan_globals,
    starts_like_pickle,
)
from bloatguard.formats.sniffing import SNIFF_BYTES

# data.pkl holds structure, not weights: a few KB for a 7B-parameter state dict. A larger one is
# a zip bomb or something that is not a checkpoint.
MAX_PICKLE_BYTES = 256 * 2**20
# No real tensor has more elements; a larger shape is corruption or a lie.
MAX_NUMEL = 2**48
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

REMEDY = "re-save the model with torch.save or restore the file from git"
UNSAFE_REMEDY = "re-save the weights as a plain state dict or as safetensors"
NO_GRAPH_NOTE = ("PyTorch checkpoints have no graph: compute (MACs) and activation memory are not "
                 "measured")
SCRIPT_NOTE = ("TorchScript code is not analysed: compute (MACs) and activation memory are not "
               "measured")

# torch dtype name -> bloatguard dtype name (facts.DTYPE_SIZES) and torch's bytes per element.
_DTYPES: dict[str, tuple[str, int]] = {
    "float64": ("float64", 8), "float32": ("float32", 4), "float16": ("float16", 2),
    "bfloat16": ("bfloat16", 2),
    "int64": ("int64", 8), "int32": ("int32", 4), "int16": ("int16", 2), "int8": ("int8", 1),
    "uint64": ("uint64", 8), "uint32": ("uint32", 4), "uint16": ("uint16", 2),
    "uint8": ("uint8", 1), "bool": ("bool", 1),
    "complex32": ("complex32", 4), "complex64": ("complex64", 8), "complex128": ("complex128", 16),
    "float8_e4m3fn": ("float8e4m3fn", 1), "float8_e4m3fnuz": ("float8e4m3fnuz", 1),
    "float8_e5m2": ("float8e5m2", 1), "float8_e5m2fnuz": ("float8e5m2fnuz", 1),
    "float8_e8m0fnu": ("float8e8m0", 1), "float4_e2m1fn_x2": ("float4_e2m1fn_x2", 1),
    "qint8": ("int8", 1), "qint32": ("int32", 4), "quint8": ("uint8", 1),
    "quint4x2": ("uint4", 1), "quint2x4": ("uint2", 1),
    "bits8": ("bits8", 1), "bits16": ("bits16", 2), "bits1x8": ("bits1x8", 1),
    "bits2x4": ("bits2x4", 1), "bits4x2": ("bits4x2", 1),
    **{f"int{b}": (f"int{b}", 1) for b in range(1, 8)},
    **{f"uint{b}": (f"uint{b}", 1) for b in range(1, 8)},
}
# Sub-byte dtypes pack several elements per stored byte, so shape and storage size are not
# related by the element size and the storage-extent check is skipped for them.
_PACKED = {"quint4x2", "quint2x4", *(f"int{b}" for b in range(1, 8)),
           *(f"uint{b}" for b in range(1, 8))}

_STORAGE_DTYPES = {
    "DoubleStorage": "float64", "FloatStorage": "float32", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
    "ComplexDoubleStorage": "complex128", "ComplexFloatStorage": "complex64",
    "QInt8Storage": "qint8", "QInt32Storage": "qint32", "QUInt8Storage": "quint8",
    "QUInt4x2Storage": "quint4x2", "QUInt2x4Storage": "quint2x4",
}
assert set(_STORAGE_DTYPES) == set(STORAGE_TYPES)


class _Refused(pickle.UnpicklingError):
    """Raised inside the restricted unpickler for anything a real checkpoint would not contain."""


def _brief(value: Any) -> str:
    """A short description of a value for a message, in time independent of the value.

    repr() is not: a tuple of shared nested tuples prints in 2^depth time, a large int does not
    print at all (Python refuses to convert more than 4300 digits).
    """
    if isinstance(value, (str, bytes)):
        return repr(value[:40]) + ("..." if len(value) > 40 else "")
    if isinstance(value, int) and value.bit_length() <= 64 or value is None or isinstance(
            value, float):
        return repr(value)
    if isinstance(value, int):
        return f"an integer of {value.bit_length()} bits"
    return f"a {type(value).__name__.lstrip('_')}"


# --- placeholders the restricted unpickler builds instead of torch objects --------------------
# They use __slots__, and the unpickler refuses BUILD on them, so a hostile pickle cannot
# overwrite a validated shape.


class _Inert:
    __slots__ = ()


class _Storage(_Inert):
    """One stored buffer: `record` identifies it (zip record path or legacy key)."""

    __slots__ = ("record", "dtype", "nbytes", "base")

    def __init__(self, record: str, dtype: str, nbytes: int, base: int = 0) -> None:
        self.record, self.dtype, self.nbytes, self.base = record, dtype, nbytes, base


class _Tensor(_Inert):
    """A tensor: what it holds (dtype, shape) and where its bytes are (storage, offset)."""

    __slots__ = ("dtype", "shape", "storage", "offset")

    def __init__(self, dtype: str, shape: tuple[int, ...], storage: _Storage | None,
                 offset: int) -> None:
        self.dtype, self.shape, self.storage, self.offset = dtype, shape, storage, offset


class _StorageType(_Inert):
    """A storage class such as torch.HalfStorage; UntypedStorage holds bytes ("uint8")."""

    __slots__ = ("dtype",)

    def __init__(self, dtype: str) -> None:
        self.dtype = dtype


class _Constant(_Inert):
    """A torch object that holds no weights: a dtype, qscheme, layout, device, torch.Tensor."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


class _Dict(_Inert):
    """A pickled dict, OrderedDict or Counter. Not a dict, so that nothing but the unpickler's
    key-checking handlers can put entries in (see _RestrictedUnpickler.checked_key); `state`
    holds what BUILD attached (a state dict's `_metadata`)."""

    __slots__ = ("entries", "state")

    def __init__(self) -> None:
        self.entries: dict[Any, Any] = {}
        self.state = None


class _Set(_Inert):
    """A pickled set or frozenset, its elements checked like dict keys (in insertion order)."""

    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries: dict[Any, None] = {}


class _ScriptObject:
    """An instance of a TorchScript class (`__torch__.*`): keeps its constructor args and state."""

    __slots__ = ("args", "state")
    args: tuple[Any, ...]
    state: Any

    def __new__(cls, *args):  # NEWOBJ calls only __new__, never __init__
        instance = object.__new__(cls)
        instance.args, instance.state = args, None
        return instance


_script_classes: dict[str, type] = {}


def _script_class(name: str) -> type:
    if name not in _script_classes:
        _script_classes[name] = type(name.rsplit(".", 1)[-1], (_ScriptObject,),
                                     {"__slots__": (), "__qualname__": name})
    return _script_classes[name]


# --- what allowlisted globals become ------------------------------------------------------------

# No tensor has more dimensions; bounding them keeps checking a shape cheap.
MAX_DIMS = 64


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if (not isinstance(value, (tuple, list)) or len(value) > MAX_DIMS or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_NUMEL
            for v in value)):
        raise _Refused(f"{what} is not a short sequence of plausible non-negative integers: "
                       f"{_brief(value)}")
    return tuple(value)


def _make_tensor(storage: Any, offset: Any, size: Any, stride: Any,
                 dtype: str | None = None) -> _Tensor:
    """A tensor placeholder, after checking that its shape fits inside its storage."""
    if not isinstance(storage, _Storage):
        raise _Refused("a tensor without a storage reference")
    dtype = dtype or storage.dtype
    shape = _plausible_shape(_ints(size, "tensor size"))
    strides = _ints(stride, "tensor stride")
    (offset,) = _ints((offset,), "storage offset")
    if len(strides) != len(shape):
        raise _Refused(f"tensor size {shape} and stride {strides} differ in length")
    itemsize = _DTYPES[dtype][1]
    if math.prod(shape) and dtype not in _PACKED:
        extent = offset + sum((n - 1) * s for n, s in zip(shape, strides)) + 1
        needed = (storage.base + extent) * itemsize
        if needed > storage.nbytes:
            raise _Refused(f"a {dtype} tensor of shape {list(shape)} needs {needed} bytes but "
                           f"its storage {_brief(storage.record)} holds {storage.nbytes}")
    return _Tensor(dtype, shape, storage, offset)


def _plausible_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    if math.prod(shape) > MAX_NUMEL:
        raise _Refused(f"a tensor of shape {list(shape)} (more than 2^48 elements) is "
                       "implausibly large")
    return shape


def _tensor(value: Any, what: str) -> _Tensor:
    if not isinstance(value, _Tensor):
        raise _Refused(f"{what} is not a tensor")
    return value


def _dtype(value: Any) -> str:
    if not isinstance(value, _Constant) or value.name not in _DTYPES:
        raise _Refused(f"not a torch dtype: {_brief(value)}")
    return value.name


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _make_tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    return _make_tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                       dtype, metadata=None):
    # The storage is untyped (bytes); the dtype comes separately (uint16, float8, ...).
    return _make_tensor(storage, storage_offset, size, stride, _dtype(dtype))


def _rebuild_parameter(data, requires_grad, backward_hooks, state=None):
    return _tensor(data, "a Parameter's data")


def _rebuild_qtensor(storage, storage_offset, size, stride, quantizer_params, requires_grad,
                     backward_hooks):
    # Per-channel scales and zero points are quantization metadata, not weights.
    return _make_tensor(storage, storage_offset, size, stride)


def _rebuild_sparse_tensor(layout, data):
    # The stored weights of a sparse tensor are its values (as the ONNX reader counts them):
    # COO data is (indices, values, size, ...); CSR/CSC/BSR/BSC data is
    # (compressed indices, plain indices, values, size).
    if not isinstance(data, tuple) or len(data) < 3:
        raise _Refused("malformed sparse tensor")
    coo = isinstance(layout, _Constant) and layout.name == "sparse_coo"
    return _tensor(data[1] if coo else data[2], "a sparse tensor's values")


def _rebuild_nested_tensor(buffer, sizes, strides, storage_offsets):
    return _tensor(buffer, "a nested tensor's buffer")


def _rebuild_meta_tensor_no_storage(dtype, size, stride, requires_grad):
    return _Tensor(_dtype(dtype), _plausible_shape(_ints(size, "tensor size")), None, 0)


def _rebuild_device_tensor_from_cpu_tensor(data, dtype, device, requires_grad):
    return _tensor(data, "a device tensor's data")


def _rebuild_from_type_v2(func, new_type, args, state):
    # Emitted for a plain tensor that carries Python attributes; func is one of the above.
    # Compared by identity: `func in a_set` would hash whatever the pickle put there.
    if not any(func is rebuild for rebuild in _REBUILDERS) or not isinstance(args, tuple):
        raise _Refused("_rebuild_from_type_v2 with an unexpected rebuild function")
    return func(*args)


_REBUILDERS = (
    _rebuild_tensor, _rebuild_tensor_v2, _rebuild_tensor_v3, _rebuild_parameter,
    _rebuild_qtensor, _rebuild_sparse_tensor, _rebuild_nested_tensor,
    _rebuild_meta_tensor_no_storage, _rebuild_device_tensor_from_cpu_tensor,
)


def _size(dims=()):
    return _ints(dims, "torch.Size")


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise _Refused(f"{what} is {_brief(value)}, not a string")
    return value


def _device(kind, index=None):
    kind = _text(kind, "a device type")
    if index is None:
        return _Constant(kind)
    return _Constant(f"{kind}:{_ints((index,), 'a device index')[0]}")


def _get_layout(name):
    return _Constant(_text(name, "a layout name").removeprefix("torch."))


def _bytearray(*args):
    # bytearray(10**12) would allocate a terabyte; pickles only ever pass the contents.
    if args and not isinstance(args[0], (bytes, str)):
        raise _Refused("bytearray called with a size instead of contents")
    return bytearray(*args)


def _identity(value, *ignored):
    return value


def _tensor_from_id(data):
    return data if isinstance(data, int) else None


def _placeholders() -> dict[str, Any]:
    table: dict[str, Any] = {
        "torch._utils._rebuild_tensor": _rebuild_tensor,
        "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
        "torch._utils._rebuild_tensor_v3": _rebuild_tensor_v3,
        "torch._utils._rebuild_parameter": _rebuild_parameter,
        "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
        "torch._utils._rebuild_qtensor": _rebuild_qtensor,
        "torch._utils._rebuild_sparse_tensor": _rebuild_sparse_tensor,
        "torch._utils._rebuild_nested_tensor": _rebuild_nested_tensor,
        "torch._utils._rebuild_meta_tensor_no_storage": _rebuild_meta_tensor_no_storage,
        "torch._utils._rebuild_device_tensor_from_cpu_tensor":
            _rebuild_device_tensor_from_cpu_tensor,
        "torch._tensor._rebuild_from_type_v2": _rebuild_from_type_v2,
        "torch.storage.UntypedStorage": _StorageType("uint8"),
        "torch.UntypedStorage": _StorageType("uint8"),
        "torch.device": _device,
        "torch.Size": _size,
        "torch.Tensor": _Constant("Tensor"),
        "torch.serialization._get_layout": _get_layout,
        "torch.jit._pickle.build_intlist": _identity,
        "torch.jit._pickle.build_tensorlist": _identity,
        "torch.jit._pickle.build_doublelist": _identity,
        "torch.jit._pickle.build_boollist": _identity,
        "torch.jit._pickle.build_tensor_from_id": _tensor_from_id,
        "torch.jit._pickle.restore_type_tag": _identity,
        "builtins.slice": slice, "builtins.complex": complex, "builtins.bytearray": _bytearray,
    }
    for storage, dtype in _STORAGE_DTYPES.items():
        table[f"torch.{storage}"] = table[f"torch.cuda.{storage}"] = _StorageType(dtype)
    for name in ALLOWLIST:
        module, _, attribute = name.rpartition(".")
        if module == "torch" and name not in table:  # dtypes and qschemes
            table[name] = _Constant(attribute)
    return {name: value for name, value in table.items() if name in ALLOWLIST}


_PLACEHOLDERS = _placeholders()
# Allowlisted containers that hash what they hold: the unpickler builds them itself, checking
# every key (see _RestrictedUnpickler.checked_key).
_CONTAINERS = {"collections.OrderedDict": "new_dict", "collections.Counter": "new_dict",
               "builtins.set": "new_set", "builtins.frozenset": "new_set"}
assert set(_CONTAINERS) <= ALLOWLIST


# --- the restricted unpickler --------------------------------------------------------------------


def _size_of(value: Any) -> int:
    """Work units for the elements a call may iterate or copy out of `value` (WorkBudget)."""
    if isinstance(value, (list, tuple)):
        return len(value)
    if isinstance(value, (_Dict, _Set)):
        return len(value.entries)
    if isinstance(value, (str, bytes, bytearray)):
        return len(value) // 64  # copying 64 bytes costs about what one opcode does
    return 0


def _call_cost(args: Any) -> int:
    if not isinstance(args, tuple):
        raise _Refused(f"call arguments are {_brief(args)}, not a tuple")
    return len(args) + sum(map(_size_of, args))


# A dict key (or set element) is hashed, and hashing a tuple hashes its elements afresh each
# time: a key of 64 nested tuples sharing their halves holds 2^64 elements for the hash.
MAX_KEY_ELEMENTS = 256

# The pure-Python unpickler's opcode handlers. typeshed types them as taking the C `Unpickler`;
# they are methods of `_Unpickler` and take any instance of it, _RestrictedUnpickler included.
_PY_DISPATCH: dict[int, Callable[[Any], None]] = pickle._Unpickler.dispatch


class _RestrictedUnpickler(pickle._Unpickler):
    """Unpickles only allowlisted globals, each as a placeholder; storages via `load_storage`.

    Built on the pure-Python unpickler because its opcode handlers can be replaced (the C
    unpickler's cannot), and the defaults are not safe for hostile input even with only
    allowlisted globals:
    - a dict or set hashes its keys, and a key built of shared nested tuples hashes in 2^depth
      steps: dicts and sets become the inert _Dict and _Set, whose keys are checked first;
    - SETITEM on a list with a slice key, or APPENDS onto a bytearray, copies a whole sequence
      per opcode: items go only into the containers torch writes into;
    - BUILD sets attributes on anything, bloatguard's placeholder functions included: it is
      accepted only on what torch builds (TorchScript objects, dicts carrying `_metadata`);
    - every opcode, and every element a call hands to a helper, is charged to the file's
      WorkBudget, which bounds the time and memory unpickling can take.
    """

    # Internals of the pure-Python unpickler that the handlers below use, which typeshed does
    # not declare: load() sets the first three, the last two are its methods.
    stack: list[Any]
    append: Callable[[Any], None]
    readline: Callable[[], bytes]
    pop_mark: Callable[[], list[Any]]
    _instantiate: Callable[[Any, list[Any]], None]

    def __init__(self, data: bytes, load_storage: Callable[[tuple], _Storage] | None,
                 budget: WorkBudget) -> None:
        super().__init__(io.BytesIO(data), encoding="utf-8")
        self._proto = data[1] if len(data) > 1 and data[0] == 0x80 else 0
        self._load_storage = load_storage
        self._budget = budget

    def find_class(self, module: str, name: str) -> Any:
        full = global_name(module, name, self._proto)
        if full in _CONTAINERS:
            return getattr(self, _CONTAINERS[full])
        if full in _PLACEHOLDERS:
            return _PLACEHOLDERS[full]
        if is_torchscript_class(full):
            return _script_class(full)
        raise _Refused(f"global {full} is not allowed")

    def persistent_load(self, pid: Any) -> Any:
        if self._load_storage is None:
            raise _Refused("a persistent reference outside a PyTorch checkpoint")
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise _Refused(f"unknown persistent reference {_brief(pid)}")
        self._budget.charge(_call_cost(pid))
        return self._load_storage(pid)

    # --- dict keys and set elements ---------------------------------------------------------

    def checked_key(self, key: Any) -> Any:
        """`key`, once hashing it is known to be cheap; refused otherwise.

        What checkpoints key by: strings, numbers, tuples of a few of them, tensors (TorchScript
        dicts). Strings cache their hash; a large int, or a tuple that shares its parts, would
        be hashed afresh, at a cost that can grow exponentially, every time it is used.
        """
        pending, elements = [key], 0
        while pending:
            item = pending.pop()
            elements += 1
            if elements > MAX_KEY_ELEMENTS:
                raise _Refused(f"a dict key or set element made of more than {MAX_KEY_ELEMENTS} "
                               "values: hashing keys like it can take exponential time")
            if isinstance(item, tuple):
                pending.extend(item)
            elif isinstance(item, int) and item.bit_length() > 64:
                raise _Refused(f"a dict key or set element that is {_brief(item)}: hashing it "
                               "takes time on every use, and checkpoints key by names and "
                               "small numbers")
            elif not isinstance(item, (str, bytes, int, float, complex, _Tensor, _Constant,
                                       _ScriptObject)) and item is not None:
                raise _Refused(f"a dict key or set element that is {_brief(item)}, which a "
                               "real unpickler could not hash either")
        self._budget.charge(elements)
        return key

    def new_dict(self, pairs: Any = ()) -> _Dict:
        """OrderedDict(pairs) and Counter(mapping). torch pickles an OrderedDict as
        OrderedDict() followed by SETITEMS, but the constructor takes pairs too."""
        result = _Dict()
        if isinstance(pairs, _Dict):
            result.entries.update(pairs.entries)
            return result
        for pair in self._sequence(pairs, "OrderedDict contents"):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise _Refused(f"an OrderedDict entry is {_brief(pair)}, not a (key, value) pair")
            result.entries[self.checked_key(pair[0])] = pair[1]
        return result

    def new_set(self, items: Any = ()) -> _Set:
        """set(items) and frozenset(items)."""
        result = _Set()
        for item in self._sequence(items, "set contents"):
            result.entries[self.checked_key(item)] = None
        return result

    @staticmethod
    def _sequence(value: Any, what: str) -> Any:
        if isinstance(value, (list, tuple)):
            return value
        if isinstance(value, _Set):
            return list(value.entries)
        raise _Refused(f"{what} is {_brief(value)}, not a list")

    def _target(self, kind: type, opcode: str) -> Any:
        """The container an opcode writes into, if it is one torch writes into that way."""
        if not self.stack or type(self.stack[-1]) is not kind:
            top = _brief(self.stack[-1]) if self.stack else "nothing"
            raise _Refused(f"{opcode} into {top} is not something torch writes")
        return self.stack[-1]

    # --- replaced opcode handlers (registered in `dispatch` below) -------------------------

    def _empty_dict(self) -> None:
        self.append(_Dict())

    def _dict(self) -> None:
        items = self.pop_mark()
        self.append(_Dict())
        self._set_items(items)

    def _setitem(self) -> None:
        value = self.stack.pop()
        key = self.stack.pop()
        self._set_items([key, value])

    def _setitems(self) -> None:
        self._set_items(self.pop_mark())

    def _set_items(self, items: list) -> None:
        target = self._target(_Dict, "SETITEM")
        if len(items) % 2:
            raise _Refused("SETITEMS with a key but no value")
        for index in range(0, len(items), 2):
            target.entries[self.checked_key(items[index])] = items[index + 1]

    def _empty_set(self) -> None:
        self.append(_Set())

    def _additems(self) -> None:
        items = self.pop_mark()
        target = self._target(_Set, "ADDITEMS")
        for item in items:
            target.entries[self.checked_key(item)] = None

    def _frozenset(self) -> None:
        self.append(self.new_set(self.pop_mark()))

    def _append(self) -> None:
        value = self.stack.pop()
        self._target(list, "APPEND").append(value)

    def _appends(self) -> None:
        items = self.pop_mark()
        self._target(list, "APPENDS").extend(items)

    def _build(self) -> None:
        state = self.stack.pop()
        if not self.stack or not isinstance(self.stack[-1], (_ScriptObject, _Dict)):
            top = _brief(self.stack[-1]) if self.stack else "nothing"
            raise _Refused(f"BUILD on {top} is not something torch writes")
        self.stack[-1].state = state

    def _reduce(self) -> None:
        self._budget.charge(_call_cost(self.stack[-1]))
        _PY_DISPATCH[pickle.REDUCE[0]](self)

    def _newobj(self) -> None:
        self._budget.charge(_call_cost(self.stack[-1]))
        _PY_DISPATCH[pickle.NEWOBJ[0]](self)

    def _newobj_ex(self) -> None:
        raise _Refused("NEWOBJ_EX (keyword constructor arguments) is not something torch writes")

    def _obj(self) -> None:
        args = self.pop_mark()
        if not args:
            raise _Refused("OBJ without a class")
        self._budget.charge(_call_cost(tuple(args)))
        self._instantiate(args[0], args[1:])

    def _inst(self) -> None:
        module = self.readline()[:-1].decode("ascii")
        name = self.readline()[:-1].decode("ascii")
        klass = self.find_class(module, name)
        args = self.pop_mark()
        self._budget.charge(_call_cost(tuple(args)))
        self._instantiate(klass, args)


_REPLACED = {
    pickle.EMPTY_DICT: _RestrictedUnpickler._empty_dict, pickle.DICT: _RestrictedUnpickler._dict,
    pickle.SETITEM: _RestrictedUnpickler._setitem, pickle.SETITEMS: _RestrictedUnpickler._setitems,
    pickle.EMPTY_SET: _RestrictedUnpickler._empty_set,
    pickle.ADDITEMS: _RestrictedUnpickler._additems,
    pickle.FROZENSET: _RestrictedUnpickler._frozenset,
    pickle.APPEND: _RestrictedUnpickler._append, pickle.APPENDS: _RestrictedUnpickler._appends,
    pickle.BUILD: _RestrictedUnpickler._build, pickle.REDUCE: _RestrictedUnpickler._reduce,
    pickle.NEWOBJ: _RestrictedUnpickler._newobj,
    pickle.NEWOBJ_EX: _RestrictedUnpickler._newobj_ex,
    pickle.OBJ: _RestrictedUnpickler._obj, pickle.INST: _RestrictedUnpickler._inst,
}


def _charged(handler: Callable[[Any], None]) -> Callable[[Any], None]:
    def run(unpickler: _RestrictedUnpickler) -> None:
        unpickler._budget.charge()
        handler(unpickler)

    return run


_RestrictedUnpickler.dispatch = {
    code: _charged(_REPLACED.get(bytes([code]), handler))
    for code, handler in _PY_DISPATCH.items()
}


def _unpickle(data: bytes, what: str, load_storage: Callable[[tuple], _Storage] | None,
              budget: WorkBudget) -> Any:
    try:
        return _RestrictedUnpickler(data, load_storage, budget).load()
    except UnreadableModel:
        raise
    except RecursionError:
        raise UnreadableModel(f"{what} nests too deeply to read", REMEDY) from None
    except Exception as exc:  # anything a damaged or unexpected pickle makes the unpickler raise
        raise UnreadableModel(f"{what} is not a PyTorch checkpoint pickle ({exc})",
                              REMEDY) from None


def _storage_type(pid: tuple, what: str) -> _StorageType:
    if not isinstance(pid[1], _StorageType):
        raise _Refused(f"{what}: storage reference without a storage type")
    return pid[1]


def _check_numel(value: Any) -> int:
    if not isinstance(value, int) or value < 0 or value > MAX_NUMEL:
        raise _Refused(f"implausible storage size {_brief(value)}")
    return value


# --- collecting tensors from the unpickled object -----------------------------------------------

# Names longer than this are cut: state dict keys are well under 200 characters, and a pickle
# nesting thousands of containers (or using huge keys) must not make naming cost quadratic.
MAX_NAME_LENGTH = 512


def _children(obj: Any) -> list[tuple[Any, Any]] | None:
    if isinstance(obj, _ScriptObject):
        obj = obj.state if obj.state is not None else obj.args
    if isinstance(obj, _Dict):
        return list(obj.entries.items())
    if isinstance(obj, (list, tuple)):
        return list(enumerate(obj))
    if isinstance(obj, _Set):
        return list(enumerate(obj.entries))
    return None


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key[:MAX_NAME_LENGTH]
    if isinstance(key, bytes):
        return key[:MAX_NAME_LENGTH].decode("utf-8", "replace")
    if isinstance(key, (int, float)) or key is None:
        return _brief(key)
    return f"<{_brief(key)}>"


def _collect(root: Any, budget: WorkBudget, prefix: str = "") -> list[tuple[str, _Tensor]]:
    """Every tensor reachable from `root`, named by the keys leading to it, in pickle order.

    Iterative, and each container is visited once: the memo lets a pickle share one object from
    many places (or nest deeply), which must not cost exponential time or the Python stack.
    A child's name is built only when the child turns out to be a tensor or a container. Each
    visit is charged to the file's budget, like the opcodes that built what is visited.
    """
    found: list[tuple[str, _Tensor]] = []
    seen: set[int] = set()
    pending: list[tuple[str, Any, Any]] = [("", prefix, root)]  # (parent's name, key, object)
    while pending:
        budget.charge()
        parent, key, obj = pending.pop()
        if id(obj) in seen:
            continue
        if isinstance(obj, _Tensor):
            seen.add(id(obj))
            found.append((_child_name(parent, key) or "tensor", obj))
            continue
        children = _children(obj)
        if children is None:
            continue
        seen.add(id(obj))
        name = _child_name(parent, key)
        pending.extend((name, child_key, value) for child_key, value in reversed(children))
    return found


def _child_name(parent: str, key: Any) -> str:
    if len(parent) >= MAX_NAME_LENGTH:
        return parent
    name = f"{parent}.{_key(key)}" if parent else _key(key)
    return name[:MAX_NAME_LENGTH]


def _add_tensors(facts: ModelFacts, named: list[tuple[str, _Tensor]], where: str) -> None:
    """Tensors as TensorInfo; tied weights (same storage bytes and shape) are counted once."""
    seen: dict[tuple, str] = {}
    tied = facts.extra.setdefault("tied", [])
    # Bytes per storage record, summed into storage_bytes by _finish (a storage shared by
    # several tensors is stored, and counted, once).
    storages = facts.extra.setdefault("_storages", {})
    for name, tensor in named:
        if tensor.storage is not None:
            storages[tensor.storage.record] = tensor.storage.nbytes
            key = (tensor.storage.record, tensor.storage.base + tensor.offset, tensor.shape)
            if key in seen:
                tied.append([name, seen[key]])
                continue
            seen[key] = name
        dtype = _DTYPES[tensor.dtype][0]
        facts.tensors.append(TensorInfo(name=name, dtype=dtype, shape=tensor.shape, where=where))


def _finish(facts: ModelFacts) -> ModelFacts:
    storages = facts.extra.pop("_storages", {})
    facts.extra["storage_bytes"] = sum(storages.values())
    if not facts.extra.get("tied"):
        facts.extra.pop("tied", None)
    return facts


# --- scanning ----------------------------------------------------------------------------------


@dataclass
class _Pickle:
    """One pickle of a file. `oversized` is set when only a prefix of it could be read."""

    what: str
    data: bytes
    oversized: str | None = None


def _scan(facts: ModelFacts, pickles: Iterable[_Pickle], budget: WorkBudget) -> bool:
    """Scan every pickle; True if unpickling may go ahead.

    Globals outside the allowlist make the file unsafe: they are recorded (BG900 reports them),
    and nothing is unpickled, so the weights stay unknown. A pickle that does not parse (or is too large to read
    whole) is unreadable, but its globals up to that point still count: a real unpickler would
    have imported them first.
    """
    names: list[str] = []
    damage: str | None = None
    for item in pickles:
        try:
            names += scan_globals(item.data, budget)
        except PickleScanError as exc:
            names += exc.globals_seen
            damage = damage or f"{item.what}: {exc.cause}"
        if item.oversized:  # its prefix "ends early" only because reading stopped there
            damage = f"{item.what}: {item.oversized}"
    # The allowlisted globals seen, for reports; TorchScript class names are the model's own.
    facts.extra["pickle_globals"] = sorted({n for n in names if not is_torchscript_class(n)})
    unsafe = disallowed(names)
    if unsafe:
        facts.unsafe_globals = unsafe
        facts.weights_unknown = True
        facts.note("weights not read: the pickle names globals outside the allowlist (see BG900); "
                   + UNSAFE_REMEDY)
        if damage:
            facts.note(f"the pickle is also damaged ({damage})")
        return False
    if damage:
        raise UnreadableModel(damage, REMEDY)
    return True


# --- zip archives (torch.save since 1.6, TorchScript) -------------------------------------------

# What torch's zip reader (miniz) can decompress; a record compressed any other way (bzip2,
# lzma) is one torch.load cannot read either. torch.save writes every record stored;
# TorchScript deflates its code and debug info.
_READABLE_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
# Bytes that inflating deflated records may produce, in all: TorchScript's code and debug info
# are kilobytes to a few MB, while a deflate bomb expands a thousandfold.
MAX_INFLATED_BYTES = 256 * 2**20
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., name length, extra field length


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, NotImplementedError,
            EOFError) as exc:
        raise UnreadableModel(f"not a valid zip archive ({exc}); the file may be truncated",
                              REMEDY) from None


def _loader_name(info: zipfile.ZipInfo) -> bytes:
    """A record's name as torch's reader compares it: the raw bytes, ASCII letters folded.

    miniz looks names up case-insensitively, so `arc/DATA.PKL` is the `arc/data.pkl` torch
    loads; zipfile decodes names (from UTF-8 or cp437) and compares them exactly.
    """
    encoding = "utf-8" if info.flag_bits & 0x800 else "cp437"
    return info.orig_filename.encode(encoding).lower()  # bytes.lower() folds ASCII only


class _Archive:
    """The records of a torch zip archive, looked up the way torch looks them up."""

    def __init__(self, archive: zipfile.ZipFile) -> None:
        self.records: dict[bytes, zipfile.ZipInfo] = {}
        for info in archive.infolist():
            seen = self.records.setdefault(_loader_name(info), info)
            if seen is not info:
                # Two records torch cannot tell apart: it loads whichever its lookup finds, a
                # classic way to smuggle a second payload past a scanner that reads the other.
                kind = ("duplicate records" if seen.filename == info.filename
                        else "records whose names differ only in case, which torch cannot "
                             "tell apart")
                raise UnreadableModel(f"the zip archive has {kind} ({seen.filename}, "
                                      f"{info.filename})", REMEDY)
        self.prefix = self._prefix()

    def _prefix(self) -> bytes:
        """The top directory holding data.pkl: torch uses the first record's directory."""
        candidates = [name[:-len(b"/data.pkl")] for name in self.records
                      if name.endswith(b"/data.pkl") and name.count(b"/") == 1]
        if not candidates:
            raise UnreadableModel("a zip archive without data.pkl: not a PyTorch checkpoint",
                                  "check that this is a PyTorch model, or exclude it in the config")
        first = next(iter(self.records)).split(b"/", 1)[0]
        return first if first in candidates else candidates[0]

    def get(self, name: str) -> zipfile.ZipInfo | None:
        """The record torch reads for `name`, a path under the top directory."""
        return self.records.get(self.prefix + b"/" + name.encode("utf-8").lower())

    def pickles(self) -> list[zipfile.ZipInfo]:
        """Every pickle in the archive: data.pkl, constants.pkl, traced_inputs.pkl and the
        TorchScript *.debug_pkl files, whatever their case; a loader may read any of them."""
        return [info for name, info in self.records.items() if name.endswith(b"pkl")]


def _check_records(archive: zipfile.ZipFile, path: Path, file_size: int) -> None:
    """Integrity checks on the central directory and the local headers, before inflating
    anything: each record lies inside the file, after the previous one (overlapping records
    are how zip bombs multiply their output), is compressed in a way torch can read, and
    declares sizes that bound what inflating it may produce."""
    inflated = 0
    end_of_previous = 0
    with open(path, "rb") as handle:
        for info in sorted(archive.infolist(), key=lambda i: i.header_offset):
            if info.flag_bits & 0x1:
                raise UnreadableModel(f"zip record {info.filename} is encrypted", REMEDY)
            if info.compress_type not in _READABLE_METHODS:
                raise UnreadableModel(
                    f"zip record {info.filename} uses compression method {info.compress_type}, "
                    "which torch.load cannot read (only stored or deflated records)", REMEDY)
            if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
                raise UnreadableModel(f"zip record {info.filename} has inconsistent sizes", REMEDY)
            if info.compress_type == zipfile.ZIP_DEFLATED:
                inflated += info.file_size
            if inflated > MAX_INFLATED_BYTES:
                raise UnreadableModel(
                    f"zip record {info.filename} would inflate the compressed records to more "
                    f"than {MAX_INFLATED_BYTES // 2**20} MiB (a zip bomb?)", REMEDY)
            if info.header_offset < end_of_previous:
                raise UnreadableModel(f"zip record {info.filename} overlaps the record before "
                                      "it (a zip bomb?)", REMEDY)
            end_of_previous = _record_end(handle, info)
            if end_of_previous > file_size:
                raise UnreadableModel(f"zip record {info.filename} extends past the end of the "
                                      "file; the file is truncated or corrupt", REMEDY)


def _record_end(handle: BinaryIO, info: zipfile.ZipInfo) -> int:
    """Where a record's compressed data ends, from its local header."""
    handle.seek(info.header_offset)
    header = handle.read(_LOCAL_HEADER.size)
    if len(header) < _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
        raise UnreadableModel(f"zip record {info.filename} has no local header where the "
                              "central directory says; the file is corrupt", REMEDY)
    _, name_length, extra_length = _LOCAL_HEADER.unpack(header)
    return info.header_offset + _LOCAL_HEADER.size + name_length + extra_length + info.compress_size


def _read_record(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> _Pickle:
    """A pickle record; beyond MAX_PICKLE_BYTES only its start, which is still scanned."""
    what = info.filename.rsplit("/", 1)[-1]
    try:
        with archive.open(info) as record:
            data = record.read(MAX_PICKLE_BYTES)
    except Exception as exc:  # BadZipFile, zlib.error, EOFError, ... for a damaged record
        raise UnreadableModel(f"cannot read {info.filename} from the zip archive ({exc})",
                              REMEDY) from None
    if info.file_size > MAX_PICKLE_BYTES:
        return _Pickle(what, data, f"{info.file_size} bytes, more than a checkpoint's pickle "
                                   f"ever needs ({MAX_PICKLE_BYTES // 2**20} MiB)")
    return _Pickle(what, data)


def _zip_storage_loader(archive: _Archive, directory: str) -> Callable[[tuple], _Storage]:
    """persistent_load for zip archives: ('storage', type, key, location, numel) -> zip record."""
    loaded: dict[str, _Storage] = {}

    def load(pid: tuple) -> _Storage:
        if len(pid) != 5 or not isinstance(pid[2], str):
            raise _Refused(f"malformed storage reference {_brief(pid)}")
        storage_type = _storage_type(pid, "data.pkl")
        key = pid[2]
        if key not in loaded:
            info = archive.get(f"{directory}/{key}")
            if info is None:
                raise UnreadableModel(f"storage {directory}/{_brief(key)} referenced by the "
                                      "pickle is missing from the archive", REMEDY)
            declared = _check_numel(pid[4]) * _DTYPES[storage_type.dtype][1]
            if info.file_size < declared:
                raise UnreadableModel(f"storage {info.filename} holds {info.file_size} bytes "
                                      f"but the pickle declares {declared}", REMEDY)
            loaded[key] = _Storage(info.filename, storage_type.dtype, info.file_size)
        return loaded[key]

    return load


def _check_crcs(archive: zipfile.ZipFile) -> None:
    """Read every record to its end so zipfile verifies its CRC-32: a flipped byte in a weight
    storage is corruption to report, not a model to measure. Streamed, so memory stays flat;
    _check_records has bounded what inflating the records can produce."""
    for info in archive.infolist():
        try:
            with archive.open(info) as record:
                while record.read(1 << 22):
                    pass
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, ValueError) as exc:
            # ValueError covers undecodable record names in a damaged local header.
            raise UnreadableModel(f"zip record {info.filename} is corrupt ({exc})", REMEDY) from None


def _read_zip(path: Path, facts: ModelFacts) -> ModelFacts:
    with _open_zip(path) as opened:
        archive = _Archive(opened)
        _check_records(opened, path, facts.file_size)
        _check_crcs(opened)
        script = archive.get("constants.pkl") is not None or any(
            name.startswith(archive.prefix + b"/code/") for name in archive.records)
        facts.format = "torchscript" if script else "pytorch"
        facts.extra["serialization"] = "zip"
        # data.pkl and constants.pkl hold the weights; every other pickle (traced inputs,
        # debug info, anything an attacker added) is scanned too, because a loader reads it.
        unpickled = {name: info for name in ("data", "constants")
                     if (info := archive.get(f"{name}.pkl")) is not None}
        weights = {name: _read_record(opened, info) for name, info in unpickled.items()}
        others = (_read_record(opened, info) for info in archive.pickles()
                  if info not in unpickled.values())
        budget = WorkBudget()
        if not _scan(facts, itertools.chain(weights.values(), others), budget):
            return facts
        where = "torchscript" if script else "state_dict"
        for name, item in weights.items():
            loader = _zip_storage_loader(archive, name)
            root = _unpickle(item.data, item.what, loader, budget)
            prefix = "constants" if name == "constants" else ""
            _add_tensors(facts, _collect(root, budget, prefix), where)
    return _finish(facts)


# --- legacy torch.save files and plain pickles ------------------------------------------------


@dataclass
class _LegacyStorages:
    """persistent_load for the legacy format: storage bytes follow the pickles in the file."""

    storages: dict[str, _Storage] = field(default_factory=dict)

    def __call__(self, pid: tuple) -> _Storage:
        # ('storage', type, root_key, location, numel, view_metadata)
        if len(pid) != 6 or not isinstance(pid[2], str):
            raise _Refused(f"malformed storage reference {_brief(pid)}")
        storage_type = _storage_type(pid, "legacy checkpoint")
        key = pid[2]
        if key not in self.storages:
            nbytes = _check_numel(pid[4]) * _DTYPES[storage_type.dtype][1]
            self.storages[key] = _Storage(key, storage_type.dtype, nbytes)
        root = self.storages[key]
        view = pid[5]
        if view is None:
            return root
        # Pre-1.0 storage views: (view_key, offset, size) into the root storage.
        if not (isinstance(view, tuple) and len(view) == 3):
            raise _Refused("malformed storage view")
        _, offset, size = view
        (offset, size) = _ints((offset, size), "storage view")
        return _Storage(key, root.dtype, root.nbytes, base=offset)


def _next_pickle(handle: BinaryIO, what: str) -> _Pickle:
    try:
        return _Pickle(what, read_pickle(handle, MAX_PICKLE_BYTES))
    except PickleTooLarge as exc:
        return _Pickle(what, exc.prefix, exc.cause)


def _read_pickles(path: Path, facts: ModelFacts) -> ModelFacts:
    with open(path, "rb") as handle:
        first = _next_pickle(handle, "the pickle")
        budget = WorkBudget()
        if not first.oversized and _is_legacy_magic(first.data):
            return _read_legacy(handle, facts, first, budget)
        return _read_plain(handle, facts, first, budget)


def _is_legacy_magic(data: bytes) -> bool:
    """Whether this first pickle is legacy torch.save's magic number.

    torch.load only compares what the first pickle evaluates to, so it is unpickled rather
    than compared with the bytes torch.save writes (PROTO 2, LONG1 ...): a pickle without the
    PROTO header, or one spelling the number differently, loads just the same.
    """
    if len(data) > 64:  # do not unpickle a large plain pickle twice just to find out
        return False
    try:
        if scan_globals(data):
            return False
        return _RestrictedUnpickler(data, None, WorkBudget()).load() == LEGACY_MAGIC
    except Exception:  # not a valid pickle either way; the plain path reports why
        return False


def _read_legacy(handle: BinaryIO, facts: ModelFacts, magic: _Pickle,
                 budget: WorkBudget) -> ModelFacts:
    facts.format = "pytorch"
    facts.extra["serialization"] = "legacy"
    pickles = [magic]
    for what in ("the protocol version", "sys_info", "the main pickle", "the storage key list"):
        pickles.append(_next_pickle(handle, what))
        if pickles[-1].oversized:  # the rest of the file cannot be located
            break
    if not _scan(facts, pickles, budget):
        return facts
    _, version, _, main, keys = (item.data for item in pickles)
    version = _unpickle(version, "the protocol version", None, budget)
    if version != LEGACY_PROTOCOL_VERSION:
        raise UnreadableModel(f"unsupported legacy torch.save protocol version {_brief(version)}",
                              REMEDY)
    storages = _LegacyStorages()
    root = _unpickle(main, "the main pickle", storages, budget)
    keys = _unpickle(keys, "the storage key list", None, budget)
    _check_legacy_storages(handle, keys, storages.storages)
    _add_tensors(facts, _collect(root, budget), "state_dict")
    return _finish(facts)


def _check_legacy_storages(handle: BinaryIO, keys: Any, storages: dict[str, _Storage]) -> None:
    """Walk the raw storage section: each storage is an int64 element count, then its bytes.

    Reads 8 bytes per storage, so it is cheap; it catches truncation and counts that disagree
    with the pickle.
    """
    if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
        raise UnreadableModel("the legacy checkpoint's storage key list is malformed", REMEDY)
    if set(keys) != set(storages):
        raise UnreadableModel("the legacy checkpoint's storage key list does not match the "
                              "storages its pickle references", REMEDY)
    offset = handle.tell()
    end = handle.seek(0, io.SEEK_END)
    for key in keys:
        storage = storages[key]
        handle.seek(offset)
        header = handle.read(8)
        if len(header) < 8:
            raise UnreadableModel(f"the file ends before storage {key}; it is truncated", REMEDY)
        (numel,) = struct.unpack("<q", header)
        itemsize = _DTYPES[storage.dtype][1]
        if numel * itemsize != storage.nbytes:
            raise UnreadableModel(f"storage {key} holds {numel} elements but the pickle "
                                  f"declares {storage.nbytes // itemsize}", REMEDY)
        offset += 8 + storage.nbytes
        if offset > end:
            raise UnreadableModel(f"the file ends inside storage {key}; it is truncated", REMEDY)


def _read_plain(handle: BinaryIO, facts: ModelFacts, first: _Pickle,
                budget: WorkBudget) -> ModelFacts:
    """A pickle that is not a torch.save checkpoint: scan it, and any pickles that follow
    (a loader may read them one after the other, as torch.load reads a legacy file's)."""
    facts.format = "pickle"
    facts.extra["serialization"] = "pickle"
    pickles = [first]
    end = handle.seek(0, io.SEEK_END)
    handle.seek(len(first.data))
    trailing = None
    while handle.tell() < end and not pickles[-1].oversized:
        position = handle.tell()
        if not starts_like_pickle(handle.read(SNIFF_BYTES)):
            trailing = f"{end - position} bytes of trailing data after the pickle"
            break
        handle.seek(position)
        pickles.append(_next_pickle(handle, f"the pickle at byte {position}"))
    if not _scan(facts, pickles, budget):
        return facts
    if trailing:
        raise UnreadableModel(f"{trailing} (not another pickle)", REMEDY)
    root = _unpickle(first.data, "the pickle", None, budget)
    _add_tensors(facts, _collect(root, budget), "state_dict")
    facts.note("a plain pickle, not a torch.save checkpoint: only tensors it holds are counted")
    return _finish(facts)


def read(path: Path, display: str, kind: str) -> ModelFacts:
    """Facts about a PyTorch file; `kind` is what the dispatcher sniffed: "zip" or "pickle"."""
    facts = ModelFacts(path=display, format="pytorch", file_size=path.stat().st_size)
    try:
        facts = _read_zip(path, facts) if kind == "zip" else _read_pickles(path, facts)
    except _Refused as exc:
        raise UnreadableModel(f"not a PyTorch checkpoint this reader accepts ({exc})",
                              REMEDY) from None
    # Said here, once for every path (unsafe pickles and plain pickles included).
    facts.note(SCRIPT_NOTE if facts.format == "torchscript" else NO_GRAPH_NOTE)
    from bloatguard.formats.named import NamedWeights

    facts.handle = NamedWeights("torch")  # layers by name; values are never unpickled
    return facts
