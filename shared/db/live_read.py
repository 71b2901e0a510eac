"""The warm path's one read on PostgreSQL, sent on the pool's raw driver connection.

The read is a call of the function ``leoflow_staging_live_rows`` (migration 0003: PL/pgSQL keeps its plan
for the session), executed without SQLAlchemy's per-execution machinery: together, about half the time of
the same read through Core (bench/db_read_bench.py, docs/performance.md). Nothing is prepared on the
connection, so it works unchanged behind a transaction-pooling PgBouncer.

``FOR SHARE`` takes a row lock, and a row lock gives the statement's transaction an id and a WAL record:
with ``synchronous_commit = on`` (PostgreSQL's default) every admission would wait for a WAL flush. The
lock protects nothing after the statement ends, so the read runs as ``SET LOCAL synchronous_commit = off;
SELECT ...`` in one simple query (one round trip, one implicit transaction): the setting lasts exactly that
transaction, on any pooler.

Driver errors are raised as SQLAlchemy's ``DBAPIError`` subclasses, so ``translate_errors`` treats them as
before, and a connection found dead is discarded from the pool and the read retried once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc

R = TypeVar("R")

NO_FLUSH = "SET LOCAL synchronous_commit = off; "


class RawRead(Generic[R]):
    """``read(**params)``: every row of the query ``text`` (psycopg2 ``%(name)s`` parameters, ``constants``
    bound always) as ``convert(columns by name)`` (PostgreSQL engines only)."""

    def __init__(self, engine: sa.Engine, text: str, convert: Callable[[Mapping[str, Any]], R], *,
                 constants: Mapping[str, Any] | None = None, prefix: str = NO_FLUSH) -> None:
        self._engine = engine
        self._text = prefix + text
        self._constants = dict(constants or {})
        self._convert = convert
        self._dbapi_error: type[Exception] = engine.dialect.loaded_dbapi.Error

    def read(self, **params: Any) -> list[R]:
        values = {**self._constants, **params}
        for attempt in (1, 2):
            try:  # pool checkout: the pool raises the driver's own error when it cannot connect
                conn = self._engine.raw_connection()
            except self._dbapi_error as err:
                raise exc.DBAPIError.instance("connect", None, err, self._dbapi_error) from err
            try:
                cur = conn.cursor()
                cur.execute(self._text, values)
                rows: Sequence[Sequence[Any]] = cur.fetchall()
                columns = [c[0] for c in cur.description]
                cur.close()
                return [self._convert(dict(zip(columns, row, strict=True))) for row in rows]
            except self._dbapi_error as err:
                dead = bool(getattr(conn.dbapi_connection, "closed", 0))
                if dead:
                    conn.invalidate(err)  # never back into the pool
                if attempt == 1 and dead:
                    continue
                raise exc.DBAPIError.instance(self._text, values, err, self._dbapi_error,
                                              connection_invalidated=dead) from err
            finally:
                conn.close()
        return []  # pragma: no cover - the loop returns or raises
