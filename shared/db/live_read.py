"""The warm path's one read on PostgreSQL, sent on the pool's raw driver connection.

The statement is the Core statement of ``volumes_repo`` (compiled from it once, so the two cannot drift),
executed without SQLAlchemy's per-execution machinery: measured at about a third less than the same read
through Core (bench/db_read_bench.py, docs/performance.md). Nothing is prepared on the server, so it works
unchanged behind a transaction-pooling PgBouncer.

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
from sqlalchemy.dialects import postgresql

R = TypeVar("R")

NO_FLUSH = "SET LOCAL synchronous_commit = off; "


def compile_read(statement: sa.Select[Any]) -> tuple[str, dict[str, Any], list[str]]:
    """The driver text of ``statement`` (psycopg2 ``%(name)s`` parameters), its constant parameters, and
    its column names."""
    compiled = statement.compile(dialect=postgresql.dialect())  # type: ignore[no-untyped-call]
    return str(compiled), dict(compiled.params), [c.name for c in statement.selected_columns]


class RawRead(Generic[R]):
    """``read(**params)``: every row of ``statement`` as ``convert(columns)`` (PostgreSQL engines only)."""

    def __init__(self, engine: sa.Engine, statement: sa.Select[Any],
                 convert: Callable[[Mapping[str, Any]], R], *, prefix: str = NO_FLUSH) -> None:
        self._engine = engine
        text, self._constants, self._columns = compile_read(statement)
        self._text = prefix + text
        self._convert = convert
        self._dbapi_error: type[Exception] = engine.dialect.loaded_dbapi.Error

    @property
    def text(self) -> str:
        return self._text

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
                cur.close()
                columns = self._columns
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
