"""The exception tree of leoflow-staging. Errors are mapped to denials, HTTP statuses or exit
codes only at the edges (the webhook's HTTP shell, the CLI).

    StagingError
    ├── SettingsError        a configuration value is missing or malformed
    ├── DatabaseUnavailable  the metadatabase cannot be reached or timed out (retriable)
    │   └── LockLost         the GC's single-flight lock went with its session (timeout, terminated)
    ├── SchemaError          a table is missing or unreadable (schema not migrated, wrong runs table)
    ├── DataRejected         the database refused a value (too long, invalid text): not retriable
    └── KubeUnavailable      the Kubernetes API cannot be reached, timed out or failed (retriable)
        └── KubeForbidden    the API refused the call (RBAC, quota, admission): not retriable as is
"""

from __future__ import annotations


class StagingError(Exception):
    """Base of every error this product raises on purpose."""


class SettingsError(StagingError):
    """A configuration value (environment variable or flag) is missing or malformed."""


class DatabaseUnavailable(StagingError):
    """The metadatabase could not be reached or did not answer in time."""


class LockLost(DatabaseUnavailable):
    """The GC's lock ended with its database session (idle timeout, terminated backend): the sweep stops."""


class SchemaError(StagingError):
    """A table or column is missing or cannot be read (not migrated, misconfigured runs table)."""


class DataRejected(StagingError):
    """The database refused a value (too long for its column, invalid text): retrying cannot help."""


class KubeUnavailable(StagingError):
    """The Kubernetes API could not be reached, timed out, or answered with a server error."""


class KubeForbidden(KubeUnavailable):
    """The Kubernetes API refused the call (RBAC, ResourceQuota, an admission policy)."""
