"""A verifying FlatBuffers reader: tables, vectors and strings of an untrusted buffer.

FlatBuffers are offsets into the file, and the Python flatbuffers runtime (and code generated
for it, such as the `tflite` package) follows them without checking: a hostile offset reads out
of range, a vector length of 2^31 is iterated, and tables may point at each other so that a
small file expands into any amount of work. This reader checks what the C++ verifier checks
before anything is used - every table's vtable and size, every field inside its table, every
offset, vector length and string inside the buffer - and charges every table visited and every
element read to a work budget, so a file costs at most a bounded number of steps whatever it
points at. Errors are FlatbufferError with a message naming what was being read.
"""

from __future__ import annotations

import struct

DEFAULT_BUDGET = 4_000_000  # tables visited plus vector elements read


class FlatbufferError(Exception):
    pass


class Buffer:
    """The bytes (bytes or an mmap) plus the work charged so far."""

    def __init__(self, data, budget: int = DEFAULT_BUDGET) -> None:
        self.data = data
        self.size = len(data)
        self.budget = budget
        self.steps = 0

    def charge(self, steps: int = 1) -> None:
        self.steps += steps
        if self.steps > self.budget:
            raise FlatbufferError(f"reading its structure takes more than {self.budget} steps "
                                  "(tables referenced over and over, or far more elements than a "
                                  "model has)")

    def check(self, pos: int, length: int, what: str) -> None:
        if pos < 0 or length < 0 or pos + length > self.size:
            raise FlatbufferError(f"{what} points outside the file (bytes {pos}..{pos + length} "
                                  f"of {self.size})")

    def unpack(self, fmt: str, pos: int, what: str):
        self.check(pos, struct.calcsize("<" + fmt), what)
        return struct.unpack_from("<" + fmt, self.data, pos)[0]

    def root(self, identifier: bytes | None = None) -> Table:
        self.check(0, 8, "the root offset")
        if identifier is not None and bytes(self.data[4:8]) != identifier:
            raise FlatbufferError(f"the file identifier is not {identifier.decode()}")
        return Table(self, self.unpack("I", 0, "the root offset"), "the root table")


class Table:
    __slots__ = ("buf", "pos", "vtable", "vsize", "tsize", "what")

    def __init__(self, buf: Buffer, pos: int, what: str) -> None:
        buf.charge()
        self.buf, self.pos, self.what = buf, pos, what
        buf.check(pos, 4, what)
        self.vtable = pos - buf.unpack("i", pos, what)
        buf.check(self.vtable, 4, f"the vtable of {what}")
        self.vsize = buf.unpack("H", self.vtable, f"the vtable of {what}")
        self.tsize = buf.unpack("H", self.vtable + 2, f"the vtable of {what}")
        if self.vsize < 4 or self.vsize % 2 or self.tsize < 4:
            raise FlatbufferError(f"the vtable of {what} is malformed")
        buf.check(self.vtable, self.vsize, f"the vtable of {what}")
        buf.check(pos, self.tsize, what)

    def _field(self, index: int, size: int) -> int:
        """The absolute position of a field of `size` bytes, or 0 when absent."""
        slot = 4 + 2 * index
        if slot + 2 > self.vsize:
            return 0
        offset = self.buf.unpack("H", self.vtable + slot, f"the vtable of {self.what}")
        if offset == 0:
            return 0
        if offset + size > self.tsize:
            raise FlatbufferError(f"field {index} of {self.what} lies outside the table")
        return self.pos + offset

    def scalar(self, index: int, fmt: str, default=0):
        pos = self._field(index, struct.calcsize("<" + fmt))
        return default if not pos else self.buf.unpack(fmt, pos, f"field {index} of {self.what}")

    def _target(self, index: int, what: str) -> int | None:
        pos = self._field(index, 4)
        if not pos:
            return None
        return pos + self.buf.unpack("I", pos, what)

    def table(self, index: int, what: str) -> Table | None:
        target = self._target(index, what)
        return None if target is None else Table(self.buf, target, what)

    def vector(self, index: int, element_size: int, what: str) -> tuple[int, int] | None:
        """(start, count) of a vector field, checked to lie inside the buffer; None if absent."""
        target = self._target(index, what)
        if target is None:
            return None
        count = self.buf.unpack("I", target, f"the length of {what}")
        self.buf.check(target + 4, count * element_size, what)
        return target + 4, count

    def scalars(self, index: int, fmt: str, what: str, limit: int | None = None) -> list:
        """The elements of a vector of scalars; more than `limit` of them is an error (a
        tensor's shape has a handful of dims, whatever the vector's length claims)."""
        found = self.vector(index, struct.calcsize("<" + fmt), what)
        if found is None:
            return []
        start, count = found
        if limit is not None and count > limit:
            raise FlatbufferError(f"{what} has {count} elements (at most {limit} expected)")
        self.buf.charge(count)
        return list(struct.unpack_from(f"<{count}{fmt}", self.buf.data, start))

    def tables(self, index: int, what: str) -> list[Table]:
        found = self.vector(index, 4, what)
        if found is None:
            return []
        start, count = found
        self.buf.charge(count)
        tables = []
        for i in range(count):
            pos = start + 4 * i
            tables.append(Table(self.buf, pos + self.buf.unpack("I", pos, what), f"{what}[{i}]"))
        return tables

    def string(self, index: int, what: str) -> str | None:
        found = self.vector(index, 1, what)
        if found is None:
            return None
        start, count = found
        self.buf.charge(1 + count // 4096)
        return bytes(self.buf.data[start:start + count]).decode("utf-8", errors="replace")

    def union(self, type_index: int, value_index: int, what: str) -> tuple[int, Table | None]:
        kind = self.scalar(type_index, "B", 0)
        return kind, (self.table(value_index, what) if kind else None)
