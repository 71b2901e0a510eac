"""The Kubernetes calls of the shared-claim mode's reclaim: the pods using a run's directory, and the GC's
cleanup pods (create, list by row, delete with a uid precondition). Pods as JSON; the GC's pure code reads them."""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from shared import labels
from shared.errors import KubeUnavailable
from shared.kube.api import api_failure

_UNAVAILABLE = (OSError,)


class CleanupKubeApi:
    def __init__(self, api_client: client.ApiClient, *, timeout: float, instance: str) -> None:
        self._core = client.CoreV1Api(api_client)
        self._timeout = timeout
        self.instance = instance

    def _list(self, what: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        try:
            resp: Any = self._core.list_namespaced_pod(namespace, label_selector=selector, _preload_content=False,
                                                  _request_timeout=self._timeout)
        except ApiException as exc:
            raise api_failure(f"listing {what} in {namespace}", exc) from exc
        except _UNAVAILABLE as exc:
            raise KubeUnavailable(f"listing {what} in {namespace}: {exc}") from exc
        items: list[dict[str, Any]] = json.loads(resp.data).get("items") or []
        return items

    def directory_users(self, namespace: str, directory: str) -> list[dict[str, Any]]:
        """The pods the webhook gave ``directory`` (labelled with it at admission)."""
        return self._list("the pods of a staging directory", namespace, f"{labels.DIRECTORY}={directory}")

    def cleanup_pods(self, namespace: str, row_id: int) -> list[dict[str, Any]]:
        """This installation's cleanup pods of row ``row_id``."""
        return self._list("cleanup pods", namespace, f"{labels.CLEANUP}={row_id},{labels.MANAGED_BY}="
                          f"{labels.MANAGED_BY_VALUE},{labels.INSTANCE}={self.instance}")

    def create_pod(self, body: dict[str, Any]) -> bool:
        """Create the pod; False when a pod of that name exists already (a crashed GC created it)."""
        meta = body["metadata"]
        try:
            self._core.create_namespaced_pod(meta["namespace"], body, _preload_content=False,
                                             _request_timeout=self._timeout)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise api_failure(f"creating cleanup pod {meta['namespace']}/{meta['name']}", exc) from exc
        except _UNAVAILABLE as exc:
            raise KubeUnavailable(f"creating cleanup pod {meta['namespace']}/{meta['name']}: {exc}") from exc
        return True

    def delete_pod(self, namespace: str, name: str, *, uid: str) -> None:
        """Delete the pod if it is still that uid (gone already: nothing)."""
        try:
            self._core.delete_namespaced_pod(name, namespace, body={"preconditions": {"uid": uid}},
                                             _preload_content=False, _request_timeout=self._timeout)
        except ApiException as exc:
            if exc.status in (404, 409):
                return
            raise api_failure(f"deleting cleanup pod {namespace}/{name}", exc) from exc
        except _UNAVAILABLE as exc:
            raise KubeUnavailable(f"deleting cleanup pod {namespace}/{name}: {exc}") from exc

