"""The webhook's watch-fed caches: this installation's PVCs and the StorageClasses, per worker process.

What the cache may answer on its own is only what cannot be stale in the unsafe direction:
- the run's claim present with the row's uid: alive (admit) or Terminating (a retriable denial);
  Terminating never reverts for a uid, and a delete reaches the cache within the watch's latency.
- anything else (absent, another uid: a claim created or re-created a moment ago may not be seen yet)
  and any moment the cache cannot show it is fresh: a direct read, as without a cache.
StorageClasses come from the cache when fresh; the class choice re-lists directly before it denies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared.kube import KubeApi
from shared.kube.informer import Informer
from shared.kube.watches import claims_source, classes_source
from shared.objects import ClaimInfo, StorageClassInfo, claim_info, storage_class_info
from webhook import metrics


@dataclass
class WatchedCaches:
    claims: Informer[ClaimInfo]
    classes: Informer[StorageClassInfo]
    kube: KubeApi

    def start(self) -> None:
        self.claims.start()
        self.classes.start()

    def stop(self) -> None:
        self.claims.stop()
        self.classes.stop()

    def storage_classes(self, *, fresh: bool = False) -> list[StorageClassInfo]:
        """The StorageClasses from the cache while it is fresh; otherwise (or with ``fresh``) listed directly."""
        if not fresh:
            cached = self.classes.snapshot()
            if cached is not None:
                return cached
        return self.kube.list_storage_classes()

    def read_claim(self, namespace: str, name: str, expected_uid: str | None) -> ClaimInfo | None:
        """The run's claim: from the cache when it is fresh and holds ``expected_uid``, else read directly."""
        fresh, claim = self.claims.get(namespace, name)
        if fresh and claim is not None and expected_uid is not None and claim.uid == expected_uid:
            return claim
        return self.kube.read_claim(namespace, name)

    def problems(self) -> list[str]:
        """For /readyz: a cache never listed (a broken watch later is shown in ``status``, not a problem:
        admissions then read the API directly, so the webhook still works)."""
        return [str(inf.problem()) for inf in (self.claims, self.classes) if not inf.synced()]

    def status(self) -> dict[str, Any]:
        return {name: {"fresh": inf.fresh(), "objects": inf.size(), "lists": inf.relists,
                       "version": inf.version(), "problem": inf.problem()}
                for name, inf in (("pvcs", self.claims), ("storageclasses", self.classes))}


def watched_caches(api_client: Any, kube: KubeApi, *, timeout: float,
                   stale_after: float) -> WatchedCaches:
    """The two informers over ``api_client`` (a kubernetes ApiClient of their own: watches hold connections)."""
    def gauge(cache: str) -> Callable[[int, bool], None]:
        def update(size: int, listed: bool) -> None:
            metrics.CACHE_OBJECTS.labels(cache).set(size)
            if listed:
                metrics.CACHE_LISTS.labels(cache).inc()
        return update

    claims = claims_source(api_client, instance=kube.instance, timeout=timeout)
    classes = classes_source(api_client, timeout=timeout)
    return WatchedCaches(
        claims=Informer("PVC", list_fn=claims.list_pages, watch_fn=claims.watch, convert=claim_info,
                        stale_after=stale_after, on_change=gauge("pvcs")),
        classes=Informer("StorageClass", list_fn=classes.list_pages, watch_fn=classes.watch,
                         convert=storage_class_info, stale_after=stale_after, on_change=gauge("storageclasses")),
        kube=kube,
    )
