"""Run native-code work on untrusted input (ONNX shape inference, onnxruntime sessions, torch)
in child processes with a timeout and an address-space cap, so a segfault, a hang or a memory
blow-up in a native library becomes a one-line error for that model instead of a dead linter.

The one runner for every child bloatguard starts, in two ways:

- forked (`run_isolated`, `map_isolated`, `Queue`): cheap (a few milliseconds: the child
  inherits the parent's imported modules and the items to work on);
- a fresh interpreter (`run_fresh`): for timing (a process of its own, nothing inherited) and
  for torch (a process that has used torch holds thread pools a forked child deadlocks on).

Both speak one protocol: JSON lines on a pipe of their own, ["start", i] before item i, then
["stage", i, text] as the work goes on and ["ok", i, value] or ["error", i, message]. JSON, not
pickle: a child whose native code was subverted by a hostile model could write anything to the
pipe, and JSON cannot make the parent run code. Functions run here must therefore return
JSON-compatible values. Both apply the same address-space cap (`memory` bytes beyond what the
child maps when it starts) and end with the parent: Ctrl-C or an exception there kills them.
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
# Writes of up to PIPE_BUF bytes are atomic (POSIX: at least 512; Linux 4096), so queue chunks of
# that size, a multiple of 4, never leave half an index in the pipe.
_PIPE_BUF = select.PIPE_BUF - select.PIPE_BUF % 4
# Write ends of every queue still being fed, which each forked child must close.
_QUEUE_WRITERS: set[int] = set()


class IsolationError(Exception):
    """The child crashed, timed out or ran out of memory; `str()` says which. `stage` is what a
    fresh child last said it was doing (`stage()`), `stderr` the end of what it printed."""

    def __init__(self, message: str, *, stage: str = "", stderr: str = "") -> None:
        super().__init__(message)
        self.stage, self.stderr = stage, stderr


def run_isolated(function: Callable[..., Any], *args: Any, timeout: float = DEFAULT_TIMEOUT,
                 memory: int = DEFAULT_MEMORY) -> Any:
    """`function(*args)` in a forked child. Exceptions raised in the child are re-raised here
    as IsolationError with their message; so are crashes, timeouts and memory exhaustion."""
    outcome = Queue(lambda _: function(*args), [None], workers=1, memory=memory).results(timeout)[0]
    if isinstance(outcome, IsolationError):
        raise outcome
    return outcome


def map_isolated(function: Callable[[Any], Any], items: list[Any], *, workers: int,
                 timeout: float = DEFAULT_TIMEOUT, memory: int = DEFAULT_MEMORY) -> list[Any]:
    """`function(item)` for every item, in `workers` forked children sharing one queue. Each
    entry of the result is the return value or the IsolationError of that item."""
    return Queue(function, items, workers=workers, memory=memory).results(timeout)


class Queue:
    """`function(item)` for every item, in forked children that take the items' indices from a
    shared pipe, so one slow item never holds up a precomputed share of the others.

    The children start at once and `results` collects them, so the caller can do other work in
    between. Each child announces an item before running it: a child that crashes or hangs costs
    exactly that item (its IsolationError), and the items it never took are run by the others,
    or by a fresh child when none is left."""

    def __init__(self, function: Callable[[Any], Any], items: list[Any], *, workers: int,
                 memory: int = DEFAULT_MEMORY) -> None:
        self.function, self.items, self.memory, self.workers = function, items, memory, workers
        self.outcomes: dict[int, Any] = {}
        self.queue_fd: int | None = None
        self.unsent = b""
        self.children = self._spawn(list(range(len(items))), workers) if items else []

    def results(self, timeout: float = DEFAULT_TIMEOUT) -> list[Any]:
        deadline = time.monotonic() + timeout
        while True:
            answered = len(self.outcomes)
            self._collect(deadline, timeout)
            left = [index for index in range(len(self.items)) if index not in self.outcomes]
            if not left:
                return [self.outcomes[index] for index in range(len(self.items))]
            if time.monotonic() >= deadline or len(self.outcomes) == answered:
                reason = (f"timed out after {timeout:g} s" if time.monotonic() >= deadline
                          else "exited without a result")
                for index in left:
                    self.outcomes[index] = IsolationError(reason)
            else:  # every child died, each taking only its own item down: fresh ones for the rest
                self.children = self._spawn(left, self.workers)

    def _spawn(self, indices: list[int], workers: int) -> list[tuple[int, int]]:
        """Fork the children; (pid, fd of its answers) for each."""
        if not hasattr(os, "fork"):  # pragma: no cover - Windows: run in-process
            for index in indices:
                try:
                    self.outcomes[index] = self.function(self.items[index])
                except Exception as exc:  # noqa: BLE001
                    self.outcomes[index] = IsolationError(f"{type(exc).__name__}: {exc}")
            return []
        queue_read, queue_write = os.pipe()
        _QUEUE_WRITERS.add(queue_write)
        children = []
        try:
            for _ in range(max(1, min(workers, len(indices)))):
                children.append(self._fork(queue_read, queue_write))
        except OSError as exc:  # out of processes or memory: run with the children there are
            if not children:
                for index in indices:
                    self.outcomes[index] = IsolationError(f"cannot start a child process ({exc})")
        os.close(queue_read)
        # Written without blocking, as far as the pipe takes it; the rest goes in as the children
        # take items (`_collect`), so a queue beyond the pipe's 64 KiB cannot deadlock against
        # children waiting for their answers to be read.
        os.set_blocking(queue_write, False)
        self.queue_fd = queue_write
        self.unsent = b"".join(index.to_bytes(4, "little") for index in indices)
        self._feed()
        return children

    def _feed(self) -> None:
        """Write more of the queue. Chunks of PIPE_BUF bytes are written whole or not at all, so
        a child's 4-byte read never finds half an index."""
        while self.unsent and self.queue_fd is not None:
            try:
                written = os.write(self.queue_fd, self.unsent[:_PIPE_BUF])
            except BlockingIOError:
                return
            except BrokenPipeError:
                break  # every child is gone; results() hands the rest to a new one
            self.unsent = self.unsent[written:]
        self._close_queue()

    def _close_queue(self) -> None:
        if self.queue_fd is not None:
            os.close(self.queue_fd)
            _QUEUE_WRITERS.discard(self.queue_fd)
            self.queue_fd, self.unsent = None, b""

    def _fork(self, queue_read: int, queue_write: int) -> tuple[int, int]:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            status = 0
            try:
                os.close(read_fd)
                # Every queue's write end, this one's and any other Queue's still being fed: a
                # child holding one would keep that queue from ever reaching end-of-file.
                for fd in _QUEUE_WRITERS:
                    os.close(fd)
                # Closed here, so forgotten: a child that runs a Queue of its own must not
                # close whatever its new pipes are given those numbers again.
                _QUEUE_WRITERS.clear()
                _prepare_child(self.memory)
                # Each 4-byte read takes exactly one index, whichever child gets there first.
                while len(raw := os.read(queue_read, 4)) == 4:
                    index = int.from_bytes(raw, "little")
                    _write_all(write_fd, json.dumps(["start", index]).encode() + b"\n")
                    _write_all(write_fd, _answer(index, self.function, self.items[index]))
            except BaseException:  # noqa: BLE001
                status = 1
            finally:
                os._exit(status)
        os.close(write_fd)
        return pid, read_fd

    def _collect(self, deadline: float, timeout: float) -> None:
        """Read every child's answers until all have exited, or kill them at the deadline."""
        answers = {fd: bytearray() for _, fd in self.children}
        open_fds = set(answers)
        while open_fds and (remaining := deadline - time.monotonic()) > 0:
            writable = [self.queue_fd] if self.queue_fd is not None else []
            ready, can_write, _ = select.select(list(open_fds), writable, [], remaining)
            if can_write:
                self._feed()
            for fd in ready:
                chunk = os.read(fd, 1 << 20)
                if chunk:
                    answers[fd] += chunk
                else:
                    open_fds.discard(fd)
        self._close_queue()
        for pid, fd in self.children:
            killed = fd in open_fds
            if killed:
                os.kill(pid, signal.SIGKILL)
            death = _reap(pid)
            if killed:  # answers it wrote before the deadline still count
                while chunk := os.read(fd, 1 << 20):
                    answers[fd] += chunk
            os.close(fd)
            running = self._read_answers(bytes(answers[fd]))
            if running is not None:
                self.outcomes[running] = IsolationError(
                    f"timed out after {timeout:g} s" if killed else
                    death or "exited without a result (out of memory?)")
        self.children = []

    def _read_answers(self, data: bytes) -> int | None:
        """Record a child's answers; the index it announced but did not answer, if any."""
        running = None
        for line in data.splitlines():
            try:
                kind, index, *value = json.loads(line)
                if kind == "start":
                    valid = not value and running is None and index not in self.outcomes
                else:  # an answer, for the item the child announced and no other
                    valid = len(value) == 1 and index == running and kind in ("ok", "error")
                if type(index) is not int or not 0 <= index < len(self.items) or not valid:
                    raise ValueError(kind)
            except (ValueError, TypeError, RecursionError):
                if running is not None:
                    self.outcomes[running] = IsolationError("returned a malformed result")
                return None
            if kind == "start":
                running = index
            else:
                running = None
                self.outcomes[index] = value[0] if kind == "ok" else IsolationError(str(value[0]))
        return running


