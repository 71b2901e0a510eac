"""The warm path's one database read (the run's live rows under both candidate names, ``FOR SHARE``), five
ways, same PostgreSQL, interleaved round by round:

(a) ``core``: SQLAlchemy Core on a connection of the autocommit engine (what the webhook did before);
(b) ``raw_text``: the Core statement compiled once, sent by ``live_read.RawRead`` on the pool's raw driver
    connection as ``SET LOCAL synchronous_commit = off; SELECT ...`` (parsed and planned every time);
(c) ``function``: (b) calling ``leoflow_staging_live_rows`` (migration 0003, PL/pgSQL keeps the plan): what
    the webhook does now;
(d) ``function_no_set_local``: (c) without the ``SET LOCAL``: on the tests' server (``fsync`` and
    ``synchronous_commit`` off) this shows what the ``SET LOCAL`` costs; on a durable server (PostgreSQL's
    defaults, the second run) what it saves: a WAL flush per read;
(e) ``prepared``: (b) as a server-side prepared statement, for reference (not used: a named PREPARE does not
    survive a transaction-pooling PgBouncer).

Figures per read: wall median and p99 over 5 rounds of 3,000 reads, and the CPU of the client thread and of
the PostgreSQL backend. ``python -m bench.db_read_bench``; ``make bench`` runs it too.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from leoflow_staging.devenv.postgres import Postgres
from shared.db import volumes_repo
from shared.db.engine import make_engine
from shared.db.live_read import RawRead
from shared.db.migrate import upgrade
from shared.db.schema import LIVE, staging_volumes
from shared.volumes import NewVolume

NAMES = ["stg-x", "stg-x-legacy"]
T = staging_volumes
# The read as one Core statement with the names as an array parameter, as step (b) compiles it.
LIVE_ROWS_ANY = sa.select(T).where(
    T.c.namespace == sa.bindparam("ns"),
    T.c.pvc_name == sa.any_(sa.bindparam("names", type_=postgresql.ARRAY(sa.String))), LIVE,
).order_by(T.c.id).with_for_update(read=True)


def _backend_cpu(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()  # noqa: SIM115 - one read
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _measure(fn: Callable[[], Any], n: int, backend_pids: list[int]) -> tuple[list[float], float, float]:
    wall = []
    cpu0, back0 = time.thread_time(), sum(_backend_cpu(p) for p in backend_pids)
    for _ in range(n):
        t = time.perf_counter()
        fn()
        wall.append((time.perf_counter() - t) * 1e6)
    cpu = (time.thread_time() - cpu0) * 1e6 / n
    backend = (sum(_backend_cpu(p) for p in backend_pids) - back0) * 1e6 / n
    return wall, cpu, backend


def run(rounds: int = 5, reads: int = 3000, *, durable: bool = False) -> dict[str, dict[str, float]]:
    """``durable``: a server with PostgreSQL's default fsync and synchronous_commit (what the SET LOCAL saves)."""
    pg = Postgres(die_with_parent=True, durable=durable)
    pg.start()
    try:
        url = pg.create_database("dbread")
        setup = make_engine(url, timeout=2)
        upgrade(setup)
        with setup.begin() as conn:
            volumes_repo.insert_active(conn, NewVolume(namespace="ns", pvc_name="stg-x", pvc_uid="u", dag_id="d",
                                                       run_id="r", storage_class="c", size="1Gi"),
                                       now=dt.datetime.now(dt.UTC))
        reader = make_engine(url, timeout=2, autocommit=True, pre_ping=False, pool_size=1)

        def core() -> Any:
            with reader.connect() as conn:
                return [volumes_repo._record(r) for r in conn.execute(
                    volumes_repo._LIVE_ROWS_NAMED, {"ns": "ns", "names": NAMES}).all()]

        compiled = LIVE_ROWS_ANY.compile(dialect=postgresql.dialect())
        text, constants = str(compiled), dict(compiled.params)
        params = {**constants, "ns": "ns", "names": NAMES}
        raw_text = RawRead(reader, text, volumes_repo._from_columns, constants=constants)
        function = RawRead(reader, volumes_repo.LIVE_ROWS_CALL, volumes_repo._from_columns)
        no_set = RawRead(reader, volumes_repo.LIVE_ROWS_CALL, volumes_repo._from_columns, prefix="")

        def prepared() -> Any:
            conn = reader.raw_connection()
            try:
                cur = conn.cursor()
                if not conn.info.get("prepared"):  # the pool's per-connection dict
                    cur.execute("PREPARE live_rows(varchar, varchar[], varchar) AS "
                                + text.replace("%(ns)s", "$1").replace("%(names)s", "$2").replace("%(state_1)s", "$3"))
                    conn.info["prepared"] = True
                cur.execute("EXECUTE live_rows(%(ns)s, %(names)s, %(state_1)s)", params)
                return cur.fetchall()
            finally:
                conn.close()

        ways: dict[str, Callable[[], Any]] = {
            "core": core, "raw_text": lambda: raw_text.read(ns="ns", names=NAMES),
            "function": lambda: function.read(ns="ns", names=NAMES),
            "function_no_set_local": lambda: no_set.read(ns="ns", names=NAMES), "prepared": prepared}
        for fn in ways.values():
            assert len(fn()) == 1
        pooled = reader.raw_connection()
        cur = pooled.cursor()
        cur.execute("SELECT pg_backend_pid()")
        backend = [cur.fetchone()[0]]  # pool_size=1: every way uses this one connection
        pooled.close()
        for fn in ways.values():
            _measure(fn, 300, backend)  # warm caches
        samples: dict[str, list[float]] = {name: [] for name in ways}
        cpu: dict[str, list[float]] = {name: [] for name in ways}
        back: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(rounds):  # interleaved rounds: the same background load for all
            for name, fn in ways.items():
                wall, c, b = _measure(fn, reads, backend)
                samples[name] += wall
                cpu[name].append(c)
                back[name].append(b)
        figures = {}
        for name, values in samples.items():
            values.sort()
            figures[name] = {"median_us": round(statistics.median(values), 1),
                             "p99_us": round(values[int(len(values) * 0.99)], 1),
                             "client_cpu_us": round(statistics.median(cpu[name]), 1),
                             "backend_cpu_us": round(statistics.median(back[name]), 1)}
        reader.dispose()
        setup.dispose()
        return figures
    finally:
        pg.stop()
        pg.cleanup()


def markdown(figures: dict[str, dict[str, float]], server: str = "test settings") -> list[str]:
    return [f"| row read ({server}), {name}: wall median / p99, client CPU, PostgreSQL backend CPU | "
            f"{f['median_us']} / {f['p99_us']} us, {f['client_cpu_us']} us, {f['backend_cpu_us']} us | |"
            for name, f in figures.items()]


def main() -> int:
    figures = run()
    durable = run(rounds=3, reads=1000, durable=True)
    print(json.dumps({"fast": figures, "durable": durable}, indent=2))
    print("\n".join(markdown(figures) + markdown(durable, "fsync and synchronous_commit on")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
