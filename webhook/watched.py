"""The webhook's watch-fed caches: this installation's PVCs and the StorageClasses, per worker process.

What the cache may answer on its own is only what cannot be stale in the unsafe direction:
- the run's claim present with the row's uid: alive (admit) or Terminating (a retriable denial);
  Terminating never reverts for a uid, and a delete reaches the cache within the watch's latency.
- anything else (absent, another uid: a claim created or re-created a moment ago may not be seen yet)
  and any moment the cache cannot show it is fresh: a direct read, as without a cache.
StorageClasses come from the cache when fresh; the class choice re-lists directly before it denies.
With a configured namespace list the PVCs are watched namespace by namespace (one informer each: namespaced
Roles allow no other); without, across namespaces by the installation's label.
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

ALL_NAMESPACES = ""  # the key of the one claims informer without a namespace list


@dataclass
class WatchedCaches:
    claims: dict[str, Informer[ClaimInfo]]  # by namespace (ALL_NAMESPACES: one across namespaces)
    classes: Informer[StorageClassInfo]
    kube: KubeApi

    def _informers(self) -> list[Informer[Any]]:
        return [*self.claims.values(), self.classes]

    def start(self) -> None:
        for inf in self._informers():
            inf.start()

    def stop(self) -> None:
        for inf in self._informers():
            inf.stop()

    def storage_classes(self, *, fresh: bool = False) -> list[StorageClassInfo]:
        """The StorageClasses from the cache while it is fresh; otherwise (or with ``fresh``) listed directly."""
        if not fresh:
            cached = self.classes.snapshot()
            if cached is not None:
                return cached
        return self.kube.list_storage_classes()

    def cached_claim(self, namespace: str, name: str) -> tuple[bool, ClaimInfo | None]:
        """(fresh, claim or None) from the cache of the claim's namespace; (False, None) without one."""
        informer = self.claims.get(namespace) or self.claims.get(ALL_NAMESPACES)
        return (False, None) if informer is None else informer.get(namespace, name)

    def read_claim(self, namespace: str, name: str, expected_uid: str | None) -> ClaimInfo | None:
        """The run's claim: from the cache when it is fresh and holds ``expected_uid``, else read directly."""
        informer = self.claims.get(namespace) or self.claims.get(ALL_NAMESPACES)
        if informer is None:  # a namespace outside the list: no cache to trust
            return self.kube.read_claim(namespace, name)
        fresh, claim = informer.get(namespace, name)
        if fresh and claim is not None and expected_uid is not None and claim.uid == expected_uid:
            return claim
        return self.kube.read_claim(namespace, name)

    def problems(self) -> list[str]:
        """For /readyz: a cache never listed (a broken watch later is shown in ``status``, not a problem:
        admissions then read the API directly, so the webhook still works)."""
        return [str(inf.problem()) for inf in self._informers() if not inf.synced()]

    def status(self) -> dict[str, Any]:
        named: list[tuple[str, Informer[Any]]] = [(f"pvcs/{ns}" if ns else "pvcs", inf)
                                                  for ns, inf in sorted(self.claims.items())]
        named.append(("storageclasses", self.classes))
        return {name: {"fresh": inf.fresh(), "objects": inf.size(), "lists": inf.relists,
                       "version": inf.version(), "problem": inf.problem()}
                for name, inf in named}


def watched_caches(api_client: Any, kube: KubeApi, *, timeout: float,
                   stale_after: float) -> WatchedCaches:
    """The two informers over ``api_client`` (a kubernetes ApiClient of their own: watches hold connections)."""
    def gauge(cache: str, total: Callable[[int], int] = lambda size: size) -> Callable[[int, bool], None]:
        def update(size: int, listed: bool) -> None:
            metrics.CACHE_OBJECTS.labels(cache).set(total(size))
            if listed:
                metrics.CACHE_LISTS.labels(cache).inc()
        return update

    claims: dict[str, Informer[ClaimInfo]] = {}

    def all_claims(_size: int) -> int:  # the gauge counts the PVCs of every namespace's informer
        return sum(inf.size() for inf in claims.values())

    for namespace in kube.namespaces or (ALL_NAMESPACES,):
        source = claims_source(api_client, instance=kube.instance, namespace=namespace or None, timeout=timeout)
        claims[namespace] = Informer(f"PVC {namespace}" if namespace else "PVC", list_fn=source.list_pages,
                                     watch_fn=source.watch, convert=claim_info, stale_after=stale_after,
                                     on_change=gauge("pvcs", all_claims))
    classes = classes_source(api_client, timeout=timeout)
    return WatchedCaches(
        claims=claims,
        classes=Informer("StorageClass", list_fn=classes.list_pages, watch_fn=classes.watch,
                         convert=storage_class_info, stale_after=stale_after, on_change=gauge("storageclasses")),
        kube=kube,
    )
