"""gunicorn's gthread worker, with a thread that stays on a keep-alive connection for the next request.

In gthread, each request on a kept-alive connection passes through two hand-offs: the thread that answered
gives the connection back to the worker's main loop (a pipe write, a wake-up), and the main loop, when the
next request arrives, submits it to the pool again (a queue put, another wake-up). On a machine where a
wake-up costs tens of microseconds that is much of a short answer's time (the no-op took 40% less time without
them, docs/performance.md). Here the thread that answered waits up to ``linger`` seconds on the connection
and answers the next request itself.

A lingering thread delays no other request by more than ``linger``: a thread starts to linger only while no
request is queued for the pool, and at most half of the pool lingers at once (one thread when the pool has
one or two). After ``max_turn`` requests in a row, or ``linger`` without one, the connection goes back to the
main loop as in gthread. Everything else (TLS, keep-alive limits, graceful stop, timeouts) is gthread's own
code.
"""

from __future__ import annotations

import select
import threading
from typing import Any

from gunicorn.workers.gthread import ThreadWorker


class LingeringThreadWorker(ThreadWorker):  # type: ignore[misc]
    linger = 0.005  # seconds a thread waits on its connection for the next request
    max_turn = 100  # requests in a row on one connection before it goes back to the main loop

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._turns = threading.Lock()
        self._queued = 0  # connections submitted to the pool and not yet taken by a thread
        self._lingering = 0
        self._max_lingering = max(self.cfg.threads // 2, 1)

    def enqueue_req(self, conn: Any) -> None:
        with self._turns:
            self._queued += 1
        super().enqueue_req(conn)

    def handle(self, conn: Any) -> Any:
        with self._turns:
            self._queued -= 1
        result = super().handle(conn)
        served = 1
        while result is True and self.alive and served < self.max_turn and self._next_request_came(conn):
            result = super().handle(conn)
            served += 1
        return result

    def _next_request_came(self, conn: Any) -> bool:
        """Whether the next request is there, waiting up to ``linger`` when this thread may linger."""
        if conn.parser.unreader.buf.getvalue() or getattr(conn.sock, "pending", lambda: 0)():
            return True  # already read ahead: the socket would not show it
        with self._turns:
            if self._queued or self._lingering >= self._max_lingering:
                return False
            self._lingering += 1
        try:
            poller = select.poll()
            poller.register(conn.sock, select.POLLIN)
            return bool(poller.poll(self.linger * 1000))
        except (OSError, ValueError):  # closed under us: gthread's own path will find out
            return False
        finally:
            with self._turns:
                self._lingering -= 1


__all__ = ["LingeringThreadWorker"]
