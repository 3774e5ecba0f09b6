"""Native crashes, hangs and memory blow-ups in the child become errors, not a dead linter."""

from __future__ import annotations

import ctypes
import json
import os
import time
from pathlib import Path

import pytest

from bloatguard.isolate import IsolationError, Queue, map_isolated, run_isolated


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


def _square_or_crash(item):
    if item == "crash":
        ctypes.string_at(0)
    if item == "hang":
        time.sleep(60)
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
    start = time.monotonic()
    outcomes = map_isolated(_square_or_crash, ["hang", 2, 3, "raise", 4], workers=2, timeout=1.5)
    assert time.monotonic() - start < 10
    assert "timed out" in str(outcomes[0])
    assert outcomes[1:3] == [4, 9] and outcomes[4] == 16
    assert str(outcomes[3]) == "ValueError: bad model"


def _touch(path):
    Path(path).write_text("ran")
    return path


def test_queue_starts_before_results_are_asked_for(tmp_path):
    marker = tmp_path / "ran"
    queue = Queue(_touch, [str(marker)], workers=1)
    deadline = time.monotonic() + 10
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert marker.exists()  # the child worked while the caller did something else
    assert queue.results(timeout=5) == [str(marker)]


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
        time.sleep(60)
    return item


def test_answers_written_before_the_deadline_count():
    # One worker answers item 1, then hangs on item 2: item 1 keeps its answer.
    outcomes = map_isolated(_slow_second, [1, 2], workers=1, timeout=1)
    assert outcomes[0] == 1 and "timed out" in str(outcomes[1])


def test_ctrl_c_stops_the_children_too(tmp_path):
    import signal
    import subprocess
    import sys

    script = ("import time\nfrom bloatguard.isolate import Queue\n"
              "def hang(item):\n    time.sleep(60)\n"
              "queue = Queue(hang, [1, 2, 3, 4], workers=2)\n"
              "print(*(pid for pid, _ in queue.children), flush=True)\n"
              "queue.results(timeout=60)\n")
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    children = [int(pid) for pid in process.stdout.readline().split()]
    time.sleep(0.3)
    os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    process.wait(timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in children):
        time.sleep(0.05)
    assert not [pid for pid in children if Path(f"/proc/{pid}").exists()]


def _big_answer(item):
    return "y" * 200_000  # more than a pipe holds: the child blocks until its answer is read


def test_a_second_queue_does_not_hold_the_first_one_open():
    # The first queue is still being fed when the second forks; the second's child must not keep
    # the first queue's write end, or the first queue's children never see its end and time out.
    first = Queue(_describe, list(range(40_000)), workers=2)
    second = Queue(_big_answer, [1], workers=1)
    start = time.monotonic()
    outcomes = first.results(timeout=20)
    assert time.monotonic() - start < 10  # not stalled until the deadline killed them
    assert not [o for o in outcomes if isinstance(o, IsolationError)]
    assert second.results(timeout=20) == ["y" * 200_000]


def _square_in_a_grandchild(value: int) -> int:
    return run_isolated(lambda: value * value)


def test_a_child_can_isolate_work_of_its_own():
    """`--jobs 2` workers run the permutation test in children of their own. A worker that
    closed the stale queue-writer numbers it inherited closed its new pipes instead, and every
    nested run ended "without a result"."""
    assert map_isolated(_square_in_a_grandchild, [2, 3, 4], workers=2) == [4, 9, 16]
