"""The Helm chart: lint, render, schema, server-side apply, RBAC by impersonation, and a patched pod
through the rendered webhook configuration pointed at the running `leoflow-staging serve`."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from devenv.controlplane import ControlPlane
from tests.e2e.conftest import pod_dict, staging_pvc_of
from tests.support.helm import CHART, apply, by_kind, helm, one, render
from tests.support.pods import task_pod
from tests.support.webhook import WebhookProcess

pytestmark = pytest.mark.e2e
HOOK = "helm.sh/hook"


def test_lint_strict(assets: Path) -> None:
    ok = helm(assets, "lint", "--strict", str(CHART), "--set", "database.existingSecret=db", check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    missing = helm(assets, "lint", "--strict", str(CHART), check=False)
    assert missing.returncode != 0 and "existingSecret" in missing.stdout + missing.stderr


def test_defaults_render_a_safe_install(assets: Path) -> None:
    objs = render(assets)
    assert isinstance(objs, list)
    deploy = one(objs, "Deployment")
    spec = deploy["spec"]["template"]["spec"]
    assert deploy["spec"]["replicas"] >= 2
    assert spec["topologySpreadConstraints"]
    container = spec["containers"][0]
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["resources"]["limits"] and container["resources"]["requests"]
    assert {"checksum/config", "checksum/tls"} <= set(deploy["spec"]["template"]["metadata"]["annotations"])
    env = {e["name"]: e for e in container["env"]}
    assert env["LEOFLOW_STAGING_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "leoflow-db", "key": "url"}
    assert env["LEOFLOW_STAGING_READ_TIMEOUT"]["value"] == "2"
    assert not {"LEOFLOW_STAGING_CLASS_CACHE_SECONDS", "LEOFLOW_STAGING_PVC_CACHE_SECONDS",
                "LEOFLOW_STAGING_WATCH_CACHES"} & set(env)  # settings the product no longer has
    assert one(objs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert not by_kind(objs, "NetworkPolicy")  # opt-in
    [hook] = one(objs, "MutatingWebhookConfiguration")["webhooks"]
    assert hook["failurePolicy"] == "Fail" and hook["sideEffects"] == "NoneOnDryRun"
    assert hook["timeoutSeconds"] <= 10 and hook["admissionReviewVersions"] == ["v1"]
    assert hook["reinvocationPolicy"] == "IfNeeded"
    assert hook["objectSelector"] == {"matchLabels": {"leoflow.io/staging": "enabled"}}
    excluded = hook["namespaceSelector"]["matchExpressions"][0]["values"]
    assert {"kube-system", "platform"} <= set(excluded)
    assert hook["clientConfig"]["service"]["path"] == "/mutate"
    cron = one(objs, "CronJob")
    assert cron["spec"]["schedule"] == "*/5 * * * *" and cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert cron["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"] > 0
    assert cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"] == ["gc"]
    migrate = one(objs, "Job", "migrate")
    assert migrate["metadata"]["annotations"][HOOK] == "pre-install,pre-upgrade"
    assert one(objs, "Job", "certgen-create")["metadata"]["annotations"][HOOK] == "pre-install,pre-upgrade"
    assert one(objs, "Job", "certgen-patch")["metadata"]["annotations"][HOOK] == "post-install,post-upgrade"
    assert one(objs, "Pod", "test")["metadata"]["annotations"][HOOK] == "test"
    sas = {o["metadata"]["name"] for o in by_kind(objs, "ServiceAccount")}
    assert {"staging-leoflow-staging-webhook", "staging-leoflow-staging-gc"} <= sas


def test_value_sets(assets: Path) -> None:
    cm = render(assets, values={"certs": {"mode": "cert-manager"}})
    assert isinstance(cm, list)
    assert not [o for o in by_kind(cm, "Job") if "certgen" in o["metadata"]["name"]]
    issuers = by_kind(cm, "Issuer")
    assert {"selfSigned", "ca"} == {next(iter(set(i["spec"]))) for i in issuers}
    ca_cert = one(cm, "Certificate", "-ca")
    assert ca_cert["spec"]["isCA"] is True
    serving = one(cm, "Certificate", "webhook")
    assert serving["spec"]["issuerRef"]["name"].endswith("-ca")  # a CA issuer chain, not a self-signed leaf
    mwc = one(cm, "MutatingWebhookConfiguration")
    inject = mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
    assert inject == "platform/staging-leoflow-staging-webhook"

    url = render(assets, values={"webhook": {"url": "https://127.0.0.1:9443/mutate", "caBundle": "Q0E="}})
    assert isinstance(url, list)
    [hook] = one(url, "MutatingWebhookConfiguration")["webhooks"]
    assert hook["clientConfig"] == {"url": "https://127.0.0.1:9443/mutate", "caBundle": "Q0E="}
    assert not [o for o in by_kind(url, "Job") if "certgen" in o["metadata"]["name"]]
    assert not by_kind(url, "Deployment") and not by_kind(url, "Service")  # the webhook runs elsewhere
    assert by_kind(url, "CronJob")  # the GC still runs in the cluster

    custom = render(assets, values={"gc": {"schedule": "0 * * * *", "suspend": True},
                                    "config": {"failedTtl": "48h", "storageClass": "nfs", "identity": "airflow"}})
    assert isinstance(custom, list)
    assert one(custom, "CronJob")["spec"]["schedule"] == "0 * * * *"
    container = one(custom, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["LEOFLOW_STAGING_FAILED_TTL"] == "48h" and env["LEOFLOW_STAGING_STORAGE_CLASS"] == "nfs"
    assert env["LEOFLOW_STAGING_IDENTITY"] == "airflow"

    timeout = render(assets, values={"webhook": {"readTimeout": 0.5}})
    assert isinstance(timeout, list)
    container = one(timeout, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "LEOFLOW_STAGING_READ_TIMEOUT", "value": "0.5"} in container["env"]


@pytest.mark.parametrize(("values", "fragment"), [
    ({"webhook": {"timeoutSeconds": 30}}, "timeoutSeconds"),
    ({"webhook": {"replicas": "two"}}, "replicas"),
    ({"webhook": {"replica": 2}}, "replica"),
    ({"certs": {"mode": "letsencrypt"}}, "mode"),
    ({"config": {"maxSize": "lots"}}, "maxSize"),
    ({"config": {"identity": "airflow2"}}, "identity"),
    ({"config": {"runs": {"table": "dag_run; drop"}}}, "table"),
    ({"database": {"existingSecret": ""}}, "existingSecret"),
    ({"config": {"requestBudget": 10}}, "must be below webhook.timeoutSeconds"),
    ({"config": {"watchCaches": False}}, "watchCaches"),  # removed settings are unknown keys
    ({"config": {"pvcCacheSeconds": 5}}, "pvcCacheSeconds"),
    ({"webhook": {"minAvailable": 1}}, "minAvailable"),
    ({"webhook": {"maxUnavailable": 0}}, "maxUnavailable"),  # a budget that blocks every drain
    ({"webhook": {"readTimeout": -1}}, "readTimeout"),
    ({"webhook": {"networkPolicy": {"enabled": True, "ingress": []}}}, "ingress"),
    ({"webhook": {"networkPolicy": {"apiserver": [{"ipblock": {"cidr": "10.0.0.0/24"}}]}}}, "ipblock"),
    ({"webhook": {"networkPolicy": {"enabled": True}}}, "webhook.networkPolicy.apiserver is empty"),
])
def test_schema_rejects_bad_values(assets: Path, values: dict[str, Any], fragment: str) -> None:
    error = render(assets, values=values, check=False)
    assert isinstance(error, str) and fragment in error, error


def _disruptions_allowed(pdb: dict[str, Any], replicas: int) -> int:
    """How many of ``replicas`` healthy pods the budget lets a drain evict at once (integer budgets)."""
    spec = pdb["spec"]
    if "maxUnavailable" in spec:
        assert isinstance(spec["maxUnavailable"], int)
        return min(spec["maxUnavailable"], replicas)
    assert isinstance(spec["minAvailable"], int)
    return max(replicas - spec["minAvailable"], 0)


@pytest.mark.parametrize(("webhook", "allowed"), [
    ({"replicas": 1}, None),  # no budget: a drain evicts the only replica
    ({"replicas": 2}, 1),
    ({"replicas": 3}, 1),
    ({"replicas": 5, "maxUnavailable": 2}, 2),
    ({"replicas": 2, "maxUnavailable": 4}, 2),
])
def test_disruption_budget_never_blocks_a_drain(assets: Path, webhook: dict[str, int], allowed: int | None) -> None:
    objs = render(assets, values={"webhook": webhook})
    assert isinstance(objs, list)
    budgets = by_kind(objs, "PodDisruptionBudget")
    if allowed is None:
        assert not budgets
        return
    [pdb] = budgets
    assert _disruptions_allowed(pdb, webhook["replicas"]) == allowed  # >= 1: a drain proceeds
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"  # unready replicas never wait
    pod_labels = one(objs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


APISERVER = [{"ipBlock": {"cidr": "10.0.0.0/24"}}, {"ipBlock": {"cidr": "172.16.0.0/28", "except": ["172.16.0.8/29"]}}]
SCRAPERS = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
             "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}]


def test_network_policy_admits_only_the_given_peers_on_the_serving_port(assets: Path, api: client.ApiClient,
                                                                        release_ns: str) -> None:
    values = {"webhook": {"port": 9443, "networkPolicy": {"enabled": True, "apiserver": APISERVER,
                                                          "metrics": SCRAPERS}}}
    objs = render(assets, namespace=release_ns, values=values)
    assert isinstance(objs, list)
    policy = one(objs, "NetworkPolicy")
    deploy = one(objs, "Deployment")
    pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert policy["metadata"]["namespace"] == release_ns
    assert policy["spec"]["podSelector"] == {"matchLabels": deploy["spec"]["selector"]["matchLabels"]}
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    [container] = deploy["spec"]["template"]["spec"]["containers"]
    assert container["ports"] == [{"name": "https", "containerPort": 9443, "protocol": "TCP"}]
    certgen = {"podSelector": {"matchLabels": {"app.kubernetes.io/instance": "staging",
                                               "app.kubernetes.io/component": "certgen"}}}
    assert policy["spec"]["ingress"] == [{"ports": [{"port": 9443, "protocol": "TCP"}],
                                          "from": APISERVER + SCRAPERS + [certgen]}]
    certgen_jobs = [j for j in by_kind(objs, "Job") if j["metadata"]["labels"].get("app.kubernetes.io/component")
                    == "certgen"]
    assert certgen_jobs and all(j["spec"]["template"]["metadata"]["labels"].items()
                                >= certgen["podSelector"]["matchLabels"].items() for j in certgen_jobs)
    stored = apply(api, policy)  # the real apiserver validates the peers as rendered
    assert stored.to_dict()["spec"]["ingress"] == policy["spec"]["ingress"]

    only_apiserver = render(assets, values={"webhook": {"networkPolicy": {"enabled": True, "apiserver": APISERVER}}})
    assert isinstance(only_apiserver, list)
    assert one(only_apiserver, "NetworkPolicy")["spec"]["ingress"] == [
        {"ports": [{"port": 8443, "protocol": "TCP"}], "from": [*APISERVER, certgen]}]
    cert_manager = render(assets, values={"certs": {"mode": "cert-manager"},
                                          "webhook": {"networkPolicy": {"enabled": True, "apiserver": APISERVER}}})
    assert isinstance(cert_manager, list)
    assert one(cert_manager, "NetworkPolicy")["spec"]["ingress"][0]["from"] == APISERVER  # no certificate Jobs


def test_network_policy_is_off_by_default_and_with_an_outside_webhook(assets: Path) -> None:
    default = render(assets, values={"webhook": {"networkPolicy": {"apiserver": APISERVER}}})
    assert isinstance(default, list) and not by_kind(default, "NetworkPolicy")
    outside = render(assets, values={"webhook": {"url": "https://127.0.0.1:9443/mutate", "networkPolicy": {
        "enabled": True, "apiserver": APISERVER}}})
    assert isinstance(outside, list) and not by_kind(outside, "NetworkPolicy")  # no webhook pods to select


@pytest.fixture
def release_ns(core: client.CoreV1Api) -> Iterator[str]:
    name = f"rel-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


def _cleanup_cluster_scoped(api: client.ApiClient, objs: list[dict[str, Any]]) -> None:
    rbac = client.RbacAuthorizationV1Api(api)
    admission = client.AdmissionregistrationV1Api(api)
    for o in objs:
        name = o["metadata"]["name"]
        try:
            if o["kind"] == "ClusterRole":
                rbac.delete_cluster_role(name)
            elif o["kind"] == "ClusterRoleBinding":
                rbac.delete_cluster_role_binding(name)
            elif o["kind"] == "MutatingWebhookConfiguration":
                admission.delete_mutating_webhook_configuration(name)
            elif o["kind"] == "ValidatingAdmissionPolicyBinding":
                admission.delete_validating_admission_policy_binding(name)
            elif o["kind"] == "ValidatingAdmissionPolicy":
                admission.delete_validating_admission_policy(name)
        except client.ApiException as exc:
            if exc.status != 404:
                raise


def test_every_rendered_object_is_accepted_by_server_side_apply(assets: Path, api: client.ApiClient,
                                                                release_ns: str) -> None:
    for values in ({}, {"certs": {"mode": "cert-manager"}}):
        objs = render(assets, namespace=release_ns, values=values | {"test": {"namespace": release_ns}})
        assert isinstance(objs, list)
        applied = skipped = 0
        try:
            for obj in objs:
                if obj["apiVersion"].startswith("cert-manager.io/"):
                    skipped += 1  # no cert-manager CRDs in this control plane
                    continue
                # The policy binding is validated and not stored: a stored one would refuse the later tests' pods
                # in unlabelled namespaces until the apiserver dropped it.
                stored = apply(api, obj, dry_run=obj["kind"] == "ValidatingAdmissionPolicyBinding")
                assert stored.metadata.name == obj["metadata"]["name"]
                applied += 1
        finally:
            _cleanup_cluster_scoped(api, objs)
        assert applied >= 15 and skipped == (4 if values else 0)


def _create_opted_in(core: client.CoreV1Api, namespace: str) -> str | None:
    """None when the pod was created (server-side dry run), else the refusal's message."""
    try:
        core.create_namespaced_pod(namespace, task_pod("etl", "r1"), dry_run="All")
    except client.ApiException as exc:
        assert exc.status == 403, exc.body
        return str(json.loads(exc.body)["message"])
    return None


