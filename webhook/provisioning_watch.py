"""The thread that watches the claims this worker created until they are Bound (the shell of pending_claims).

``add`` is called by the admission that created a claim and only takes a lock (no I/O on the admission path).
A daemon thread looks at the watched claims in the worker's watch-fed PVC cache every ``tick`` seconds (only
while there are any), observes created..Bound in ``leoflow_staging_claim_provisioning_seconds`` and, for a claim
still Pending after ``pending_after`` seconds, reads the claim's Events once to say what its provisioner said.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from shared import claim_events
from shared.claim_events import CONTROLLER, ClaimEvent
from shared.errors import StagingError
from shared.objects import ClaimInfo, EventSeen
from webhook.pending_claims import Step, Watched, assess

log = logging.getLogger("leoflow_staging.webhook")

CacheRead = Callable[[str, str], "tuple[bool, ClaimInfo | None]"]  # (namespace, name) -> (fresh, claim)
EventsAbout = Callable[[str, str], "list[EventSeen]"]  # (namespace, uid) -> the object's Events, oldest first


def last_word(events: list[EventSeen]) -> str | None:
    """What the provisioner (or the PV controller) said last about the claim; our own events are skipped."""
    theirs = [e for e in events if e.reporter != CONTROLLER]
    return theirs[-1].text if theirs else None


class ProvisioningWatch:
    """Watches the claims this process created (at most ``capacity`` at once; more are not watched)."""

    def __init__(self, *, read: CacheRead, events_about: EventsAbout, observe: Callable[[str, float], None],
                 emit: Callable[[ClaimEvent], None] | None, pending_after: float | None, tick: float = 0.25,
                 capacity: int = 10_000, clock: Callable[[], float] = time.monotonic, threaded: bool = True) -> None:
        self._read, self._events_about, self._observe, self._emit = read, events_about, observe, emit
        self._pending_after = pending_after or None  # 0: no still-Pending event
        self._tick, self._capacity, self._clock = tick, capacity, clock
        self._watched: dict[tuple[str, str], Watched] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._threaded = threaded  # False: the caller drives ``check`` (tests)

    def add(self, namespace: str, name: str, *, uid: str, storage_class: str, provisioner: str) -> None:
        """Watch a claim this process has just created (non-blocking)."""
        with self._lock:
            if len(self._watched) >= self._capacity:
                return
            self._watched[namespace, name] = Watched(namespace, name, uid, storage_class, provisioner,
                                                     started=self._clock())
            if self._thread is None and self._threaded:
                self._thread = threading.Thread(target=self._run, name="provisioning-watch", daemon=True)
                self._thread.start()
        self._wake.set()

    def watched(self) -> int:
        with self._lock:
            return len(self._watched)

    def check(self) -> None:
        """One look at every watched claim."""
        with self._lock:
            items = list(self._watched.values())
        for w in items:
            fresh, claim = self._read(w.namespace, w.name)
            now = self._clock()
            step = assess(w, fresh=fresh, claim=claim, now=now, pending_after=self._pending_after)
            if step is Step.WAIT:
                continue
            if step is Step.SLOW:
                self._tell(w, now - w.started)
                with self._lock:
                    if (w.namespace, w.name) in self._watched:
                        self._watched[w.namespace, w.name] = replace(w, told=True)
                continue
            with self._lock:
                self._watched.pop((w.namespace, w.name), None)
            if step is Step.BOUND:
                self._observe(w.storage_class, now - w.started)

    def _tell(self, w: Watched, seconds: float) -> None:
        try:
            said = last_word(self._events_about(w.namespace, w.uid))
        except StagingError as exc:
            said = f"(the claim's events could not be read: {exc})"
        event = claim_events.still_pending(namespace=w.namespace, pvc_name=w.name, pvc_uid=w.uid,
                                           storage_class=w.storage_class, provisioner=w.provisioner,
                                           seconds=seconds, said=said)
        log.warning("claim_pending", extra={"fields": {
            "event": "claim_pending", "namespace": w.namespace, "pvc": w.name, "storage_class": w.storage_class,
            "provisioner": w.provisioner, "seconds": round(seconds, 1), "detail": event.note}})
        if self._emit is not None:
            self._emit(event)

    def _run(self) -> None:
        while True:
            try:
                self.check()
            except Exception:  # never let the watch die: it is best effort
                log.exception("provisioning watch failed")
            if self.watched():
                time.sleep(self._tick)
            else:
                self._wake.wait()
                self._wake.clear()
