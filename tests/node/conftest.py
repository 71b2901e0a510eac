"""The real node: one single-node cluster for the whole session (pods run, bytes are written).

Only one node can run on a host at a time (kubelet, containerd and iptables are host-wide), so
these tests share one ``NodeCluster``. In CI a node that cannot start is a failure, never a skip.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from kubernetes import client, config

from devenv.assets import ensure_assets
from devenv.cluster import NodeCluster
from devenv.orchestrator import create_runs_table
from devenv.processes import log_tail
from shared import labels
from shared.db.migrate import upgrade
from tests.conftest import unavailable


@pytest.fixture(scope="session")
def node_assets() -> Path:
    try:
        return ensure_assets(node=True)
    except (RuntimeError, FileNotFoundError) as exc:
        unavailable(f"node binaries: {exc}")
        raise


@pytest.fixture(scope="session")
def cluster(node_assets: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeCluster]:
    if os.geteuid() != 0:
        unavailable("a real node needs root (containerd, kubelet, iptables)")
    for tool in ("containerd", "runc", "ctr", "iptables", "kubectl"):
        if shutil.which(tool) is None:
            unavailable(f"{tool} not installed (hack/ensure-node-packages.sh)")
    workdir = tmp_path_factory.mktemp("cluster")
    cluster = NodeCluster(assets=node_assets, workdir=workdir)
    try:
        cluster.start()
    except Exception as exc:
        unavailable(f"the node did not start: {exc}")
    try:
        yield cluster
    finally:
        problems = cluster.stop()
        assert not problems, f"the node left host changes behind: {problems}"


@pytest.fixture(scope="session")
def kube(cluster: NodeCluster) -> client.ApiClient:
    assert cluster.plane is not None
    return config.new_client_from_config(config_file=str(cluster.plane.kubeconfig_path))


@pytest.fixture(scope="session")
def core(kube: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(kube)


@pytest.fixture
def namespace(core: client.CoreV1Api) -> Iterator[str]:
    name = f"n-{uuid.uuid4().hex[:10]}"
    core.create_namespace({"metadata": {"name": name, "labels": {labels.INSTANCE: labels.DEFAULT_INSTANCE}}})
    yield name
    core.delete_namespace(name)


@pytest.fixture(scope="session")
def node_db(cluster: NodeCluster) -> str:
    """A migrated database, named in URLs for the host and for pods."""
    assert cluster.postgres is not None
    engine = sa.create_engine(cluster.postgres.create_database("node_e2e"))
    upgrade(engine)
    create_runs_table(engine)  # the orchestrator's runs table, as Leoflow has it
    engine.dispose()
    return "node_e2e"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    """On failure, show the tail of each node component's log."""
    report = yield
    if report.failed and "cluster" in getattr(item, "fixturenames", ()):
        found = item.funcargs.get("cluster") if hasattr(item, "funcargs") else None
        if isinstance(found, NodeCluster):
            for path in found.log_paths():
                report.sections.append((f"log {path.name}", log_tail(path, 25)))
    return report

