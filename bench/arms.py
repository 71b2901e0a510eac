"""The four arms of the pod CREATE benchmark, each in its own namespace, so that every create goes through
exactly one arm: ``plain`` (no admission of ours), ``policy`` (a MutatingAdmissionPolicy, CEL in the apiserver),
``webhook`` (the real ``leoflow-staging serve``) and ``minimal`` (``bench.minimal_webhook``: a fixed patch).

All four namespaces carry the devenv's test-webhook label, which keeps the benchmark environment's own webhook
registration (namespaces without that label) away from them; each arm's registration selects its namespace by
name. Every pod is the same opted-in pod of one warm run.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from bench.admin_api import AdminApi
from bench.realistic_pod import PRIORITY_CLASS
from devenv.webhook import TEST_WEBHOOK_LABEL, WebhookProcess
from shared import labels

ARMS = ("plain", "policy", "webhook", "minimal")
POLICY = "leoflow-staging-bench"
WEBHOOK_NAMES = {"webhook": "staging-arm.leoflow.io", "minimal": "minimal-arm.leoflow.io"}
CONFIGS = {"webhook": "leoflow-bench-arm-webhook", "minimal": "leoflow-bench-arm-minimal"}
ADMISSION = "/apis/admissionregistration.k8s.io/v1"


def namespace(arm: str) -> str:
    return f"bench-arm-{arm}"


def pods_path(arm: str) -> str:
    return f"/api/v1/namespaces/{namespace(arm)}/pods"


def _only(arm: str) -> dict[str, Any]:
    return {"matchLabels": {"kubernetes.io/metadata.name": namespace(arm)}}


def create_namespaces(api: AdminApi) -> None:
    api.create("/apis/scheduling.k8s.io/v1/priorityclasses", {
        "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": PRIORITY_CLASS},
        "value": 1000})
    for arm in ARMS:
        api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": namespace(arm), "labels": {TEST_WEBHOOK_LABEL: f"bench-{arm}"}}})


def staging_ops(pod: dict[str, Any], claim: str) -> list[dict[str, Any]]:
    """The JSON Patch of the contract (volume, /staging mount and env in every container, annotation) for a pod
    that has none of it yet: the minimal webhook's fixed answer."""
    spec, escaped = pod["spec"], labels.PVC.replace("~", "~0").replace("/", "~1")

    def add(path: str, present: bool, item: Any) -> dict[str, Any]:
        return {"op": "add", "path": f"{path}/-", "value": item} if present else \
            {"op": "add", "path": path, "value": [item]}

    ops = [add("/spec/volumes", "volumes" in spec,
               {"name": labels.VOLUME_NAME, "persistentVolumeClaim": {"claimName": claim}})]
    for key in ("initContainers", "containers"):
        for i, container in enumerate(spec.get(key) or []):
            ops.append(add(f"/spec/{key}/{i}/volumeMounts", "volumeMounts" in container,
                           {"name": labels.VOLUME_NAME, "mountPath": labels.MOUNT_PATH}))
            ops.append(add(f"/spec/{key}/{i}/env", "env" in container,
                           {"name": labels.ENV_NAME, "value": labels.MOUNT_PATH}))
    ops.append({"op": "add", "path": f"/metadata/annotations/{escaped}", "value": claim}
               if pod["metadata"].get("annotations") is not None
               else {"op": "add", "path": "/metadata/annotations", "value": {labels.PVC: claim}})
    return ops


def _cel_containers(field: str) -> str:
    kind = f"Object.spec.{field}"
    return (f"object.spec.{field}.map(c, {kind}{{name: c.name, "
            f"volumeMounts: [{kind}.volumeMounts{{name: {json.dumps(labels.VOLUME_NAME)}, "
            f"mountPath: {json.dumps(labels.MOUNT_PATH)}}}], "
            f"env: [{kind}.env{{name: {json.dumps(labels.ENV_NAME)}, value: {json.dumps(labels.MOUNT_PATH)}}}]}})")


def policy_expression(claim: str) -> str:
    """The ApplyConfiguration (server-side-apply merge: list items by their keys, annotations by key) of the
    contract's patch. A policy cannot hash the run's ids into the claim's name, so the name is a constant."""
    volume = (f"Object.spec.volumes{{name: {json.dumps(labels.VOLUME_NAME)}, persistentVolumeClaim: "
              f"Object.spec.volumes.persistentVolumeClaim{{claimName: {json.dumps(claim)}}}}}")
    return (f"Object{{metadata: Object.metadata{{annotations: {{{json.dumps(labels.PVC)}: {json.dumps(claim)}}}}}, "
            f"spec: Object.spec{{volumes: [{volume}], containers: {_cel_containers('containers')}, "
            f"?initContainers: has(object.spec.initContainers) ? "
            f"optional.of({_cel_containers('initContainers')}) : optional.none()}}}}")


