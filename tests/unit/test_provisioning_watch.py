"""Watching the claims this worker created: each Bound claim observed once, one still-Pending event naming the
provisioner's last word, nothing for claims deleted or re-created, nothing while the cache is not fresh."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from shared.claim_events import ClaimEvent
from shared.errors import KubeUnavailable
from shared.objects import ClaimInfo, EventSeen, claim_info, event_seen
from webhook.pending_claims import MAX_WATCH, UNSEEN_GRACE, Step, Watched, assess
from webhook.provisioning_watch import ProvisioningWatch, last_word

NS, PVC, UID = "team-a", "leoflow-staging-etl-r1-abc", "uid-1"
T0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def claim(phase: str = "Pending", *, uid: str = UID, terminating: bool = False) -> ClaimInfo:
    return ClaimInfo(NS, PVC, uid, "etl", "r1", True, terminating, T0, "nfs", "5Gi", phase=phase)


W = Watched(NS, PVC, UID, "nfs", "nfs.csi.k8s.io", started=100.0)


def test_assess_each_case() -> None:
    assert assess(W, fresh=True, claim=claim("Bound"), now=103, pending_after=60) is Step.BOUND
    assert assess(W, fresh=True, claim=claim(), now=103, pending_after=60) is Step.WAIT
    assert assess(W, fresh=True, claim=claim(), now=160, pending_after=60) is Step.SLOW
    assert assess(W.__class__(**{**W.__dict__, "told": True}), fresh=True, claim=claim(), now=160,
                  pending_after=60) is Step.WAIT  # told once
    assert assess(W, fresh=True, claim=claim(), now=1e9, pending_after=None) is Step.GONE  # MAX_WATCH
    assert assess(W, fresh=False, claim=None, now=160, pending_after=60) is Step.WAIT  # never on a stale cache
    assert assess(W, fresh=True, claim=None, now=101, pending_after=60) is Step.WAIT  # not seen yet
    assert assess(W, fresh=True, claim=None, now=100 + UNSEEN_GRACE + 1, pending_after=60) is Step.GONE
    assert assess(W, fresh=True, claim=claim("Bound", uid="uid-2"), now=100 + UNSEEN_GRACE + 1,
                  pending_after=60) is Step.GONE  # re-created: the new one is not ours to count
    assert assess(W, fresh=True, claim=claim(terminating=True), now=103, pending_after=60) is Step.GONE


@given(st.floats(0, MAX_WATCH), st.booleans(), st.sampled_from(["Pending", "Bound", "Lost", ""]))
def test_a_stale_cache_never_counts_or_tells(age: float, told: bool, phase: str) -> None:
    w = Watched(NS, PVC, UID, "nfs", "p", started=0.0, told=told)
    assert assess(w, fresh=False, claim=claim(phase), now=age, pending_after=1.0) is Step.WAIT


class World:
    def __init__(self) -> None:
        self.now = 0.0
        self.cache: dict[tuple[str, str], ClaimInfo] = {}
        self.fresh = True
        self.observed: list[tuple[str, float]] = []
        self.events: list[ClaimEvent] = []
        self.said: list[EventSeen] | Exception = []
        self.watch = ProvisioningWatch(read=self.read, events_about=self.events_about,
                                       observe=lambda c, s: self.observed.append((c, s)), emit=self.events.append,
                                       pending_after=30.0, clock=lambda: self.now, threaded=False)

    def read(self, namespace: str, name: str) -> tuple[bool, ClaimInfo | None]:
        return self.fresh, self.cache.get((namespace, name)) if self.fresh else None

    def events_about(self, namespace: str, uid: str) -> list[EventSeen]:
        assert (namespace, uid) == (NS, UID)
        if isinstance(self.said, Exception):
            raise self.said
        return self.said

    def add(self) -> None:
        self.watch.add(NS, PVC, uid=UID, storage_class="nfs", provisioner="nfs.csi.k8s.io")


def test_bound_is_observed_once_with_its_class_and_time() -> None:
    world = World()
    world.add()
    world.cache[NS, PVC] = claim()
    world.now = 2.0
    world.watch.check()
    world.cache[NS, PVC] = claim("Bound")
    world.now = 3.5
    world.watch.check()
    world.now = 9.0
    world.watch.check()
    assert world.observed == [("nfs", 3.5)] and world.watch.watched() == 0 and world.events == []


def test_still_pending_is_told_once_with_the_provisioners_last_word_then_counted_when_bound() -> None:
    world = World()
    world.add()
    world.cache[NS, PVC] = claim()
    world.said = [EventSeen("ExternalProvisioning", "Waiting for a volume to be created by nfs.csi.k8s.io",
                            "persistentvolume-controller", T0),
                  EventSeen("StagingVolumeCreated", "created for run ...", "leoflow-staging", T0)]
    for world.now in (10.0, 31.0, 40.0, 50.0):
        world.watch.check()
    [event] = world.events
    assert (event.reason, event.type, event.pvc_uid, event.pvc_name) == ("ProvisioningSlow", "Warning", UID, PVC)
    assert "still Pending 31s" in event.note and "class nfs (provisioner nfs.csi.k8s.io)" in event.note
    assert "ExternalProvisioning: Waiting for a volume to be created by nfs.csi.k8s.io" in event.note
    world.cache[NS, PVC] = claim("Bound")
    world.now = 61.0
    world.watch.check()
    assert world.observed == [("nfs", 61.0)]


def test_an_unreadable_event_list_or_silence_is_said_too() -> None:
    world = World()
    world.add()
    world.cache[NS, PVC] = claim()
    world.said = KubeUnavailable("listing events: connection refused")
    world.now = 31.0
    world.watch.check()
    assert "could not be read" in world.events[0].note
    assert "no event from a provisioner yet" in _silent_note()


def _silent_note() -> str:
    world = World()
    world.add()
    world.cache[NS, PVC] = claim()
    world.now = 31.0
    world.watch.check()
    return world.events[0].note


def test_a_deleted_claim_and_a_stale_cache_count_nothing() -> None:
    world = World()
    world.add()
    world.fresh = False
    world.now = 1000.0
    world.watch.check()
    assert world.observed == [] and world.events == [] and world.watch.watched() == 1
    world.fresh = True  # fresh, and the claim is not there long after its creation: deleted
    world.watch.check()
    assert world.observed == [] and world.watch.watched() == 0


def test_last_word_skips_our_own_events() -> None:
    ours = EventSeen("StagingVolumeCreated", "x", "leoflow-staging", T0)
    assert last_word([ours]) is None
    assert last_word([EventSeen("ProvisioningFailed", "boom", "p", T0), ours]) == "ProvisioningFailed: boom"


def test_event_seen_reads_the_core_view_and_claim_info_the_phase() -> None:
    seen = event_seen({"reason": "ExternalProvisioning", "message": " Waiting for a volume \n",
                       "source": {"component": "persistentvolume-controller"},
                       "lastTimestamp": "2026-12-01T00:00:05Z", "series": {"lastObservedTime": "2026-12-01T00:01:00Z"}})
    assert seen == EventSeen("ExternalProvisioning", "Waiting for a volume", "persistentvolume-controller",
                             T0 + dt.timedelta(minutes=1))
    assert event_seen({"reason": "X", "reportingComponent": "leoflow-staging"}).reporter == "leoflow-staging"
    assert claim_info({"metadata": {"name": "c"}, "status": {"phase": "Bound"}}).phase == "Bound"
    assert claim_info({"metadata": {"name": "c"}}).phase == ""
