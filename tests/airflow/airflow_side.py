"""The Airflow side of the Airflow tests: runs under the cached Airflow virtualenv (hack/ensure-airflow.sh),
never imported by pytest. Reads one JSON request on stdin, prints one JSON answer on stdout.

Everything here is stock Apache Airflow code: pods are built by the KubernetesExecutor's pod generator and by
the KubernetesPodOperator; run states are changed by Airflow's own API functions on its own metadatabase.
"""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace
from typing import Any

OPT_IN = {"leoflow.io/staging": "enabled"}


def executor_pods(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Task pods as the KubernetesExecutor builds them (``_build_pod_request``: the pod template file as the
    base pod, a ``pod_override`` with the opt-in label, PodGenerator.construct_pod with the mutation hook)."""
    from airflow.providers.cncf.kubernetes.executors.kubernetes_executor_utils import get_base_pod_from_template
    from airflow.providers.cncf.kubernetes.kubernetes_helper_functions import create_unique_id
    from airflow.providers.cncf.kubernetes.pod_generator import PodGenerator
    from kubernetes.client import ApiClient
    from kubernetes.client import models as k8s

    base = get_base_pod_from_template(spec["template_file"], None)
    pods = []
    for task in spec["tasks"]:
        override = (k8s.V1Pod(metadata=k8s.V1ObjectMeta(labels=dict(OPT_IN)))
                    if task.get("opt_in", True) else None)
        pod = PodGenerator.construct_pod(
            namespace=spec["namespace"], scheduler_job_id="1",
            pod_id=create_unique_id(task["dag_id"], task["task_id"]),
            dag_id=task["dag_id"], task_id=task["task_id"], kube_image=spec["image"],
            try_number=task.get("try_number", 1), map_index=task.get("map_index", -1), date=None,
            run_id=task["run_id"], args=["airflow", "tasks", "run", task["dag_id"], task["task_id"]],
            pod_override_object=override, base_worker_pod=base, with_mutation_hook=True)
        pods.append(ApiClient().sanitize_for_serialization(pod))
    return pods


def operator_pod(spec: dict[str, Any]) -> dict[str, Any]:
    """A KubernetesPodOperator's pod (``build_pod_request_obj`` after rendering its templated fields), with or
    without the ``annotations`` argument that carries the raw ids."""
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from airflow.sdk import DAG
    from kubernetes.client import ApiClient

    annotations = ({"dag_id": "{{ dag.dag_id }}", "run_id": "{{ run_id }}"} if spec["templated"] else None)
    with DAG(spec["dag_id"], schedule=None) as dag:
        task = KubernetesPodOperator(
            task_id=spec["task_id"], name="work", namespace=spec["namespace"], image=spec["image"],
            cmds=["sh", "-c", "true"], labels=dict(OPT_IN), annotations=annotations,
            in_cluster=False, config_file=spec["kubeconfig"])
    # The runtime context a worker gives the operator: the fields build_pod_request_obj and the templates read.
    ti = SimpleNamespace(dag_id=dag.dag_id, task_id=task.task_id, map_index=-1, try_number=1)
    context: dict[str, Any] = {"dag": dag, "task": task, "ti": ti, "task_instance": ti, "run_id": spec["run_id"]}
    task.render_template_fields(context)
    pod = task.build_pod_request_obj(context)
    result: dict[str, Any] = ApiClient().sanitize_for_serialization(pod)
    return result


def run_states(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Apply steps to runs with Airflow's own code; answer each run's (state, end_date) after its step."""
    from airflow.api.common.mark_tasks import set_dag_run_state_to_failed, set_dag_run_state_to_success
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.models.dagbag import DBDagBag
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import clear_task_instances
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunTriggeredByType

    answers = []
    for step in spec["steps"]:
        dag_id, run_id, action = step["dag_id"], step["run_id"], step["action"]
        with create_session() as session:
            if action == "trigger":
                trigger_dag(dag_id, run_id=run_id, triggered_by=DagRunTriggeredByType.CLI, session=session)
                session.flush()
            run = session.query(DagRun).filter_by(dag_id=dag_id, run_id=run_id).one()
            if action == "trigger":
                pass
            elif action in ("running", "success", "failed", "queued"):
                run.set_state(DagRunState(action))  # the scheduler's own transition
            elif action == "create_task_instances":
                run.dag = DBDagBag().get_dag_for_run(run, session=session)
                run.verify_integrity(dag_version_id=run.created_dag_version_id, session=session)
            elif action == "clear":
                clear_task_instances(run.get_task_instances(session=session), session)
            elif action in ("mark_success", "mark_failed"):
                dag = DBDagBag().get_dag_for_run(run, session=session)
                mark = set_dag_run_state_to_success if action == "mark_success" else set_dag_run_state_to_failed
                mark(dag=dag, run_id=run_id, commit=True, session=session)
            else:
                raise SystemExit(f"unknown action {action!r}")
            session.flush()
            session.refresh(run)
            answers.append({"dag_id": dag_id, "run_id": run_id, "action": action, "state": run.state,
                            "end_date": run.end_date.isoformat() if run.end_date else None,
                            "clear_number": getattr(run, "clear_number", None)})
    return answers


COMMANDS = {"executor-pods": executor_pods, "operator-pod": operator_pod, "run-states": run_states}

if __name__ == "__main__":
    answer_to = sys.stdout
    sys.stdout = sys.stderr  # Airflow logs to stdout; the answer alone goes there
    request = json.load(sys.stdin)
    json.dump(COMMANDS[sys.argv[1]](request), answer_to, default=str)
