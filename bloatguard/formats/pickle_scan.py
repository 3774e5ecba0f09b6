"""Static pickle scanner: which globals would unpickling this import, without unpickling it.

A pickle is a small stack-machine program; loading it imports every global it names (GLOBAL, INST,
STACK_GLOBAL) and may call them (REDUCE, BUILD, NEWOBJ, OBJ). So the safety of a pickle is decided
by the globals it references. `scan_globals` walks the opcodes with `pickletools.genops`, which only
decodes them, and runs a small abstract version of the unpickler's stack and memo so that
STACK_GLOBAL's operands (pushed as strings, possibly through the memo) are resolved exactly as the
real unpickler would resolve them; a naive "last two strings" heuristic can be fooled by strings
that are pushed and then popped.

ALLOWLIST names the globals that PyTorch's own checkpoints and TorchScript archives reference for
tensors, storages, dtypes and containers. Anything else - `os.system`, `builtins.exec`, NumPy,
sklearn, a user's nn.Module class - is outside it. `__torch__.*` classes are TorchScript module
classes: they name code inside the archive, not importable Python, and bloatguard maps them to
inert placeholders.
"""

from __future__ import annotations

import _compat_pickle
import io
import pickletools
import struct
from typing import BinaryIO, Iterable

from bloatguard.errors import UnreadableModel

UNRESOLVABLE = "<unresolvable STACK_GLOBAL>"
TOO_LONG = "<a STACK_GLOBAL name too long to be a Python name>"
PICKLE_REMEDY = "re-export the model or restore the file from git"

# A real pickler numbers memo entries 0, 1, 2, ...; a huge index only serves to make the C
# unpickler allocate (and zero) a memo table of that size - gigabytes for one opcode.
MAX_MEMO_INDEX = 10_000_000
# The work reading one file's pickles may cost: one unit per opcode scanned or unpickled, per
# element a helper copies and per object visited for tensors (see WorkBudget). A state dict
# needs about 70 units per tensor, so this admits some 55,000 tensors in one file; spent in
# full by a hostile pickle, it takes about 12 s and 250 MB (on a busy 2-core machine).
MAX_PICKLE_WORK = 4_000_000
# A pickle with more opcodes cannot be both scanned and unpickled within the budget.
MAX_PICKLE_OPCODES = MAX_PICKLE_WORK // 2
# The protocols the unpickler accepts; PROTO with anything else is an error there.
HIGHEST_PROTOCOL = 5
# Python names are short, and a TorchScript archive references a few hundred classes at most;
# memoized strings could otherwise combine into millions of long names, all kept for the report.
MAX_GLOBAL_NAME = 1024
MAX_GLOBALS = 10_000


def _names(module: str, *names: str) -> set[str]:
    return {f"{module}.{name}" for name in names}


# Storage classes, as torch.save (and older versions saving CUDA tensors) name them.
STORAGE_TYPES = (
    "DoubleStorage", "FloatStorage", "HalfStorage", "BFloat16Storage",
    "LongStorage", "IntStorage", "ShortStorage", "CharStorage", "ByteStorage", "BoolStorage",
    "ComplexDoubleStorage", "ComplexFloatStorage",
    "QInt8Storage", "QInt32Storage", "QUInt8Storage", "QUInt4x2Storage", "QUInt2x4Storage",
)
CUDA_STORAGE_TYPES = tuple(name for name in STORAGE_TYPES if not name.startswith("Q"))

# torch.dtype objects pickle as `torch.<canonical name>`; aliases (torch.float, torch.long) never
# appear in a pickle.
TORCH_DTYPES = (
    "float64", "float32", "float16", "bfloat16",
    "int64", "int32", "int16", "int8", "uint8", "uint16", "uint32", "uint64", "bool",
    "complex32", "complex64", "complex128",
    "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu",
    "float4_e2m1fn_x2",
    "qint8", "qint32", "quint8", "quint4x2", "quint2x4",
    "bits8", "bits16", "bits1x8", "bits2x4", "bits4x2",
    *(f"int{bits}" for bits in range(1, 8)), *(f"uint{bits}" for bits in range(1, 8)),
)

