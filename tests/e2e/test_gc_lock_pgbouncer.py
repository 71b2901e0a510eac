"""The GC lock behind a real PgBouncer in transaction pooling mode (issue 16.7).

Every statement the GC sends goes through PgBouncer, which lends its few server connections per
transaction. A session-level lock stays on a lent server connection: the next client handed that
connection "holds" it too (the lock splits), and an unlock may land elsewhere (the lock leaks).
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from devenv.postgres import Postgres
from shared.db import volumes_repo
from shared.db.engine import make_engine
from shared.db.locks import single_flight
from shared.db.migrate import upgrade
from shared.errors import LockLost
from shared.volumes import NewVolume, VolumeState
from tests.conftest import unavailable
from tests.e2e.gc_support import T0, Bench, own_kube
from tests.support.orchestrator import create_runs_table, set_run
from tests.support.pgbouncer import PgBouncer

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def pgbouncer(postgres: Postgres) -> Iterator[PgBouncer]:
    bouncer = PgBouncer(postgres, pool_size=2)
    try:
        bouncer.start()
    except FileNotFoundError as exc:
        unavailable(str(exc))
    try:
        yield bouncer
    finally:
        bouncer.stop()


@pytest.fixture
def bench(database_url: str, pgbouncer: PgBouncer, kubeconfig: Path, namespace: str,
          rwx_class: str) -> Iterator[Bench]:
    direct = sa.create_engine(database_url)
    upgrade(direct)
    create_runs_table(direct)
    direct.dispose()
    engine = sa.create_engine(pgbouncer.url(sa.make_url(database_url).database or ""))  # everything via PgBouncer
    yield Bench(engine=engine, kube=own_kube(str(kubeconfig), namespace), namespace=namespace)
    engine.dispose()


def _events(caplog: pytest.LogCaptureFixture, event: str) -> list[dict[str, Any]]:
    return [r.fields for r in caplog.records if isinstance(getattr(r, "fields", None), dict)  # type: ignore[attr-defined]
            and r.fields.get("event") == event]  # type: ignore[attr-defined]


def _swept(bench: Bench, caplog: pytest.LogCaptureFixture) -> bool:
    skipped = len(_events(caplog, "sweep_skipped"))
    assert bench.sweep() == 0
    return len(_events(caplog, "sweep_skipped")) == skipped


def test_a_held_lock_keeps_every_other_sweep_out_and_is_released_after(
        bench: Bench, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "leoflow_staging.gc")
    bench.admit("etl", "a")
    set_run(bench.engine, "etl", "a", "success", T0)
    with single_flight(bench.engine) as held:
        assert held
        for _ in range(4):  # whichever server connection PgBouncer lends, the lock is not there to take
            assert not _swept(bench, caplog)
        assert [r.state for r in bench.rows()] == [VolumeState.ACTIVE]
    for _ in range(2):  # and it did not stay behind on a server connection
        assert _swept(bench, caplog)
    assert [r.state for r in bench.rows()] == [VolumeState.DELETED]


def test_a_silent_holder_loses_the_lock_behind_pgbouncer(bench: Bench, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "leoflow_staging.gc")
    bench.admit("etl", "b")
    set_run(bench.engine, "etl", "b", "success", T0)
    with single_flight(bench.engine, idle_timeout=1.0) as held:
        assert held
        time.sleep(2.5)  # the server ends the silent holder's backend; PgBouncer drops that server connection
        assert _swept(bench, caplog)
        with pytest.raises(LockLost):
            held.touch(force=True)
    assert [r.state for r in bench.rows()] == [VolumeState.DELETED]


def test_the_webhooks_row_read_works_behind_pgbouncer(database_url: str, pgbouncer: PgBouncer) -> None:
    """The per-admission read (one autocommit statement, nothing prepared) keeps no state on a connection,
    so PgBouncer may lend any of its server connections for each read (here 2 for 6 clients)."""
    direct = sa.create_engine(database_url)
    upgrade(direct)
    with direct.begin() as conn:
        for name in ("a", "b"):
            volumes_repo.insert_active(conn, NewVolume(namespace="ns", pvc_name=name, pvc_uid=f"u-{name}",
                                                       dag_id="d", run_id=name, storage_class="c", size="1Gi"),
                                       now=T0)
    direct.dispose()
    reader = make_engine(pgbouncer.url(sa.make_url(database_url).database or ""), timeout=5, pool_size=6,
                         autocommit=True, pre_ping=False, synchronous_commit=False)
    try:
        def read(i: int) -> str | None:
            row = volumes_repo.read_live_volume(reader, "ns", "abx"[i % 3])
            return row.pvc_name if row else None

        with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
            results = list(pool.map(read, range(300)))
        assert results == [["a", "b", None][i % 3] for i in range(300)]
    finally:
        reader.dispose()
