"""GC events of a shared-claim row go on the shared claim (the object that exists), naming the run's directory."""

from __future__ import annotations

from shared.claim_events import from_gc


def test_a_directorys_reclaim_is_told_on_the_shared_claim() -> None:
    fields = {"event": "reclaimed", "namespace": "team", "pvc": "leoflow-staging-etl-r-abc", "pvc_uid": "u-1",
              "shared_claim": "team-staging", "dag_id": "etl", "run_id": "r", "reason": "run_succeeded",
              "run_state": "success"}
    [event] = from_gc(fields)
    assert (event.pvc_name, event.pvc_uid, event.reason) == ("team-staging", "u-1", "ReclaimStarted")
    assert event.note.startswith("directory leoflow-staging-etl-r-abc: reclaim started")
    other = from_gc({**fields, "pvc": "leoflow-staging-etl-s-def", "run_id": "s"})[0]
    assert other.name != event.name  # two runs' directories: two events on the one claim
    [claim] = from_gc({k: v for k, v in fields.items() if k != "shared_claim"})
    assert claim.pvc_name == fields["pvc"] and not claim.note.startswith("directory")
