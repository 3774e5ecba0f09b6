"""Run native-code work on untrusted input (ONNX shape inference, onnxruntime sessions) in a
forked child with a timeout and an address-space cap, so a segfault, a hang or a memory blow-up
in a native library becomes a one-line error for that model instead of a dead linter.

fork keeps this cheap (a few milliseconds: the child inherits the parent's imported modules).
Results come back over a pipe as JSON, not pickle: a child whose native code was subverted by a
hostile model could write anything to the pipe, and JSON cannot make the parent run code.
Functions run here must therefore return JSON-compatible values.
"""

from __future__ import annotations

import json
import os
import select
import signal
import time
from typing import Any, Callable

DEFAULT_TIMEOUT = 120.0
DEFAULT_MEMORY = 8 * 2**30


class IsolationError(Exception):
    """The child crashed, timed out or ran out of memory; `str()` says which."""


def _current_address_space() -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _limit_memory(extra_bytes: int) -> None:
    import resource

    limit = _current_address_space() + extra_bytes
    try:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ValueError, OSError):
        pass  # a lower hard limit is already in place


def run_isolated(function: Callable[..., Any], *args: Any, timeout: float = DEFAULT_TIMEOUT,
                 memory: int = DEFAULT_MEMORY) -> Any:
    """`function(*args)` in a forked child. Exceptions raised in the child are re-raised here
    as IsolationError with their message; so are crashes, timeouts and memory exhaustion."""
    if not hasattr(os, "fork"):  # pragma: no cover - Windows: run in-process
        return function(*args)
    return _start(function, args, memory).result(timeout)


def map_isolated(function: Callable[[Any], Any], chunks: list[Any], *, timeout: float = DEFAULT_TIMEOUT,
                 memory: int = DEFAULT_MEMORY) -> list[Any]:
    """`function(chunk)` for each chunk, each in its own forked child, all running at once.
    Each entry of the result is the return value or the IsolationError of that chunk."""
    if not hasattr(os, "fork"):  # pragma: no cover
        return [function(chunk) for chunk in chunks]
    children = [_start(function, (chunk,), memory) for chunk in chunks]
    deadline = time.monotonic() + timeout
    results: list[Any] = []
    for child in children:
        try:
            results.append(child.result(max(0.1, deadline - time.monotonic())))
        except IsolationError as exc:
            results.append(exc)
    return results


class _Child:
    def __init__(self, pid: int, read_fd: int) -> None:
        self.pid, self.read_fd = pid, read_fd

    def result(self, timeout: float) -> Any:
        return _collect(self.pid, self.read_fd, timeout)


def _start(function: Callable[..., Any], args: tuple, memory: int) -> _Child:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        status = 0
        try:
            import faulthandler

            faulthandler.disable()  # a crash is reported by the parent, in one line
            _limit_memory(memory)
            try:
                payload = json.dumps(["ok", function(*args)]).encode()
            except MemoryError:
                payload = json.dumps(["error", "ran out of memory (address-space cap reached)"]).encode()
            except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
                payload = json.dumps(["error", f"{type(exc).__name__}: {exc}"]).encode()
            with os.fdopen(write_fd, "wb") as pipe:
                pipe.write(payload)
        except BaseException:  # noqa: BLE001
            status = 1
        finally:
            os._exit(status)
    os.close(write_fd)
    return _Child(pid, read_fd)


def _collect(pid: int, read_fd: int, timeout: float) -> Any:
    chunks = []
    deadline = time.monotonic() + timeout
    with os.fdopen(read_fd, "rb") as pipe:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise IsolationError(f"timed out after {timeout:g} s")
            ready, _, _ = select.select([pipe], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(read_fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        name = signal.Signals(os.WTERMSIG(status)).name
        raise IsolationError(f"crashed ({name})")
    if not chunks:
        raise IsolationError("exited without a result (out of memory?)")
    try:
        kind, value = json.loads(b"".join(chunks))
    except (ValueError, TypeError):
        raise IsolationError("returned a malformed result") from None
    if kind == "error":
        raise IsolationError(value)
    return value
