"""Running the real ``leoflow-staging serve`` (gunicorn, TLS) and registering it with the apiserver
(used by the tests, the demo and the benchmarks)."""

from __future__ import annotations

import base64
import datetime as dt
import os
import shutil
import ssl
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client

from certs.issuance import KeyPair, issue_ca, issue_serving
from devenv.processes import ManagedProcess, free_port
from shared import labels

TEST_WEBHOOK_LABEL = "leoflow.io/test-webhook"  # on a namespace: which test webhook sees its pods


def console_script() -> str:
    found = Path(sys.executable).parent / "leoflow-staging"
    if found.exists():
        return str(found)
    path = shutil.which("leoflow-staging")
    if not path:
        raise FileNotFoundError("leoflow-staging console script not installed (pip install -e .)")
    return path


@dataclass
class WebhookProcess:
    """``leoflow-staging serve`` on a free loopback port with a fresh CA and serving certificate."""

    workdir: Path
    env: dict[str, str]
    port: int = 0
    ca: KeyPair | None = None
    process: ManagedProcess | None = field(default=None, repr=False)

    @property
    def ca_file(self) -> Path:
        """The CA that signed the serving certificate (written at start)."""
        return self.workdir / "ca.crt"

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def ssl_context(self) -> ssl.SSLContext:
        assert self.ca is not None
        return ssl.create_default_context(cadata=self.ca.cert_pem.decode())

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        now = dt.datetime.now(dt.UTC)
        self.ca = issue_ca(common_name="leoflow-test-webhook-ca", now=now, validity=dt.timedelta(days=1))
        serving = issue_serving(self.ca, hosts=("127.0.0.1", "localhost"), now=now,
                                validity=dt.timedelta(days=1))
        cert, key = self.workdir / "tls.crt", self.workdir / "tls.key"
        self.ca_file.write_bytes(self.ca.cert_pem)
        cert.write_bytes(serving.cert_pem)
        key.write_bytes(serving.key_pem)
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEOFLOW_STAGING_")}
        env.update(self.env)
        self.process = ManagedProcess("webhook", [
            console_script(), "serve", "--host", "127.0.0.1", "--port", str(self.port),
            "--cert-file", str(cert), "--key-file", str(key),
        ], self.workdir / "webhook.log", env=env)
        self.process.start()
        ctx = self.ssl_context()
        self.process.wait_healthy(
            lambda: urllib.request.urlopen(self.url + "/healthz", context=ctx, timeout=2).status == 200,
            timeout=60)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def configuration(self, name: str, namespace_label: str | None = None) -> dict[str, Any]:
        """A MutatingWebhookConfiguration pointing the apiserver at this process (URL mode). With
        ``namespace_label``, only namespaces labelled ``leoflow.io/test-webhook=<it>``; without, only namespaces
        without that label (two test webhooks, e.g. two identity modes, never both see one pod)."""
        assert self.ca is not None
        selected = ({"key": TEST_WEBHOOK_LABEL, "operator": "In", "values": [namespace_label]} if namespace_label
                    else {"key": TEST_WEBHOOK_LABEL, "operator": "DoesNotExist"})
        return {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [{
                "name": "staging.leoflow.io",
                "admissionReviewVersions": ["v1"],
                "clientConfig": {"url": self.url + "/mutate",
                                 "caBundle": base64.b64encode(self.ca.cert_pem).decode()},
                "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                           "resources": ["pods"], "scope": "Namespaced"}],
                "objectSelector": {"matchLabels": {labels.OPT_IN: labels.OPT_IN_VALUE}},
                "namespaceSelector": {"matchExpressions": [{
                    "key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system"]}, selected]},
                "failurePolicy": "Fail",
                "sideEffects": "NoneOnDryRun",
                "timeoutSeconds": 10,
                "reinvocationPolicy": "IfNeeded",
            }],
        }

    def register(self, api: client.ApiClient, name: str = "leoflow-staging-test",
                 namespace_label: str | None = None) -> None:
        admission = client.AdmissionregistrationV1Api(api)
        try:
            admission.delete_mutating_webhook_configuration(name)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
        admission.create_mutating_webhook_configuration(self.configuration(name, namespace_label))  # type: ignore[arg-type]
