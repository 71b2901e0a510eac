"""The warm path's raw read (``shared.db.live_read``) against a real PostgreSQL: what it returns, that it
still waits for a GC transition in flight (the race guard), and that its row lock costs no WAL flush."""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa

from shared.db import volumes_repo
from shared.db.engine import make_engine
from shared.db.live_read import RawRead
from shared.db.migrate import upgrade
from shared.volumes import NewVolume, VolumeState

pytestmark = pytest.mark.db

NOW = dt.datetime(2026, 11, 29, tzinfo=dt.UTC)


def _volume(name: str, namespace: str = "ns", run: str = "r") -> NewVolume:
    return NewVolume(namespace=namespace, pvc_name=name, pvc_uid=f"uid-{name}", dag_id="d", run_id=run,
                     storage_class="c", size="1Gi")


@pytest.fixture
def engines(database_url: str) -> Any:
    engine = make_engine(database_url, timeout=5)
    upgrade(engine)
    reader = make_engine(database_url, timeout=5, autocommit=True, pre_ping=False)
    yield engine, reader
    reader.dispose()
    engine.dispose()


def test_rows_under_either_name_oldest_first_live_only(engines: Any) -> None:
    engine, reader = engines
    with engine.begin() as conn:
        for volume in (_volume("legacy"), _volume("current"), _volume("other"), _volume("current", "ns2")):
            volumes_repo.insert_active(conn, volume, now=NOW)
        gone = volumes_repo.live_volume(conn, "ns", "other", lock=False)
        assert gone is not None
        conn.execute(sa.text("UPDATE staging_volumes SET state = 'deleted' WHERE id = :id"), {"id": gone.id})
    rows = volumes_repo.read_live_volumes_named(reader, "ns", ("current", "legacy", "other"))
    assert [(r.pvc_name, r.namespace, r.state) for r in rows] == [
        ("legacy", "ns", VolumeState.ACTIVE), ("current", "ns", VolumeState.ACTIVE)]
    assert rows[0].created_at == NOW and rows[0].pvc_uid == "uid-legacy"
    assert volumes_repo.read_live_volumes_named(reader, "ns", ("nothing",)) == []


def test_the_function_returns_what_the_core_statement_returns(engines: Any) -> None:
    """Migration 0003's function and ``_LIVE_ROWS_NAMED`` (SQLite's read) are one statement written twice."""
    engine, reader = engines
    with engine.begin() as conn:
        for ns in ("ns", "ns2"):
            for name in ("a", "b", "c", "d"):
                volumes_repo.insert_active(conn, _volume(name, ns, run=f"{ns}-{name}"), now=NOW)
        conn.execute(sa.text("UPDATE staging_volumes SET state = 'deleted' WHERE pvc_name = 'b' AND namespace = 'ns'"))
        volumes_repo.insert_active(conn, _volume("b", "ns", run="again"), now=NOW)  # a new lifetime of b
        conn.execute(sa.text("UPDATE staging_volumes SET state = 'reclaiming' WHERE pvc_name = 'c'"))
    for ns, names in [("ns", ["a"]), ("ns", ["b", "a"]), ("ns", ["c", "d", "x"]), ("ns2", ["a", "b", "c"]),
                      ("nope", ["a"]), ("ns", [])]:
        via_function = volumes_repo.read_live_volumes_named(reader, ns, names)
        with engine.connect() as conn:
            via_core = [volumes_repo._record(r) for r in conn.execute(
                volumes_repo._LIVE_ROWS_NAMED, {"ns": ns, "names": names}).all()]
        assert via_function == via_core, (ns, names)
    assert [r.run_id for r in volumes_repo.read_live_volumes_named(reader, "ns", ["b"])] == ["again"]


def test_a_transition_in_flight_is_waited_for_then_seen(engines: Any) -> None:
    engine, reader = engines
    with engine.begin() as conn:
        volumes_repo.insert_active(conn, _volume("held"), now=NOW)
    seen: list[Any] = []
    with engine.connect() as gc:
        gc.execute(sa.text("UPDATE staging_volumes SET state = 'reclaiming' WHERE pvc_name = 'held'"))
        thread = threading.Thread(target=lambda: seen.append(
            volumes_repo.read_live_volumes_named(reader, "ns", ("held",))))
        thread.start()
        with engine.connect() as probe:  # the read is blocked on the GC's row lock, not done
            for _ in range(500):
                waiting = probe.execute(sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE '%leoflow_staging_live_rows%'")).scalar_one()
                probe.rollback()  # pg_stat_activity is read once per transaction
                if waiting:
                    break
                time.sleep(0.01)
        assert waiting == 1 and not seen
        gc.commit()
    thread.join(timeout=10)
    assert [r.state for r in seen[0]] == [VolumeState.RECLAIMING]


def _wal_writes(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT wal_write FROM pg_stat_wal")).scalar_one())


@pytest.mark.parametrize("prefix, flushes", [(None, False), ("", True)])
def test_the_row_lock_does_not_wait_for_a_wal_flush(database_url: str, engines: Any, prefix: str | None,
                                                    flushes: bool) -> None:
    """With ``synchronous_commit = on`` (PostgreSQL's default) each FOR SHARE read commits a transaction
    that wrote WAL; the read's ``SET LOCAL`` skips the flush for that transaction only (prefix None: the
    read as the webhook sends it; "": without the prefix, to show that the test can tell)."""
    engine, _ = engines
    with engine.begin() as conn:
        volumes_repo.insert_active(conn, _volume("hot"), now=NOW)
    reader = make_engine(database_url, timeout=5, autocommit=True, pre_ping=False, pool_size=1)
    sa.event.listen(reader, "connect", lambda dbapi, _rec: dbapi.cursor().execute("SET synchronous_commit = on"))
    read = RawRead(reader, volumes_repo.LIVE_ROWS_CALL, volumes_repo._from_columns,
                   **({} if prefix is None else {"prefix": prefix}))
    read.read(ns="ns", names=["hot"])
    before = _wal_writes(engine)
    for _ in range(200):
        assert [r.pvc_name for r in read.read(ns="ns", names=["hot"])] == ["hot"]
    with reader.connect() as conn:  # the session setting is untouched by SET LOCAL
        assert conn.exec_driver_sql("SHOW synchronous_commit").scalar_one() == "on"
        # A backend publishes its WAL statistics when it goes idle, at most once a second, or at exit (which
        # the client does not wait for): force the publication, and wait for the idle point after it.
        conn.exec_driver_sql("SELECT pg_stat_force_next_flush()")
        conn.exec_driver_sql("SELECT 1")
    reader.dispose()
    writes = _wal_writes(engine) - before
    if flushes:
        assert writes >= 190, writes
    else:
        assert writes < 50, writes
