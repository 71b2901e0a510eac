"""Reading a pod's staging intent: opt-in, identity, size and requested class (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from shared import labels
from shared.naming import pvc_name
from shared.quantity import QuantityError, format_bytes, parse_quantity
from webhook.identity import LEOFLOW, IdentitySource, meta_map, read_ids
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


def opted_in(pod: dict[str, Any]) -> bool:
    """True only for ``leoflow.io/staging: "enabled"`` (contracts 1)."""
    return meta_map(pod, "labels").get(labels.OPT_IN) == labels.OPT_IN_VALUE


def _size(pod: dict[str, Any], policy: SizePolicy) -> str | Verdict:
    raw = meta_map(pod, "annotations").get(labels.SIZE, policy.default)
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


def read_intent(pod: dict[str, Any], policy: SizePolicy,
                identity: IdentitySource = LEOFLOW) -> StagingIntent | Verdict | None:
    """None when the pod did not opt in; a denial when it did but is malformed; else the intent.
    ``identity`` says where the raw ids are (the ``LEOFLOW_STAGING_IDENTITY`` setting)."""
    if not opted_in(pod):
        return None
    ids = read_ids(pod, identity)
    if isinstance(ids, Verdict):
        return ids
    dag_id, run_id = ids
    size = _size(pod, policy)
    if isinstance(size, Verdict):
        return size
    requested = meta_map(pod, "annotations").get(labels.STORAGE_CLASS)
    if requested is not None and (not isinstance(requested, str) or not requested.strip()
                                  or len(requested) > 253):
        return deny("invalid_storage_class", f"leoflow-staging: the {labels.STORAGE_CLASS} annotation must "
                    "name a StorageClass", code=422)
    return StagingIntent(dag_id=dag_id, run_id=run_id, pvc_name=pvc_name(dag_id, run_id), size=size,
                         requested_class=requested.strip() if requested else None)
