"""The label and annotation keys of the pod and PVC contracts (contracts 1-3)."""

from __future__ import annotations

OPT_IN = "leoflow.io/staging"
OPT_IN_VALUE = "enabled"
DAG_ID = "leoflow.io/dag-id"
RUN_ID = "leoflow.io/run-id"
SIZE = "leoflow.io/staging-size"
STORAGE_CLASS = "leoflow.io/staging-storage-class"
PVC = "leoflow.io/staging-pvc"  # set by the webhook on the pod
DIRECTORY = "leoflow.io/staging-directory"  # shared-claim mode: label of a pod using the run's directory
SHARED_CLAIM = "leoflow.io/shared-claim"  # "true" on a shared claim the webhook created (never adopted nor deleted)
CLEANUP = "leoflow.io/cleanup"  # on the GC's cleanup pods (shared-claim mode): the row id they remove
MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "leoflow-staging"
INSTANCE = "leoflow.io/staging-instance"  # which installation (metadatabase) owns the PVC
DEFAULT_INSTANCE = "default"
INSPECT = "leoflow.io/inspect"  # on a pod of `leoflow-staging inspect` (the GC deletes it with the run's claim)
RWX_CLASS = "leoflow.io/rwx"  # on a StorageClass: "true" marks it ReadWriteMany, "false" excludes it

VOLUME_NAME = "leoflow-staging"
PREPARE_CONTAINER = "leoflow-staging-prepare"  # shared-claim mode: the init container preparing the directory
MOUNT_PATH = "/staging"
ENV_NAME = "LEOFLOW_STAGING_DIR"
