"""The warm path's one read (``volumes_repo.read_live_volume``) against a real PostgreSQL: what it returns,
that it waits for a GC transition in flight (the race guard), that it survives a dead pooled connection,
and that the reader engine's row lock costs no WAL flush."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from shared.db import volumes_repo
from shared.db.engine import make_engine
from shared.db.migrate import upgrade
from shared.volumes import NewVolume, VolumeState

pytestmark = pytest.mark.db

NOW = dt.datetime(2026, 11, 29, tzinfo=dt.UTC)


def _volume(name: str, namespace: str = "ns", run: str = "r") -> NewVolume:
    return NewVolume(namespace=namespace, pvc_name=name, pvc_uid=f"uid-{name}", dag_id="d", run_id=run,
                     storage_class="c", size="1Gi")


@pytest.fixture
def engines(database_url: str) -> Iterator[tuple[sa.Engine, sa.Engine]]:
    engine = make_engine(database_url, timeout=5)
    upgrade(engine)
    # The webhook's reader, as webhook/factory.py makes it; without pre-ping, so the read's own retry is tested.
    reader = make_engine(database_url, timeout=5, autocommit=True, pre_ping=False, pool_size=1,
                         synchronous_commit=False)
    yield engine, reader
    reader.dispose()
    engine.dispose()


def test_the_live_row_or_none(engines: tuple[sa.Engine, sa.Engine]) -> None:
    engine, reader = engines
    with engine.begin() as conn:
        for volume in (_volume("a"), _volume("b"), _volume("a", "ns2"), _volume("gone")):
            volumes_repo.insert_active(conn, volume, now=NOW)
        conn.execute(sa.text("UPDATE staging_volumes SET state = 'deleted' WHERE pvc_name IN ('b', 'gone')"))
        volumes_repo.insert_active(conn, _volume("b", run="again"), now=NOW)  # a new lifetime of b
    row = volumes_repo.read_live_volume(reader, "ns", "a")
    assert row is not None and (row.namespace, row.pvc_name, row.pvc_uid, row.state, row.created_at) == (
        "ns", "a", "uid-a", VolumeState.ACTIVE, NOW)
    with engine.connect() as conn:
        assert row == volumes_repo.live_volume(conn, "ns", "a", lock=False)
    again = volumes_repo.read_live_volume(reader, "ns", "b")
    assert again is not None and again.run_id == "again"
    assert volumes_repo.read_live_volume(reader, "ns", "gone") is None  # deleted rows are the audit trail
    assert volumes_repo.read_live_volume(reader, "ns", "nothing") is None
    assert volumes_repo.read_live_volume(reader, "ns3", "a") is None


def test_a_transition_in_flight_is_waited_for_then_seen(engines: tuple[sa.Engine, sa.Engine]) -> None:
    engine, reader = engines
    with engine.begin() as conn:
        volumes_repo.insert_active(conn, _volume("held"), now=NOW)
    seen: list[Any] = []
    with engine.connect() as gc:
        gc.execute(sa.text("UPDATE staging_volumes SET state = 'reclaiming' WHERE pvc_name = 'held'"))
        thread = threading.Thread(target=lambda: seen.append(volumes_repo.read_live_volume(reader, "ns", "held")))
        thread.start()
        with engine.connect() as probe:  # the read is blocked on the GC's row lock, not done
            for _ in range(500):
                waiting = probe.execute(sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE '%FROM staging_volumes%FOR SHARE%'")).scalar_one()
                probe.rollback()  # pg_stat_activity is read once per transaction
                if waiting:
                    break
                time.sleep(0.01)
        assert waiting == 1 and not seen
        gc.commit()
    thread.join(timeout=10)
    [row] = seen
    assert row is not None and row.state is VolumeState.RECLAIMING


def test_a_dead_pooled_connection_is_replaced_and_the_read_retried(engines: tuple[sa.Engine, sa.Engine]) -> None:
    engine, reader = engines
    with engine.begin() as conn:
        volumes_repo.insert_active(conn, _volume("a"), now=NOW)
    with reader.connect() as conn:  # the pool's one connection
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
    with engine.connect() as conn:  # the database restarted, a pooler dropped it: the backend is gone
        assert conn.execute(sa.text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid}).scalar_one()
    row = volumes_repo.read_live_volume(reader, "ns", "a")
    assert row is not None and row.pvc_name == "a"
    with reader.connect() as conn:
        assert conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one() != pid


def _wal_writes(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT wal_write FROM pg_stat_wal")).scalar_one())


@pytest.mark.parametrize("synchronous_commit", [False, True])
def test_the_readers_row_lock_does_not_wait_for_a_wal_flush(database_url: str, engines: tuple[sa.Engine, sa.Engine],
                                                             synchronous_commit: bool) -> None:
    """With ``synchronous_commit = on`` (PostgreSQL's default) each FOR SHARE read commits a transaction that
    wrote WAL and waits for its flush; the reader engine (``synchronous_commit=False``) turns that off for its
    own sessions only (True: PostgreSQL's default kept, to show that the test can tell)."""
    engine, _ = engines
    with engine.begin() as conn:
        volumes_repo.insert_active(conn, _volume("hot"), now=NOW)
        # The test server runs with synchronous_commit=off; this database gets PostgreSQL's default back
        # (a connection's startup options still override it).
        conn.execute(sa.text(f'ALTER DATABASE "{sa.make_url(database_url).database}" SET synchronous_commit = on'))
    reader = make_engine(database_url, timeout=5, autocommit=True, pool_size=1, synchronous_commit=synchronous_commit)
    assert volumes_repo.read_live_volume(reader, "ns", "hot") is not None
    before = _wal_writes(engine)
    for _ in range(200):
        row = volumes_repo.read_live_volume(reader, "ns", "hot")
        assert row is not None and row.pvc_name == "hot"
    with reader.connect() as conn:
        assert conn.exec_driver_sql("SHOW synchronous_commit").scalar_one() == ("on" if synchronous_commit else "off")
        # A backend publishes its WAL statistics when it goes idle, at most once a second, or at exit (which
        # the client does not wait for): force the publication, and wait for the idle point after it.
        conn.exec_driver_sql("SELECT pg_stat_force_next_flush()")
        conn.exec_driver_sql("SELECT 1")
    reader.dispose()
    writes = _wal_writes(engine) - before
    if synchronous_commit:
        assert writes >= 190, writes
    else:
        assert writes < 50, writes
