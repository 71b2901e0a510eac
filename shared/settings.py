"""Settings: the only reader of the environment. Read once at an entry point, passed down.

Every variable is ``LEOFLOW_STAGING_<NAME>``; the README's configuration table lists them.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from shared.errors import SettingsError

PREFIX = "LEOFLOW_STAGING_"
IDENTITIES = ("leoflow", "airflow")  # the keys of webhook.identity.SOURCES
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


@dataclass(frozen=True)
class RunsTable:
    """Where the orchestrator keeps its runs (read only)."""

    table: str = "dag_run"
    dag_id_column: str = "dag_id"
    run_id_column: str = "run_id"
    state_column: str = "state"
    end_date_column: str = "end_date"
    success_states: tuple[str, ...] = ("success",)
    failed_states: tuple[str, ...] = ("failed",)


@dataclass(frozen=True)
class Settings:
    """Every setting of both programs, with its default."""

    database_url: str | None = None  # PostgreSQL; required by every command that uses the database
    identity: str = "leoflow"  # where a pod's raw ids are: leoflow (contracts 1) or airflow (stock Airflow 3)
    instance: str = "default"  # label value on our PVCs: one per installation (metadatabase) on a cluster
    kubeconfig: str | None = None  # None: in-cluster config, else ~/.kube/config
    storage_class: str | None = None  # a configured class must exist
    rwx_provisioners: tuple[str, ...] = ()  # extra provisioners known to give filesystem RWX
    default_size: str = "10Gi"
    max_size: str = "1Ti"
    failed_ttl: dt.timedelta = dt.timedelta(hours=24)
    runs: RunsTable = field(default_factory=RunsTable)
    db_timeout: float = 2.0  # seconds: connect and statement timeout
    kube_timeout: float = 2.0  # seconds: each Kubernetes API call
    request_budget: float = 7.0  # seconds: one admission answers within this (webhook timeout is 10)
    host: str = "0.0.0.0"  # a webhook serves the cluster network
    port: int = 8443
    cert_file: str | None = None
    key_file: str | None = None
    workers: int = 2
    threads: int = 8
    # seconds one read from a client may wait for data (TLS handshake, headers, body): a client that stalls
    # longer is disconnected, so stalled connections cannot hold the webhook's threads (0: never)
    read_timeout: float = 2.0
    max_body_bytes: int = 3 * 1024 * 1024  # etcd's request limit; no pod is larger
    gc_batch_size: int = 500
    adopt_min_age: dt.timedelta = dt.timedelta(minutes=2)
    gc_parallelism: int = 8  # Kubernetes calls a sweep has in flight at once (PVC deletes of a batch)
    gc_settle_seconds: float = 10.0  # how long a sweep waits for deleted PVCs to disappear
    gc_delete_finished_pods: bool = True  # delete Succeeded/Failed pods that hold a reclaimed claim
    gc_db_timeout: float = 30.0  # seconds: the GC's connect, statement and lock waits (batch reads)
    log_level: str = "INFO"
    metrics_cache_seconds: float = 5.0  # how long /metrics reuses one inventory read of the database
    events: bool = True  # Kubernetes Events on staging PVCs (best effort)
    pod_name: str | None = None  # the events' reportingInstance (the chart sets it); None: the host name
    # The webhook's watch-fed caches of the installation's PVCs and the StorageClasses (per worker): a cache whose
    # watch is broken longer than this is not used (admissions then read the API directly).
    watch_stale_seconds: float = 1.0  # a cache whose watch is broken longer than this is not used

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with the given fields replaced (flags given on the command line)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def parse_duration(raw: str) -> dt.timedelta:
    """``90s``, ``30m``, ``24h``, ``365d`` (a bare number is seconds)."""
    return _duration("DURATION", raw)


def _duration(name: str, raw: str) -> dt.timedelta:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", raw)
    if not match:
        raise SettingsError(f"{PREFIX}{name}={raw!r}: expected a duration like 90s, 30m, 24h or 1d")
    value, unit = float(match.group(1)), match.group(2) or "s"
    return dt.timedelta(seconds=value * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit])


def _number(name: str, raw: str, kind: type[int] | type[float], minimum: float) -> Any:
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{PREFIX}{name}={raw!r}: expected a {kind.__name__}") from None
    if value < minimum:
        raise SettingsError(f"{PREFIX}{name}={raw!r}: must be >= {minimum}")
    return value


def _identifier(name: str, raw: str) -> str:
    if not _IDENT.match(raw):
        raise SettingsError(f"{PREFIX}{name}={raw!r}: expected an SQL identifier (optionally schema.table)")
    return raw


def _csv(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def unknown_settings(environ: Mapping[str, str]) -> list[str]:
    """``LEOFLOW_STAGING_*`` variables that are no setting (typos, or settings that were removed): reported as a
    warning by the CLI, never fatal. The development tooling's own variables are ``LEOFLOW_DEV_*``."""
    known = ({f.name.upper() for f in fields(Settings)} - {"RUNS"}) | {
        "RUNS_" + f.name.upper() for f in fields(RunsTable)}
    return sorted(k for k in environ if k.startswith(PREFIX) and k[len(PREFIX):] not in known)



def from_env(environ: Mapping[str, str]) -> Settings:
    """Settings from ``LEOFLOW_STAGING_*`` variables; a malformed value is a ``SettingsError`` naming it
    (unknown variables are ignored here; see ``unknown_settings``)."""
    env = {k[len(PREFIX):]: v for k, v in environ.items() if k.startswith(PREFIX)}
    defaults = Settings()
    values: dict[str, Any] = {}
    for f in fields(Settings):
        key = f.name.upper()
        if key not in env or f.name == "runs":
            continue
        raw = env[key]
        default = getattr(defaults, f.name)
        if isinstance(default, dt.timedelta):
            values[f.name] = _duration(key, raw)
        elif isinstance(default, bool):
            values[f.name] = raw.lower() in {"1", "true", "yes"}
        elif isinstance(default, int):
            values[f.name] = _number(key, raw, int, 1)
        elif isinstance(default, float):
            values[f.name] = _number(key, raw, float, 0)
        elif isinstance(default, tuple):
            values[f.name] = _csv(raw)
        else:
            values[f.name] = raw or None if default is None else raw
    runs_values: dict[str, Any] = {}
    for f in fields(RunsTable):
        key = "RUNS_" + f.name.upper()
        if key in env:
            raw = env[key]
            runs_values[f.name] = (_csv(raw) if f.name.endswith("_states")
                                   else _identifier(key, raw))
    if runs_values:
        values["runs"] = RunsTable(**runs_values)
    instance = values.get("instance", "default")
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", instance):
        raise SettingsError(f"{PREFIX}INSTANCE={instance!r}: expected a DNS label (lowercase, digits, '-')")
    if values.get("identity", "leoflow") not in IDENTITIES:
        raise SettingsError(f"{PREFIX}IDENTITY={values['identity']!r}: expected one of {', '.join(IDENTITIES)}")
    if values.get("log_level", "INFO").upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise SettingsError(
            f"{PREFIX}LOG_LEVEL={values['log_level']!r}: expected DEBUG, INFO, WARNING or ERROR")
    return Settings(**values)
