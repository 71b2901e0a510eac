"""The warm path's raw read is the Core statement (compiled from it, so the two cannot drift), sent in one
simple query whose transaction does not wait for a WAL flush."""

from __future__ import annotations

from shared.db.live_read import NO_FLUSH, compile_read
from shared.db.schema import staging_volumes
from shared.db.volumes_repo import _LIVE_ROWS_ANY


def test_raw_text_is_the_core_statement_with_named_parameters() -> None:
    text, constants, columns = compile_read(_LIVE_ROWS_ANY)
    assert text.startswith("SELECT ") and text.rstrip().endswith("FOR SHARE")
    assert "staging_volumes.namespace = %(ns)s" in text
    assert "staging_volumes.pvc_name = ANY (%(names)s" in text
    assert constants == {"ns": None, "names": None, "state_1": "deleted"}
    assert columns == [c.name for c in staging_volumes.c]


def test_the_flush_is_skipped_for_that_transaction_only() -> None:
    assert NO_FLUSH.startswith("SET LOCAL synchronous_commit = off;")
