"""Two installations (two metadatabases) on one cluster, each serving its own namespaces (issue 26, part 1).

Each installation is the real ``leoflow-staging serve`` process behind the chart's own rendered
MutatingWebhookConfiguration (URL mode), and the real ``leoflow-staging gc`` program. ``alpha`` serves every
namespace labelled for it; ``beta`` is given an explicit namespace list (LEOFLOW_STAGING_NAMESPACES). The same
run id is used in both, as a "staging" and a "prod" installation's scheduled runs naturally are.

On a main without namespace ownership both webhooks see every opted-in pod: the second one refuses the pod
(the claim of that name belongs to the other installation).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from kubernetes import client

from devenv.controlplane import ControlPlane
from devenv.postgres import Postgres
from devenv.webhook import TEST_WEBHOOK_LABEL
from shared import labels
from shared.db.migrate import upgrade
from shared.naming import pvc_name
from tests.e2e.conftest import pod_dict, staging_pvc_of, wait_until_gone
from tests.support.helm import apply, one, render
from tests.support.orchestrator import create_runs_table, set_run
from tests.support.pods import task_pod
from tests.support.webhook import WebhookProcess, console_script

RUN = "scheduled__2026-12-07T00:00:00+00:00"  # equal in both installations, as scheduled runs are


@dataclass
class Installation:
    name: str
    namespace: str  # the one it serves
    engine: sa.Engine
    env: dict[str, str]
    server: WebhookProcess

    def gc(self, kubeconfig: Path) -> tuple[int, list[dict[str, Any]]]:
        """One sweep of the real GC program, with this installation's settings."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEOFLOW_STAGING_")}
        env.update(self.env | {"LEOFLOW_STAGING_ADOPT_MIN_AGE": "0s", "LEOFLOW_STAGING_GC_SETTLE_SECONDS": "20"})
        done = subprocess.run([console_script(), "gc"], env=env, capture_output=True, text=True, timeout=120,
                              check=False)
        lines = [json.loads(line) for line in (done.stdout + done.stderr).splitlines() if line.startswith("{")]
        return done.returncode, lines

    def rows(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.text(
                "SELECT namespace, pvc_name, pvc_uid, state, delete_reason FROM staging_volumes ORDER BY id"))]


@pytest.fixture(scope="module")
def installations(control_plane: ControlPlane, postgres: Postgres, api: client.ApiClient, core: client.CoreV1Api,
                  assets: Path, rwx_class: str,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Installation]]:
    suffix = uuid.uuid4().hex[:6]
    admission = client.AdmissionregistrationV1Api(api)
    made: list[Installation] = []
    configs: list[str] = []
    try:
        for name, explicit in ((f"alpha-{suffix}", False), (f"beta-{suffix}", True)):
            namespace = f"{name}-tasks"
            # The operator's label (and the test label that keeps the session's own test webhook away).
            core.create_namespace({"metadata": {"name": namespace, "labels": {
                labels.INSTANCE: name, TEST_WEBHOOK_LABEL: "installations"}}})
            url = postgres.create_database(name.replace("-", "_"))
            engine = sa.create_engine(url)
            upgrade(engine)
            create_runs_table(engine)
            env = {"LEOFLOW_STAGING_DATABASE_URL": url,
                   "LEOFLOW_STAGING_KUBECONFIG": str(control_plane.kubeconfig_path),
                   "LEOFLOW_STAGING_INSTANCE": name, "LEOFLOW_STAGING_STORAGE_CLASS": rwx_class,
                   "LEOFLOW_STAGING_DEFAULT_SIZE": "1Gi", "LEOFLOW_STAGING_WORKERS": "1"}
            if explicit:
                env["LEOFLOW_STAGING_NAMESPACES"] = namespace
            server = WebhookProcess(workdir=tmp_path_factory.mktemp(name), env=env)
            made.append(Installation(name=name, namespace=namespace, engine=engine, env=env, server=server))
            server.start()
            assert server.ca is not None
            values: dict[str, Any] = {"webhook": {"url": server.url + "/mutate",
                                                  "caBundle": base64.b64encode(server.ca.cert_pem).decode()}}
            if explicit:
                values["namespaces"] = [namespace]
            mwc = one(render(assets, release=name, namespace=f"{name}-platform", values=values),
                      "MutatingWebhookConfiguration")
            configs.append(mwc["metadata"]["name"])
            apply(api, mwc)
        yield made
    finally:
        for config in configs:
            admission.delete_mutating_webhook_configuration(config)
        for inst in made:
            inst.server.stop()
            inst.engine.dispose()
            core.delete_namespace(inst.namespace)


