"""`leoflow-staging certs` and `check-admission` against the real apiserver (what the hook Jobs run)."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path

import pytest
from kubernetes import client

from certs.bundle import sans, signed_by
from tests.support.webhook import WebhookProcess, console_script

pytestmark = pytest.mark.e2e


def _cli(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEOFLOW_STAGING_")}
    env["LEOFLOW_STAGING_KUBECONFIG"] = str(kubeconfig)
    return subprocess.run([console_script(), *args], env=env, capture_output=True, text=True, timeout=60,
                          check=False)


def test_secret_is_created_reused_and_patched_into_the_webhook(kubeconfig: Path, api: client.ApiClient,
                                                               core: client.CoreV1Api, namespace: str) -> None:
    args = ("certs", "ensure-secret", "--namespace", namespace, "--secret", "tls", "--service", "hook")
    first = _cli(kubeconfig, *args)
    assert first.returncode == 0 and "created" in first.stdout, first.stderr
    data = {k: base64.b64decode(v) for k, v in core.read_namespaced_secret("tls", namespace).data.items()}
    assert signed_by(data["tls.crt"], data["ca.crt"])
    assert f"hook.{namespace}.svc" in sans(data["tls.crt"])
    again = _cli(kubeconfig, *args)
    assert "reused" in again.stdout
    assert core.read_namespaced_secret("tls", namespace).data["ca.crt"] == base64.b64encode(data["ca.crt"]).decode()
    admission = client.AdmissionregistrationV1Api(api)
    name = f"certs-test-{namespace}"
    admission.create_mutating_webhook_configuration({
        "metadata": {"name": name},
        "webhooks": [{"name": "staging.leoflow.io", "admissionReviewVersions": ["v1"], "sideEffects": "None",
                      "clientConfig": {"service": {"name": "hook", "namespace": namespace, "path": "/mutate"}},
                      "objectSelector": {"matchLabels": {"never": "matches"}}}]})
    try:
        patched = _cli(kubeconfig, "certs", "patch-webhook", "--namespace", namespace, "--secret", "tls",
                       "--webhook-config", name)
        assert patched.returncode == 0, patched.stderr
        stored = admission.read_mutating_webhook_configuration(name)
        assert base64.b64decode(stored.webhooks[0].client_config.ca_bundle) == data["ca.crt"]
    finally:
        admission.delete_mutating_webhook_configuration(name)
    missing = _cli(kubeconfig, "certs", "patch-webhook", "--namespace", namespace, "--secret", "nope",
                   "--webhook-config", name)
    assert missing.returncode == 1 and "has no ca.crt" in missing.stderr


def test_check_admission_is_what_helm_test_runs(kubeconfig: Path, webhook: WebhookProcess, namespace: str,
                                                core: client.CoreV1Api) -> None:
    result = _cli(kubeconfig, "check-admission", "--namespace", namespace)
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"ok": true' in result.stdout
    assert core.list_namespaced_persistent_volume_claim(namespace).items == []  # dry run: nothing created


def test_files_for_local_serving(tmp_path: Path) -> None:
    out = _cli(tmp_path / "none", "certs", "files", "--out-dir", str(tmp_path / "tls"), "--host", "127.0.0.1",
               "--host", "localhost")
    assert out.returncode == 0, out.stderr
    crt = (tmp_path / "tls" / "tls.crt").read_bytes()
    assert sans(crt) == {"127.0.0.1", "localhost"}
    assert oct((tmp_path / "tls" / "tls.key").stat().st_mode & 0o777) == "0o600"