def _prepare_child(memory: int) -> None:
    import faulthandler

    faulthandler.disable()  # a crash is reported by the parent, in one line
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C stops the children, not just an item
    _limit_memory(memory)


def _answer(index: int, function: Callable[[Any], Any], item: Any) -> bytes:
    try:
        line = json.dumps(["ok", index, function(item)])
    except MemoryError:
        line = json.dumps(["error", index, "ran out of memory (address-space cap reached)"])
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - goes back to the parent; Ctrl-C does not
        line = json.dumps(["error", index, f"{type(exc).__name__}: {exc}"])
    return line.encode() + b"\n"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _reap(pid: int) -> str | None:
    """Wait for `pid`; how it died, or None for a clean exit."""
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return f"crashed ({signal.Signals(os.WTERMSIG(status)).name})"
    if os.WEXITSTATUS(status):
        return "exited without a result (out of memory?)"
    return None


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


# --- fresh interpreters -----------------------------------------------------------------------

_STAGE_FD: int | None = None  # the protocol pipe, in a fresh child


def stage(text: str) -> None:
    """Say what a child started with `run_fresh` is doing now, so that a crash or a timeout can
    be reported as "while <text>". Does nothing outside such a child."""
    if _STAGE_FD is not None:
        _write_all(_STAGE_FD, json.dumps(["stage", 0, text]).encode() + b"\n")


