"""Targets for bloatguard.isolate.run_fresh in the isolate tests (a fresh interpreter imports
them by name, so they live in a module of their own)."""

from __future__ import annotations

import ctypes
import select

from bloatguard.isolate import stage


def crash_while(what: str) -> None:
    stage(what)
    ctypes.string_at(0)


def hang_while(what: str) -> None:
    stage(what)
    select.select([], [], [])


def allocate(n: int) -> int:
    return len(bytearray(n))


def block_and_report(fifo: str) -> None:
    """Tell the test (through a FIFO it reads) which pid to watch, then block until killed."""
    import os

    with open(fifo, "w") as line:
        line.write(f"{os.getpid()}\n")
    select.select([], [], [])
