"""Where an opted-in pod's raw run identity is read from: the identity modes (pure).

``leoflow`` (contracts 1): the ``leoflow.io/dag-id`` / ``leoflow.io/run-id`` annotations, the labels of the
same keys as a fallback. ``airflow``: stock Apache Airflow 3 pods, whose KubernetesExecutor writes the raw ids
into the annotations ``dag_id`` and ``run_id``. Airflow's labels of those names are lossy (hashed whenever
the raw value is not label-safe, which every normal run id is), so in that mode labels are never read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared import labels
from shared.naming import id_problem
from webhook.verdicts import Verdict, deny


@dataclass(frozen=True)
class IdentitySource:
    """The keys one client writes the raw ids under, and what to tell a pod that lacks them."""

    name: str
    dag_key: str
    run_key: str
    labels_allowed: bool  # True: a label of the same key is read when the annotation is missing
    guidance: str  # appended to a missing-id denial


LEOFLOW = IdentitySource(
    name="leoflow", dag_key=labels.DAG_ID, run_key=labels.RUN_ID, labels_allowed=True,
    guidance="the dispatcher must set it (contracts 1)")

AIRFLOW = IdentitySource(
    name="airflow", dag_key="dag_id", run_key="run_id", labels_allowed=False,
    guidance=("this installation reads Airflow's raw ids from the pod annotations dag_id and run_id (Airflow's "
              "labels are hashed and never used). KubernetesExecutor pods carry them; a KubernetesPodOperator "
              "must template them: annotations={\"dag_id\": \"{{ dag.dag_id }}\", \"run_id\": \"{{ run_id }}\"}"))

SOURCES: dict[str, IdentitySource] = {s.name: s for s in (LEOFLOW, AIRFLOW)}


def meta_map(pod: dict[str, Any], key: str) -> dict[str, Any]:
    """``metadata.<key>`` when it is a mapping, else empty (a malformed pod is read as having none)."""
    meta = pod.get("metadata")
    value = meta.get(key) if isinstance(meta, dict) else None
    return value if isinstance(value, dict) else {}


def _read_one(pod: dict[str, Any], source: IdentitySource, key: str, what: str) -> str | Verdict:
    ann = meta_map(pod, "annotations")
    lab = meta_map(pod, "labels") if source.labels_allowed else {}
    raw = ann.get(key, lab.get(key))
    where = "annotation" if key in ann else "label"
    if raw is None:
        kinds = "annotation or label" if source.labels_allowed else "annotation"
        return deny("missing_id", f"leoflow-staging: the pod opts in to staging ({labels.OPT_IN}="
                    f"{labels.OPT_IN_VALUE}) but has no {key} {kinds} with the {what}; {source.guidance}",
                    code=422)
    if not isinstance(raw, str):
        return deny("invalid_id", f"leoflow-staging: the {key} {where} must be a string", code=422)
    problem = id_problem(raw)
    if problem:
        return deny("invalid_id", f"leoflow-staging: the {what} in the {key} {where} {problem}", code=422)
    return raw


def read_ids(pod: dict[str, Any], source: IdentitySource) -> tuple[str, str] | Verdict:
    """The raw ``(dag_id, run_id)`` of an opted-in pod, or the denial that says what is missing."""
    dag_id = _read_one(pod, source, source.dag_key, "DAG id")
    if isinstance(dag_id, Verdict):
        return dag_id
    run_id = _read_one(pod, source, source.run_key, "run id")
    if isinstance(run_id, Verdict):
        return run_id
    return dag_id, run_id
