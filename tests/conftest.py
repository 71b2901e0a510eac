"""Session fixtures: the real control plane and the real PostgreSQL, started once, never leaked.

In CI (CI=true) a missing binary or a failed build is a test failure, never a skip.
"""

from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from kubernetes import client, config

from devenv.assets import ensure_assets
from devenv.controlplane import ControlPlane
from devenv.postgres import Postgres
from devenv.processes import log_tail

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def unavailable(reason: str) -> None:
    """Fail in CI, skip on a developer machine that lacks a tool."""
    if IN_CI:
        pytest.fail(f"required for CI: {reason}", pytrace=False)
    pytest.skip(reason)


# Markers by directory (a ``pytestmark`` in a conftest.py has no effect): ``-m "not node"`` and the like work.
_TIER_MARKERS = {"unit": "unit", "integration": "db", "e2e": "e2e", "node": "node", "airflow": "airflow",
                 "rules": "rules"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests_dir = Path(__file__).resolve().parent
    for item in items:
        parts = item.path.resolve().relative_to(tests_dir).parts
        marker = _TIER_MARKERS.get(parts[0]) if len(parts) > 1 else None
        if marker:
            item.add_marker(getattr(pytest.mark, marker))


@pytest.fixture(scope="session")
def assets() -> Path:
    try:
        return ensure_assets()
    except (RuntimeError, FileNotFoundError) as exc:
        unavailable(f"control-plane binaries: {exc}")
        raise  # unreachable: unavailable() always raises


@pytest.fixture(scope="session")
def airflow_venv() -> Path:
    """The cached virtualenv with stock Apache Airflow 3 (hack/ensure-airflow.sh; ~2-3 min cold)."""
    script = Path(__file__).resolve().parents[1] / "hack" / "ensure-airflow.sh"
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        unavailable(f"Apache Airflow virtualenv (hack/ensure-airflow.sh): {done.stderr[-2000:]}")
    return Path(done.stdout.strip())


@pytest.fixture(scope="session")
def control_plane(assets: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    plane = ControlPlane(assets=assets, workdir=tmp_path_factory.mktemp("controlplane"))
    try:
        plane.start()
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def kubeconfig(control_plane: ControlPlane) -> Path:
    return control_plane.kubeconfig_path


@pytest.fixture(scope="session")
def api(kubeconfig: Path) -> client.ApiClient:
    """A client of the tests' control plane (the real node's tests have their own, tests/node/conftest.py)."""
    return config.new_client_from_config(config_file=str(kubeconfig))


@pytest.fixture(scope="session")
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    server = Postgres()
    try:
        server.start()
    except FileNotFoundError as exc:
        unavailable(str(exc))
    try:
        yield server
    finally:
        server.stop()
        server.cleanup()


_db_counter = itertools.count()


@pytest.fixture
def database_url(postgres: Postgres) -> Iterator[str]:
    """A fresh, empty database for this test (dropped afterwards)."""
    name = f"t{os.getpid()}_{next(_db_counter)}"
    admin = sa.create_engine(postgres.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE template0'))
    try:
        yield postgres.url(name)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    """On failure of a test that used the control plane, show the tail of each component's log."""
    report = yield
    if report.failed and "control_plane" in getattr(item, "fixturenames", ()):
        plane = item.funcargs.get("control_plane") if hasattr(item, "funcargs") else None
        if isinstance(plane, ControlPlane):
            for path in plane.log_paths():
                report.sections.append((f"log {path.name}", log_tail(path, 30)))
    return report
