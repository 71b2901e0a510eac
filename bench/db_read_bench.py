"""The warm path's one database read (the run's live row, ``FOR SHARE``), three ways, same PostgreSQL:

(a) SQLAlchemy Core, as the webhook did it before ``live_read``: ``live_volume`` on a connection of the
    autocommit engine (pool checkout, a prebuilt statement, compiled-statement cache, row -> ``VolumeRecord``);
(b) the raw psycopg2 connection of the same pool, the same SQL text with ``%s`` parameters;
(c) (b) with a server-side prepared statement (``PREPARE`` once per connection, then ``EXECUTE``): what
    ``read_live_volume`` does now on PostgreSQL (``shared/db/live_read.py``).

``python -m bench.db_read_bench`` prints per-read microseconds (median and p99 over 5 rounds of 3,000 reads).
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from leoflow_staging.devenv.postgres import Postgres
from shared.db import volumes_repo
from shared.db.engine import make_engine
from shared.db.migrate import upgrade
from shared.volumes import NewVolume

SQL = ("SELECT id, namespace, pvc_name, pvc_uid, dag_id, run_id, storage_class, size, state, created_at, "
       "reclaim_started_at, deleted_at, delete_reason, detail FROM staging_volumes "
       "WHERE namespace = %s AND pvc_name = %s AND state <> 'deleted' FOR SHARE")


def _time(fn: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e6)
    return out


def main() -> int:
    pg = Postgres(die_with_parent=True)
    pg.start()
    try:
        url = pg.create_database("dbread")
        setup = make_engine(url, timeout=2)
        upgrade(setup)
        with setup.begin() as conn:
            volumes_repo.insert_active(conn, NewVolume(namespace="ns", pvc_name="stg-x", pvc_uid="u", dag_id="d",
                                                       run_id="r", storage_class="c", size="1Gi"),
                                       now=dt.datetime.now(dt.UTC))
        reader = make_engine(url, timeout=2, autocommit=True, pre_ping=False)

        def core() -> Any:
            with reader.connect() as conn:
                return volumes_repo.live_volume(conn, "ns", "stg-x", lock=True)

        def raw() -> Any:
            conn = reader.raw_connection()
            try:
                cur = conn.cursor()
                cur.execute(SQL, ("ns", "stg-x"))
                return cur.fetchone()
            finally:
                conn.close()  # back to the pool

        def prepared() -> Any:
            conn = reader.raw_connection()
            try:
                if not conn.info.get("prepared"):  # the pool's per-connection dict
                    conn.cursor().execute("PREPARE live_row(text, text) AS " + SQL.replace("%s", "$1", 1)
                                          .replace("%s", "$2", 1))
                    conn.info["prepared"] = True
                cur = conn.cursor()
                cur.execute("EXECUTE live_row(%s, %s)", ("ns", "stg-x"))
                return cur.fetchone()
            finally:
                conn.close()

        assert core() is not None and raw() is not None and prepared() is not None
        figures: dict[str, dict[str, float]] = {}
        for _name, fn in (("sqlalchemy_core", core), ("raw_psycopg2", raw), ("raw_prepared", prepared)):
            _time(fn, 500)  # warm caches
        rounds: dict[str, list[float]] = {"sqlalchemy_core": [], "raw_psycopg2": [], "raw_prepared": []}
        for _ in range(5):  # interleaved rounds: the same background load for the three
            for name, fn in (("sqlalchemy_core", core), ("raw_psycopg2", raw), ("raw_prepared", prepared)):
                rounds[name] += _time(fn, 3000)
        for name, samples in rounds.items():
            samples.sort()
            figures[name] = {"median_us": round(statistics.median(samples), 1),
                             "p99_us": round(samples[int(len(samples) * 0.99)], 1)}
        print(json.dumps(figures, indent=2))
        reader.dispose()
        setup.dispose()
    finally:
        pg.stop()
        pg.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
