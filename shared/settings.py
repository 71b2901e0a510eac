"""Settings: the only reader of the environment. Read once at an entry point, passed down.

Every variable is ``LEOFLOW_STAGING_<NAME>`` (``LEOFLOW_STAGING_RUNS_<NAME>`` for the runs table). Each field
carries its own documentation (``field(metadata=...)``, see ``_doc``); ``docs/configuration.md`` is rendered
from it by ``python -m hack.configuration_doc`` (``make docs``), and a unit test fails when the two differ.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from shared.errors import SettingsError

PREFIX = "LEOFLOW_STAGING_"
IDENTITIES = ("leoflow", "airflow")  # the keys of webhook.identity.SOURCES
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")

_RUNS_READERS = "gc, serve (`/metrics`), volumes (`--summary`)"


def _doc(text: str, *, used_by: str, chart: str = "", flag: str = "", unset: str = "") -> dict[str, str]:
    """A setting's documentation, kept in its definition (``dataclasses.field(metadata=...)``).

    ``text`` says what it does, with its type or unit; ``used_by`` names the commands that read it;
    ``chart`` is the Helm chart value that sets it (empty: none); ``flag`` the command-line flag that overrides
    it (empty: none); ``unset`` what a ``None`` default means. Markdown, rendered into docs/configuration.md.
    """
    return {"doc": text, "used_by": used_by, "chart": chart, "flag": flag, "unset": unset}


@dataclass(frozen=True)
class RunsTable:
    """Where the orchestrator keeps its runs (read only)."""

    table: str = field(default="dag_run", metadata=_doc(
        "SQL identifier: the orchestrator's runs table (read only), optionally `schema.table`.",
        used_by=_RUNS_READERS, chart="config.runs.table"))
    dag_id_column: str = field(default="dag_id", metadata=_doc(
        "SQL identifier: its DAG id column.", used_by=_RUNS_READERS, chart="config.runs.dagIdColumn"))
    run_id_column: str = field(default="run_id", metadata=_doc(
        "SQL identifier: its run id column.", used_by=_RUNS_READERS, chart="config.runs.runIdColumn"))
    state_column: str = field(default="state", metadata=_doc(
        "SQL identifier: its state column.", used_by=_RUNS_READERS, chart="config.runs.stateColumn"))
    end_date_column: str = field(default="end_date", metadata=_doc(
        "SQL identifier: its end date column. The failed-run TTL counts from here.",
        used_by=_RUNS_READERS, chart="config.runs.endDateColumn"))
    success_states: tuple[str, ...] = field(default=("success",), metadata=_doc(
        "List: the states whose volume is reclaimed at once.", used_by="gc", chart="config.runs.successStates"))
    failed_states: tuple[str, ...] = field(default=("failed",), metadata=_doc(
        "List: the states whose volume is kept for the failed-run TTL (`LEOFLOW_STAGING_FAILED_TTL`).",
        used_by=_RUNS_READERS, chart="config.runs.failedStates"))


@dataclass(frozen=True)
class Settings:
    """Every setting of both programs, with its default."""

    database_url: str | None = field(default=None, metadata=_doc(
        "URL of the metadatabase (PostgreSQL), which holds both `staging_volumes` and the orchestrator's runs "
        "table. Plain `postgresql://` (or `postgres://`) URLs use psycopg2. There is no default: unset, a "
        "command that needs the database stops with a configuration error naming this variable. The chart "
        "reads it from the Secret `database.existingSecret`, key `database.secretKey` (`url`).",
        used_by="serve, gc, migrate, volumes", chart="database.existingSecret", flag="--database-url",
        unset="unset (required)"))
    identity: str = field(default="leoflow", metadata=_doc(
        "`leoflow` or `airflow`: where an opted-in pod's raw run identity is read. `leoflow`: the "
        "`leoflow.io/dag-id` and `leoflow.io/run-id` annotations, labels as a fallback "
        "([integrators.md](integrators.md#1-the-task-pod)). `airflow`: stock Apache Airflow 3, the `dag_id` and "
        "`run_id` annotations its KubernetesExecutor writes; Airflow's labels are hashed and never read "
        "([airflow.md](airflow.md)).",
        used_by="serve", chart="config.identity"))
    instance: str = field(default="default", metadata=_doc(
        "DNS label: this installation's name. It serves only the namespaces labelled `leoflow.io/staging-instance: "
        "<instance>` (one value per namespace, so two installations never overlap) and sets the same label on "
        "every PVC it creates; the GC lists, adopts and deletes only PVCs with its own instance, in its own "
        "namespaces. The chart sets the release name when `config.instance` is empty.",
        used_by="serve, gc", chart="config.instance"))
    namespaces: tuple[str, ...] = field(default=(), metadata=_doc(
        "List: the namespaces this installation serves, each also labelled `leoflow.io/staging-instance: "
        "<instance>` by the operator. Empty: every namespace so labelled. With a list, the webhook watches its "
        "PVCs namespace by namespace and the chart grants namespaced Roles there only "
        "([operators.md](operators.md#installations-own-namespaces)).",
        used_by="serve, gc", chart="namespaces", unset="empty: every namespace labelled for the instance"))
    kubeconfig: str | None = field(default=None, metadata=_doc(
        "Path of the kubeconfig file to use.",
        used_by="serve, gc, certs, check-admission", flag="--kubeconfig",
        unset="unset: in-cluster config, else the default kubeconfig (`$KUBECONFIG` or `~/.kube/config`)"))
    storage_class: str | None = field(default=None, metadata=_doc(
        "Name of the StorageClass for staging PVCs. It must exist; its ReadWriteMany capability is not checked. "
        "Unset: the webhook chooses a ReadWriteMany-capable class "
        "([operators.md](operators.md#choosing-a-readwritemany-storageclass)).",
        used_by="serve", chart="config.storageClass", unset="unset: choose an RWX-capable class"))
    rwx_provisioners: tuple[str, ...] = field(default=(), metadata=_doc(
        "List: extra provisioners known to give filesystem ReadWriteMany.",
        used_by="serve", chart="config.rwxProvisioners"))
    storage_profiles: str | None = field(default=None, metadata=_doc(
        "JSON object keyed by provisioner: extends or overrides the built-in storage profiles (what each "
        "ReadWriteMany provisioner honours, [storage.md](storage.md#storage-profiles)). Each value may give "
        "`rwx` (true/false/null), `sizeEnforced` (true/false/null), `provisioning` (`seconds`, `minutes` or "
        "`unknown`), `limits` (text) and `source` (where you read it); fields not given keep the built-in fact. "
        "Used to choose among several eligible classes and for the warnings of a claim's creation.",
        used_by="serve", chart="storage.profiles", unset="unset: the built-in table"))
    pending_event_after: dt.timedelta = field(default=dt.timedelta(minutes=5), metadata=_doc(
        "Duration: a staging PVC the webhook created and still Pending this long after its creation gets one "
        "Warning Event (`ProvisioningSlow`) naming its class, its provisioner and the provisioner's last event. "
        "`0`: none.",
        used_by="serve", chart="config.pendingEventAfter"))
    shared_claim: str | None = field(default=None, metadata=_doc(
        "Name of an existing ReadWriteMany PVC: the shared-claim mode. Every new run gets its own directory on "
        "the claim of this name in its namespace (mounted at `/staging` with `subPath`) instead of its own PVC; "
        "the GC removes a finished run's directory through a cleanup pod "
        "([storage.md](storage.md#the-shared-claim-mode)). A run already recorded keeps the volume its row names.",
        used_by="serve, gc", chart="storage.sharedClaim.name", unset="unset: a PVC per run"))
    shared_claim_class: str | None = field(default=None, metadata=_doc(
        "StorageClass name: in the shared-claim mode, the webhook creates the shared claim (ReadWriteMany, "
        "`LEOFLOW_STAGING_SHARED_CLAIM_SIZE`) in a namespace that has none, at its first run, labelled "
        "`leoflow.io/shared-claim: true`; the GC never adopts nor deletes it.",
        used_by="serve", chart="storage.sharedClaim.storageClass", unset="unset: the claim must exist"))
    shared_claim_size: str = field(default="1Ti", metadata=_doc(
        "Size: the request of a shared claim the webhook creates (`LEOFLOW_STAGING_SHARED_CLAIM_CLASS`).",
        used_by="serve", chart="storage.sharedClaim.size"))
    image: str | None = field(default=None, metadata=_doc(
        "Image reference of leoflow-staging itself: the shared-claim mode's containers (the directory's "
        "preparation in each task pod, the GC's cleanup pods) run it. The chart sets its own image "
        "(`image.repository`:`image.tag`).",
        used_by="serve, gc", unset="unset: required by the shared-claim mode"))
    cleanup_resources: str | None = field(default=None, metadata=_doc(
        "JSON object: the `resources` of the GC's cleanup pods (shared-claim mode), e.g. "
        "`{\"requests\": {\"cpu\": \"50m\"}, \"limits\": {\"memory\": \"256Mi\"}}`.",
        used_by="gc, reclaim", chart="storage.cleanup.resources",
        unset="unset: requests cpu 50m, memory 64Mi; limit memory 256Mi"))
    prepare_claims: bool = field(default=False, metadata=_doc(
        "Boolean: in the claim-per-run mode too, every task pod gets the prepare init container (uid 0, no "
        "capabilities) that marks the run's volume and sets its root to mode 1777, so tasks running as different "
        "non-root uids can write without `fsGroup`. Needed where a class creates volumes whose root is owned by "
        "root with mode 0755 (NFS-like backends); the shared-claim mode always prepares "
        "([storage.md](storage.md#non-root-tasks)).",
        used_by="serve", chart="storage.prepareClaims"))
    cleanup_wait: float = field(default=60.0, metadata=_doc(
        "Seconds: how long one GC sweep waits for a cleanup pod (shared-claim mode) before it leaves the row "
        "`reclaiming` for the next sweep, which picks the same pod up.",
        used_by="gc", chart="storage.cleanup.waitSeconds"))
    default_size: str = field(default="10Gi", metadata=_doc(
        "Size: a run's PVC size when the pod has no `leoflow.io/staging-size` annotation.",
        used_by="serve", chart="config.defaultSize"))
    max_size: str = field(default="1Ti", metadata=_doc(
        "Size: the largest `leoflow.io/staging-size` a pod may ask for. At least the default size.",
        used_by="serve", chart="config.maxSize"))
    failed_ttl: dt.timedelta = field(default=dt.timedelta(hours=24), metadata=_doc(
        "Duration: how long a failed run keeps its volume, counted from the run's `end_date`.",
        used_by="gc", chart="config.failedTtl"))
    audit_retention: dt.timedelta = field(default=dt.timedelta(days=90), metadata=_doc(
        "Duration: how long the audit keeps a `deleted` row of `staging_volumes`, counted from its `deleted_at`. "
        "Each GC sweep deletes older rows, 5,000 per statement, and logs how many (`audit_pruned`). The "
        "reclaim counts of `/metrics` are kept apart and never go down. `0`: keep every row forever.",
        used_by="gc", chart="config.auditRetention"))
    runs: RunsTable = field(default_factory=RunsTable)  # LEOFLOW_STAGING_RUNS_*, documented on RunsTable
    db_timeout: float = field(default=2.0, metadata=_doc(
        "Seconds: the database connect, statement and lock timeout. `migrate` uses at least 30.",
        used_by="serve, migrate, volumes", chart="config.dbTimeout"))
    kube_timeout: float = field(default=2.0, metadata=_doc(
        "Seconds: the timeout of each Kubernetes API call. The GC uses at least 5, `certs` and "
        "`check-admission` at least 10.",
        used_by="serve, gc, certs, check-admission", chart="config.kubeTimeout"))
    request_budget: float = field(default=7.0, metadata=_doc(
        "Seconds within which one admission answers, counted from the request's arrival. Keep it below the "
        "webhook's `timeoutSeconds` (chart value `webhook.timeoutSeconds`, 10; the chart refuses to render "
        "otherwise). At most 29.",
        used_by="serve", chart="config.requestBudget"))
    host: str = field(default="0.0.0.0", metadata=_doc(  # a webhook serves the cluster network
        "Listen address. The chart keeps the default.", used_by="serve", flag="--host"))
    port: int = field(default=8443, metadata=_doc(
        "HTTPS port.", used_by="serve", chart="webhook.port", flag="--port"))
    cert_file: str | None = field(default=None, metadata=_doc(
        "Path of the TLS certificate (PEM). The chart mounts its certificate Secret and passes `/tls/tls.crt`.",
        used_by="serve", flag="--cert-file", unset="unset (required)"))
    key_file: str | None = field(default=None, metadata=_doc(
        "Path of the TLS private key (PEM). The chart mounts its certificate Secret and passes `/tls/tls.key`.",
        used_by="serve", flag="--key-file", unset="unset (required)"))
    workers: int = field(default=2, metadata=_doc(
        "Count: gunicorn worker processes (its stock `gthread` worker).",
        used_by="serve", chart="webhook.workers", flag="--workers"))
    threads: int = field(default=8, metadata=_doc(
        "Count: threads per worker. The webhook answers at most `workers x threads` requests at once, and a "
        "request waits for a free thread. Also the size of each worker's Kubernetes connection pool and of its "
        "two database pools (one for the warm path's read, one for writes and the readiness check); `/metrics` "
        "has a third, of one connection (2 overflow).",
        used_by="serve", chart="webhook.threads", flag="--threads"))
    read_timeout: float = field(default=2.0, metadata=_doc(
        "Seconds one read from a client (the TLS handshake, the headers, the body) may wait for data before the "
        "connection is closed, so stalled clients cannot hold the webhook's threads. Idle keep-alive "
        "connections are not affected. `0`: no limit.",
        used_by="serve", chart="webhook.readTimeout"))
    max_body_bytes: int = field(default=3 * 1024 * 1024, metadata=_doc(  # etcd's request limit; no pod is larger
        "Bytes: the largest admission request body accepted (etcd's own request limit is 3 MiB).",
        used_by="serve", chart="webhook.maxBodyBytes"))
    gc_batch_size: int = field(default=500, metadata=_doc(
        "Count: `staging_volumes` rows read per batch.", used_by="gc", chart="gc.batchSize"))
    adopt_min_age: dt.timedelta = field(default=dt.timedelta(minutes=2), metadata=_doc(
        "Duration: the grace for admissions in flight. A PVC of ours with no row is adopted, a row whose PVC is "
        "missing is closed, and a row whose run is not in the runs table is reclaimed as `orphaned` (the orphan "
        "grace), only once it is this old.",
        used_by="gc", chart="gc.adoptMinAge"))
    gc_parallelism: int = field(default=8, metadata=_doc(
        "Count: Kubernetes calls a sweep has in flight at once: the PVC deletes of a batch (whose guarded "
        "transitions are batched), or single actions (resumes, heals, adoptions). The database pool and "
        "Kubernetes connections are sized from it.",
        used_by="gc", chart="gc.parallelism"))
    gc_settle_seconds: float = field(default=10.0, metadata=_doc(
        "Seconds a sweep waits for deleted PVCs to disappear before it names the pods that hold them.",
        used_by="gc", chart="gc.settleSeconds"))
    gc_delete_finished_pods: bool = field(default=True, metadata=_doc(
        "Boolean: delete the Succeeded/Failed pods that keep a reclaimed claim Terminating (never Pending, "
        "Running or Unknown ones). Off: such claims wait until someone deletes those pods, and the chart grants "
        "the GC no `delete` on pods.",
        used_by="gc", chart="gc.deleteFinishedPods"))
    gc_db_timeout: float = field(default=30.0, metadata=_doc(
        "Seconds: the GC's database connect, statement and lock timeout (batch reads).",
        used_by="gc", chart="gc.dbTimeout"))
    log_level: str = field(default="INFO", metadata=_doc(
        "`DEBUG`, `INFO`, `WARNING` or `ERROR`.", used_by="serve, gc", chart="config.logLevel"))
    metrics_cache_seconds: float = field(default=5.0, metadata=_doc(
        "Seconds `/metrics` reuses one database read of the inventory and the GC's health (per worker; "
        "failures too).",
        used_by="serve", chart="config.metricsCacheSeconds"))
    events: bool = field(default=True, metadata=_doc(
        "Boolean: write best-effort Kubernetes Events on staging PVCs "
        "([operators.md](operators.md#kubernetes-events-on-staging-pvcs)).",
        used_by="serve, gc", chart="config.events"))
    pod_name: str | None = field(default=None, metadata=_doc(
        "The Events' `reportingInstance`. The chart sets it to the pod's name.",
        used_by="serve, gc", unset="unset: the host name"))
    watch_stale_seconds: float = field(default=1.0, metadata=_doc(
        "Seconds a webhook worker still uses its watch-fed caches (this installation's PVCs, the "
        "StorageClasses) while their watch is broken; after that each admission reads the API directly "
        "([operators.md](operators.md#watch-fed-caches)).",
        used_by="serve", chart="config.watchStaleSeconds"))

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
    for namespace in values.get("namespaces", ()):
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", namespace):
            raise SettingsError(f"{PREFIX}NAMESPACES: {namespace!r} is no namespace name (a DNS label)")
    shared = values.get("shared_claim")
    if shared is not None and not re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", shared):
        raise SettingsError(f"{PREFIX}SHARED_CLAIM={shared!r}: expected a PVC name (lowercase, digits, '-', '.')")
    if shared is not None and not values.get("image"):
        raise SettingsError(f"{PREFIX}SHARED_CLAIM is set but {PREFIX}IMAGE is not: the shared-claim mode runs "
                            "leoflow-staging's image in each task pod and in the GC's cleanup pods")
    if values.get("cleanup_resources") is not None:
        try:
            resources = json.loads(values["cleanup_resources"])
        except ValueError as exc:
            raise SettingsError(f"{PREFIX}CLEANUP_RESOURCES: not JSON ({exc})") from None
        if not isinstance(resources, dict) or not set(resources) <= {"requests", "limits"}:
            raise SettingsError(f"{PREFIX}CLEANUP_RESOURCES: expected an object with requests and/or limits")
    if values.get("shared_claim_class") and shared is None:
        raise SettingsError(f"{PREFIX}SHARED_CLAIM_CLASS is set but {PREFIX}SHARED_CLAIM is not: name the claim "
                            "the webhook creates in each namespace")
    if values.get("prepare_claims") and not values.get("image"):
        raise SettingsError(f"{PREFIX}PREPARE_CLAIMS is on but {PREFIX}IMAGE is not: the prepare init container "
                            "runs leoflow-staging's image")
    if values.get("identity", "leoflow") not in IDENTITIES:
        raise SettingsError(f"{PREFIX}IDENTITY={values['identity']!r}: expected one of {', '.join(IDENTITIES)}")
    if values.get("log_level", "INFO").upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise SettingsError(
            f"{PREFIX}LOG_LEVEL={values['log_level']!r}: expected DEBUG, INFO, WARNING or ERROR")
    return Settings(**values)
