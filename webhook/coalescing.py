"""Concurrent reads of one key share one statement, and that statement always starts after they all arrived.

A fan-out of one run sends many pods at once, and each admission reads the run's row (the GC race guard:
it must see every reclaim that committed before the pod reached the webhook). While one read of a key is
in flight, later callers of the same key cannot use it: it may have started before they arrived. They
wait together instead, and when it ends one of them runs a single read for all of them. No caller ever
gets a result from a read that started before it called, and a key that is read by one caller at a time
(the common case) goes straight to the database: no wait, no extra work.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class CoalescingTimeout(TimeoutError):
    """A waiting caller gave up: the reads before it did not finish in time."""


@dataclass
class _Batch(Generic[V]):
    """Callers sharing one fetch. A batch that runs at once has no one to wait for and no one waiting on it
    (callers join only a waiting batch), so only a waiting batch has events (``queued``)."""

    queued: bool = False
    members: int = 1  # callers sharing this batch (shown to tests and figures)
    value: V | None = None
    error: BaseException | None = None
    go: threading.Event | None = None  # the batch may start (its first member runs it)
    done: threading.Event | None = None

    def __post_init__(self) -> None:
        if self.queued:
            self.go, self.done = threading.Event(), threading.Event()


def _event(event: threading.Event | None) -> threading.Event:
    """A queued batch's event (callers join, wait for and hand over only queued batches)."""
    assert event is not None
    return event


@dataclass
class _Key(Generic[V]):
    """A key with a read in flight (a key without one has no entry)."""

    waiting: _Batch[V] | None = None  # the next batch: callers that arrived while a read was running


class CoalescedRead(Generic[K, V]):
    """``read(key, wait=...)``: ``fetch(key)``, shared by the callers of ``key`` that wait at the same time.

    ``fetch_timeout`` bounds one fetch (the database's own timeouts do); ``wait`` bounds how long a caller
    waits for the read in flight before its own read starts, so a caller is answered within
    ``wait + fetch_timeout`` or gets ``CoalescingTimeout``.
    """

    def __init__(self, fetch: Callable[[K], V], *, fetch_timeout: float) -> None:
        self._fetch, self._fetch_timeout = fetch, fetch_timeout
        self._lock = threading.Lock()
        self._keys: dict[K, _Key[V]] = {}
        self.fetches = 0  # statements run (for tests and figures)

    def read(self, key: K, *, wait: float) -> V:
        with self._lock:
            state = self._keys.get(key)
            if state is None:  # nothing in flight: read now
                self._keys[key] = _Key()
                batch: _Batch[V] = _Batch()
                first = True
            elif state.waiting is None:  # a read is in flight: start the next batch, run it when that ends
                batch = state.waiting = _Batch(queued=True)
                first = True
            else:  # join the next batch
                batch = state.waiting
                batch.members += 1
                first = False
        if first:
            if batch.go is not None and not batch.go.wait(wait) and self._abandoned(key, batch, wait):
                raise batch.error  # type: ignore[misc]
            self._run(key, batch)
        elif not _event(batch.done).wait(wait + self._fetch_timeout):
            raise CoalescingTimeout(f"waited {wait + self._fetch_timeout:.1f}s for a shared read of the same run")
        if batch.error is not None:
            raise batch.error
        return batch.value  # type: ignore[return-value]

    def _run(self, key: K, batch: _Batch[V]) -> None:
        try:
            batch.value = self._fetch(key)
        except Exception as exc:  # every member gets the same error (one object, raised in each thread)
            batch.error = exc
        except BaseException:  # an interrupt is this thread's: the members get an error of their own
            batch.error = CoalescingTimeout("the shared read of the same run was interrupted")
            raise
        finally:
            with self._lock:
                self.fetches += 1
                following = None
                state = self._keys.get(key)
                if state is not None:
                    following, state.waiting = state.waiting, None
                    if following is None:
                        del self._keys[key]
            if batch.done is not None:
                batch.done.set()
            if following is not None:
                _event(following.go).set()  # its first member runs it; the key stays in flight for it

    def _abandoned(self, key: K, batch: _Batch[V], waited: float) -> bool:
        """The first member of a waiting batch timed out before its turn: fail the batch (True), unless the
        read before it has just handed it over (False: it is this batch's turn after all, run it)."""
        with self._lock:
            state = self._keys.get(key)
            if state is None or state.waiting is not batch:
                return False
            state.waiting = None  # later callers form a new batch behind the running read
        batch.error = CoalescingTimeout(f"waited {waited:.1f}s for a read of the same run to finish")
        _event(batch.done).set()  # only a queued batch waits for its turn
        return True
