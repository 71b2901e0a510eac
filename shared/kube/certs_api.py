"""The Kubernetes calls of ``leoflow-staging certs`` only: one Secret and one webhook configuration.

Kept apart from ``KubeApi`` so that neither the webhook nor the GC has code that reads Secrets.
"""

from __future__ import annotations

import base64

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from shared.kube.api import api_failure


class CertsKubeApi:
    def __init__(self, api_client: client.ApiClient, *, timeout: float) -> None:
        self._core = client.CoreV1Api(api_client)
        self._admission = client.AdmissionregistrationV1Api(api_client)
        self._discovery = client.DiscoveryV1Api(api_client)
        self._timeout = timeout

    def read_secret(self, namespace: str, name: str) -> dict[str, bytes] | None:
        try:
            secret = self._core.read_namespaced_secret(name, namespace, _request_timeout=self._timeout)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise api_failure(f"reading Secret {namespace}/{name}", exc) from exc
        return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}

    def write_secret(self, namespace: str, name: str, data: dict[str, bytes], *, labels: dict[str, str],
                     exists: bool) -> None:
        body = {
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
        }
        try:
            if exists:
                self._core.replace_namespaced_secret(name, namespace, body, _request_timeout=self._timeout)
            else:
                self._core.create_namespaced_secret(namespace, body, _request_timeout=self._timeout)
        except ApiException as exc:
            raise api_failure(f"writing Secret {namespace}/{name}", exc) from exc

    def patch_ca_bundle(self, config_name: str, ca_pem: bytes) -> int:
        """Set caBundle on every webhook of the MutatingWebhookConfiguration; returns how many."""
        try:
            current = self._admission.read_mutating_webhook_configuration(config_name,
                                                                          _request_timeout=self._timeout)
            bundle = base64.b64encode(ca_pem).decode()
            patch = [{"op": "replace" if (w.client_config.ca_bundle is not None) else "add",
                      "path": f"/webhooks/{i}/clientConfig/caBundle", "value": bundle}
                     for i, w in enumerate(current.webhooks or [])]
            if patch:
                self._admission.patch_mutating_webhook_configuration(config_name, patch,
                                                                     _request_timeout=self._timeout)
            return len(patch)
        except ApiException as exc:
            raise api_failure(f"patching caBundle of MutatingWebhookConfiguration {config_name}", exc) from exc

    def live_endpoints(self, namespace: str, service: str) -> list[tuple[str, int]]:
        """(address, port) of every endpoint of a Service that is not terminating, ready or not yet (a replica
        that starts may become ready at any moment, serving what its Secret volume held at its start)."""
        try:
            slices = self._discovery.list_namespaced_endpoint_slice(
                namespace, label_selector=f"kubernetes.io/service-name={service}", _request_timeout=self._timeout)
        except ApiException as exc:
            raise api_failure(f"listing the endpoints of Service {namespace}/{service}", exc) from exc
        out: list[tuple[str, int]] = []
        for item in slices.items:
            ports = [p.port for p in item.ports or [] if p.port]
            for endpoint in item.endpoints or []:
                if endpoint.conditions is not None and endpoint.conditions.terminating:
                    continue
                out += [(address, port) for address in endpoint.addresses or [] for port in ports[:1]]
        return sorted(out)