def run_fresh(target: str, *args: Any, timeout: float = DEFAULT_TIMEOUT,
              memory: int = DEFAULT_MEMORY, env: dict[str, str] | None = None) -> Any:
    """`module.function(*args)`, `target` naming it as "module:function", in a new interpreter
    (`python -m bloatguard.isolate`). Arguments and the result travel as JSON. Raises
    IsolationError for an exception in the child (with its message), a crash, a timeout or a
    child that ended without an answer."""
    import subprocess
    import sys

    read_fd, write_fd = os.pipe()
    job = json.dumps({"target": target, "args": list(args), "memory": memory, "fd": write_fd})
    try:
        process = subprocess.Popen([sys.executable, "-m", "bloatguard.isolate"],
                                   stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, pass_fds=(write_fd,), env=_fresh_env(env))
    except OSError as exc:
        os.close(read_fd)
        raise IsolationError(f"cannot start a child process ({exc})") from None
    finally:
        os.close(write_fd)
    try:
        answers, stderr, timed_out = _converse(process, read_fd, job.encode(), timeout)
    except BaseException:  # Ctrl-C: never leave a child spinning on a CPU
        process.kill()
        process.wait()
        raise
    finally:
        os.close(read_fd)
    return _fresh_outcome(answers, stderr, timed_out, process.wait(), timeout)


