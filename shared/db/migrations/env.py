"""Alembic environment: run on the connection handed in by ``shared.db.migrate``."""

from __future__ import annotations

from alembic import context

from shared.db.migrate import VERSION_TABLE
from shared.db.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
)
with context.begin_transaction():
    context.run_migrations()
