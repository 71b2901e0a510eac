"""One stock Apache Airflow installation for tests: the cached venv (hack/ensure-airflow.sh), an AIRFLOW_HOME
and its metadatabase; its CLI, and Airflow's own code run in Airflow's interpreter (tests/airflow/airflow_side.py)."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

AIRFLOW_SIDE = Path(__file__).resolve().parents[1] / "airflow" / "airflow_side.py"


@dataclass
class Airflow:
    venv: Path
    home: Path
    database_url: str  # SQLAlchemy URL of the metadatabase (psycopg2), shared with leoflow-staging's tables
    extra_env: dict[str, str] = field(default_factory=dict)  # more AIRFLOW__* settings (executor, API, ...)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "LEOFLOW_STAGING_"))}
        env.update({
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.database_url,
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.home / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            **self.extra_env,
        })
        return env

    def cli(self, *args: str, timeout: float = 300) -> str:
        """``airflow <args>``; its output, or a test failure showing it."""
        done = subprocess.run([str(self.venv / "bin" / "airflow"), *args], env=self.env(), capture_output=True,
                              text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            pytest.fail(f"airflow {' '.join(args)} exited {done.returncode}:\n{done.stdout[-3000:]}\n"
                        f"{done.stderr[-3000:]}", pytrace=False)
        return done.stdout + done.stderr

    def side(self, command: str, request: dict[str, Any]) -> Any:
        """Run Airflow's own code (tests/airflow/airflow_side.py) in Airflow's interpreter."""
        done = subprocess.run([str(self.venv / "bin" / "python"), str(AIRFLOW_SIDE), command],
                              input=json.dumps(request), env=self.env(), capture_output=True, text=True,
                              timeout=300, check=False)
        if done.returncode != 0:
            pytest.fail(f"airflow_side {command} exited {done.returncode}:\n{done.stderr[-4000:]}", pytrace=False)
        return json.loads(done.stdout)