def _fresh_env(extra: dict[str, str] | None) -> dict[str, str]:
    """The parent's environment, with this checkout of bloatguard importable first."""
    from pathlib import Path

    package_root = str(Path(__file__).resolve().parent.parent)
    path = os.pathsep.join([package_root, *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**os.environ, "PYTHONPATH": path, **(extra or {})}


def _converse(process, read_fd: int, job: bytes, timeout: float) -> tuple[bytes, bytes, bool]:
    """Send the job, then read the protocol pipe and stderr until both close or time runs out
    (the child is then killed). Returns (answers, stderr, timed out)."""
    process.stdin.write(job)
    process.stdin.close()
    err_fd = process.stderr.fileno()
    chunks: dict[int, bytearray] = {read_fd: bytearray(), err_fd: bytearray()}
    open_fds = set(chunks)
    deadline = time.monotonic() + timeout
    while open_fds and (remaining := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select(list(open_fds), [], [], remaining)
        for fd in ready:
            chunk = os.read(fd, 1 << 20)
            if chunk:
                chunks[fd] += chunk
                del chunks[err_fd][:-4096]  # only the end of stderr is ever shown
            else:
                open_fds.discard(fd)
    timed_out = bool(open_fds)
    if timed_out:
        process.kill()
    return bytes(chunks[read_fd]), bytes(chunks[err_fd]), timed_out


def _fresh_outcome(answers: bytes, stderr: bytes, timed_out: bool, status: int, timeout: float) -> Any:
    last_stage, final = "", None
    for line in answers.splitlines():
        try:
            kind, index, *value = json.loads(line)
            if index != 0 or len(value) != 1 or kind not in ("stage", "ok", "error"):
                raise ValueError(kind)
        except (ValueError, TypeError, RecursionError):
            raise IsolationError("returned a malformed result", stage=last_stage) from None
        if kind == "stage":
            last_stage = str(value[0])
        else:
            final = (kind, value[0])
    tail = " ".join(stderr.decode("utf-8", "replace").strip().splitlines()[-1:])[:300]
    if timed_out:
        raise IsolationError(f"timed out after {timeout:g} s", stage=last_stage, stderr=tail)
    if final is not None:
        if final[0] == "error":
            raise IsolationError(str(final[1]), stage=last_stage, stderr=tail)
        return final[1]
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        raise IsolationError(f"crashed ({name})", stage=last_stage, stderr=tail)
    raise IsolationError(f"exited with status {status} without a result", stage=last_stage,
                         stderr=tail)


def _fresh_main() -> int:
    """The child of `run_fresh`: read the job, cap memory, run the target, answer."""
    import importlib
    import sys

    global _STAGE_FD
    job = json.loads(sys.stdin.read())
    _STAGE_FD = job["fd"]
    # Before the target's module is imported: everything it maps counts against the cap.
    _prepare_child(job["memory"])
    module, _, name = job["target"].partition(":")
    function = getattr(importlib.import_module(module), name)
    _write_all(_STAGE_FD, _answer(0, lambda args: function(*args), job["args"]))
    return 0


if __name__ == "__main__":
    # Run as the imported module, not as __main__: the target's `stage()` calls reach this
    # module's _STAGE_FD only if both are the same module object.
    from bloatguard.isolate import _fresh_main as main

    raise SystemExit(main())
