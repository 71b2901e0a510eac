"""The Kubernetes calls of ``leoflow-staging inspect`` only: one claim read, one pod, one exec."""

from __future__ import annotations

import json
import time
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import stream

from shared.kube.api import api_failure


class InspectKubeApi:
    def __init__(self, api_client: client.ApiClient, *, timeout: float) -> None:
        self._core = client.CoreV1Api(api_client)
        self._timeout = timeout

    def _read(self, what: str, call: Any, name: str, namespace: str) -> dict[str, Any] | None:
        try:
            resp = call(name, namespace, _preload_content=False, _request_timeout=self._timeout)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise api_failure(f"reading {what} {namespace}/{name}", exc) from exc
        body: dict[str, Any] = json.loads(resp.data)
        return body

    def claim(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The claim's uid, phase and whether it is being deleted, or None when it does not exist."""
        pvc = self._read("PVC", self._core.read_namespaced_persistent_volume_claim, name, namespace)
        if pvc is None:
            return None
        meta = pvc.get("metadata") or {}
        return {"uid": meta.get("uid"), "phase": (pvc.get("status") or {}).get("phase"),
                "deleting": meta.get("deletionTimestamp") is not None}

    def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The pod's uid, phase, deletion, its containers' waiting reasons and its status message."""
        pod = self._read("pod", self._core.read_namespaced_pod, name, namespace)
        if pod is None:
            return None
        meta, status = pod.get("metadata") or {}, pod.get("status") or {}
        waiting = [((s.get("state") or {}).get("waiting") or {}).get("reason")
                   for s in status.get("containerStatuses") or []]
        return {"uid": meta.get("uid"), "phase": status.get("phase"), "deleting": meta.get("deletionTimestamp")
                is not None, "waiting": [w for w in waiting if w], "message": status.get("message") or ""}

    def create_pod(self, namespace: str, body: dict[str, Any]) -> None:
        try:
            self._core.create_namespaced_pod(namespace, body, _request_timeout=self._timeout)
        except ApiException as exc:
            raise api_failure(f"creating pod {namespace}/{body['metadata']['name']}", exc) from exc

    def delete_pod(self, namespace: str, name: str, *, uid: str) -> None:
        try:
            self._core.delete_namespaced_pod(name, namespace, body={"preconditions": {"uid": uid},
                                                                    "gracePeriodSeconds": 0},
                                             _request_timeout=self._timeout)
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise api_failure(f"deleting pod {namespace}/{name}", exc) from exc
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.pod(namespace, name) is not None:
            time.sleep(0.5)

    def exec(self, namespace: str, name: str, command: list[str], *, timeout: float) -> str:
        """Run ``command`` in the pod's container; its standard output and error, interleaved as received."""
        try:
            out: str = stream(self._core.connect_get_namespaced_pod_exec, name, namespace, command=command,
                              stderr=True, stdin=False, stdout=True, tty=False, _request_timeout=timeout)
        except ApiException as exc:
            raise api_failure(f"exec in pod {namespace}/{name}", exc) from exc
        return out
