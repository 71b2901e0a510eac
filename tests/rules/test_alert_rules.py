"""The chart's alert rules through the real promtool: `check rules`, and `test rules` with a firing and a
not-firing unit test for every alert (tests/rules/alerts.test.yaml). The rules are taken from the chart as
helm renders them, so what is tested is what is shipped."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from devenv.prometheus_assets import ensure_prometheus
from tests.conftest import unavailable
from tests.support.helm import render

HERE = Path(__file__).resolve().parent
MONITORING = {"metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True},
                          "grafanaDashboard": {"enabled": True}}}


@pytest.fixture(scope="session")
def promtool() -> Path:
    try:
        return ensure_prometheus("promtool") / "promtool"
    except (RuntimeError, FileNotFoundError) as exc:
        unavailable(f"promtool: {exc}")
        raise


def rule_groups(assets: Path, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    objs = render(assets, values=MONITORING | (values or {}))
    assert isinstance(objs, list)
    [rule] = [o for o in objs if o["kind"] == "PrometheusRule"]
    groups: list[dict[str, Any]] = rule["spec"]["groups"]
    return groups


def _write(tmp_path: Path, groups: list[dict[str, Any]]) -> Path:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    shutil.copy(HERE / "alerts.test.yaml", tmp_path / "alerts.test.yaml")
    return tmp_path


def _promtool(promtool: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(promtool), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_rules_check_and_every_alert_unit_tested(assets: Path, promtool: Path, tmp_path: Path) -> None:
    folder = _write(tmp_path, rule_groups(assets))
    checked = _promtool(promtool, folder, "check", "rules", "rules.yaml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = _promtool(promtool, folder, "test", "rules", "alerts.test.yaml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_has_a_firing_and_a_not_firing_case(assets: Path) -> None:
    alerts = {r["alert"] for g in rule_groups(assets) for r in g["rules"] if "alert" in r}
    cases = yaml.safe_load((HERE / "alerts.test.yaml").read_text())["tests"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in cases:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert alerts == firing, alerts ^ firing
    assert alerts == quiet, alerts ^ quiet
    assert {"LeoflowStagingGcNotSucceeding", "LeoflowStagingReclaimNotFinishing", "LeoflowStagingGcSweepsSkipped",
            "LeoflowStagingStorageClaimedHigh"} <= alerts


def test_the_unit_tests_can_fail(assets: Path, promtool: Path, tmp_path: Path) -> None:
    """A threshold moved by the values moves the alert: the same unit tests then fail."""
    groups = rule_groups(assets, {"metrics": MONITORING["metrics"] | {
        "prometheusRule": {"enabled": True, "gcIntervalSeconds": 3600, "skippedSweeps": 10}}})
    folder = _write(tmp_path, groups)
    tested = _promtool(promtool, folder, "test", "rules", "alerts.test.yaml")
    assert tested.returncode != 0
    assert "LeoflowStagingGcNotSucceeding" in tested.stdout + tested.stderr
    assert "LeoflowStagingGcSweepsSkipped" in tested.stdout + tested.stderr


def test_dashboard_queries_are_valid_promql(assets: Path, promtool: Path, tmp_path: Path) -> None:
    """Every query of the Grafana dashboard parses (checked by promtool as recording rules)."""
    objs = render(assets, values=MONITORING)
    assert isinstance(objs, list)
    [board] = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-dashboard")]
    panels = json.loads(board["data"]["leoflow-staging.json"])["panels"]
    rules = [{"record": f"dashboard:panel_{p['id']}_{t['refId']}", "expr": t["expr"]}
             for p in panels for t in p["targets"]]
    (tmp_path / "dashboard.yaml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = _promtool(promtool, tmp_path, "check", "rules", "dashboard.yaml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules)} rules found" in checked.stdout
