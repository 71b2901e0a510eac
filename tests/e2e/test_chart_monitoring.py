"""The chart's optional ServiceMonitor, PrometheusRule and Grafana dashboard: off by default; with all on,
server-side applied to the real apiserver with the prometheus-operator CRDs installed (generated from
the operator's published API module), and the dashboard queries only series that exist."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from devenv.prometheus_assets import ensure_prometheus
from tests.conftest import unavailable
from tests.support.helm import apply, one, render

pytestmark = pytest.mark.e2e
ON = {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus"}},
                  "prometheusRule": {"enabled": True}, "grafanaDashboard": {"enabled": True}}}
KINDS = {"ServiceMonitor", "PrometheusRule"}


@pytest.fixture(scope="session")
def crds(api: client.ApiClient) -> None:
    try:
        folder = ensure_prometheus("crds") / "crds"
    except (RuntimeError, FileNotFoundError) as exc:
        unavailable(f"prometheus-operator CRDs: {exc}")
        raise
    ext = client.ApiextensionsV1Api(api)
    for name in ("servicemonitors", "prometheusrules"):
        crd = yaml.safe_load((folder / f"monitoring.coreos.com_{name}.yaml").read_text())
        apply(api, crd)
        deadline = time.monotonic() + 30
        while not any(c.type == "Established" and c.status == "True"
                      for c in ext.read_custom_resource_definition(crd["metadata"]["name"]).status.conditions or []):
            assert time.monotonic() < deadline, f"CRD {name} not established"
            time.sleep(0.2)


def test_off_by_default(assets: Path) -> None:
    objs = render(assets)
    assert isinstance(objs, list)
    assert not [o for o in objs if o["kind"] in KINDS or o["metadata"]["name"].endswith("-dashboard")]


def test_all_on_applies_to_the_real_apiserver(assets: Path, api: client.ApiClient, crds: None,
                                               namespace: str) -> None:
    objs = render(assets, namespace=namespace, values=ON)
    assert isinstance(objs, list)
    monitor, rule = one(objs, "ServiceMonitor"), one(objs, "PrometheusRule")
    dashboard = one(objs, "ConfigMap", "dashboard")
    service = one(objs, "Service")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items() | service["spec"]["selector"].items()
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"] and endpoint["scheme"] == "https"
    assert endpoint["tlsConfig"]["serverName"] == f"staging-leoflow-staging-webhook.{namespace}.svc"
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    for obj in (monitor, rule, dashboard):
        stored = apply(api, obj).to_dict()
        assert stored["metadata"]["uid"] and stored["spec" if obj is not dashboard else "data"]
    alerts = [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]]
    assert len(alerts) == len(set(alerts)) == 12


def test_dashboard_queries_exported_series(assets: Path) -> None:
    objs = render(assets, values=ON)
    assert isinstance(objs, list)
    board: dict[str, Any] = json.loads(one(objs, "ConfigMap", "dashboard")["data"]["leoflow-staging.json"])
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    names = set(re.findall(r"\b(leoflow_staging_[a-z_]+)", " ".join(exprs)))
    exported = set(re.findall(r"`(leoflow_staging_[a-z_]+)`",
                              (Path(__file__).resolve().parents[2] / "docs" / "operators.md").read_text()))
    base = {re.sub(r"_(bucket|total)$", "", n) for n in names}
    assert base <= {re.sub(r"_(total)$", "", n) for n in exported}, base - exported


def test_webhook_and_gc_may_create_events_and_know_their_pod(assets: Path) -> None:
    objs = render(assets)
    assert isinstance(objs, list)
    for part in ("webhook", "gc"):
        role = [o for o in objs if o["kind"] == "ClusterRole" and o["metadata"]["name"].endswith(f"-{part}")]
        [rule] = [r for r in role[0]["rules"] if "events" in r["resources"] and r["apiGroups"] == ["events.k8s.io"]]
        assert rule == {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create"]}
    pods = [one(objs, "Deployment")["spec"]["template"]["spec"],
            one(objs, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]]
    for spec in pods:
        env = {e["name"]: e for e in spec["containers"][0]["env"]}
        assert env["LEOFLOW_STAGING_POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
