"""Where a GC sweep's time goes: timers around the Kubernetes calls, the SQL statements and the settle phase.

Installed only by ``python -m bench.gc_bench --profile`` (figures for docs/performance.md, never asserted).
The per-call figures are sums over threads (a parallel phase's sum exceeds its wall); the phases
(listing, settle) are wall time.
"""

from __future__ import annotations

import collections
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa

from gc_job.executor import Executor
from shared.kube import KubeApi


class Split:
    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self.seconds: dict[str, float] = collections.defaultdict(float)
        self.calls: collections.Counter[str] = collections.Counter()
        self._undo: list[Callable[[], None]] = []

    def add(self, key: str, seconds: float, calls: int = 1) -> None:
        with self._mutex:
            self.seconds[key] += seconds
            self.calls[key] += calls

    def _wrap(self, owner: Any, name: str, key: str) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started, cpu = time.perf_counter(), time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                self.add(key, time.perf_counter() - started)
                self.add(f"{key} (client CPU of the calling thread)", time.thread_time() - cpu)

        setattr(owner, name, timed)
        self._undo.append(lambda: setattr(owner, name, original))

    def _wrap_pages(self) -> None:
        name = "list_managed" if hasattr(KubeApi, "list_managed") else "list_managed_claims"  # before issue 13
        original = getattr(KubeApi, name)

        def pages(api: KubeApi, *args: Any, **kwargs: Any) -> Iterator[Any]:
            it = original(api, *args, **kwargs)
            while True:
                started = time.perf_counter()
                try:
                    page = next(it)
                except StopIteration:
                    self.add("kube LIST (per page, decode included)", time.perf_counter() - started, 0)
                    return
                self.add("kube LIST (per page, decode included)", time.perf_counter() - started)
                yield page

        setattr(KubeApi, name, pages)
        self._undo.append(lambda: setattr(KubeApi, name, original))

    def install(self, engine: sa.Engine) -> None:
        for name in ("read_claim", "delete_claim", "pods_using_claim", "delete_pod"):
            if hasattr(KubeApi, name):
                self._wrap(KubeApi, name, f"kube {name}")
        for name in ("delete_claims",):
            if hasattr(KubeApi, name):
                self._wrap(KubeApi, name, f"kube {name}")
        self._wrap(Executor, "settle", "phase: settle (wall)")
        self._wrap_pages()
        starts: dict[int, float] = {}

        def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            starts[id(cursor)] = time.perf_counter()

        def after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            started = starts.pop(id(cursor), None)
            if started is not None:
                words = statement.split()
                kind = " ".join(words[:2]) if words[:1] != ["SELECT"] else " ".join(
                    ["SELECT", *words[words.index("FROM") + 1:words.index("FROM") + 2]] if "FROM" in words
                    else words[:2])
                self.add(f"sql {kind}", time.perf_counter() - started)

        split = self

        class NewConnections(logging.Handler):  # urllib3 logs each connection it opens (keep-alive misses)
            def emit(self, record: logging.LogRecord) -> None:
                if record.getMessage().startswith("Starting new"):
                    split.add("kube new TLS connections", 0.0)

        pool_log = logging.getLogger("urllib3.connectionpool")
        handler, level = NewConnections(), pool_log.level
        pool_log.addHandler(handler)
        pool_log.setLevel(logging.DEBUG)
        self._undo.append(lambda: pool_log.removeHandler(handler))
        self._undo.append(lambda: pool_log.setLevel(level))
        sa.event.listen(engine, "before_cursor_execute", before)
        sa.event.listen(engine, "after_cursor_execute", after)
        self._undo.append(lambda: sa.event.remove(engine, "before_cursor_execute", before))
        self._undo.append(lambda: sa.event.remove(engine, "after_cursor_execute", after))

    def uninstall(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()

    def as_dict(self) -> dict[str, dict[str, float]]:
        return {key: {"seconds": round(self.seconds[key], 2), "calls": self.calls[key]}
                for key in sorted(self.seconds, key=lambda k: -self.seconds[k])}
