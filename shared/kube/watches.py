"""LIST and WATCH of the two kinds the webhook caches, as raw JSON (no typed models): the informers' edge."""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Callable, Iterator
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from shared.errors import KubeUnavailable
from shared.kube.api import api_message
from shared.kube.informer import Gone, Page, iter_json_lines
from shared.labels import INSTANCE, MANAGED_BY, MANAGED_BY_VALUE

# The server ends each watch after about this long (jittered); it is reopened at once from the version seen.
# A connection that died silently (no reset) is noticed when a read waits longer than this plus READ_SLACK.
WATCH_SECONDS = 60
READ_SLACK = 5


def managed_claims_selector(instance: str) -> str:
    """The PVCs of this installation (contracts 3 labels)."""
    return f"{MANAGED_BY}={MANAGED_BY_VALUE},{INSTANCE}={instance}"


def _call(what: str, fn: Callable[..., Any], **kw: Any) -> Any:
    try:
        return fn(_preload_content=False, **kw)
    except ApiException as exc:
        if exc.status == 410:
            raise Gone(f"{what}: {api_message(exc)}") from exc
        raise KubeUnavailable(f"{what}: HTTP {exc.status} {api_message(exc)}") from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise KubeUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc


class KindSource:
    """``list_pages`` and ``watch`` for one kind: PVCs across namespaces (by label) or StorageClasses."""

    def __init__(self, what: str, fn: Callable[..., Any], *, timeout: float, selector: str | None = None,
                 page_size: int = 500) -> None:
        self._what, self._fn, self._timeout = what, fn, timeout
        self._selector, self._page = selector, page_size

    def list_pages(self) -> Iterator[Page]:
        token: str | None = None
        while True:
            kw: dict[str, Any] = {"limit": self._page, "_request_timeout": (min(self._timeout, 2.0), self._timeout)}
            if token:
                kw["_continue"] = token
            if self._selector:
                kw["label_selector"] = self._selector
            resp = _call(f"listing {self._what}", self._fn, **kw)
            try:
                data: dict[str, Any] = json.loads(resp.data)
            finally:
                resp.release_conn()
            meta = data.get("metadata") or {}
            yield Page(items=data.get("items") or [], resource_version=str(meta.get("resourceVersion") or ""))
            token = meta.get("continue")
            if not token:
                return

    def watch(self, resource_version: str) -> Iterator[dict[str, Any]]:
        seconds = int(WATCH_SECONDS * (0.75 + random.random() / 4))
        kw: dict[str, Any] = {"watch": True, "resource_version": resource_version, "allow_watch_bookmarks": True,
                              "timeout_seconds": seconds,
                              # A silent dead connection is noticed when the read times out.
                              "_request_timeout": (min(self._timeout, 2.0), seconds + READ_SLACK)}
        if self._selector:
            kw["label_selector"] = self._selector
        resp = _call(f"watching {self._what}", self._fn, **kw)
        return _events(resp)


def _events(resp: Any) -> Iterator[dict[str, Any]]:
    try:
        yield from iter_json_lines(resp)
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise KubeUnavailable(f"watch stream: {type(exc).__name__}: {exc}") from exc


def claims_source(api_client: client.ApiClient, *, instance: str, timeout: float,
                  namespace: str | None = None) -> KindSource:
    """This installation's PVCs in ``namespace`` (None: across namespaces)."""
    core = client.CoreV1Api(api_client)
    if namespace:
        return KindSource(f"managed PVCs in {namespace}",
                          functools.partial(core.list_namespaced_persistent_volume_claim, namespace),
                          timeout=timeout, selector=managed_claims_selector(instance))
    return KindSource("managed PVCs", core.list_persistent_volume_claim_for_all_namespaces, timeout=timeout,
                      selector=managed_claims_selector(instance))


def classes_source(api_client: client.ApiClient, *, timeout: float) -> KindSource:
    return KindSource("StorageClasses", client.StorageV1Api(api_client).list_storage_class, timeout=timeout)