@pytest.mark.parametrize("listed", [False, True])
def test_an_opted_in_pod_no_installation_serves_is_refused_not_left_without_staging(
        assets: Path, api: client.ApiClient, core: client.CoreV1Api, release_ns: str, listed: bool) -> None:
    # A release (so a policy) of its own per case: the apiserver takes a new policy, or a change, a moment later.
    release = f"refuse-{'listed' if listed else 'all'}-{uuid.uuid4().hex[:4]}"
    served, unlabelled, unlisted, other = (f"{p}-{uuid.uuid4().hex[:6]}" for p in ("srv", "unl", "unlisted", "oth"))
    for name, label in ((served, release), (unlabelled, None), (unlisted, release), (other, "another")):
        core.create_namespace({"metadata": {"name": name, "labels": {"leoflow.io/staging-instance": label}
                                            if label else {}}})
    values: dict[str, Any] = {"namespaces": [served]} if listed else {}
    objs = render(assets, namespace=release_ns, release=release, values=values)
    assert isinstance(objs, list)
    policy = [o for o in objs if o["kind"].startswith("ValidatingAdmissionPolicy")]
    assert sorted(o["kind"] for o in policy) == ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"]
    # Refused: no label anywhere; with a list, also this installation's label outside the list. Admitted: a
    # served namespace, another installation's, and the namespaces the webhook never sees (left alone).
    expected = {unlabelled: True, served: False, other: False, unlisted: listed, release_ns: False}
    try:
        for obj in policy:
            apply(api, obj)
        deadline = time.monotonic() + 60  # the apiserver's policy informer takes the new policy
        while True:
            seen = {ns: _create_opted_in(core, ns) for ns in expected}
            if {ns: m is not None for ns, m in seen.items()} == expected:
                break
            assert time.monotonic() < deadline, seen
            time.sleep(0.5)
        message = seen[unlabelled]
        assert message is not None and f"namespace {unlabelled} is not served by any leoflow-staging" in message
        assert "leoflow.io/staging-instance missing" in message and "would start without /staging" in message
        assert f"kubectl label namespace {unlabelled} leoflow.io/staging-instance=<name>" in message
        if listed:  # labelled for this installation, outside its list: nobody serves it
            assert f"={release}, not in that installation's namespaces list" in str(seen[unlisted])
        plain = task_pod("etl", "r1", opt_in=False)
        core.create_namespaced_pod(unlabelled, plain, dry_run="All")  # pods that do not opt in: never touched
    finally:
        _cleanup_cluster_scoped(api, policy)
        gone = time.monotonic() + 60  # the later tests create opted-in pods: wait until the apiserver dropped it
        while _create_opted_in(core, unlabelled) is not None and time.monotonic() < gone:
            time.sleep(0.2)
        for name in (served, unlabelled, unlisted, other):
            core.delete_namespace(name)
    off = render(assets, values={"webhook": {"refuseUnserved": False}})
    assert isinstance(off, list) and not [o for o in off if o["kind"].startswith("ValidatingAdmissionPolicy")]


