"""Wiring the webhook from settings: engine, Kubernetes client, provisioner, handler, app."""

from __future__ import annotations

import datetime as dt
import socket
from typing import TYPE_CHECKING

from shared import storage_profiles
from shared.db import migrate
from shared.db.engine import make_engine, translate_errors
from shared.db.inventory import load_snapshot
from shared.errors import SettingsError, StagingError
from shared.kube import KubeApi, make_api_client
from shared.kube.events import EventRecorder
from shared.quantity import QuantityError, parse_quantity
from shared.settings import Settings
from webhook import metrics
from webhook.app import create_app
from webhook.handler import AdmissionHandler
from webhook.identity import SOURCES
from webhook.intent import SizePolicy
from webhook.inventory_metrics import CachedRead, InventoryCollector
from webhook.provisioning import Ensured, VolumeProvisioner
from webhook.provisioning_watch import ProvisioningWatch
from webhook.storage_choice import ClassPolicy
from webhook.watched import watched_caches

if TYPE_CHECKING:
    from flask import Flask


def validate(settings: Settings) -> None:
    """Fail at start-up, not at the first pod, on settings the webhook cannot use."""
    for name in ("default_size", "max_size"):
        try:
            parse_quantity(getattr(settings, name))
        except QuantityError as exc:
            raise SettingsError(f"LEOFLOW_STAGING_{name.upper()}: {exc}") from None
    if parse_quantity(settings.default_size) > parse_quantity(settings.max_size):
        raise SettingsError("LEOFLOW_STAGING_DEFAULT_SIZE is larger than LEOFLOW_STAGING_MAX_SIZE")
    try:
        storage_profiles.parse_overrides(settings.storage_profiles)
    except storage_profiles.ProfileError as exc:
        raise SettingsError(f"LEOFLOW_STAGING_STORAGE_PROFILES: {exc}") from None
    if settings.request_budget > 29:
        raise SettingsError("LEOFLOW_STAGING_REQUEST_BUDGET must stay under the 30 s webhook timeout")


def build_app(settings: Settings, *, multiproc_dir: str | None = None) -> Flask:
    validate(settings)
    engine = make_engine(settings.database_url, timeout=settings.db_timeout, pool_size=settings.threads)
    kube = KubeApi(make_api_client(settings.kubeconfig, pool_size=settings.threads),
                   timeout=settings.kube_timeout, instance=settings.instance, namespaces=settings.namespaces)
    # The watch-fed caches, started here in the worker (after gunicorn's fork), on a client of their own.
    caches = watched_caches(make_api_client(settings.kubeconfig, pool_size=2), kube,
                            timeout=settings.kube_timeout, stale_after=settings.watch_stale_seconds)
    caches.start()
    provisioner = VolumeProvisioner(
        engine=engine, kube=kube, classes=caches.storage_classes, read_claim=caches.read_claim,
        class_policy=ClassPolicy(configured=settings.storage_class,
                                 extra_rwx_provisioners=settings.rwx_provisioners,
                                 profiles=storage_profiles.parse_overrides(settings.storage_profiles)),
        db_timeout=settings.db_timeout, kube_timeout=settings.kube_timeout, shared_claim=settings.shared_claim,
        shared_class=settings.shared_claim_class, shared_size=settings.shared_claim_size,
        # The warm path's one read: autocommit, and no WAL flush wait for its row lock's commit record.
        reader=make_engine(settings.database_url, timeout=settings.db_timeout, pool_size=settings.threads,
                           autocommit=True, synchronous_commit=False, pre_ping=False),  # the read retries once
    )
    recorder = event_recorder(settings)
    watch = ProvisioningWatch(read=caches.cached_claim, events_about=kube.events_about,
                              observe=lambda cls, seconds: metrics.PROVISIONING.labels(cls).observe(seconds),
                              emit=recorder.emit if recorder else None,
                              pending_after=settings.pending_event_after.total_seconds())

    def created(namespace: str, ensured: Ensured) -> None:
        watch.add(namespace, ensured.pvc_name, uid=ensured.pvc_uid, storage_class=ensured.storage_class,
                  provisioner=ensured.provisioner)

    handler = AdmissionHandler(provisioner=provisioner,
                               sizes=SizePolicy(default=settings.default_size, maximum=settings.max_size),
                               budget=settings.request_budget, identity=SOURCES[settings.identity],
                               events=recorder.emit if recorder else None, on_created=created,
                               image=settings.image, shared_claim=settings.shared_claim,
                               prepare_claims=settings.prepare_claims)

    def ready() -> list[str]:
        problems = []
        try:
            with translate_errors("database"):
                problem = migrate.schema_problem(engine)
            if problem:
                problems.append(problem)
        except StagingError as exc:
            problems.append(str(exc))
        try:
            caches.storage_classes(fresh=True)
        except StagingError as exc:
            problems.append(str(exc))
        return problems + caches.problems()

    return create_app(handler=handler, ready=ready, max_body_bytes=settings.max_body_bytes,
                      multiproc_dir=multiproc_dir, extra_metrics=inventory_collector(settings),
                      status=caches.status)


def event_recorder(settings: Settings) -> EventRecorder | None:
    """Events on staging PVCs from a client of their own (short timeouts, one connection)."""
    if not settings.events:
        return None
    return EventRecorder(make_api_client(settings.kubeconfig, pool_size=1),
                         instance=settings.pod_name or socket.gethostname(), timeout=min(settings.kube_timeout, 2.0))


def inventory_collector(settings: Settings) -> InventoryCollector:
    """The database inventory for /metrics, on its own one-connection engine (scrapes never take the
    admission pool's connections), read at most once per ``metrics_cache_seconds``."""
    engine = make_engine(settings.database_url, timeout=settings.db_timeout, pool_size=1)

    def read() -> object:
        return load_snapshot(engine, settings.runs, now=dt.datetime.now(dt.UTC))

    return InventoryCollector(CachedRead(read, ttl=settings.metrics_cache_seconds, what="inventory read"))
