"""The warning and the Event when a run starts over on an empty volume: their text (pure, hypothesis), the
provisioner finding the run's reclaimed row on the cold path only, the handler putting both out."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared import claim_events
from shared.naming import pvc_name
from shared.volumes import DeleteReason, VolumeRecord, VolumeState
from tests.support.pods import task_pod
from tests.unit.test_handler import FakeProvisioner, handler, request
from tests.unit.test_provisioner import World
from webhook.intent import StagingIntent
from webhook.provisioning import Deadline, Ensured
from webhook.rerun_warning import MAX_WARNING, rerun_warning

T = dt.datetime(2026, 12, 7, 10, 5, 33, tzinfo=dt.UTC)
DAG, RUN = "etl", "manual__2026-05-23T10:00:00+00:00"


def test_the_warning_says_when_why_and_what_to_do() -> None:
    assert rerun_warning(deleted_at=T, reason=DeleteReason.RUN_SUCCEEDED) == (
        "leoflow-staging: previous volume reclaimed 2026-12-07T10:05Z (run_succeeded); new and empty: clear the "
        "whole run")
    assert rerun_warning(deleted_at=T.astimezone(dt.timezone(dt.timedelta(hours=2))), reason=None) == (
        "leoflow-staging: previous volume reclaimed 2026-12-07T10:05Z; new and empty: clear the whole run")


@given(reason=st.one_of(st.none(), st.sampled_from(list(DeleteReason))),
       when=st.one_of(st.none(), st.datetimes(timezones=st.timezones())))
def test_every_warning_fits_120_ascii_characters_and_names_the_reason(reason: DeleteReason | None,
                                                                      when: dt.datetime | None) -> None:
    text = rerun_warning(deleted_at=when, reason=reason)
    assert len(text) <= MAX_WARNING and text.isascii() and text.isprintable()
    assert text.startswith("leoflow-staging: previous volume reclaimed ") and text.endswith("clear the whole run")
    if reason is not None:
        assert f"({reason.value})" in text


def _previous(reason: DeleteReason = DeleteReason.TTL_EXPIRED) -> VolumeRecord:
    return VolumeRecord(id=7, namespace="team-a", pvc_name=pvc_name(DAG, RUN), pvc_uid="old-uid", dag_id=DAG,
                        run_id=RUN, storage_class="nfs", size="1Gi", state=VolumeState.DELETED,
                        created_at=T - dt.timedelta(days=2), deleted_at=T, delete_reason=reason)


class RerunProvisioner(FakeProvisioner):
    def __init__(self, previous: VolumeRecord | None, *, created: bool = True) -> None:
        super().__init__(created=created)
        self.previous = previous

    def ensure(self, namespace: str, intent: StagingIntent, deadline: Deadline) -> Ensured:
        return dataclasses.replace(super().ensure(namespace, intent, deadline),
                                   previous=self.previous)


def test_the_handler_warns_and_emits_the_event_only_for_a_new_volume_of_a_reclaimed_run() -> None:
    events: list[claim_events.ClaimEvent] = []
    outcome = handler(RerunProvisioner(_previous()), events=events).handle(request(task_pod(DAG, RUN)))
    assert outcome.verdict.allowed and outcome.verdict.patch
    assert outcome.verdict.warnings == (rerun_warning(deleted_at=T, reason=DeleteReason.TTL_EXPIRED),)
    created, empty = events
    assert (created.reason, empty.reason, empty.type) == ("StagingVolumeCreated", "PreviousVolumeReclaimed", "Warning")
    assert (empty.pvc_name, empty.pvc_uid) == (pvc_name(DAG, RUN), "pvc-uid-1")
    assert f"reclaimed at {T.isoformat()} (ttl_expired: the failed run's TTL had passed)" in empty.note
    assert "new and empty" in empty.note and "Clear the whole run" in empty.note
    assert empty.name != created.name  # two facts, two events
    events.clear()
    first = handler(RerunProvisioner(None), events=events).handle(request(task_pod(DAG, RUN)))
    assert first.verdict.warnings == () and [e.reason for e in events] == ["StagingVolumeCreated"]


def test_the_provisioner_returns_the_runs_reclaimed_row_on_the_cold_path_only(monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(monkeypatch)
    assert world.ensure().previous is None  # a first volume: no warning
    [row] = world.db.rows.values()
    world.db.rows[row.id] = dataclasses.replace(row, state=VolumeState.DELETED, deleted_at=T,
                                                delete_reason=DeleteReason.RUN_SUCCEEDED)
    world.kube.claims.clear()
    again = world.ensure()
    assert again.created and again.previous is not None and again.previous.id == row.id
    assert again.previous.delete_reason is DeleteReason.RUN_SUCCEEDED
    assert world.ensure().previous is None  # the warm path reads nothing more and warns no more
