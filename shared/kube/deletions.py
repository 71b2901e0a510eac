"""Which PVCs of ours were deleted since a listing: one WATCH from the listing's resourceVersion, in a
thread of its own, instead of re-listing every PVC of the installation to see which are gone.

The watch sees every deletion after the list (Kubernetes guarantees a watch from a resourceVersion misses
no event). When it cannot vouch for that any more (410 Gone: the version left the server's window; a
refusal such as a missing RBAC verb; or repeated errors) it says so (``broken``) and the caller falls
back to listing. With a configured namespace list there is one watch per namespace (namespaced Roles allow
no other), each from the same (earliest) listing version: a watch from an older version sees more, not less.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Collection
from typing import Any

from shared.errors import KubeForbidden
from shared.kube.api import KubeApi, ListExpired
from shared.objects import ClaimKey, claim_key

_RETRIES = 5  # consecutive failed (re)connects before the watch gives up


class DeletionWatch:
    """Started on a listing's resourceVersion; ``wait_for`` answers which of some PVCs are gone."""

    def __init__(self, kube: KubeApi, since: str) -> None:
        self._kube, self._since = kube, since
        self._gone: set[ClaimKey] = set()
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._responses: list[Any] = []
        self.broken: str | None = None if since else "no resourceVersion to watch from"
        self._threads = [threading.Thread(target=self._run, args=(namespace,), name="gc-deletions", daemon=True)
                         for namespace in kube.namespaces or (None,)]

    def start(self) -> DeletionWatch:
        if self.broken is None:
            for thread in self._threads:
                thread.start()
        return self

    def _opened(self, response: Any) -> None:
        self._responses.append(response)
        if self._stopping.is_set():
            _interrupt(response)

    def _run(self, namespace: str | None) -> None:
        failures, version = 0, self._since
        while not self._stopping.is_set():
            try:
                for kind, obj in self._kube.watch_managed_deletions(version, namespace=namespace,
                                                                    on_open=self._opened):
                    failures = 0
                    version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                    if kind == "DELETED":
                        with self._changed:  # no wake-up per event: ``wait_for`` looks a few times a second
                            self._gone.add(claim_key(obj))
            except ListExpired as exc:
                self._give_up(f"the listing's version is too old to watch from ({exc})")
                return
            except KubeForbidden as exc:  # a 4xx (e.g. no RBAC verb "watch"): asking again changes nothing
                self._give_up(f"the watch was refused ({exc})")
                return
            except Exception as exc:
                if self._stopping.is_set():
                    return  # the read was interrupted by ``stop``
                failures += 1
                if failures >= _RETRIES:
                    self._give_up(f"the watch failed {failures} times in a row ({exc})")
                    return
                time.sleep(0.2 * failures)

    def _give_up(self, why: str) -> None:
        with self._changed:
            self.broken = why
            self._changed.notify_all()

    def wait_for(self, keys: Collection[ClaimKey], *, timeout: float) -> set[ClaimKey]:
        """Those of ``keys`` seen deleted, once all are or ``timeout`` seconds have passed (or the watch
        broke: then check ``broken`` and list instead)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                gone = {k for k in keys if k in self._gone}
                left = deadline - time.monotonic()
                if len(gone) == len(keys) or left <= 0 or self.broken is not None:
                    return gone
                self._changed.wait(min(left, 0.25))

    def stop(self) -> None:
        self._stopping.set()
        for response in list(self._responses):
            _interrupt(response)
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=5)


def _interrupt(response: Any) -> None:
    """End a read blocked on ``response`` in another thread: shut its socket down (closing the response
    would wait for the reader's buffer lock, i.e. for the next event or the watch's timeout)."""
    sock = getattr(getattr(response, "connection", None), "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
