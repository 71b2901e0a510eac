"""The prepared statement of the warm path's read is compiled from the Core statement (they cannot drift)."""

from __future__ import annotations

from shared.db.live_read import prepare_sql
from shared.db.schema import staging_volumes
from shared.db.volumes_repo import _LIVE_ROW_SHARED


def test_prepared_text_is_the_core_statement_with_positional_parameters() -> None:
    text, columns = prepare_sql(_LIVE_ROW_SHARED)
    assert text.startswith("PREPARE leoflow_staging_live_row(varchar, varchar) AS SELECT ")
    assert "staging_volumes.namespace = $1" in text and "staging_volumes.pvc_name = $2" in text
    assert "staging_volumes.state != 'deleted'" in text and text.rstrip().endswith("FOR SHARE")
    assert "%(" not in text
    assert columns == [c.name for c in staging_volumes.c]
