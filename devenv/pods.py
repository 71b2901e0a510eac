"""Task pods as the orchestrator's dispatcher creates them (contracts 1), and their AdmissionReview."""

from __future__ import annotations

from typing import Any

from shared import labels
from shared.naming import label_safe


def task_pod(dag_id: str, run_id: str, *, name: str | None = None, opt_in: bool = True,
             annotations: dict[str, str] | None = None, init_containers: list[dict[str, Any]] | None = None,
             containers: list[dict[str, Any]] | None = None, volumes: list[dict[str, Any]] | None = None,
             generate_name: str = "task-") -> dict[str, Any]:
    pod_labels = {labels.DAG_ID: label_safe(dag_id), labels.RUN_ID: label_safe(run_id)}
    if opt_in:
        pod_labels[labels.OPT_IN] = labels.OPT_IN_VALUE
    meta: dict[str, Any] = {
        "labels": pod_labels,
        "annotations": {labels.DAG_ID: dag_id, labels.RUN_ID: run_id, **(annotations or {})},
    }
    if name:
        meta["name"] = name
    else:
        meta["generateName"] = generate_name
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "containers": containers or [{"name": "task", "image": "leoflow/task:1"}],
    }
    if init_containers:
        spec["initContainers"] = init_containers
    if volumes:
        spec["volumes"] = volumes
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def admission_review(pod: dict[str, Any], namespace: str, *, uid: str, dry_run: bool = False) -> dict[str, Any]:
    """The AdmissionReview the apiserver sends for a pod CREATE."""
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"}, "operation": "CREATE",
        "namespace": namespace, "object": pod, "dryRun": dry_run}}
