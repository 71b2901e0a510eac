"""The orchestrator's runs table for tests (lives in devenv: the demo and bench use it too)."""

from devenv.orchestrator import create_runs_table, delete_run, set_run

__all__ = ["create_runs_table", "delete_run", "set_run"]
