"""What ships: the wheel holds the product and nothing else, and installed into a clean virtualenv (no checkout
on its path) its console script works, including ``migrate`` against a real PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from devenv.postgres import Postgres

pytestmark = pytest.mark.db

ROOT = Path(__file__).resolve().parents[2]
# The product's packages: the two programs, the CLI and the code they share. Nothing else may be in the wheel.
PACKAGES = {"leoflow_staging", "webhook", "gc_job", "shared", "certs"}
NEVER = ("devenv", "bench", "tests", "hack", "devtools")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # sdist first, then the wheel from the unpacked sdist (as a release does): a stale build/ folder in the
    # checkout cannot leak modules that no longer exist into the wheel.
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
                   check=True, capture_output=True, cwd=out)
    [built] = out.glob("leoflow_staging-*.whl")
    return built


def test_the_wheel_holds_the_product_only(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/", 1)[0] for name in names}
    dist_info = {t for t in tops if t.endswith(".dist-info")}
    assert len(dist_info) == 1 and tops - dist_info == PACKAGES, sorted(tops)
    strays = [n for n in names if any(part in NEVER for part in n.split("/")[:-1])]
    assert not strays, strays
    assert "shared/db/migrations/versions/0001_staging_volumes.py" in names  # the schema ships with the code
    assert all(n.endswith((".py", ".mako", ".typed")) or ".dist-info/" in n for n in names), \
        sorted(n for n in names if not n.endswith(".py"))


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    venv = tmp_path_factory.mktemp("clean") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], check=True, capture_output=True)
    yield venv / "bin" / "leoflow-staging"


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEOFLOW_", "PYTHON"))}
    return env | extra


def test_the_installed_console_script_works_outside_a_checkout(installed: Path, postgres: Postgres,
                                                                tmp_path: Path) -> None:
    helped = subprocess.run([str(installed), "--help"], capture_output=True, text=True, cwd=tmp_path,
                            env=_clean_env(), check=False)
    assert helped.returncode == 0 and "migrate" in helped.stdout and "serve" in helped.stdout, helped.stderr
    unset = subprocess.run([str(installed), "migrate"], capture_output=True, text=True, cwd=tmp_path,
                           env=_clean_env(), check=False)
    assert unset.returncode == 2 and "LEOFLOW_STAGING_DATABASE_URL is not set" in unset.stderr
    url = postgres.create_database("wheel_migrate").replace("postgresql+psycopg2://", "postgresql://")
    migrated = subprocess.run([str(installed), "migrate"], capture_output=True, text=True, cwd=tmp_path,
                              env=_clean_env(LEOFLOW_STAGING_DATABASE_URL=url), check=False)
    assert migrated.returncode == 0, migrated.stderr
    assert "schema at revision" in migrated.stdout