QSCHEMES = ("per_tensor_affine", "per_channel_affine", "per_tensor_symmetric",
            "per_channel_symmetric", "per_channel_affine_float_qparams")

# Functions torch.save emits to rebuild tensors (seen with torch 2.13: _rebuild_tensor_v2 for
# ordinary dtypes, _v3 with UntypedStorage for uint16/float8/..., _rebuild_parameter(_with_state),
# _rebuild_qtensor, _rebuild_sparse_tensor, _rebuild_nested_tensor, _rebuild_meta_tensor_no_storage,
# torch._tensor._rebuild_from_type_v2 for a plain tensor carrying Python attributes). Not here:
# _rebuild_device_tensor_from_numpy (needs NumPy globals) and _rebuild_wrapper_subclass (names an
# arbitrary tensor subclass).
REBUILD_FUNCTIONS = (
    "_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3",
    "_rebuild_parameter", "_rebuild_parameter_with_state", "_rebuild_qtensor",
    "_rebuild_sparse_tensor", "_rebuild_nested_tensor", "_rebuild_meta_tensor_no_storage",
    "_rebuild_device_tensor_from_cpu_tensor",
)

# What ScriptModule.save's C++ pickler emits for typed lists and containers.
JIT_PICKLE_HELPERS = ("build_intlist", "build_tensorlist", "build_doublelist", "build_boollist",
                      "build_tensor_from_id", "restore_type_tag")

ALLOWLIST: frozenset[str] = frozenset(
    _names("torch._utils", *REBUILD_FUNCTIONS)
    | _names("torch._tensor", "_rebuild_from_type_v2")
    | _names("torch", *STORAGE_TYPES)
    | _names("torch.cuda", *CUDA_STORAGE_TYPES)
    | _names("torch.storage", "UntypedStorage")
    | _names("torch", "UntypedStorage")
    | _names("torch", *TORCH_DTYPES)
    | _names("torch", *QSCHEMES)
    | _names("torch", "device", "Size", "Tensor")
    | _names("torch.serialization", "_get_layout")
    | _names("torch.jit._pickle", *JIT_PICKLE_HELPERS)
    | _names("collections", "OrderedDict", "Counter")
    | _names("builtins", "set", "frozenset", "slice", "complex", "bytearray")
)

_STRING_OPCODES = frozenset({"STRING", "BINSTRING", "SHORT_BINSTRING",
                             "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"})
_GET_OPCODES = frozenset({"GET", "BINGET", "LONG_BINGET"})
_PUT_OPCODES = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_EXT_OPCODES = frozenset({"EXT1", "EXT2", "EXT4"})


class PickleScanError(UnreadableModel):
    """A pickle that does not parse to its end.

    `globals_seen` lists the globals referenced before the point of failure: a real unpickler
    imports (and may call) those before it trips over the damage, so they still matter.
    """

    def __init__(self, cause: str, globals_seen: list[str], *, malformed: bool = True) -> None:
        super().__init__(cause, PICKLE_REMEDY)
        self.globals_seen = globals_seen
        # False when the bytes up to the failure are a program the unpickler would run: the
        # pickle is cut short (or is the start of a longer one), or bloatguard refuses it.
        self.malformed = malformed


def is_torchscript_class(name: str) -> bool:
    """A TorchScript class (`__torch__.foo.Bar`): code compiled into the archive, not Python."""
    return name.startswith("__torch__.") and ":" not in name


def is_allowed(name: str) -> bool:
    return name in ALLOWLIST or is_torchscript_class(name)


def disallowed(names: Iterable[str]) -> list[str]:
    """The names outside the allowlist, sorted and unique."""
    return sorted({name for name in names if not is_allowed(name)})


def global_name(module: str, name: str, proto: int) -> str:
    """The name a global resolves to, spelled "module.name".

    Protocol 0-2 pickles go through Python 2 name fixing (`__builtin__` -> `builtins`), as the
    real unpickler does, so `__builtin__.exec` is reported as what it is. A dotted (qualified)
    attribute name is spelled "module:qual.name" so that it can never collide with, and pass as,
    an allowlisted "module.name".
    """
    if proto < 3:
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
    separator = ":" if "." in name else "."
    return f"{module}{separator}{name}"


