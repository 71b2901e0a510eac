"""A GC test bench: fresh database with the runs table, the real provisioner, a sweeper with a clock."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from kubernetes import client

from gc_job.directory_reclaim import DirectoryReclaimer
from gc_job.plan import GcPolicy
from gc_job.sweep import SweepConfig, Sweeper
from shared.db import volumes_repo
from shared.kube import KubeApi, make_api_client
from shared.labels import INSTANCE
from shared.settings import RunsTable
from shared.volumes import VolumeRecord
from tests.support.pods import task_pod
from webhook.intent import SizePolicy, StagingIntent, read_intent
from webhook.provisioning import ClaimLookup, Deadline, VolumeProvisioner
from webhook.storage_choice import ClassPolicy

T0 = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)


def own_kube(kubeconfig: str, namespace: str) -> KubeApi:
    """A GC bench's own installation (instance label), serving ``namespace`` (labelled for it here, as an
    operator does): claims that other tests leave behind in namespaces still being deleted are never its
    strays, so its sweeps and counts are its own."""
    api_client = make_api_client(kubeconfig)
    kube = KubeApi(api_client, timeout=10, instance=f"b-{namespace}")
    client.CoreV1Api(api_client).patch_namespace(namespace, {"metadata": {"labels": {INSTANCE: kube.instance}}})
    return kube


@dataclass
class Bench:
    engine: sa.Engine
    kube: KubeApi
    namespace: str
    now: dt.datetime = T0
    ttl: dt.timedelta = dt.timedelta(hours=24)
    out: io.StringIO = field(default_factory=io.StringIO)
    _provisioner: VolumeProvisioner | None = None
    read_claim: ClaimLookup | None = None  # the warm path's claim look-up (default: a direct read)

    def clock(self) -> dt.datetime:
        return self.now

    def provisioner(self) -> VolumeProvisioner:
        if self._provisioner is None:
            self._provisioner = VolumeProvisioner(
                engine=self.engine, reader=self.engine, kube=self.kube,
                classes=lambda *, fresh=False: self.kube.list_storage_classes(),  # noqa: PLW0108 - the ClassSource signature
                read_claim=self.read_claim or (lambda namespace, name, _uid: self.kube.read_claim(namespace, name)),
                class_policy=ClassPolicy(configured=None), db_timeout=5, kube_timeout=5,
                clock=lambda: self.clock(),  # noqa: PLW0108 - the clock may be replaced later
            )
        return self._provisioner

    def admit(self, dag_id: str, run_id: str) -> str:
        """What the webhook does for a pod of the run (the real code path, minus HTTP)."""
        intent = read_intent(task_pod(dag_id, run_id), SizePolicy("1Gi", "10Gi"))
        assert isinstance(intent, StagingIntent)
        return self.provisioner().ensure(self.namespace, intent, Deadline(30)).pvc_name

    def sweeper(self, *, adopt_min_age: dt.timedelta = dt.timedelta(0), settle: float = 5.0,
                delete_finished_pods: bool = True, runs: RunsTable | None = None,
                lock_idle_seconds: float = 300.0,
                on_event: Callable[[dict[str, Any]], None] | None = None,
                directories: DirectoryReclaimer | None = None) -> Sweeper:
        runs = runs or RunsTable()
        policy = GcPolicy(failed_ttl=self.ttl, success_states=runs.success_states,
                          failed_states=runs.failed_states, adopt_min_age=adopt_min_age)
        return Sweeper(engine=self.engine, kube=self.kube, clock=self.clock, out=self.out, on_event=on_event,
                       directories=directories,
                       config=SweepConfig(runs=runs, policy=policy, batch_size=3, settle_seconds=settle,
                                          delete_finished_pods=delete_finished_pods,
                                          lock_idle_seconds=lock_idle_seconds))

    def sweep(self, **kw: object) -> int:
        dry_run = bool(kw.pop("dry_run", False))
        return self.sweeper(**kw).run(dry_run=dry_run)

    def rows(self) -> list[VolumeRecord]:
        with self.engine.connect() as conn:
            return sorted((r for r in volumes_repo.list_volumes(conn) if r.namespace == self.namespace),
                          key=lambda r: r.id)
