from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from shared.errors import SettingsError
from shared.settings import Settings, from_env, unknown_settings


def test_defaults() -> None:
    s = from_env({})
    assert s == Settings()
    assert s.failed_ttl == dt.timedelta(hours=24) and s.runs.table == "dag_run"


def test_values_are_parsed() -> None:
    s = from_env({
        "LEOFLOW_STAGING_FAILED_TTL": "90m", "LEOFLOW_STAGING_PORT": "9443", "LEOFLOW_STAGING_DB_TIMEOUT": "1.5",
        "LEOFLOW_STAGING_RWX_PROVISIONERS": "a.example, b.example", "LEOFLOW_STAGING_RUNS_TABLE": "orch.runs",
        "LEOFLOW_STAGING_RUNS_SUCCESS_STATES": "success,skipped", "LEOFLOW_STAGING_STORAGE_CLASS": "nfs",
        "OTHER": "ignored",
    })
    assert s.failed_ttl == dt.timedelta(minutes=90) and s.port == 9443 and s.db_timeout == 1.5
    assert s.rwx_provisioners == ("a.example", "b.example")
    assert s.runs.table == "orch.runs" and s.runs.success_states == ("success", "skipped")
    assert s.storage_class == "nfs"
    assert s.identity == "leoflow" and from_env({"LEOFLOW_STAGING_IDENTITY": "airflow"}).identity == "airflow"
    assert s.namespaces == () and from_env({"LEOFLOW_STAGING_NAMESPACES": "team-a, team-b"}).namespaces == (
        "team-a", "team-b")


@pytest.mark.parametrize(("env", "fragment"), [
    ({"LEOFLOW_STAGING_FAILED_TTL": "soon"}, "duration"),
    ({"LEOFLOW_STAGING_PORT": "http"}, "expected a int"),
    ({"LEOFLOW_STAGING_WORKERS": "0"}, ">= 1"),
    ({"LEOFLOW_STAGING_RUNS_TABLE": "dag_run; drop table x"}, "SQL identifier"),
    ({"LEOFLOW_STAGING_LOG_LEVEL": "loud"}, "LOG_LEVEL"),
    ({"LEOFLOW_STAGING_INSTANCE": "Prod_1"}, "DNS label"),
    ({"LEOFLOW_STAGING_NAMESPACES": "team-a,Team_B"}, "'Team_B' is no namespace name"),
    ({"LEOFLOW_STAGING_IDENTITY": "Airflow2"}, "expected one of leoflow, airflow"),
])
def test_bad_values_are_named(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(SettingsError, match=fragment):
        from_env(env)


def test_unknown_variables_are_reported_not_fatal() -> None:
    env = {"LEOFLOW_STAGING_TYPO": "1", "LEOFLOW_DEV_CACHE": "/x", "LEOFLOW_STAGING_PORT": "1"}
    assert unknown_settings(env) == ["LEOFLOW_STAGING_TYPO"]
    assert from_env(env).port == 1


def test_documented_fields_keep_dataclass_behaviour() -> None:
    s = from_env({"LEOFLOW_STAGING_READ_TIMEOUT": "0", "LEOFLOW_STAGING_ADOPT_MIN_AGE": "30s"})
    assert s.read_timeout == 0.0 and s.adopt_min_age == dt.timedelta(seconds=30)  # 0: reads never time out
    assert Settings().read_timeout == 2.0 and Settings().database_url is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.port = 1  # type: ignore[misc]
    assert s.with_overrides(port=9443, host=None).port == 9443 and s.with_overrides(host=None).host == "0.0.0.0"
