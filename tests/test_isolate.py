"""Native crashes, hangs and memory blow-ups in the child become errors, not a dead linter.

No test here sleeps or times itself: a hang is a child blocked on a pipe nobody writes, and
the tests wait for events (a byte on a pipe, a line from a process, a process's pidfd), each
with a generous limit that only a broken runner reaches.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bloatguard.isolate import IsolationError, Queue, map_isolated, run_fresh, run_isolated

EVENT_LIMIT = 60  # seconds a test waits for an event that a working runner sends at once


def _add(a, b):
    return a + b


def _segfault():
    ctypes.string_at(0)


def _hang():
    select.select([], [], [])  # blocks until killed


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
    with pytest.raises(IsolationError, match="timed out after 0.5 s"):
        run_isolated(_hang, timeout=0.5)


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


def _square_or_crash(item):
    if item == "crash":
        ctypes.string_at(0)
    if item == "hang":
        _hang()
    if item == "raise":
        raise ValueError("bad model")
    return item * item


def test_queue_answers_every_item_in_order():
    assert map_isolated(_square_or_crash, list(range(50)), workers=3) == [i * i for i in range(50)]


def test_a_crash_costs_only_the_item_that_caused_it():
    items = [2, "crash", 3, 4, "crash", 5, 6]
    outcomes = map_isolated(_square_or_crash, items, workers=2)
    assert [o for o in outcomes if not isinstance(o, IsolationError)] == [4, 9, 16, 25, 36]
    assert [str(outcomes[i]) for i in (1, 4)] == ["crashed (SIGSEGV)"] * 2


def test_every_child_crashing_still_answers_the_rest():
    # One worker, crashing on the first item: a fresh child runs the remaining ones.
    outcomes = map_isolated(_square_or_crash, ["crash", "crash", 7], workers=1)
    assert [str(o) for o in outcomes[:2]] == ["crashed (SIGSEGV)"] * 2
    assert outcomes[2] == 49


def test_a_hang_costs_only_its_item_and_the_others_finish():
    outcomes = map_isolated(_square_or_crash, ["hang", 2, 3, "raise", 4], workers=2, timeout=1.5)
    assert "timed out" in str(outcomes[0])
    assert outcomes[1:3] == [4, 9] and outcomes[4] == 16
    assert str(outcomes[3]) == "ValueError: bad model"


def test_queue_starts_before_results_are_asked_for():
    read_fd, write_fd = os.pipe()
    queue = Queue(lambda item: os.write(write_fd, b"x"), [0], workers=1)
    # The child worked while the caller did something else: its byte arrives before results().
    assert select.select([read_fd], [], [], EVENT_LIMIT)[0] == [read_fd]
    assert queue.results(timeout=EVENT_LIMIT) == [1]
    os.close(read_fd)
    os.close(write_fd)


def _describe(item):
    return "x" * 200 + str(item)  # answers fill each child's pipe long before the queue is sent


def test_a_queue_larger_than_a_pipe_does_not_deadlock():
    # 40,000 indices are 160 KB of queue, more than a pipe holds, while the answers fill the
    # children's own pipes: the parent must keep feeding the queue while it reads answers.
    items = list(range(40_000))
    outcomes = map_isolated(_describe, items, workers=2, timeout=120)
    assert outcomes[0] == "x" * 200 + "0" and outcomes[-1] == "x" * 200 + "39999"
    assert not [o for o in outcomes if isinstance(o, IsolationError)]



@pytest.mark.parametrize("forged", ['["ok", 0]', '["ok", 0.0, 1]', '["start", 7]', '["boo", 0, 1]',
                                    '{"ok": 1}', 'not json', '["ok", "0", 1]'])
def test_forged_answers_are_refused_not_trusted(forged, monkeypatch):
    # A child subverted through a native bug could write anything on its answer pipe; the parent
    # must turn that into an error for the item, never a traceback or a wrong answer.
    import bloatguard.isolate as isolate

    def forge(index, function, item):
        return forged.encode() + b"\n"

    monkeypatch.setattr(isolate, "_answer", forge)
    outcomes = map_isolated(_square_or_crash, [3], workers=1, timeout=10)
    assert isinstance(outcomes[0], IsolationError)


def test_after_every_child_died_a_hang_still_costs_only_its_item():
    # Both workers crash; the fresh workers share the rest, so the hang does not starve item 3.
    outcomes = map_isolated(_square_or_crash, ["crash", 1, "crash", 2, "hang", 3], workers=2, timeout=3)
    assert [outcomes[i] for i in (1, 3, 5)] == [1, 4, 9]
    assert "timed out" in str(outcomes[4])


def test_a_child_cannot_answer_for_items_it_did_not_announce(monkeypatch):
    import bloatguard.isolate as isolate

    def forge(index, function, item):
        other = 1 - index
        return json.dumps(["ok", other, "FORGED"]).encode() + b"\n"

    monkeypatch.setattr(isolate, "_answer", forge)
    outcomes = map_isolated(_square_or_crash, [3, 4], workers=1, timeout=10)
    assert "FORGED" not in outcomes
    assert all(isinstance(o, IsolationError) for o in outcomes)


def _slow_second(item):
    if item == 2:
        _hang()
    return item


def test_answers_written_before_the_deadline_count():
    # One worker answers item 1, then hangs on item 2: item 1 keeps its answer.
    outcomes = map_isolated(_slow_second, [1, 2], workers=1, timeout=1)
    assert outcomes[0] == 1 and "timed out" in str(outcomes[1])


def _interrupt_and_await(script: str) -> None:
    """Run `script`, which prints the pids of the children it started once each is running its
    item, press Ctrl-C on its process group, and require every child to end."""
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    children = [int(pid) for pid in process.stdout.readline().split()]
    assert children
    # Watch the children before the signal, so an ended child cannot hand its pid to another.
    watched = [os.pidfd_open(pid) for pid in children]
    os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    process.wait(timeout=EVENT_LIMIT)
    still_running = set(watched)
    while still_running:
        ended, _, _ = select.select(list(still_running), [], [], EVENT_LIMIT)
        assert ended, "a child outlived Ctrl-C"
        still_running -= set(ended)
    for fd in watched:
        os.close(fd)


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="needs pidfd_open (Linux 5.3+)")
def test_ctrl_c_stops_the_children_too():
    _interrupt_and_await(
        "import os, select\nfrom bloatguard.isolate import Queue\n"
        "started_r, started_w = os.pipe()\n"
        "def hang(item):\n    os.write(started_w, b'x')\n    select.select([], [], [])\n"
        "queue = Queue(hang, [1, 2, 3, 4], workers=2)\n"
        "for _ in queue.children:\n    os.read(started_r, 1)\n"  # each child is in its item
        "print(*(pid for pid, _ in queue.children), flush=True)\n"
        "queue.results(timeout=600)\n")


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="needs pidfd_open (Linux 5.3+)")
def test_ctrl_c_stops_a_fresh_child_too(tmp_path):
    """run_fresh's child writes its pid to a FIFO once it runs, then blocks; the parent script
    passes the pid on, and Ctrl-C must end the child with the parent."""
    started = tmp_path / "started"
    os.mkfifo(started)
    _interrupt_and_await(
        "import os, threading\nfrom bloatguard import isolate\n"
        f"fifo = {str(started)!r}\n"
        "def report():\n"
        "    with open(fifo) as line:\n        print(line.read().strip(), flush=True)\n"
        "threading.Thread(target=report, daemon=True).start()\n"
        f"isolate.run_fresh('tests_isolate_target:block_and_report', fifo, timeout=600, "
        f"env={_targets_env()!r})\n")


def test_fresh_child_answers_and_reports_what_it_was_doing():
    assert run_fresh("math:hypot", 3, 4) == 5.0
    with pytest.raises(IsolationError, match="ValueError: math domain error"):
        run_fresh("math:sqrt", -1)
    with pytest.raises(IsolationError, match=r"crashed \(SIGSEGV\)") as crash:
        run_fresh("tests_isolate_target:crash_while", "parsing the model", env=_targets_env())
    assert crash.value.stage == "parsing the model"
    with pytest.raises(IsolationError, match="timed out after 0.5 s") as hang:
        run_fresh("tests_isolate_target:hang_while", "warming up", timeout=0.5, env=_targets_env())
    assert hang.value.stage == "warming up"


def test_fresh_child_memory_cap():
    with pytest.raises(IsolationError, match="memory"):
        run_fresh("tests_isolate_target:allocate", 4 * 2**30, memory=256 * 2**20, env=_targets_env())
    assert run_fresh("tests_isolate_target:allocate", 2**20, memory=256 * 2**20,
                     env=_targets_env()) == 2**20


def _targets_env() -> dict[str, str]:
    """PYTHONPATH for the fresh child to import this folder's tests_isolate_target module."""
    here = str(Path(__file__).resolve().parent)
    return {"PYTHONPATH": os.pathsep.join([here, *filter(None, [os.environ.get("PYTHONPATH")])])}


def _big_answer(item):
    return "y" * 200_000  # more than a pipe holds: the child blocks until its answer is read


def test_a_second_queue_does_not_hold_the_first_one_open():
    # The first queue is still being fed when the second forks; the second's child must not keep
    # the first queue's write end, or the first queue's children never see its end and time out
    # (every outcome would then be "timed out").
    first = Queue(_describe, list(range(40_000)), workers=2)
    second = Queue(_big_answer, [1], workers=1)
    outcomes = first.results(timeout=EVENT_LIMIT)
    assert not [o for o in outcomes if isinstance(o, IsolationError)]
    assert second.results(timeout=20) == ["y" * 200_000]


def _square_in_a_grandchild(value: int) -> int:
    return run_isolated(lambda: value * value)


def test_a_child_can_isolate_work_of_its_own():
    """`--jobs 2` workers run the permutation test in children of their own. A worker that
    closed the stale queue-writer numbers it inherited closed its new pipes instead, and every
    nested run ended "without a result"."""
    assert map_isolated(_square_in_a_grandchild, [2, 3, 4], workers=2) == [4, 9, 16]
