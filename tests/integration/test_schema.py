"""Migrations and the volumes repository on real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
import sqlalchemy as sa
from alembic import command

from shared.db import migrate, volumes_repo
from shared.db.engine import make_engine
from shared.db.migrate import VERSION_TABLE, current, head, upgrade
from shared.errors import SettingsError
from shared.volumes import DeleteReason, NewVolume, VolumeState

pytestmark = pytest.mark.db
NOW = dt.datetime(2026, 11, 28, 12, tzinfo=dt.UTC)


def _vol(uid: str = "uid-1", name: str = "leoflow-staging-a-b-0123456789") -> NewVolume:
    return NewVolume(namespace="ns", pvc_name=name, pvc_uid=uid, dag_id="a", run_id="b",
                     storage_class="nfs", size="1Gi")


def test_migrations_use_their_own_version_table_and_are_idempotent(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    with engine.begin() as conn:  # the orchestrator's own Alembic table must be left alone
        conn.execute(sa.text("CREATE TABLE alembic_version (version_num varchar(32) primary key)"))
        conn.execute(sa.text("INSERT INTO alembic_version VALUES ('orchestrator_rev_42')"))
    assert current(engine) is None
    assert head() == "0006"
    assert upgrade(engine) == head()
    assert upgrade(engine) == head()
    tables = set(sa.inspect(engine).get_table_names())
    assert {"staging_volumes", VERSION_TABLE, "alembic_version"} <= tables
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == "orchestrator_rev_42"
    engine.dispose()


def test_one_live_row_per_pvc_and_deleted_rows_stay(database_url: str) -> None:
    engine = make_engine(database_url, timeout=5)
    upgrade(engine)
    with engine.begin() as conn:
        volumes_repo.insert_active(conn, _vol("uid-1"), now=NOW)
        volumes_repo.insert_active(conn, _vol("uid-other"), now=NOW)  # conflict: nothing
        row = volumes_repo.live_volume(conn, "ns", _vol().pvc_name, lock=True)
        assert row is not None and row.pvc_uid == "uid-1" and row.state is VolumeState.ACTIVE
        assert volumes_repo.begin_reclaim(conn, row.id, reason=DeleteReason.RUN_SUCCEEDED, now=NOW,
                                          still_reclaimable=sa.true())
        assert not volumes_repo.begin_reclaim(conn, row.id, reason=DeleteReason.RUN_SUCCEEDED, now=NOW,
                                              still_reclaimable=sa.true())
        assert volumes_repo.finish_reclaim(conn, row.id, now=NOW)
        volumes_repo.insert_active(conn, _vol("uid-2"), now=NOW)
    with engine.connect() as conn:
        rows = volumes_repo.list_volumes(conn)
    assert [(r.pvc_uid, r.state, r.delete_reason) for r in rows] == [
        ("uid-2", VolumeState.ACTIVE, None), ("uid-1", VolumeState.DELETED, DeleteReason.RUN_SUCCEEDED)]
    engine.dispose()


def test_concurrent_inserts_leave_exactly_one_live_row(database_url: str) -> None:
    engine = make_engine(database_url, timeout=10, pool_size=16)
    upgrade(engine)
    barrier = threading.Barrier(16)
    errors: list[BaseException] = []

    def insert(i: int) -> None:
        try:
            barrier.wait()
            with engine.begin() as conn:
                volumes_repo.insert_active(conn, _vol(f"uid-{i}"), now=NOW)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=insert, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with engine.connect() as conn:
        assert len(volumes_repo.list_volumes(conn)) == 1
    engine.dispose()


def test_schema_problem_accepts_current_and_newer_revisions(database_url: str) -> None:
    from shared.db.migrate import schema_problem

    engine = sa.create_engine(database_url)
    assert "no leoflow-staging schema" in str(schema_problem(engine))
    upgrade(engine)
    assert schema_problem(engine) is None
    with engine.begin() as conn:  # a later release migrated first (rolling upgrade, rollback)
        conn.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = '9999_later'"))
    assert schema_problem(engine) is None
    engine.dispose()


def _live_rows_function(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(
            "SELECT count(*) FROM pg_proc WHERE proname = 'leoflow_staging_live_rows'")).scalar_one())


def test_revision_0004_drops_0003s_function_and_its_downgrade_restores_it(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    assert upgrade(engine, "0003") == "0003" and _live_rows_function(engine) == 1
    assert upgrade(engine, "0004") == "0004" and _live_rows_function(engine) == 0
    with engine.begin() as conn:
        command.downgrade(migrate._config(conn), "0003")
    assert current(engine) == "0003" and _live_rows_function(engine) == 1
    assert upgrade(engine, "0004") == "0004" and _live_rows_function(engine) == 0
    engine.dispose()


def test_the_metadatabase_is_postgresql_and_its_url_is_required() -> None:
    for url in (None, ""):
        with pytest.raises(SettingsError, match="LEOFLOW_STAGING_DATABASE_URL is not set"):
            make_engine(url, timeout=1)
    with pytest.raises(SettingsError, match="not supported"):
        make_engine("sqlite:///trial.db", timeout=1)
    with pytest.raises(SettingsError, match="not a database URL"):
        make_engine("postgres ql://x", timeout=1)


def test_the_migrated_schema_is_the_one_schema_py_describes(database_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from shared.db.schema import metadata

    engine = sa.create_engine(database_url)
    upgrade(engine)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        diff = [d for d in compare_metadata(context, metadata) if not (isinstance(d, tuple) and d[0] == "remove_table"
                                                                         and d[1].name == VERSION_TABLE)]
    assert diff == []
    engine.dispose()


def _reasons(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT reason, count FROM staging_reclaim_counts"))
        return {reason: int(n) for reason, n in rows}


def test_revision_0005_counts_the_existing_audit_and_admits_operator_request(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    upgrade(engine, "0004")
    with engine.begin() as conn:
        for i, (state, reason) in enumerate([("deleted", "run_succeeded"), ("deleted", "run_succeeded"),
                                             ("deleted", "orphaned"), ("active", None)]):
            conn.execute(sa.text(
                "INSERT INTO staging_volumes (namespace, pvc_name, dag_id, run_id, storage_class, size, state, "
                "created_at, delete_reason) VALUES ('ns', :n, 'd', 'r', 'c', '1Gi', :s, now(), :r)"),
                {"n": f"p{i}", "s": state, "r": reason})
        with pytest.raises(sa.exc.IntegrityError), conn.begin_nested():  # 0004 does not know the operator's reason
            conn.execute(sa.text("UPDATE staging_volumes SET delete_reason = 'operator_request'"))
    assert upgrade(engine, "0005") == "0005"
    assert _reasons(engine) == {"run_succeeded": 2, "orphaned": 1}
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE staging_volumes SET delete_reason = 'operator_request' WHERE pvc_name = 'p0'"))
    with pytest.raises(RuntimeError, match="operator_request"), engine.begin() as conn:
        command.downgrade(migrate._config(conn), "0004")
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE staging_volumes SET delete_reason = 'run_succeeded' WHERE pvc_name = 'p0'"))
    with engine.begin() as conn:
        command.downgrade(migrate._config(conn), "0004")
    assert current(engine) == "0004" and "staging_reclaim_counts" not in sa.inspect(engine).get_table_names()
    assert upgrade(engine, "0005") == "0005" and _reasons(engine) == {"run_succeeded": 2, "orphaned": 1}
    engine.dispose()


def test_every_way_to_delete_a_row_counts_it_and_pruning_keeps_the_counts(database_url: str) -> None:
    from shared.db import audit_prune, reclaim_batches, reclaim_counts

    engine = make_engine(database_url, timeout=5)
    upgrade(engine)
    ids = []
    with engine.begin() as conn:
        for i in range(5):
            volumes_repo.insert_active(conn, _vol(f"uid-{i}", name=f"leoflow-staging-p{i}"), now=NOW)
            row = volumes_repo.live_volume(conn, "ns", f"leoflow-staging-p{i}", lock=False)
            assert row is not None
            ids.append(row.id)
        assert volumes_repo.close_missing(conn, ids[0], now=NOW, detail="gone")
        for row_id, reason in ((ids[1], DeleteReason.RUN_SUCCEEDED), (ids[2], DeleteReason.OPERATOR_REQUEST)):
            assert volumes_repo.begin_reclaim(conn, row_id, reason=reason, now=NOW, still_reclaimable=sa.true())
            assert volumes_repo.finish_reclaim(conn, row_id, now=NOW)
            assert not volumes_repo.finish_reclaim(conn, row_id, now=NOW)  # counted once
        assert reclaim_batches.begin_reclaims(conn, ids[3:], reason=DeleteReason.TTL_EXPIRED, now=NOW,
                                              still_reclaimable=sa.true()) == set(ids[3:])
        assert reclaim_batches.finish_reclaims(conn, [ids[3]], now=NOW) == {ids[3]}
        assert reclaim_batches.close_missing_reclaiming(conn, [ids[4]], now=NOW, detail="gone") == {ids[4]}
    expected = {"pvc_missing": 2, "run_succeeded": 1, "operator_request": 1, "ttl_expired": 1}
    with engine.connect() as conn:
        assert reclaim_counts.read(conn) == expected
    with engine.begin() as conn:  # a rolled-back reclaim counts nothing
        volumes_repo.insert_active(conn, _vol("uid-9", name="leoflow-staging-p9"), now=NOW)
    with pytest.raises(RuntimeError), engine.begin() as conn:
        row = volumes_repo.live_volume(conn, "ns", "leoflow-staging-p9", lock=False)
        assert row is not None and volumes_repo.close_missing(conn, row.id, now=NOW, detail="x")
        raise RuntimeError("rolled back")
    batches: list[int] = []
    pruned = audit_prune.prune_deleted(engine, cutoff=NOW + dt.timedelta(seconds=1), limit=2,
                                       between=lambda: batches.append(1))
    assert pruned == 5 and len(batches) == 3  # 2 + 2 + 1 rows: bounded batches
    with engine.connect() as conn:
        assert reclaim_counts.read(conn) == expected  # pruning never lowers a count
        assert [r.state for r in volumes_repo.list_volumes(conn)] == [VolumeState.ACTIVE]
    assert audit_prune.prune_deleted(engine, cutoff=NOW + dt.timedelta(days=1)) == 0
    engine.dispose()