def policy(claim: str) -> dict[str, Any]:
    return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingAdmissionPolicy",
            "metadata": {"name": POLICY}, "spec": {
                "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                                                        "operations": ["CREATE"], "resources": ["pods"]}]},
                "matchConditions": [{"name": "names-its-run", "expression":
                                     f"has(object.metadata.annotations) && "
                                     f"{json.dumps(labels.RUN_ID)} in object.metadata.annotations"}],
                "failurePolicy": "Fail", "reinvocationPolicy": "Never",
                "mutations": [{"patchType": "ApplyConfiguration",
                               "applyConfiguration": {"expression": policy_expression(claim)}}]}}


def policy_binding() -> dict[str, Any]:
    return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingAdmissionPolicyBinding",
            "metadata": {"name": POLICY}, "spec": {"policyName": POLICY, "matchResources": {
                "namespaceSelector": _only("policy"),
                "objectSelector": {"matchLabels": {labels.OPT_IN: labels.OPT_IN_VALUE}}}}}


def real_webhook_configuration(webhook: WebhookProcess) -> dict[str, Any]:
    """The devenv's registration of ``leoflow-staging serve`` (the product's settings), scoped to its arm."""
    config = webhook.configuration(CONFIGS["webhook"])
    config["webhooks"][0].update(name=WEBHOOK_NAMES["webhook"], namespaceSelector=_only("webhook"))
    return config


def minimal_webhook_configuration(url: str, ca_pem: bytes) -> dict[str, Any]:
    return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": CONFIGS["minimal"]}, "webhooks": [{
                "name": WEBHOOK_NAMES["minimal"], "admissionReviewVersions": ["v1"],
                "clientConfig": {"url": url, "caBundle": base64.b64encode(ca_pem).decode()},
                "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                           "resources": ["pods"], "scope": "Namespaced"}],
                "objectSelector": {"matchLabels": {labels.OPT_IN: labels.OPT_IN_VALUE}},
                "namespaceSelector": _only("minimal"), "failurePolicy": "Fail", "sideEffects": "None",
                "timeoutSeconds": 10, "reinvocationPolicy": "Never"}]}


def register(api: AdminApi, kind: str, body: dict[str, Any]) -> None:
    """Create ``body`` (a cluster-scoped admission object), replacing one of the same name."""
    api.delete(f"{ADMISSION}/{kind}/{body['metadata']['name']}")
    api.create(f"{ADMISSION}/{kind}", body)


def unregister(api: AdminApi) -> None:
    for kind in ("mutatingadmissionpolicybindings", "mutatingadmissionpolicies"):
        api.delete(f"{ADMISSION}/{kind}/{POLICY}")
    for name in CONFIGS.values():
        api.delete(f"{ADMISSION}/mutatingwebhookconfigurations/{name}")


def staging_of(pod: dict[str, Any]) -> dict[str, Any]:
    """What the patch gave the pod: its staging volume, which containers lack the mount or the env var, and the
    annotation (to check that an arm patches, and that the patching arms patch alike)."""
    spec = pod.get("spec") or {}
    volume = next((v for v in spec.get("volumes") or [] if v.get("name") == labels.VOLUME_NAME), None)
    mount = {"name": labels.VOLUME_NAME, "mountPath": labels.MOUNT_PATH}
    var = {"name": labels.ENV_NAME, "value": labels.MOUNT_PATH}
    lacking = [c["name"] for key in ("initContainers", "containers") for c in spec.get(key) or []
               if not any(m.get("name") == mount["name"] and m.get("mountPath") == mount["mountPath"]
                          for m in c.get("volumeMounts") or [])
               or not any(e.get("name") == var["name"] and e.get("value") == var["value"] for e in c.get("env") or [])]
    return {"claim": ((volume or {}).get("persistentVolumeClaim") or {}).get("claimName"),
            "containers_lacking": lacking,
            "annotation": ((pod.get("metadata") or {}).get("annotations") or {}).get(labels.PVC)}