def _impersonating(kubeconfig: Path, namespace: str, sa: str) -> client.ApiClient:
    api = config.new_client_from_config(config_file=str(kubeconfig))
    api.set_default_header("Impersonate-User", f"system:serviceaccount:{namespace}:{sa}")
    for group in ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"):
        api.set_default_header("Impersonate-Group", group)  # the last one wins in the client; enough for RBAC
    return api


def _allowed(call: Any) -> bool:
    try:
        call()
    except client.ApiException as exc:
        if exc.status == 403:
            return False
        return exc.status in (404, 409, 422)  # authorized, then refused for another reason
    return True


def test_rbac_is_least_privilege(assets: Path, api: client.ApiClient, kubeconfig: Path, release_ns: str,
                                 core: client.CoreV1Api) -> None:
    objs = render(assets, namespace=release_ns)
    assert isinstance(objs, list)
    rbac_kinds = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
    wanted = [o for o in objs if o["kind"] in rbac_kinds and HOOK not in o["metadata"].get("annotations", {})]
    try:
        for obj in wanted:
            apply(api, obj)
        tasks = f"tasks-{uuid.uuid4().hex[:6]}"
        core.create_namespace({"metadata": {"name": tasks}})
        pvc = {"metadata": {"name": "leoflow-staging-x-y-0123456789"},
               "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}}}
        hook_sa = _impersonating(kubeconfig, release_ns, "staging-leoflow-staging-webhook")
        w_core, w_storage = client.CoreV1Api(hook_sa), client.StorageV1Api(hook_sa)
        assert _allowed(w_storage.list_storage_class)
        assert _allowed(lambda: w_core.create_namespaced_persistent_volume_claim(tasks, pvc))
        assert _allowed(lambda: w_core.read_namespaced_persistent_volume_claim(pvc["metadata"]["name"], tasks))
        assert not _allowed(lambda: w_core.delete_namespaced_persistent_volume_claim("any", tasks))
        assert not _allowed(lambda: w_core.list_namespaced_secret(release_ns))
        assert not _allowed(lambda: w_core.read_namespaced_secret("leoflow-db", release_ns))
        assert not _allowed(lambda: w_core.delete_namespaced_pod("any", tasks))

        gc_sa = _impersonating(kubeconfig, release_ns, "staging-leoflow-staging-gc")
        g_core = client.CoreV1Api(gc_sa)
        assert _allowed(lambda: g_core.list_persistent_volume_claim_for_all_namespaces(label_selector="a=b"))
        assert _allowed(lambda: g_core.list_namespaced_pod(tasks))
        assert _allowed(lambda: g_core.delete_namespaced_persistent_volume_claim(pvc["metadata"]["name"], tasks))
        assert not _allowed(lambda: g_core.create_namespaced_persistent_volume_claim(tasks, pvc))
        assert not _allowed(lambda: g_core.read_namespaced_secret("leoflow-db", release_ns))
        assert _allowed(lambda: g_core.delete_namespaced_pod("any", tasks))  # gc.deleteFinishedPods (default on)
        assert not _allowed(lambda: g_core.create_namespaced_pod(tasks, {"metadata": {"name": "p"}, "spec": {
            "containers": [{"name": "c", "image": "x"}]}}))
        assert not _allowed(lambda: client.StorageV1Api(gc_sa).delete_storage_class("any"))
        core.delete_namespace(tasks)
    finally:
        _cleanup_cluster_scoped(api, wanted)


def _can_i(kubeconfig: Path, sa: str, verb: str, resource: str, namespace: str | None = None) -> bool:
    """``kubectl auth can-i`` as the ServiceAccount ``namespace/name`` (``sa``): the apiserver's own RBAC answer.
    ``namespace`` None: a cluster-scoped resource, or (for namespaced ones) every namespace at once."""
    sa_ns, sa_name = sa.split("/")
    where = ["-n", namespace] if namespace else ["--all-namespaces"]
    proc = subprocess.run(["kubectl", f"--kubeconfig={kubeconfig}", "auth", "can-i", verb, resource, *where,
                           f"--as=system:serviceaccount:{sa_ns}:{sa_name}"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode in (0, 1), proc.stderr  # 0: yes, 1: no; anything else is an error
    return proc.returncode == 0


def _apply_rbac(api: client.ApiClient, objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rbac_kinds = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
    wanted = [o for o in objs if o["kind"] in rbac_kinds and HOOK not in o["metadata"].get("annotations", {})]
    for obj in wanted:
        apply(api, obj)
    return wanted


def test_rbac_with_a_namespace_list_is_namespaced_and_refuses_everything_else(
        assets: Path, api: client.ApiClient, kubeconfig: Path, release_ns: str, core: client.CoreV1Api) -> None:
    """The RBAC table of docs/operators.md, as each ServiceAccount: what it may do in its own namespaces, and
    what is refused in kube-system, in another installation's namespaces, on Secrets and cluster-wide."""
    tag = uuid.uuid4().hex[:6]
    team_a, team_b, theirs = f"team-a-{tag}", f"team-b-{tag}", f"theirs-{tag}"
    other_ns = f"other-{tag}"
    for name, owner in ((team_a, "staging"), (team_b, "staging"), (theirs, "other"), (other_ns, None)):
        core.create_namespace({"metadata": {"name": name, "labels": {"leoflow.io/staging-instance": owner}
                                            if owner else {}}})
    ours = render(assets, namespace=release_ns, release="staging", values={"namespaces": [team_a, team_b]})
    other = render(assets, namespace=other_ns, release="other", values={"namespaces": [theirs]})
    assert isinstance(ours, list) and isinstance(other, list)
    webhook, gc = f"{release_ns}/staging-leoflow-staging-webhook", f"{release_ns}/staging-leoflow-staging-gc"
    Check = tuple[str, str, str, str | None]  # (ServiceAccount, verb, resource, namespace or None)
    allowed: list[Check] = []
    refused: list[Check] = []
    for served in (team_a, team_b):
        allowed += [(webhook, verb, "persistentvolumeclaims", served) for verb in ("get", "create", "list", "watch")]
        allowed += [(gc, verb, "persistentvolumeclaims", served) for verb in ("get", "list", "watch", "delete")]
        allowed += [(webhook, "create", "events.events.k8s.io", served), (gc, "create", "events.events.k8s.io", served),
                    (gc, "list", "pods", served), (gc, "delete", "pods", served)]  # gc.deleteFinishedPods: default on
        refused += [(webhook, "delete", "persistentvolumeclaims", served), (webhook, "list", "pods", served),
                    (gc, "create", "persistentvolumeclaims", served), (gc, "create", "pods", served)]
    # Cluster-scoped reads only: StorageClasses (the webhook), namespaces (the GC finds its own).
    allowed += [(webhook, "list", "storageclasses.storage.k8s.io", None),
                (webhook, "watch", "storageclasses.storage.k8s.io", None), (gc, "list", "namespaces", None)]
    refused += [(gc, "patch", "namespaces", None), (gc, "delete", "storageclasses.storage.k8s.io", None),
                (webhook, "list", "namespaces", None)]
    # Refused: kube-system, another installation's namespaces, a namespace nobody serves, across namespaces,
    # and Secrets anywhere (the TLS Secret reaches the webhook as a volume, not through the API).
    refused += [(sa, verb, resource, elsewhere) for elsewhere in ("kube-system", theirs, other_ns, None)
                for sa in (webhook, gc) for verb in ("get", "list", "create", "delete")
                for resource in ("persistentvolumeclaims", "pods")]
    refused += [(sa, verb, "secrets", where) for where in (release_ns, team_a, "kube-system", None)
                for sa in (webhook, gc) for verb in ("get", "list")]
    refused += [(sa, "get", "secrets/staging-leoflow-staging-webhook-tls", release_ns) for sa in (webhook, gc)]
    # ... and the other installation's GC is as confined: nothing in ours.
    their_gc = f"{other_ns}/other-leoflow-staging-gc"
    allowed += [(their_gc, "delete", "persistentvolumeclaims", theirs)]
    refused += [(their_gc, "delete", "persistentvolumeclaims", team_a), (their_gc, "list", "pods", team_a)]
    applied: list[dict[str, Any]] = []
    try:
        applied += _apply_rbac(api, ours)
        applied += _apply_rbac(api, other)
        checks = [(c, True) for c in allowed] + [(c, False) for c in refused]
        with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
            answers = list(pool.map(lambda c: _can_i(kubeconfig, *c[0]), checks))
        wrong = [(check, "allowed" if answer else "refused")
                 for (check, expected), answer in zip(checks, answers, strict=True) if answer != expected]
        assert wrong == [], f"kubectl auth can-i disagrees with the RBAC table: {wrong}"
        assert len(checks) > 100
    finally:
        _cleanup_cluster_scoped(api, applied)
        for name in (team_a, team_b, theirs, other_ns):
            core.delete_namespace(name)


def test_a_namespace_list_selects_the_webhook_by_label_and_name(assets: Path) -> None:
    objs = render(assets, release="staging", values={"namespaces": ["team-a", "team-b"]})
    assert isinstance(objs, list)
    selector = one(objs, "MutatingWebhookConfiguration")["webhooks"][0]["namespaceSelector"]
    assert selector["matchLabels"] == {"leoflow.io/staging-instance": "staging"}
    assert {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-a", "team-b"]} in \
        selector["matchExpressions"]
    default = render(assets, release="staging", values={"config": {"instance": "prod"}})
    assert isinstance(default, list)
    selector = one(default, "MutatingWebhookConfiguration")["webhooks"][0]["namespaceSelector"]
    assert selector["matchLabels"] == {"leoflow.io/staging-instance": "prod"}
    assert all(e["operator"] == "NotIn" for e in selector["matchExpressions"])
    assert not by_kind(default, "Role") or all(HOOK in r["metadata"].get("annotations", {})
                                               for r in by_kind(default, "Role"))
    roles = [r for r in by_kind(objs, "Role") if HOOK not in r["metadata"].get("annotations", {})]
    assert sorted((r["metadata"]["namespace"], r["metadata"]["name"]) for r in roles) == [
        ("team-a", "staging-leoflow-staging-gc"), ("team-a", "staging-leoflow-staging-webhook"),
        ("team-b", "staging-leoflow-staging-gc"), ("team-b", "staging-leoflow-staging-webhook")]
    refused = render(assets, namespace="platform", values={"namespaces": ["platform"]}, check=False)
    assert isinstance(refused, str) and "never served" in refused


def test_gc_may_delete_pods_only_with_delete_finished_pods(assets: Path) -> None:
    def pod_verbs(values: dict[str, object]) -> list[str]:
        objs = render(assets, values=values)
        assert isinstance(objs, list)
        role = next(o for o in objs if o["kind"] == "ClusterRole" and o["metadata"]["name"].endswith("-gc"))
        [rule] = [r for r in role["rules"] if "pods" in r["resources"]]
        return list(rule["verbs"])

    assert pod_verbs({}) == ["list", "delete"]
    assert pod_verbs({"gc": {"deleteFinishedPods": False}}) == ["list"]


def test_rendered_webhook_in_url_mode_patches_a_pod(assets: Path, api: client.ApiClient, core: client.CoreV1Api,
                                                    webhook: WebhookProcess, namespace: str,
                                                    control_plane: ControlPlane) -> None:
    assert webhook.ca is not None
    objs = render(assets, values={"webhook": {"url": webhook.url + "/mutate",  # the webhook's instance, whose
                                              "caBundle": base64.b64encode(webhook.ca.cert_pem).decode()},
                                  "config": {"instance": "default"}})  # label the test's namespace carries
    assert isinstance(objs, list)
    mwc = one(objs, "MutatingWebhookConfiguration")
    admission = client.AdmissionregistrationV1Api(api)
    admission.delete_mutating_webhook_configuration("leoflow-staging-test")  # only the chart's config is active
    try:
        apply(api, mwc)
        pod = pod_dict(api, core.create_namespaced_pod(namespace, task_pod("chart", "url-mode")))
        assert staging_pvc_of(pod)
        assert any(v["name"] == "leoflow-staging" for v in pod["spec"]["volumes"])
    finally:
        admission.delete_mutating_webhook_configuration(mwc["metadata"]["name"])
        webhook.register(api)
