"""5. /metrics over a long audit: the scrape's database read (``load_snapshot``: reclaims by reason from
``staging_reclaim_counts``) against the full count of the deleted rows that /metrics ran before revision 0005,
at 1 and 3 million deleted rows (a few live ones beside them).

Run alone with its own PostgreSQL: ``python -m bench.audit_scrape_bench [ROWS ...]``.
"""

from __future__ import annotations

import datetime as dt
import statistics
import sys
import time
from typing import Any

import sqlalchemy as sa

from bench.env import create_database
from devenv.audit_rows import OLD_RECLAIM_COUNT, seed_deleted_rows
from devenv.postgres import Postgres
from shared.db.engine import make_engine
from shared.db.inventory import load_snapshot
from shared.settings import RunsTable


def _median_ms(measure: Any, times: int) -> float:
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        measure()
        samples.append(time.perf_counter() - started)
    return round(statistics.median(samples) * 1000, 2)


def _measure(reader: sa.Engine) -> dict[str, float]:
    now = dt.datetime.now(dt.UTC)

    def old_count() -> None:
        with reader.connect() as conn:
            conn.execute(OLD_RECLAIM_COUNT).all()

    return {"scrape_read_ms": _median_ms(lambda: load_snapshot(reader, RunsTable(), now=now), 7),
            "old_full_count_ms": _median_ms(old_count, 3)}


def run(pg: Postgres, *, sizes: tuple[int, ...] = (1_000_000, 3_000_000)) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for rows in sizes:
        url = create_database(pg, f"audit{rows}")
        engine = sa.create_engine(url)
        started = time.perf_counter()
        seed_deleted_rows(engine, rows)
        seed_s = time.perf_counter() - started
        reader = make_engine(url, timeout=60, pool_size=1)
        out[str(rows)] = {"rows": rows, "seed_s": round(seed_s, 1), **_measure(reader)}
        print(f"bench: audit of {rows} deleted rows: scrape read {out[str(rows)]['scrape_read_ms']} ms, the old full "
              f"count {out[str(rows)]['old_full_count_ms']} ms", flush=True)
        reader.dispose()
        engine.dispose()
    return out


def main() -> int:
    sizes = tuple(int(a) for a in sys.argv[1:]) or (1_000_000, 3_000_000)
    pg = Postgres()
    pg.start()
    try:
        run(pg, sizes=sizes)
    finally:
        pg.stop()
        pg.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
