"""Best-effort Kubernetes Events on staging PVCs: never fail or slow the caller.

``emit`` only queues (bounded; a full queue drops the event, and the drops are logged at most once per
``DROP_LOG_SECONDS`` with their count); one background thread posts each event with a short timeout; every
failure is logged and swallowed. ``flush`` waits a bounded time for the queue to drain; ``close`` (the GC
before it exits) flushes, then drops what is left and ends the thread, so no thread is posting while the
interpreter shuts down.
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

DROP_LOG_SECONDS = 10.0


class EventRecorder:
    def __init__(self, api_client: client.ApiClient, *, instance: str, timeout: float = 2.0,
                 capacity: int = 256) -> None:
        self._api = client.EventsV1Api(api_client)
        self._core = client.CoreV1Api(api_client)
        self._instance, self._timeout = instance, (min(timeout, 1.0), timeout)
        self._capacity = capacity
        self._queue: queue.Queue[ClaimEvent | None] = queue.Queue(maxsize=capacity)  # None: stop
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._busy = 0
        self._closed = False
        self._dropped = 0  # not yet logged
        self._drops_logged_at = -DROP_LOG_SECONDS

    def emit(self, event: ClaimEvent) -> None:
        with self._lock:
            if not self._closed:
                try:
                    self._queue.put_nowait(event)
                except queue.Full:
                    pass
                else:
                    self._busy += 1
                    if self._thread is None or not self._thread.is_alive():  # started lazily: after a fork too
                        self._thread = threading.Thread(target=self._run, name="k8s-events", daemon=True)
                        self._thread.start()
                    return
            self._dropped += 1
        self._log_drops(event)

    def _log_drops(self, last: ClaimEvent | None, *, force: bool = False) -> None:
        """One line for the drops since the last one (at most one per ``DROP_LOG_SECONDS``, unless ``force``):
        a sweep that reclaims thousands of claims must not write thousands of lines about its events."""
        with self._lock:
            now = time.monotonic()
            if not self._dropped or (not force and now - self._drops_logged_at < DROP_LOG_SECONDS):
                return
            dropped, self._dropped, self._drops_logged_at = self._dropped, 0, now
        fields = {"event": "event_dropped", "dropped": dropped,
                  "detail": f"Kubernetes Events not posted: the queue of {self._capacity} was full or the recorder "
                            "closed (the log lines tell the same facts)"}
        if last is not None:
            fields.update(namespace=last.namespace, pvc=last.pvc_name, reason=last.reason)
        log.warning("event_dropped", extra={"fields": fields})

    def close(self, timeout: float) -> bool:
        """Flush for up to ``timeout`` seconds, then drop what is still queued and end the thread (it finishes
        the post in flight first, bounded by the request timeouts). True when everything was posted."""
        flushed = self.flush(timeout)
        with self._lock:
            self._closed = True
            while True:
                try:
                    if self._queue.get_nowait() is not None:
                        self._busy -= 1
                        self._dropped += 1
                except queue.Empty:
                    break
            thread = self._thread
        if thread is not None and thread.is_alive():
            self._queue.put(None)
            thread.join(2 * sum(self._timeout) + 0.5)  # at most a claim read and a post, each with its timeouts
        self._log_drops(None, force=True)
        return flushed

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
            if event is None:
                return
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
