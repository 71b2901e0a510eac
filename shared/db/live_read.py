"""The warm path's one read on PostgreSQL, as a server-side prepared statement on the pool's raw driver
connection (``PREPARE`` once per connection, then ``EXECUTE``): measured at 274 us against 498 us for the
same read through SQLAlchemy Core on this machine (bench/db_read_bench.py, docs/performance.md).

The statement is the one ``volumes_repo`` builds (compiled from it, so the two cannot drift). Driver errors
are raised as SQLAlchemy's ``DBAPIError`` subclasses, so ``translate_errors`` treats them as before, and a
connection found dead is discarded from the pool and the read retried once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.dialects import postgresql

_PREPARED = "leoflow_staging_live_row"  # the key in the pool connection's info dict, and the statement name


def prepare_sql(statement: sa.Select[Any]) -> tuple[str, list[str]]:
    """``PREPARE`` text for ``statement`` with its ``ns`` and ``name`` as $1 and $2; its column names."""
    compiled = statement.compile(dialect=postgresql.dialect())  # type: ignore[no-untyped-call]
    text = str(compiled)
    for key, value in compiled.params.items():
        if key == "ns":
            text = text.replace(f"%({key})s", "$1")
        elif key == "name":
            text = text.replace(f"%({key})s", "$2")
        else:  # a constant of the statement (the state 'deleted'): inline it, quoted
            text = text.replace(f"%({key})s", "'" + str(value).replace("'", "''") + "'")
    columns = [c.name for c in statement.selected_columns]
    return f"PREPARE {_PREPARED}(varchar, varchar) AS {text}", columns


class PreparedRead:
    """``read(namespace, pvc_name)``: the live row as a dict of columns, or None (PostgreSQL engines only)."""

    def __init__(self, engine: sa.Engine, statement: sa.Select[Any],
                 convert: Callable[[dict[str, Any]], Any]) -> None:
        self._engine = engine
        self._prepare, self._columns = prepare_sql(statement)
        self._convert = convert
        self._dbapi_error: type[Exception] = engine.dialect.loaded_dbapi.Error

    def read(self, namespace: str, pvc_name: str) -> Any:
        for attempt in (1, 2):
            try:  # pool checkout: the pool raises the driver's own error when it cannot connect
                conn = self._engine.raw_connection()
            except self._dbapi_error as err:
                raise exc.DBAPIError.instance("connect", None, err, self._dbapi_error) from err
            try:
                cur = conn.cursor()
                if not conn.info.get(_PREPARED):
                    cur.execute(self._prepare)
                    conn.info[_PREPARED] = True
                cur.execute(f"EXECUTE {_PREPARED}(%s, %s)", (namespace, pvc_name))
                row = cur.fetchone()
                cur.close()
                return self._convert(dict(zip(self._columns, row, strict=True))) if row else None
            except self._dbapi_error as err:
                dead = bool(getattr(conn.dbapi_connection, "closed", 0))
                if dead:
                    conn.invalidate(err)  # never back into the pool
                if attempt == 1 and dead:
                    continue
                raise exc.DBAPIError.instance(f"EXECUTE {_PREPARED}", (namespace, pvc_name), err,
                                              self._dbapi_error, connection_invalidated=dead) from err
            finally:
                conn.close()
        return None  # pragma: no cover - the loop returns or raises
