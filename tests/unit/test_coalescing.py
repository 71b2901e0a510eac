"""Coalesced reads: callers that wait together share one read, and no caller ever gets the result of a read
that started before it called (the GC race guard depends on it). Threads are steered with events, so the
tests do not depend on timing."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from webhook.coalescing import CoalescedRead, CoalescingTimeout


class Source:
    """A fetch that records when each read started and can be held until released."""

    def __init__(self) -> None:
        self.version = 0  # what a read returns: the state at the moment it starts
        self.started: list[int] = []
        self.hold = threading.Event()
        self.hold.set()
        self.entered = threading.Event()
        self.fail: BaseException | None = None
        self.fail_from = 1  # the first read (1-based) that raises ``fail``

    def __call__(self, key: str) -> tuple[str, int]:
        seen = self.version
        self.started.append(seen)
        self.entered.set()
        assert self.hold.wait(10)
        if self.fail is not None and len(self.started) >= self.fail_from:
            raise self.fail
        return key, seen


def _until(check: Callable[[], bool]) -> None:
    for _ in range(2000):
        if check():
            return
        time.sleep(0.005)
    raise AssertionError("condition not reached")


def _waiting(read: CoalescedRead[str, Any], key: str) -> int:
    state = read._keys.get(key)
    return state.waiting.members if state is not None and state.waiting is not None else 0


def _start(read: CoalescedRead[str, Any], key: str, out: list[Any], wait: float = 5) -> threading.Thread:
    def run() -> None:
        try:
            out.append(read.read(key, wait=wait))
        except BaseException as exc:
            out.append(exc)
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _held(read: CoalescedRead[str, Any], source: Source, key: str,
          out: list[Any]) -> threading.Thread:
    """A read of ``key`` that has started and is held by ``source`` until released."""
    source.hold.clear()
    thread = _start(read, key, out)
    assert source.entered.wait(5)
    return thread


def test_a_lone_caller_reads_at_once() -> None:
    source = Source()
    read = CoalescedRead(source, fetch_timeout=5)
    assert read.read("a", wait=5) == ("a", 0) and read.read("a", wait=5) == ("a", 0)
    assert read.fetches == 2 and read._keys == {}


def test_callers_arriving_during_a_read_share_the_next_one_which_sees_what_they_saw() -> None:
    source = Source()
    read = CoalescedRead(source, fetch_timeout=5)
    first: list[Any] = []
    t1 = _held(read, source, "run", first)
    source.version = 1  # a reclaim commits after the first read started, before the others arrive
    later: list[Any] = []
    others = [_start(read, "run", later) for _ in range(5)]
    _until(lambda: _waiting(read, "run") == 5)
    other_key: list[Any] = []
    t_other = _start(read, "other", other_key)  # another key is never held up by this one
    _until(lambda: len(other_key) == 0 and len(source.started) == 2)
    source.hold.set()
    for t in [t1, t_other, *others]:
        t.join(10)
    assert first == [("run", 0)]
    assert later == [("run", 1)] * 5  # never the result of the read that started before they came
    assert other_key == [("other", 1)]
    assert read.fetches == 3 and source.started == [0, 1, 1] and read._keys == {}


def test_an_error_reaches_every_member_and_the_key_recovers() -> None:
    source = Source()
    read = CoalescedRead(source, fetch_timeout=5)
    out: list[Any] = []
    t1 = _held(read, source, "k", out)
    waiting = [_start(read, "k", out) for _ in range(3)]
    _until(lambda: _waiting(read, "k") == 3)
    source.fail = RuntimeError("database down")
    source.hold.set()
    for t in [t1, *waiting]:
        t.join(10)
    assert len(out) == 4 and all(isinstance(x, RuntimeError) for x in out)
    assert read.fetches == 2  # the running read and one for the three waiting
    source.fail = None
    assert read.read("k", wait=5) == ("k", 0) and read._keys == {}


def test_waiting_is_bounded() -> None:
    source = Source()
    read = CoalescedRead(source, fetch_timeout=0.1)
    out: list[Any] = []
    t1 = _held(read, source, "k", out)
    waiting = [_start(read, "k", out, wait=0.1) for _ in range(2)]
    for t in waiting:
        t.join(10)
    assert len(out) == 2 and all(isinstance(x, CoalescingTimeout) for x in out)
    source.hold.set()
    t1.join(10)
    assert out[-1] == ("k", 0) and read._keys == {}
    assert read.read("k", wait=5) == ("k", 0)


@pytest.mark.parametrize("threads", [2, 16])
def test_many_threads_many_keys_every_result_is_fresh(threads: int) -> None:
    lock = threading.Lock()
    clock = {"now": 0}

    def fetch(key: str) -> int:
        with lock:
            clock["now"] += 1
            return clock["now"]

    read = CoalescedRead(fetch, fetch_timeout=5)
    failures: list[str] = []

    def caller(i: int) -> None:
        for n in range(200):
            with lock:
                arrived = clock["now"]
            got = read.read(f"k{(i + n) % 3}", wait=5)
            if got <= arrived:
                failures.append(f"read {got} started before arrival {arrived}")

    pool = [threading.Thread(target=caller, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(30)
    assert not failures and read._keys == {}


class _Interrupt(BaseException):
    pass


def test_an_interrupt_stays_with_its_thread_and_the_members_get_an_error_of_their_own() -> None:
    source = Source()
    read = CoalescedRead(source, fetch_timeout=5)
    first: list[Any] = []
    t1 = _held(read, source, "k", first)
    later: list[Any] = []
    waiting = [_start(read, "k", later) for _ in range(2)]
    _until(lambda: _waiting(read, "k") == 2)
    source.fail, source.fail_from = _Interrupt(), 2  # the next read (for the two) is interrupted
    source.hold.set()
    t1.join(10)
    for t in waiting:
        t.join(10)
    assert first == [("k", 0)]
    assert sorted(type(x).__name__ for x in later) == ["CoalescingTimeout", "_Interrupt"]
    assert read._keys == {}
