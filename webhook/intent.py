"""Reading a pod's staging intent: opt-in, identity, size and requested class (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from shared import labels
from shared.naming import candidate_pvc_names, id_problem, pvc_name
from shared.quantity import QuantityError, format_bytes, parse_quantity
from webhook.verdicts import Verdict, deny


@dataclass(frozen=True)
class SizePolicy:
    default: str
    maximum: str


@dataclass(frozen=True)
class StagingIntent:
    """What an opted-in pod asks for."""

    dag_id: str
    run_id: str
    pvc_name: str
    size: str
    requested_class: str | None

    @property
    def pvc_names(self) -> tuple[str, str]:
        """Every name the run's claim may have: ``pvc_name`` (current), then the legacy one."""
        return candidate_pvc_names(self.dag_id, self.run_id)


def _meta_map(pod: dict[str, Any], key: str) -> dict[str, Any]:
    value = (pod.get("metadata") or {}).get(key) if isinstance(pod.get("metadata"), dict) else None
    return value if isinstance(value, dict) else {}


def opted_in(pod: dict[str, Any]) -> bool:
    """True only for ``leoflow.io/staging: "enabled"`` (contracts 1)."""
    return _meta_map(pod, "labels").get(labels.OPT_IN) == labels.OPT_IN_VALUE


def _identity(pod: dict[str, Any], key: str, what: str) -> str | Verdict:
    ann, lab = _meta_map(pod, "annotations"), _meta_map(pod, "labels")
    raw = ann.get(key, lab.get(key))
    source = "annotation" if key in ann else "label"
    if raw is None:
        return deny("missing_id", f"leoflow-staging: the pod opts in to staging ({labels.OPT_IN}="
                    f"{labels.OPT_IN_VALUE}) but has no {key} annotation or label; the dispatcher must "
                    f"set the {what}", code=422)
    if not isinstance(raw, str):
        return deny("invalid_id", f"leoflow-staging: the {key} {source} must be a string", code=422)
    problem = id_problem(raw)
    if problem:
        return deny("invalid_id", f"leoflow-staging: the {what} in the {key} {source} {problem}", code=422)
    return raw


def _size(pod: dict[str, Any], policy: SizePolicy) -> str | Verdict:
    raw = _meta_map(pod, "annotations").get(labels.SIZE, policy.default)
    if not isinstance(raw, str):
        return deny("invalid_size", f"leoflow-staging: the {labels.SIZE} annotation must be a string", code=422)
    raw = raw.strip()
    try:
        value = parse_quantity(raw)
    except QuantityError as exc:
        return deny("invalid_size", f"leoflow-staging: invalid {labels.SIZE}: {exc}", code=422)
    maximum = parse_quantity(policy.maximum)
    if value <= Decimal(0):
        return deny("invalid_size", f"leoflow-staging: {labels.SIZE} {raw!r} must be larger than zero",
                    code=422)
    if value > maximum:
        return deny("size_over_maximum", f"leoflow-staging: {labels.SIZE} {raw!r} ({format_bytes(value)}) is "
                    f"over the configured maximum {policy.maximum}; ask for less or have the platform team "
                    "raise LEOFLOW_STAGING_MAX_SIZE", code=422)
    return raw


def read_intent(pod: dict[str, Any], policy: SizePolicy) -> StagingIntent | Verdict | None:
    """None when the pod did not opt in; a denial when it did but is malformed; else the intent."""
    if not opted_in(pod):
        return None
    dag_id = _identity(pod, labels.DAG_ID, "DAG id")
    if isinstance(dag_id, Verdict):
        return dag_id
    run_id = _identity(pod, labels.RUN_ID, "run id")
    if isinstance(run_id, Verdict):
        return run_id
    size = _size(pod, policy)
    if isinstance(size, Verdict):
        return size
    requested = _meta_map(pod, "annotations").get(labels.STORAGE_CLASS)
    if requested is not None and (not isinstance(requested, str) or not requested.strip()
                                  or len(requested) > 253):
        return deny("invalid_storage_class", f"leoflow-staging: the {labels.STORAGE_CLASS} annotation must "
                    "name a StorageClass", code=422)
    return StagingIntent(dag_id=dag_id, run_id=run_id, pvc_name=pvc_name(dag_id, run_id), size=size,
                         requested_class=requested.strip() if requested else None)
