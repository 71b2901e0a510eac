"""One admission request in, one verdict out: the webhook's decision sequence."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared import claim_events
from shared.errors import DatabaseUnavailable, DataRejected, KubeForbidden, KubeUnavailable, SchemaError
from webhook.identity import LEOFLOW, IdentitySource
from webhook.intent import SizePolicy, StagingIntent, read_intent
from webhook.patching import mount_plan, plan_patch
from webhook.provisioning import Deadline, Ensured, VolumeProvisioner
from webhook.rerun_warning import rerun_warning
from webhook.review import AdmissionRequest
from webhook.verdicts import Denied, Verdict, allow, deny, patched

log = logging.getLogger("leoflow_staging.webhook")


@dataclass(frozen=True)
class Outcome:
    """A verdict plus what happened on the way (for metrics and logs)."""

    verdict: Verdict
    intent: StagingIntent | None = None
    ensured: Ensured | None = None


class AdmissionHandler:
    """Pod CREATE of an opted-in pod gets its volume; everything else passes unchanged."""

    def __init__(self, *, provisioner: VolumeProvisioner, sizes: SizePolicy, budget: float,
                 identity: IdentitySource = LEOFLOW,
                 events: Callable[[claim_events.ClaimEvent], None] | None = None,
                 on_created: Callable[[str, Ensured], None] | None = None, image: str | None = None,
                 shared_claim: str | None = None, prepare_claims: bool = False) -> None:
        self._provisioner, self._sizes, self._budget = provisioner, sizes, budget
        self._identity = identity
        self._events = events  # best effort and non-blocking (shared.kube.events)
        self._on_created = on_created  # (namespace, ensured) of a claim this process created: non-blocking
        self._image = image  # leoflow-staging's own image: the shared-claim mode's prepare container
        self._shared_claim = shared_claim  # the shared-claim mode for new runs (the provisioner's setting too)
        self._prepare_claims = prepare_claims  # a run's own claim gets the prepare init container too

    def _patch(self, pod: dict[str, Any], intent: StagingIntent, shared: str | None) -> list[dict[str, Any]] | Verdict:
        """The patch mounting the run's volume: in the shared-claim mode its directory on the claim, prepared; a
        run's own claim as a whole, prepared when the installation says so."""
        if shared is None and not self._prepare_claims:
            return plan_patch(pod, intent.pvc_name)
        if not self._image:  # settings require it for new runs; a run recorded in the shared mode before needs it too
            return deny("no_image", f"leoflow-staging: the run's volume is a directory on the shared claim {shared!r} "
                        "and this webhook has no LEOFLOW_STAGING_IMAGE for its prepare container; the platform "
                        "team must set it (the chart does)", code=503)
        plan = mount_plan(name=intent.pvc_name, shared=shared is not None, image=self._image,
                          dag_id=intent.dag_id, run_id=intent.run_id)
        return plan_patch(pod, shared or intent.pvc_name, plan)

    def handle(self, req: AdmissionRequest, *, arrived: float | None = None) -> Outcome:
        """The verdict for ``req``; its time budget counts from ``arrived`` (``time.monotonic()``) when known."""
        if not req.is_pod:
            return Outcome(allow("not_a_pod"))
        if req.operation != "CREATE":
            return Outcome(allow("not_create"))
        pod = req.object
        if pod is None:
            return Outcome(deny("malformed_pod", "leoflow-staging: a Pod CREATE request without an object",
                                code=400))
        intent = read_intent(pod, self._sizes, self._identity)
        if intent is None:
            return Outcome(allow("not_opted_in"))
        if isinstance(intent, Verdict):
            return Outcome(intent)
        namespace = req.namespace or str((pod.get("metadata") or {}).get("namespace") or "")
        if not namespace:
            return Outcome(deny("malformed_pod", "leoflow-staging: the request names no namespace", code=400),
                           intent)
        planned = self._shared_claim
        ops = self._patch(pod, intent, planned)  # conflicts are found before any side effect
        if isinstance(ops, Verdict):
            return Outcome(ops, intent)
        deadline = Deadline(self._budget, arrived) if arrived is not None else Deadline(self._budget)
        try:
            if req.dry_run:  # sideEffects: NoneOnDryRun: validate, create nothing, record nothing
                if planned is None:
                    self._provisioner.choose_class(intent, deadline)
                else:
                    self._provisioner.shared_claim_of(namespace, planned, deadline, create=False)
                return Outcome(patched(ops, reason="patched_dry_run"), intent)
            ensured = self._provisioner.ensure(namespace, intent, deadline)
        except Denied as exc:
            return Outcome(exc.verdict, intent)
        except DataRejected as exc:
            return Outcome(deny("database_rejected", f"leoflow-staging: the staging database refused this pod's "
                                f"volume record ({exc}); the pod was not admitted", code=422), intent)
        except SchemaError as exc:
            return Outcome(deny("database_schema", f"leoflow-staging: the staging database is not usable: {exc}; "
                                "the pod was not admitted", code=503, retriable=True), intent)
        except DatabaseUnavailable as exc:
            return Outcome(deny("database_unavailable", f"leoflow-staging: the staging database cannot be "
                                f"reached ({exc}); the pod was not admitted. Retry.", code=503,
                                retriable=True), intent)
        except KubeForbidden as exc:
            return Outcome(deny("kubernetes_refused", f"leoflow-staging: the Kubernetes API refused to "
                                f"provide the staging volume: {exc}", code=403), intent)
        except KubeUnavailable as exc:
            return Outcome(deny("kubernetes_unavailable", f"leoflow-staging: the Kubernetes API cannot be "
                                f"reached ({exc}); the pod was not admitted. Retry.", code=503,
                                retriable=True), intent)
        if ensured.shared_claim != planned:  # the run's row was written in the other mode: it wins
            ops = self._patch(pod, intent, ensured.shared_claim)
            if isinstance(ops, Verdict):
                return Outcome(ops, intent, ensured)
        previous = ensured.previous  # the cold path only: the run's earlier volume was reclaimed
        if ensured.created and self._events is not None:  # the cold path only
            meta = pod.get("metadata") or {}
            pod_name = str(meta.get("name") or f"{meta.get('generateName') or ''}*")[:253]
            self._events(claim_events.created(
                namespace=namespace, pvc_name=ensured.pvc_name, pvc_uid=ensured.pvc_uid, dag_id=intent.dag_id,
                run_id=intent.run_id, pod=pod_name, storage_class=ensured.storage_class, size=intent.size))
            if previous is not None:
                self._events(claim_events.started_empty(
                    namespace=namespace, pvc_name=ensured.pvc_name, pvc_uid=ensured.pvc_uid, dag_id=intent.dag_id,
                    run_id=intent.run_id, pod=pod_name,
                    deleted_at=previous.deleted_at.isoformat() if previous.deleted_at else None,
                    reason=previous.delete_reason.value if previous.delete_reason else None))
        if ensured.created and self._on_created is not None:  # the claim's provisioning is watched
            self._on_created(namespace, ensured)
        warnings = tuple(ensured.warnings) + (() if previous is None else (
            rerun_warning(deleted_at=previous.deleted_at, reason=previous.delete_reason),))
        return Outcome(patched(ops, reason="patched_new_pvc" if ensured.created else "patched", warnings=warnings),
                       intent, ensured)
