"""The benchmarks' realistic task pod: an init container, a task and two sidecars with env, resources, mounts,
labels and annotations, about 5.5 KB of JSON (what an orchestrator's dispatcher sends), and its AdmissionReview."""

from __future__ import annotations

import json
import uuid
from typing import Any

from devenv.pods import admission_review, task_pod

PRIORITY_CLASS = "batch-normal"  # the pod names it: the apiserver's Priority admission needs it to exist


def _container(name: str, image: str, n_env: int) -> dict[str, Any]:
    return {
        "name": name, "image": image, "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", "leoflow.task", "--dag", "analytics/daily_revenue"],
        "args": ["--ts", "2026-11-28T00:00:00+00:00", "--retries", "3", "--pool", "default_pool"],
        "env": [{"name": f"LEOFLOW_VAR_{i}", "value": f"value-{i}-" + "x" * 24} for i in range(n_env)] + [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "analytics-db", "key": "password"}}}],
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}},
        "volumeMounts": [{"name": "config", "mountPath": "/etc/leoflow", "readOnly": True},
                         {"name": "scratch", "mountPath": "/scratch"}],
        "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]}},
    }


def realistic_pod(dag: str, run: str) -> dict[str, Any]:
    """A pod as an orchestrator creates it: an init container, a task, two sidecars (``generateName``)."""
    pod = task_pod(dag, run, init_containers=[_container("fetch-inputs", "leoflow/fetch:2.4.1", 6)],
                   containers=[_container("task", "leoflow/task:2.4.1", 8),
                               _container("log-shipper", "leoflow/log:1.9", 4),
                               _container("metrics", "leoflow/statsd:0.8", 3)],
                   volumes=[{"name": "config", "configMap": {"name": "leoflow-task-config"}},
                            {"name": "scratch", "emptyDir": {"sizeLimit": "2Gi"}}],
                   annotations={"leoflow.io/try-number": "1", "leoflow.io/task-id": "load_revenue_table"})
    pod["spec"].update(serviceAccountName="leoflow-worker", priorityClassName=PRIORITY_CLASS,
                       nodeSelector={"workload": "batch"},
                       tolerations=[{"key": "batch", "operator": "Exists", "effect": "NoSchedule"}])
    return pod


def realistic_review(dag: str, run: str, namespace: str) -> bytes:
    """The pod's CREATE AdmissionReview as the apiserver sends it."""
    return json.dumps(admission_review(realistic_pod(dag, run), namespace, uid=str(uuid.uuid4()))).encode()
