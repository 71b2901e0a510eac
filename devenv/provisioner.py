"""rancher local-path-provisioner in its shared-filesystem mode: a published dynamic ReadWriteMany provisioner.

It runs in the cluster as a Deployment from a locally built image. Shared-filesystem mode
(``sharedFileSystemPath``) provisions ReadWriteMany volumes as folders of one host directory, with
Immediate binding and no node affinity; its helper pods (on the local task image) create a
volume's folder and remove it when the PV is released. The StorageClass is made eligible for
staging the way an operator would: the ``leoflow.io/rwx=true`` annotation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shared import labels

NAMESPACE = "local-path-storage"
STORAGE_CLASS = "leoflow-local-rwx"
PROVISIONER_NAME = "rancher.io/local-path"
_SA = "local-path-provisioner-service-account"

_SCRIPT_ARGS = """while getopts "m:s:p:" opt; do
  case $opt in
    p) absolutePath=$OPTARG ;;
    s) sizeInBytes=$OPTARG ;;
    m) volMode=$OPTARG ;;
  esac
done
"""


def manifests(*, image: str, helper_image: str, data_dir: Path) -> list[dict[str, Any]]:
    """Namespace, RBAC, ConfigMap, Deployment and the eligible StorageClass (pure)."""
    meta = {"name": "local-path-provisioner", "namespace": NAMESPACE}
    helper_pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "helper-pod"},
        "spec": {"containers": [{"name": "helper-pod", "image": helper_image, "imagePullPolicy": "Never"}],
                 "enableServiceLinks": False},
    }
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": _SA, "namespace": NAMESPACE}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "local-path-provisioner-role"},
         "rules": [
             {"apiGroups": [""], "resources": ["nodes", "persistentvolumeclaims", "configmaps"],
              "verbs": ["get", "list", "watch"]},
             {"apiGroups": [""], "resources": ["endpoints", "persistentvolumes", "pods"], "verbs": ["*"]},
             {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
             {"apiGroups": ["storage.k8s.io"], "resources": ["storageclasses"], "verbs": ["get", "list", "watch"]},
             {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["*"]},
         ]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "local-path-provisioner-bind"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "local-path-provisioner-role"},
         "subjects": [{"kind": "ServiceAccount", "name": _SA, "namespace": NAMESPACE}]},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "local-path-config", "namespace": NAMESPACE},
         "data": {
             "config.json": json.dumps({"sharedFileSystemPath": str(data_dir)}),
             "setup": "#!/bin/sh\nset -eu\n" + _SCRIPT_ARGS + 'mkdir -m 0777 -p "$absolutePath"\n',
             "teardown": "#!/bin/sh\nset -eu\n" + _SCRIPT_ARGS + 'rm -rf "$absolutePath"\n',
             "helperPod.yaml": json.dumps(helper_pod),
         }},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
         "spec": {
             "replicas": 1,
             "selector": {"matchLabels": {"app": "local-path-provisioner"}},
             "template": {
                 "metadata": {"labels": {"app": "local-path-provisioner"}},
                 "spec": {
                     "serviceAccountName": _SA,
                     "enableServiceLinks": False,
                     "containers": [{
                         "name": "local-path-provisioner", "image": image, "imagePullPolicy": "Never",
                         "command": ["local-path-provisioner", "--debug", "start",
                                     "--config", "/etc/config/config.json",
                                     "--service-account-name", _SA, "--configmap-name", "local-path-config",
                                     "--provisioner-name", PROVISIONER_NAME],
                         "env": [{"name": "POD_NAMESPACE",
                                  "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
                         "volumeMounts": [{"name": "config-volume", "mountPath": "/etc/config/"}],
                     }],
                     "volumes": [{"name": "config-volume", "configMap": {"name": "local-path-config"}}],
                 },
             },
         }},
        {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
         "metadata": {"name": STORAGE_CLASS, "annotations": {labels.RWX_CLASS: "true"}},
         "provisioner": PROVISIONER_NAME, "volumeBindingMode": "Immediate", "reclaimPolicy": "Delete"},
    ]
