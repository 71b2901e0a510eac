"""Best-effort Kubernetes Events on staging PVCs: never fail or slow the caller.

``emit`` only queues (bounded; a full queue drops the event and logs it); one background thread
posts each event with a short timeout; every failure is logged and swallowed. ``flush`` waits a
bounded time for the queue to drain (the GC calls it before exiting).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import queue
import threading
import time
from dataclasses import replace

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from shared.claim_events import ClaimEvent, manifest

log = logging.getLogger("leoflow_staging.events")


class EventRecorder:
    def __init__(self, api_client: client.ApiClient, *, instance: str, timeout: float = 2.0,
                 capacity: int = 256) -> None:
        self._api = client.EventsV1Api(api_client)
        self._core = client.CoreV1Api(api_client)
        self._instance, self._timeout = instance, (min(timeout, 1.0), timeout)
        self._queue: queue.Queue[ClaimEvent] = queue.Queue(maxsize=capacity)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._busy = 0

    def emit(self, event: ClaimEvent) -> None:
        try:
            with self._lock:
                self._queue.put_nowait(event)
                self._busy += 1
                if self._thread is None or not self._thread.is_alive():  # started lazily: after a fork too
                    self._thread = threading.Thread(target=self._run, name="k8s-events", daemon=True)
                    self._thread.start()
        except queue.Full:
            log.warning("event_dropped", extra={"fields": {"event": "event_dropped", "namespace": event.namespace,
                                                           "pvc": event.pvc_name, "reason": event.reason}})

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until every queued event was posted (or given up)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self._busy == 0:
                    return True
            time.sleep(0.02)
        return False

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            try:
                self._post(event)
            finally:
                with self._lock:
                    self._busy -= 1

    def _uid(self, event: ClaimEvent) -> str | None:
        """The claim's uid (``kubectl describe pvc`` matches events by uid): the GC's lines lack it."""
        if event.pvc_uid:
            return event.pvc_uid
        resp = self._core.read_namespaced_persistent_volume_claim(
            event.pvc_name, event.namespace, _preload_content=False, _request_timeout=self._timeout)
        uid = json.loads(resp.data).get("metadata", {}).get("uid")  # type: ignore[attr-defined]
        return str(uid) if uid else None

    def _post(self, event: ClaimEvent) -> None:
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        try:
            try:
                event = replace(event, pvc_uid=self._uid(event))
            except ApiException as exc:
                if exc.status != 404:  # a claim already gone still gets its event, by name
                    raise
            body = manifest(event, instance=self._instance, now_iso=now)
            self._api.create_namespaced_event(event.namespace, body, _preload_content=False,
                                              _request_timeout=self._timeout)
        except ApiException as exc:
            if exc.status == 409:
                return  # this fact was told already
            log.warning("event_failed", extra={"fields": {
                "event": "event_failed", "namespace": event.namespace, "pvc": event.pvc_name,
                "reason": event.reason, "detail": f"HTTP {exc.status} {exc.reason}"}})
        except Exception as exc:  # best effort: never let an event break anything
            log.warning("event_failed", extra={"fields": {
                "event": "event_failed", "namespace": event.namespace, "pvc": event.pvc_name,
                "reason": event.reason, "detail": f"{type(exc).__name__}: {exc}"}})