class PickleTooComplex(UnreadableModel):
    """Reading a file's pickles would take more work than MAX_PICKLE_WORK."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the pickles take more than {limit:,} steps to read, far more than "
                         "any checkpoint needs (a denial-of-service pickle?)", PICKLE_REMEDY)


class WorkBudget:
    """The work one file's pickles may cost, shared by the scanner, the unpickler and the walk
    that collects tensors from what it built.

    Every opcode costs one unit and does a bounded amount of work: it allocates at most one
    small object, or copies bytes that are in the file. Helpers that copy elements a pickle
    already built (a set from a list) charge one unit per element, so that a pickle cannot make
    one opcode copy a big shared list again and again; so does each object the walk visits.
    Bounding the units therefore bounds both the time and the memory that reading the file takes.
    """

    def __init__(self, limit: int | None = None) -> None:
        self.limit = MAX_PICKLE_WORK if limit is None else limit
        self.left = self.limit

    def charge(self, units: int = 1) -> None:
        self.left -= units
        if self.left < 0:
            raise PickleTooComplex(self.limit)


def scan_globals(data: bytes, budget: WorkBudget | None = None) -> list[str]:
    """Every global `data` (exactly one pickle) references, in order of first use.

    Raises PickleScanError if `data` is not one complete pickle: truncated, no STOP, an unknown
    opcode, an inconsistent stack, bytes after the STOP, or more opcodes than `budget` allows.
    """
    names, end = scan(data, budget=budget)
    if end != len(data):
        raise PickleScanError(
            f"{len(data) - end} bytes of trailing data after the pickle ends at byte {end}", names)
    return names


def scan(data: bytes, start: int = 0,
         budget: WorkBudget | None = None) -> tuple[list[str], int]:
    """The globals of the one pickle starting at `start`, and the offset just past its STOP."""
    machine = _AbstractUnpickler(data)
    budget = WorkBudget() if budget is None else budget
    stream = io.BytesIO(data)
    stream.seek(start)
    try:
        for opcode, arg, pos in pickletools.genops(stream):
            budget.charge()
            assert pos is not None  # a seekable stream: genops reports every position
            machine.step(opcode, arg, pos)
            if opcode.name == "STOP":
                return machine.globals, pos + 1
    except PickleScanError:
        raise
    except PickleTooComplex as exc:  # the globals seen so far still count
        raise PickleScanError(exc.cause, machine.globals, malformed=False) from None
    except (ValueError, OverflowError, struct.error) as exc:  # how genops reports damage
        raise PickleScanError(_describe(exc), machine.globals,
                              malformed=not _is_truncation(exc)) from None
    raise PickleScanError("the pickle is truncated (it ends without a STOP opcode)",
                          machine.globals, malformed=False)


def starts_like_pickle(head: bytes) -> bool:
    """Whether `head`, the first bytes of a file, begins a pickle an unpickler would run.

    Judged by what the unpickler accepts, not by a magic number (pickles have none; legacy
    torch.save files can start with any opcode): the opcodes in `head` must decode and keep
    the stack consistent up to STOP or up to the end of `head`, which must hold at least one
    whole opcode. Random bytes, text and other formats fail within a few opcodes. The walk is
    over `head` only, so it stays cheap.
    """
    budget = WorkBudget(len(head))  # charged once per whole opcode; never runs out
    try:
        scan(head, budget=budget)
    except PickleScanError as exc:
        return not exc.malformed and budget.left < budget.limit
    return True


def _is_truncation(exc: Exception) -> bool:
    message = str(exc)
    # genops' wording for running out of bytes: "pickle exhausted before seeing STOP",
    # "expected 8 bytes in a bytes1, but only 3 remain", "not enough data in stream to read
    # long4", "no newline found when trying to read stringnl".
    return any(words in message for words in ("exhausted", "remain", "not enough data",
                                                "no newline found"))


def _describe(exc: Exception) -> str:
    if _is_truncation(exc):
        return f"the pickle is truncated ({exc})"
    return f"not a valid pickle ({exc})"


class PickleTooLarge(UnreadableModel):
    """A pickle longer than the caller's limit (or a corrupt length field claiming so), or with
    more opcodes than reading one may take.

    `prefix` holds the bytes up to the opcode that crossed the limit: scanning it still finds the
    globals named before that point (a pickled NumPy array names its globals, then its data).
    """

    def __init__(self, limit: int, opcodes: int | None = None) -> None:
        cause = (f"a pickle of more than {opcodes:,} opcodes" if opcodes is not None else
                 f"a pickle larger than {limit // 2**20} MiB (or a corrupt length field)")
        super().__init__(cause, PICKLE_REMEDY)
        self.prefix = b""


def read_pickle(stream: BinaryIO, limit: int) -> bytes:
    """The bytes of the next pickle in `stream`, leaving the stream just after it.

    Reads at most `limit` bytes, so a length field in a corrupt or hostile file cannot make this
    allocate more, and walks at most MAX_PICKLE_OPCODES opcodes, so a long run of tiny opcodes
    cannot make it take long (PickleTooLarge either way). A damaged pickle is returned up to
    the damage; scanning it reports the damage.
    """
    start = stream.tell()
    bounded = _BoundedReader(stream, limit)
    try:
        for count, (opcode, _, _) in enumerate(pickletools.genops(bounded)):  # type: ignore[arg-type]
            if opcode.name == "STOP":
                break
            if count == MAX_PICKLE_OPCODES:
                raise PickleTooLarge(limit, opcodes=count)
    except (ValueError, OverflowError, struct.error):
        pass
    except PickleTooLarge as exc:
        end = stream.tell()
        stream.seek(start)
        exc.prefix = stream.read(end - start)
        raise
    end = stream.tell()
    stream.seek(start)
    return stream.read(end - start)


class _BoundedReader:
    """A read-only view of a binary stream that refuses to go more than `limit` bytes ahead."""

    def __init__(self, stream: BinaryIO, limit: int) -> None:
        self._stream = stream
        self._end = stream.tell() + limit
        self._limit = limit

    def _allowance(self, size: int) -> int:
        left = self._end - self._stream.tell()
        if size > left:
            raise PickleTooLarge(self._limit)
        return size

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            size = self._end - self._stream.tell()
        return self._stream.read(self._allowance(size))

    def readline(self, size: int = -1) -> bytes:
        left = self._end - self._stream.tell()
        line = self._stream.readline(left + 1)
        if len(line) > left:
            self._allowance(len(line))
        return line

    def tell(self) -> int:
        return self._stream.tell()


class _Unknown:
    """A stack value the scanner does not track (anything that is not a string)."""

    def __repr__(self) -> str:
        return "<unknown>"


UNKNOWN = _Unknown()


class _AbstractUnpickler:
    """The unpickler's stack, mark stack and memo, with every value except strings abstracted away.

    It mirrors the real unpickler closely (marks start a new stack frame; POP on an empty frame
    pops the mark; MEMOIZE stores at index len(memo)) so that STACK_GLOBAL sees the operands the
    real unpickler would see.
    """

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.globals: list[str] = []
        self._seen: set[str] = set()
        self.proto = 0
        self.stack: list = []
        self.metastack: list[list] = []
        self.memo_strings: dict[int, str] = {}  # only string values matter for STACK_GLOBAL
        self.memo_present = bytearray()          # which indices hold anything, for len(memo)
        self.memo_len = 0

    def fail(self, cause: str):
        raise PickleScanError(f"not a valid pickle ({cause})", self.globals)

    def refuse(self, cause: str):
        """A valid pickle that no checkpoint would be, and that could harm a real loader."""
        raise PickleScanError(cause, self.globals, malformed=False)

    def reference(self, name: str) -> None:
        if name not in self._seen:
            if len(self._seen) == MAX_GLOBALS:
                self.refuse(f"the pickle references more than {MAX_GLOBALS} different globals")
            self._seen.add(name)
            self.globals.append(name)

    # --- stack primitives -----------------------------------------------------------------

    def pop(self, count: int) -> list:
        if count > len(self.stack):
            self.fail("stack underflow")
        if count == 0:
            return []
        values = self.stack[-count:]
        del self.stack[-count:]
        return values

    def pop_mark(self) -> None:
        if not self.metastack:
            self.fail("MARK expected on the stack")
        self.stack = self.metastack.pop()

    def top(self):
        if not self.stack:
            self.fail("stack underflow")
        return self.stack[-1]

    def memo_put(self, index: int, value) -> None:
        if index < 0 or index > MAX_MEMO_INDEX:
            # The C unpickler (torch.load's) would allocate a memo table this large.
            self.refuse(f"memo index {index} is implausibly large")
        if index >= len(self.memo_present):
            self.memo_present.extend(bytes(index + 1 - len(self.memo_present)))
        if not self.memo_present[index]:
            self.memo_present[index] = 1
            self.memo_len += 1
        if isinstance(value, str):
            self.memo_strings[index] = value
        else:
            self.memo_strings.pop(index, None)

    def memo_get(self, index: int):
        if not 0 <= index < len(self.memo_present) or not self.memo_present[index]:
            self.fail(f"memo index {index} is read before it is written")
        return self.memo_strings.get(index, UNKNOWN)

    # --- one opcode -----------------------------------------------------------------------

    def step(self, opcode, arg, pos: int) -> None:
        name = opcode.name
        if name == "PROTO":
            if not 0 <= arg <= HIGHEST_PROTOCOL:
                self.fail(f"unsupported pickle protocol {arg}")
            self.proto = arg
        elif name in _STRING_OPCODES:
            self.stack.append(arg)
        elif name in _GET_OPCODES:
            self.stack.append(self.memo_get(int(arg)))
        elif name in _PUT_OPCODES:
            self.memo_put(int(arg), self.top())
        elif name == "MEMOIZE":
            self.memo_put(self.memo_len, self.top())
        elif name == "MARK":
            self.metastack.append(self.stack)
            self.stack = []
        elif name == "POP":
            if self.stack:
                self.stack.pop()
            else:
                self.pop_mark()
        elif name == "DUP":
            self.stack.append(self.top())
        elif name in ("GLOBAL", "INST"):
            self.reference(self._global_operand(pos))
            self._generic(opcode)
        elif name == "STACK_GLOBAL":
            module, attribute = self.pop(2)
            if isinstance(module, str) and isinstance(attribute, str):
                # Not joined when long: memoized strings would make every STACK_GLOBAL copy them
                # again. No allowlisted name is that long, so the marker is just as unsafe.
                self.reference(global_name(module, attribute, self.proto)
                               if len(module) + len(attribute) <= MAX_GLOBAL_NAME else TOO_LONG)
            else:
                self.reference(UNRESOLVABLE)
            self.stack.append(UNKNOWN)
        elif name in _EXT_OPCODES:
            # The copyreg extension registry maps codes to arbitrary globals.
            self.reference(f"<extension code {arg}>")
            self.stack.append(UNKNOWN)
        else:
            self._generic(opcode)

    def _generic(self, opcode) -> None:
        """Apply an opcode's stack effect as pickletools declares it; results are unknown."""
        before, after = opcode.stack_before, opcode.stack_after
        if pickletools.markobject in before:
            self.pop_mark()
            self.pop(before.index(pickletools.markobject))
        else:
            self.pop(len(before))
        self.stack.extend(UNKNOWN for _ in after)

    def _global_operand(self, pos: int) -> str:
        """GLOBAL/INST's "module\\nname\\n" operand, read from the raw bytes.

        pickletools joins the two lines with a space, which is ambiguous (either line may contain
        spaces); the raw bytes are not.
        """
        try:
            first = self.data.index(b"\n", pos + 1)
            second = self.data.index(b"\n", first + 1)
            module = self.data[pos + 1:first].decode("utf-8")
            attribute = self.data[first + 1:second].decode("utf-8")
        except ValueError:
            self.fail(f"malformed GLOBAL operand at byte {pos}")
        return global_name(module, attribute, self.proto)
