"""Watch-fed caches (the informer pattern of client-go, controller-runtime and kopf), one per process.

LIST, then WATCH from the list's resourceVersion with bookmarks; a 410 Gone (the version was
compacted away) relists; any other error backs off (capped, jittered) and resumes from the last
version seen. Objects deleted are removed, so the cache holds exactly the live objects the selector
matches. A reader asks ``snapshot()``, which answers ``None`` unless the cache can show it is fresh:
listed at least once, and its watch not broken for longer than ``stale_after`` seconds. On ``None``
the caller reads the API directly; an admission never rests on a cache that cannot show freshness.

The store and the event folding are pure (``Store``); the thread and the HTTP stream are the edge.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from urllib3.response import BaseHTTPResponse

log = logging.getLogger("leoflow_staging.informer")

T = TypeVar("T")
Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped objects


class Gone(Exception):
    """HTTP 410 (or an ERROR event with code 410): the resourceVersion is too old; relist."""


@dataclass(frozen=True)
class Page:
    """One page of a LIST: the raw items and the collection's resourceVersion."""

    items: list[dict[str, Any]]
    resource_version: str


# A LIST, a page at a time (converted page by page, so raw JSON of one page at most is held).
ListFn = Callable[[], Iterator[Page]]
# Opens a watch from a resourceVersion (the request is made by the call: when it returns, the watch is
# open) and gives an iterator of the raw events ({"type", "object"}) until the server ends the stream.
WatchFn = Callable[[str], Iterator[dict[str, Any]]]


def object_key(obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


class Store(Generic[T]):
    """The live objects by key, converted by ``convert``; folding one event at a time (pure, no locks)."""

    def __init__(self, convert: Callable[[dict[str, Any]], T]) -> None:
        self._convert = convert
        self.items: dict[Key, T] = {}
        self.resource_version = ""

    def build(self, pages: Iterator[Page]) -> tuple[dict[Key, T], str]:
        """The contents of a complete LIST (not yet swapped in) and its resourceVersion."""
        items: dict[Key, T] = {}
        version = ""
        for page in pages:
            items.update((object_key(o), self._convert(o)) for o in page.items)
            version = page.resource_version or version
        return items, version

    def replace(self, items: dict[Key, T], resource_version: str) -> None:
        self.items, self.resource_version = items, resource_version

    def apply(self, event: dict[str, Any]) -> None:
        """Fold one watch event; raise ``Gone`` on an expired version, ``ValueError`` on an unknown event."""
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Gone(str(obj.get("message") or "resource version too old"))
            raise ValueError(f"watch error event: {obj.get('code')} {obj.get('message')}")
        rv = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        if kind in ("ADDED", "MODIFIED"):
            self.items[object_key(obj)] = self._convert(obj)
        elif kind == "DELETED":
            self.items.pop(object_key(obj), None)
        elif kind != "BOOKMARK":
            raise ValueError(f"unknown watch event type {kind!r}")
        if rv:
            self.resource_version = rv


def backoff_delays(*, base: float = 0.2, cap: float = 10.0) -> Iterator[float]:
    """0.2, 0.4, 0.8 ... capped at ``cap`` seconds, each jittered down by up to half."""
    delay = base
    while True:
        yield delay * (0.5 + random.random() / 2)
        delay = min(cap, delay * 2)


class Informer(Generic[T]):
    """A background thread keeping a ``Store`` current; ``snapshot()`` for the readers."""

    def __init__(self, name: str, *, list_fn: ListFn, watch_fn: WatchFn, convert: Callable[[dict[str, Any]], T],
                 stale_after: float, clock: Callable[[], float] = time.monotonic,
                 on_change: Callable[[int, bool], None] | None = None) -> None:
        self.name = name
        self._list, self._watch = list_fn, watch_fn
        self._store: Store[T] = Store(convert)
        self._stale_after, self._clock = stale_after, clock
        self._lock = threading.Lock()
        self._synced = False
        self._missed = False  # a 410 Gone: events were missed, not fresh until the relist is in
        self._broken_since: float | None = None  # None: the watch is open (or being reopened at once)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.relists = 0
        self.last_error = ""
        self._on_change = on_change or (lambda size, listed: None)  # (objects now, after a full LIST)

    # -- readers -------------------------------------------------------------------------------------
    def fresh(self) -> bool:
        with self._lock:
            return self._fresh_locked()

    def _fresh_locked(self) -> bool:
        return self._synced and not self._missed and (self._broken_since is None
                                 or self._clock() - self._broken_since <= self._stale_after)

    def get(self, namespace: str, name: str) -> tuple[bool, T | None]:
        """(fresh, object or None); when not fresh the object is None and must not be trusted."""
        with self._lock:
            if not self._fresh_locked():
                return False, None
            return True, self._store.items.get((namespace, name))

    def snapshot(self) -> list[T] | None:
        """All objects, or None when the cache cannot show it is fresh."""
        with self._lock:
            return list(self._store.items.values()) if self._fresh_locked() else None

    def version(self) -> str:
        """The last resourceVersion the cache has folded in (a LIST's, an event's or a bookmark's)."""
        with self._lock:
            return self._store.resource_version

    def size(self) -> int:
        with self._lock:
            return len(self._store.items)

    def problem(self) -> str | None:
        """Why the cache is not usable now, or None."""
        with self._lock:
            if self._fresh_locked():
                return None
            state = ("not synced yet" if not self._synced else
                     "relisting after 410 Gone" if self._missed else "watch broken")
        return f"{self.name} cache {state}" + (f" ({self.last_error})" if self.last_error else "")

    def synced(self) -> bool:
        with self._lock:
            return self._synced

    # -- the loop ------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"informer-{self.name}", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _broken(self, error: BaseException) -> None:
        with self._lock:
            if self._broken_since is None:
                self._broken_since = self._clock()
        self.last_error = f"{type(error).__name__}: {error}"[:300]

    def _run(self) -> None:
        delays = backoff_delays()
        need_list = True
        while not self._stop.is_set():
            try:
                if need_list:
                    items, version = self._store.build(self._list())
                    with self._lock:
                        self._store.replace(items, version)
                        self._synced, self._missed, self._broken_since = True, False, None
                    self.relists += 1
                    self._on_change(len(items), True)
                    need_list = False
                    self.last_error = ""
                    delays = backoff_delays()
                events = self._watch(self._store.resource_version)
                with self._lock:
                    self._broken_since = None  # the watch is open again: nothing is missed from here
                delays = backoff_delays()
                for event in events:
                    with self._lock:
                        self._store.apply(event)
                        self._broken_since = None  # the stream delivers: fresh as of now
                        size = len(self._store.items)
                    if event.get("type") != "BOOKMARK":
                        self._on_change(size, False)
                    if self._stop.is_set():
                        return
                # The server ended the watch (its timeoutSeconds): resume from the version seen, at once.
            except Gone as exc:
                log.info("%s watch: %s; relisting", self.name, exc)
                with self._lock:
                    self._missed = True
                need_list = True
            except Exception as exc:
                self._broken(exc)
                log.warning("%s watch failed: %s", self.name, self.last_error)
                self._stop.wait(next(delays))


def iter_json_lines(response: BaseHTTPResponse) -> Iterator[dict[str, Any]]:
    """The watch stream's events: one JSON object per line, split across chunks as it may be."""
    pending = b""
    try:
        for chunk in response.stream(65536, decode_content=True):
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                if line.strip():
                    yield json.loads(line)
        if pending.strip():
            yield json.loads(pending)
    finally:
        response.release_conn()
