"""Native crashes, hangs and memory blow-ups in the child become errors, not a dead linter."""

from __future__ import annotations

import ctypes
import os
import time
from pathlib import Path

import pytest

from bloatguard.isolate import IsolationError, run_isolated


def _add(a, b):
    return a + b


def _segfault():
    ctypes.string_at(0)


def _hang():
    time.sleep(60)


def _allocate(n):
    return len(bytearray(n))


def _raise():
    raise ValueError("bad graph")


def test_result_comes_back():
    assert run_isolated(_add, 2, 3) == 5


def test_segfault_is_contained():
    with pytest.raises(IsolationError, match="crashed \\(SIGSEGV\\)"):
        run_isolated(_segfault)


def test_timeout_kills_the_child():
    start = time.monotonic()
    with pytest.raises(IsolationError, match="timed out"):
        run_isolated(_hang, timeout=0.5)
    assert time.monotonic() - start < 5


def test_memory_cap():
    with pytest.raises(IsolationError, match="memory"):
        run_isolated(_allocate, 4 * 2**30, memory=256 * 2**20)
    assert run_isolated(_allocate, 2**20, memory=256 * 2**20) == 2**20


def test_exceptions_are_reported_with_their_message():
    with pytest.raises(IsolationError, match="ValueError: bad graph"):
        run_isolated(_raise)


def _zombie_children() -> list[int]:
    zombies = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == os.getpid():
            zombies.append(int(stat.parent.name))
    return zombies


def test_no_zombies_left():
    before = set(_zombie_children())
    for _ in range(5):
        run_isolated(_add, 1, 1)
    with pytest.raises(IsolationError):
        run_isolated(_hang, timeout=0.2)
    assert set(_zombie_children()) <= before
