"""Smoke test proving PostgreSQL is real and each test gets its own database."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

pytestmark = pytest.mark.db


def test_round_trip(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (id serial primary key, v text)"))
        conn.execute(sa.text("INSERT INTO t (v) VALUES ('manual__2026-05-23T10:00:00+00:00')"))
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT v FROM t")).scalar_one() == "manual__2026-05-23T10:00:00+00:00"
        assert conn.execute(sa.text("SHOW server_version_num")).scalar_one().startswith("15")
        assert conn.execute(sa.text("SHOW fsync")).scalar_one() == "off"
    engine.dispose()


def test_each_test_starts_with_an_empty_database(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    assert sa.inspect(engine).get_table_names() == []
    engine.dispose()
