"""Single flight for the GC: a transaction-scoped PostgreSQL advisory lock held for the sweep.

The lock lives in one open transaction on a connection of its own and cannot outlive its holder:

* it goes with the transaction, so a client that vanishes, a backend that is terminated, or a pooler
  (PgBouncer in transaction mode: one server connection per transaction) that drops the client's
  server connection all release it; a session lock would instead stay with whatever backend the
  pooler hands out next, or with a backend whose client's node died, until TCP notices (hours);
* the server ends a holder that goes silent: ``idle_in_transaction_session_timeout`` is set on the lock's
  transaction (``SET LOCAL``, so nothing leaks to a pooled connection), and the live sweep ``touch``es the
  lock's connection with a cheap statement as it makes progress; a hung or frozen holder, or one whose
  node died without closing the socket, loses the lock after that timeout;
* server-side TCP keepalives (and ``tcp_user_timeout``) are set the same way, so a dead peer is noticed
  in about a minute even between touches; the client side has libpq keepalives (``make_engine``).

Losing the lock is never a safety matter (each reclaim guards itself: run re-check, state transitions,
uid preconditions); it only stops two sweeps doing the same work. A holder that finds its lock gone
raises ``LockLost`` and its sweep stops.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import sqlalchemy as sa
from sqlalchemy import exc

from shared.errors import LockLost

GC_LOCK_KEY = 0x1E0F1057A6  # an arbitrary, fixed 64-bit key for "leoflow-staging gc" (as before: old and new exclude)
LOCK_APPLICATION_NAME = "leoflow-staging-gc-lock"  # how the holder shows in pg_stat_activity
DEFAULT_IDLE_TIMEOUT = 300.0  # seconds without a touch before the server ends the holder's session

# Server-side keepalives on the lock's backend: first probe after 30 s of silence, then every 10 s, 3 probes.
_KEEPALIVES = {"tcp_keepalives_idle": "30", "tcp_keepalives_interval": "10", "tcp_keepalives_count": "3"}
_USER_TIMEOUT = {"tcp_user_timeout": "60000"}  # PostgreSQL 12 and later: unacknowledged data for 60 s ends it


class GcLock:
    """The GC lock as taken: truthy when this process holds it. ``touch`` (thread-safe, rate-limited) tells
    the server the holder is alive; it raises ``LockLost`` once the lock's session is gone."""

    def __init__(self, conn: sa.Connection | None, *, held: bool, idle_timeout: float) -> None:
        self._conn, self.held = conn, held
        self._every = max(idle_timeout / 20, 0.05)  # many touches per timeout: a live sweep never hits it
        self._last = time.monotonic()
        self._mutex = threading.Lock()

    def __bool__(self) -> bool:
        return self.held

    def touch(self, *, force: bool = False) -> None:
        if self._conn is None or not self.held:
            return
        with self._mutex:
            if not force and time.monotonic() - self._last < self._every:
                return
            try:
                self._conn.execute(sa.text("SELECT 1"))
            except exc.DBAPIError as err:
                self.held = False
                first = str(err.orig).strip().splitlines()[0] if err.orig else str(err)
                raise LockLost(f"the GC lock was lost ({first}); this sweep stops, the next one takes over") \
                    from err
            self._last = time.monotonic()


def _lock_settings(idle_timeout: float, server_version: tuple[int, ...]) -> dict[str, str]:
    return {"idle_in_transaction_session_timeout": str(max(1, int(idle_timeout * 1000))),
            "application_name": LOCK_APPLICATION_NAME, **_KEEPALIVES,
            **(_USER_TIMEOUT if server_version >= (12,) else {})}


@contextlib.contextmanager
def single_flight(engine: sa.Engine, *, idle_timeout: float = DEFAULT_IDLE_TIMEOUT) -> Iterator[GcLock]:
    """Yields the GC lock, truthy when this process holds it (until the block ends), else falsy.

    ``idle_timeout``: seconds the holder may go without ``touch`` before the server ends its session (and the
    lock with it); it must exceed the longest step between two touches of a live sweep.
    """
    conn = engine.connect()
    try:
        # All transaction-local: they end with the lock, and never stay on a pooled server connection.
        version = tuple(v for v in engine.dialect.server_version_info or (0,) if isinstance(v, int))
        for name, value in _lock_settings(idle_timeout, version).items():
            conn.execute(sa.text("SELECT set_config(:n, :v, true)"), {"n": name, "v": value})
        got = bool(conn.execute(sa.text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": GC_LOCK_KEY}).scalar())
        if not got:
            conn.rollback()
        lock = GcLock(conn if got else None, held=got, idle_timeout=idle_timeout)
        yield lock
    finally:
        try:
            conn.rollback()  # ends the transaction: releases the lock (a no-op when the session is gone)
        except exc.DBAPIError:
            conn.invalidate()  # the session was ended (timeout, terminated): so was the lock
        finally:
            conn.close()
