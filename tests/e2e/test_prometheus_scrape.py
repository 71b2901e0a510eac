"""A real Prometheus (built from the Prometheus Go module) scrapes the real webhook over TLS with the chart's
rules loaded: after real GC sweeps, the GC gauges and inventory series are there, and the rules evaluate as
their promtool unit tests say (three skipped sweeps fire LeoflowStagingGcSweepsSkipped; a sweep completed
just now keeps LeoflowStagingGcNotSucceeding quiet)."""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from devenv.processes import ManagedProcess, free_port
from devenv.prometheus_assets import ensure_prometheus
from shared.db.locks import single_flight
from shared.db.migrate import upgrade
from tests.conftest import unavailable
from tests.e2e.gc_support import Bench, own_kube
from tests.rules.test_alert_rules import rule_groups
from tests.support.orchestrator import create_runs_table, set_run
from tests.support.webhook import WebhookProcess

pytestmark = pytest.mark.e2e


@pytest.fixture
def prometheus_bin() -> Path:
    try:
        return ensure_prometheus("prometheus") / "prometheus"
    except (RuntimeError, FileNotFoundError) as exc:
        unavailable(f"prometheus: {exc}")
        raise


@pytest.fixture
def own_webhook(database_url: str, kubeconfig: Path, tmp_path: Path) -> Iterator[WebhookProcess]:
    """A webhook on a database of its own (not registered: only scraped)."""
    engine = sa.create_engine(database_url)
    upgrade(engine)
    create_runs_table(engine)
    engine.dispose()
    server = WebhookProcess(workdir=tmp_path / "webhook", env={
        "LEOFLOW_STAGING_DATABASE_URL": database_url, "LEOFLOW_STAGING_KUBECONFIG": str(kubeconfig),
        "LEOFLOW_STAGING_WORKERS": "1", "LEOFLOW_STAGING_METRICS_CACHE_SECONDS": "1"})
    server.start()
    yield server
    server.stop()


_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only, never a proxy


def _get(url: str) -> Any:
    with _LOCAL.open(url, timeout=10) as resp:
        return json.loads(resp.read())


def _query(base: str, promql: str) -> list[dict[str, Any]]:
    data = _get(f"{base}/api/v1/query?query={urllib.parse.quote(promql)}")
    assert data["status"] == "success", data
    result: list[dict[str, Any]] = data["data"]["result"]
    return result


def _until(probe: Any, *, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.5)


def test_prometheus_scrapes_the_webhook_over_tls_and_evaluates_the_rules(
        prometheus_bin: Path, own_webhook: WebhookProcess, assets: Path, database_url: str, kubeconfig: Path,
        namespace: str, rwx_class: str, tmp_path: Path) -> None:
    engine = sa.create_engine(database_url)
    bench = Bench(engine=engine, kube=own_kube(str(kubeconfig), namespace), namespace=namespace)
    bench.now = dt.datetime.now(dt.UTC)
    bench.admit("etl", "ok")
    bench.admit("etl", "bad")
    set_run(engine, "etl", "ok", "success", bench.now)
    set_run(engine, "etl", "bad", "failed", bench.now - dt.timedelta(hours=1))
    assert bench.sweep() == 0  # a real sweep, completed now
    with single_flight(engine) as held:  # three more find the lock held
        assert held
        for _ in range(3):
            assert bench.sweep() == 0

    work = tmp_path / "prometheus"
    work.mkdir()
    (work / "rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups(assets)}))
    (work / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(work / "rules.yaml")],
        "scrape_configs": [{
            "job_name": "leoflow-staging", "scheme": "https",
            "tls_config": {"ca_file": str(own_webhook.ca_file), "server_name": "localhost"},
            "static_configs": [{"targets": [f"127.0.0.1:{own_webhook.port}"]}]}]}))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    prom = ManagedProcess("prometheus", [
        str(prometheus_bin), f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"], work / "prometheus.log")
    prom.start()
    try:
        prom.wait_healthy(lambda: _get(f"{base}/api/v1/status/buildinfo")["status"] == "success", timeout=60)
        targets = _until(lambda: [t for t in _get(f"{base}/api/v1/targets")["data"]["activeTargets"]
                                  if t["health"] == "up"])
        assert targets, _get(f"{base}/api/v1/targets")  # scraped over TLS, the CA and name verified
        assert _until(lambda: _query(base, "leoflow_staging_gc_last_success_timestamp_seconds > 0"))
        [skipped] = _query(base, "leoflow_staging_gc_skipped_sweeps")
        assert skipped["value"][1] == "3"
        [reclaimed] = _query(base, 'leoflow_staging_gc_last_sweep_results{outcome="reclaimed"}')
        assert reclaimed["value"][1] == "1"
        assert _query(base, "leoflow_staging_failed_kept_volumes")[0]["value"][1] == "1"
        [active] = _query(base, f'leoflow_staging_volumes{{namespace="{namespace}",state="active"}}')
        assert active["value"][1] == "1"
        assert _query(base, 'leoflow_staging_reclaims_total{reason="run_succeeded"}')[0]["value"][1] == "1"

        def alerts() -> dict[str, str]:
            return {a["labels"]["alertname"]: a["state"] for a in _get(f"{base}/api/v1/alerts")["data"]["alerts"]}

        firing = _until(lambda: alerts().get("LeoflowStagingGcSweepsSkipped") == "firing")
        assert firing, alerts()
        assert "LeoflowStagingGcNotSucceeding" not in alerts()  # completed a moment ago
        assert "LeoflowStagingInventoryUnreadable" not in alerts()
    finally:
        prom.stop()
        engine.dispose()