def _claim_labels(core: client.CoreV1Api, namespace: str) -> dict[str, str | None]:
    return {str(c.metadata.name): c.metadata.labels.get(labels.INSTANCE)
            for c in core.list_namespaced_persistent_volume_claim(namespace).items}


def test_each_installation_admits_reclaims_and_adopts_only_in_its_own_namespaces(
        installations: list[Installation], api: client.ApiClient, core: client.CoreV1Api, kubeconfig: Path) -> None:
    alpha, beta = installations
    # Pods of the same run in each one's namespace, twice (the cold and the warm path): none refused.
    claims = {}
    for inst in (alpha, beta):
        for _ in range(2):
            pod = pod_dict(api, core.create_namespaced_pod(inst.namespace, task_pod("etl", RUN)))
            claims[inst.name] = staging_pvc_of(pod)
            assert claims[inst.name] and any(v["name"] == labels.VOLUME_NAME for v in pod["spec"]["volumes"])
        # ... by its own webhook: the claim carries its installation, its database holds the row
        assert _claim_labels(core, inst.namespace) == {claims[inst.name]: inst.name}
        assert [(r["namespace"], r["state"]) for r in inst.rows()] == [(inst.namespace, "active")]

    # Strays labelled as each installation's claims, but in the other's namespace: never adopted by either
    # (a namespace is served by the one installation its label names).
    strays = {}
    for owner, where in ((alpha, beta), (beta, alpha)):
        name = pvc_name("etl", "stray")  # the name admission gives that run: adoptable, were it served
        core.create_namespaced_persistent_volume_claim(where.namespace, {"metadata": {
            "name": name, "labels": {labels.MANAGED_BY: labels.MANAGED_BY_VALUE, labels.INSTANCE: owner.name},
            "annotations": {labels.DAG_ID: "etl", labels.RUN_ID: "stray"}},
            "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "x",
                     "resources": {"requests": {"storage": "1Gi"}}}})
        strays[where.namespace] = name

    # alpha's run succeeded; beta's (same ids) still runs. Each GC sweeps.
    set_run(alpha.engine, "etl", RUN, "success", None)
    set_run(beta.engine, "etl", RUN, "running", None)
    for inst in (alpha, beta):
        code, lines = inst.gc(kubeconfig)
        assert code == 0, lines
        assert not [line for line in lines if line.get("event") in ("adopted", "namespaces_not_labelled")], lines
        assert [line["adopted"] for line in lines if line.get("event") == "sweep_summary"] == [0]
    wait_until_gone_of(core, alpha.namespace, claims[alpha.name])
    assert [(r["state"], r["delete_reason"]) for r in alpha.rows()] == [("deleted", "run_succeeded")]
    # beta's claim of the same run and its row are untouched; nobody adopted the strays
    assert _claim_labels(core, beta.namespace) == {claims[beta.name]: beta.name, strays[beta.namespace]: alpha.name}
    assert _claim_labels(core, alpha.namespace) == {strays[alpha.namespace]: beta.name}
    assert [(r["namespace"], r["state"]) for r in beta.rows()] == [(beta.namespace, "active")]

    # Then beta's run succeeds: beta reclaims its own claim only; alpha's GC never touched beta's namespace.
    set_run(beta.engine, "etl", RUN, "success", None)
    code, lines = beta.gc(kubeconfig)
    assert code == 0, lines
    wait_until_gone_of(core, beta.namespace, claims[beta.name])
    assert [(r["state"], r["delete_reason"]) for r in beta.rows()] == [("deleted", "run_succeeded")]
    assert len(alpha.rows()) == 1 and len(beta.rows()) == 1  # no adoption anywhere
    for namespace, name in strays.items():
        core.delete_namespaced_persistent_volume_claim(name, namespace)
    wait_until_gone(core, alpha.namespace)


def wait_until_gone_of(core: client.CoreV1Api, namespace: str, name: str) -> None:
    import time

    deadline = time.monotonic() + 60
    while name in _claim_labels(core, namespace):
        assert time.monotonic() < deadline, f"{namespace}/{name} still present"
        time.sleep(0.1)
