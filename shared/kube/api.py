"""A narrow adapter over the official Kubernetes client: only the calls the two programs make."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from shared.errors import KubeForbidden, KubeUnavailable
from shared.labels import DEFAULT_INSTANCE, INSTANCE, MANAGED_BY, MANAGED_BY_VALUE
from shared.namespaces import instance_selector
from shared.objects import (
    ClaimInfo,
    ClaimSpec,
    EventSeen,
    PodUse,
    StorageClassInfo,
    claim_info,
    claim_manifest,
    claim_users,
    event_seen,
    shared_claim_manifest,
    storage_class_info,
)

T = TypeVar("T")
# Statuses that mean "not now" rather than "no": the apiserver's priority and fairness throttling (429)
# and request timeouts (408). Like 5xx, they are retriable denials, never refusals.
_TRANSIENT = {408: "Request Timeout", 429: "Too Many Requests"}


class AlreadyExists(Exception):
    """The object to create exists already (HTTP 409)."""


def make_api_client(kubeconfig: str | None, *, pool_size: int = 8) -> client.ApiClient:
    """An ApiClient from ``kubeconfig``, or the in-cluster service account when None and available."""
    configuration = client.Configuration()
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    else:
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            config.load_kube_config(client_configuration=configuration)
    # One quick retry on connect errors only; a POST is never replayed on a read error.
    configuration.retries = urllib3.Retry(total=1, connect=1, read=0, status=0, redirect=0)
    configuration.connection_pool_maxsize = pool_size
    return client.ApiClient(configuration)


def _drain(response: Any) -> None:
    """Read an unwanted response body to its end: only then does its keep-alive connection go back to
    the pool (with ``_preload_content=False`` an unread response keeps it, and the next call opens a
    new TLS connection)."""
    response.data  # noqa: B018 - reading is the point
    response.release_conn()


class NotFound(KubeForbidden):
    """HTTP 404: the object (or its namespace) does not exist."""


class ListExpired(KubeForbidden):
    """HTTP 410: a paginated list's continue token outlived etcd's compaction."""


def api_message(exc: ApiException) -> str:
    """The ``message`` of a Kubernetes Status body, else the HTTP reason."""
    try:
        body = json.loads(exc.body or "{}")
        return str(body.get("message") or exc.reason)
    except (ValueError, AttributeError):
        return str(exc.reason)


def api_failure(what: str, exc: ApiException) -> KubeUnavailable:
    """The project's error for a failed call: a 4xx is a refusal (KubeForbidden), anything else unavailability."""
    message = api_message(exc)
    if exc.status and 400 <= exc.status < 500:
        return KubeForbidden(f"{what}: {message}")
    return KubeUnavailable(f"{what}: HTTP {exc.status} {message}")


class KubeApi:
    """PVCs, StorageClasses and pods, as plain data; each call bounded by ``timeout`` seconds.

    ``namespaces``: the installation's configured namespace list. With one, every list and watch of PVCs is
    made namespace by namespace (what namespaced Roles allow); without, across namespaces by label (the
    caller keeps what is in its namespaces). ``page_size``: the ``limit`` of each page of a list.
    """

    def __init__(self, api_client: client.ApiClient, *, timeout: float, instance: str = DEFAULT_INSTANCE,
                 namespaces: Sequence[str] = (), page_size: int = 500) -> None:
        self.instance = instance
        self.namespaces = tuple(namespaces)
        self.page_size = page_size
        self._core = client.CoreV1Api(api_client)
        self._storage = client.StorageV1Api(api_client)
        self._timeout = (min(timeout, 2.0), timeout)

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except ApiException as exc:
            status = exc.status or 0
            if status == 409:
                raise AlreadyExists(api_message(exc)) from exc
            if status in _TRANSIENT:  # throttled or timed out: a retry succeeds, so never a refusal
                after = (exc.headers or {}).get("Retry-After") if hasattr(exc, "headers") else None
                hint = f", retry after {after} s" if after else ""
                raise KubeUnavailable(f"{what}: HTTP {status} {_TRANSIENT[status]} ({api_message(exc)}{hint})") from exc
            refused = {404: NotFound, 410: ListExpired}.get(status, KubeForbidden)
            if 400 <= status < 500:
                raise refused(f"{what}: {api_message(exc)}") from exc
            raise KubeUnavailable(f"{what}: HTTP {exc.status} {api_message(exc)}") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise KubeUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc

    def _json(self, response: Any) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(response.data)
        return data

    def list_storage_classes(self) -> list[StorageClassInfo]:
        with self._errors("listing StorageClasses"):
            resp = self._storage.list_storage_class(_preload_content=False, _request_timeout=self._timeout)
            return [storage_class_info(item) for item in self._json(resp).get("items", [])]

    def read_claim(self, namespace: str, name: str) -> ClaimInfo | None:
        try:
            with self._errors(f"reading PVC {namespace}/{name}"):
                resp = self._core.read_namespaced_persistent_volume_claim(
                    name, namespace, _preload_content=False, _request_timeout=self._timeout)
                return claim_info(self._json(resp))
        except NotFound:
            return None

    def create_claim(self, spec: ClaimSpec) -> ClaimInfo:
        """Create the PVC; raises ``AlreadyExists`` when a PVC of that name exists."""
        with self._errors(f"creating PVC {spec.namespace}/{spec.name}"):
            resp = self._core.create_namespaced_persistent_volume_claim(
                spec.namespace, claim_manifest(spec, instance=self.instance),  # a dict body is accepted
                _preload_content=False,
                _request_timeout=self._timeout)
            return claim_info(self._json(resp))

    def create_shared_claim(self, namespace: str, name: str, *, storage_class: str, size: str) -> ClaimInfo:
        """Create the namespace's shared claim; raises ``AlreadyExists`` when a PVC of that name exists."""
        with self._errors(f"creating the shared PVC {namespace}/{name}"):
            resp = self._core.create_namespaced_persistent_volume_claim(
                namespace, shared_claim_manifest(namespace, name, storage_class=storage_class, size=size,
                                                 instance=self.instance),
                _preload_content=False, _request_timeout=self._timeout)
            return claim_info(self._json(resp))

    def delete_claim(self, namespace: str, name: str, *, uid: str) -> bool:
        """Delete the PVC only if it still has ``uid``; False when it is already gone."""
        try:
            with self._errors(f"deleting PVC {namespace}/{name}"):
                resp = self._core.delete_namespaced_persistent_volume_claim(
                    name, namespace, body={"preconditions": {"uid": uid}}, _preload_content=False,
                    _request_timeout=self._timeout)
                _drain(resp)
                return True
        except AlreadyExists as exc:  # 409: the uid precondition failed, it is another PVC now
            raise UidMismatch(f"PVC {namespace}/{name} is no longer uid {uid}") from exc
        except NotFound:
            return False

    def labelled_namespaces(self) -> list[str]:
        """The names of the namespaces labelled ``leoflow.io/staging-instance: <instance>``."""
        names: list[str] = []
        for _attempt in range(3):
            try:
                names = [str((item.get("metadata") or {}).get("name") or "")
                         for page in self._pages("listing this installation's namespaces", self._core.list_namespace,
                                                 label_selector=instance_selector(self.instance))
                         for item in page.get("items") or []]
                return names
            except ListExpired:
                continue
        raise KubeUnavailable("listing namespaces: the list kept expiring (410 Gone) before it completed")

    def _pages(self, what: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> Iterator[dict[str, Any]]:
        """A LIST a page (``page_size`` items) at a time, each page's JSON parsed on its own; raises
        ``ListExpired`` when a continue token outlives etcd's compaction (the caller starts again)."""
        token: str | None = None
        while True:
            with self._errors(what):
                resp = fn(*args, limit=self.page_size, _continue=token, _preload_content=False,
                          _request_timeout=self._timeout, **kw)
                data = self._json(resp)
            token = (data.get("metadata") or {}).get("continue")
            yield data
            del data  # this page's JSON goes before the next one is read
            if not token:
                return

    def list_managed_claims(self, *, page_size: int = 500) -> Iterator[list[ClaimInfo]]:
        """Every PVC labelled as ours (in the configured namespaces, else across namespaces), a page at a
        time (one consistent list per namespace)."""
        return self.list_managed(claim_info, page_size=page_size)

    def list_managed(self, project: Callable[[dict[str, Any]], T], *, page_size: int = 500,
                     on_version: Callable[[str], None] | None = None) -> Iterator[list[T]]:
        """``list_managed_claims`` with each PVC (as JSON) turned into what ``project`` keeps of it: a caller
        that needs only names and uids holds only those for the whole (consistent) list. ``on_version``
        gets each list's resourceVersion (a WATCH from it sees every change after the list): one list across
        namespaces, or one per configured namespace, in order."""
        for namespace in self.namespaces or (None,):
            yield from self._list_managed_in(namespace, project, page_size=page_size, on_version=on_version)

    def _list_managed_in(self, namespace: str | None, project: Callable[[dict[str, Any]], T], *, page_size: int,
                         on_version: Callable[[str], None] | None) -> Iterator[list[T]]:
        pages: list[list[T]] = []
        where = f" in {namespace}" if namespace else ""
        for _attempt in range(3):
            pages, token = [], None
            try:
                while True:
                    with self._errors(f"listing managed PVCs{where}"):
                        selector = f"{MANAGED_BY}={MANAGED_BY_VALUE},{INSTANCE}={self.instance}"
                        if namespace:
                            resp = self._core.list_namespaced_persistent_volume_claim(
                                namespace, label_selector=selector, limit=page_size, _continue=token,
                                _preload_content=False, _request_timeout=self._timeout)
                        else:
                            resp = self._core.list_persistent_volume_claim_for_all_namespaces(
                                label_selector=selector, limit=page_size, _continue=token,
                                _preload_content=False, _request_timeout=self._timeout)
                        data = self._json(resp)
                    token = (data.get("metadata") or {}).get("continue")
                    if not token and on_version is not None:
                        on_version(str((data.get("metadata") or {}).get("resourceVersion") or ""))
                    pages.append([project(item) for item in data.get("items", [])])
                    del data  # the page's JSON goes now, not after the next page's arrives
                    if not token:
                        yield from pages
                        return
            except ListExpired:
                continue  # the continue token outlived etcd's compaction: start a fresh list
        raise KubeUnavailable(f"listing managed PVCs{where}: the list kept expiring (410 Gone) before it completed")

    def watch_managed_deletions(self, since: str, *, namespace: str | None = None, seconds: int = 60,
                                on_open: Callable[[Any], None] | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        """The DELETED events (and bookmarks) of PVCs of ours after resourceVersion ``since``, as (type,
        object), in ``namespace`` (None: across namespaces), for at most ``seconds`` (the server ends the
        watch then). Other events are skipped without being decoded. Raises ``ListExpired`` when ``since`` is
        too old for the server (410 Gone). ``on_open`` gets the streaming response (closing it from another
        thread ends the watch)."""
        kw: dict[str, Any] = {
            "label_selector": f"{MANAGED_BY}={MANAGED_BY_VALUE},{INSTANCE}={self.instance}", "watch": True,
            "resource_version": since, "allow_watch_bookmarks": True, "timeout_seconds": seconds,
            "_preload_content": False, "_request_timeout": (self._timeout[0], seconds + self._timeout[1])}
        with self._errors("watching managed PVCs"):
            resp: Any = (self._core.list_namespaced_persistent_volume_claim(namespace, **kw) if namespace
                         else self._core.list_persistent_volume_claim_for_all_namespaces(**kw))
        if on_open is not None:
            on_open(resp)
        try:
            rest = b""
            with self._errors("watching managed PVCs"):
                for chunk in resp.stream(1 << 16):
                    *lines, rest = (rest + chunk).split(b"\n")
                    for line in lines:
                        # The apiserver writes {"type":"...","object":...}: only deletions, bookmarks and
                        # errors are decoded (an ADDED or MODIFIED event of 1-2 KB is skipped unread).
                        if not line.startswith((b'{"type":"DELETED"', b'{"type":"BOOKMARK"', b'{"type":"ERROR"')):
                            continue
                        event = json.loads(line)
                        obj = event.get("object") or {}
                        if event.get("type") == "ERROR":
                            message = f"watching managed PVCs: {obj.get('message') or obj}"
                            raise (ListExpired if obj.get("code") == 410 else KubeUnavailable)(message)
                        yield str(event.get("type")), obj
        finally:
            resp.close()
            resp.release_conn()

    def events_about(self, namespace: str, uid: str) -> list[EventSeen]:
        """The Events about the object ``uid`` in ``namespace`` (e.g. a claim's ExternalProvisioning or
        ProvisioningFailed), oldest first."""
        with self._errors(f"listing events in {namespace}"):
            resp = self._core.list_namespaced_event(namespace, field_selector=f"involvedObject.uid={uid}",
                                                    _preload_content=False, _request_timeout=self._timeout)
            seen = [event_seen(item) for item in self._json(resp).get("items", [])]
        epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
        return sorted(seen, key=lambda e: e.at or epoch)

    def dry_run_pod(self, namespace: str, pod: dict[str, Any]) -> dict[str, Any]:
        """Create ``pod`` with server-side dry run (admission runs, nothing is stored)."""
        with self._errors(f"dry-run creating a pod in {namespace}"):
            resp = self._core.create_namespaced_pod(namespace, pod, dry_run="All",
                                                    _preload_content=False, _request_timeout=self._timeout)
            return self._json(resp)

    def pods_using_claim(self, namespace: str, name: str) -> list[PodUse]:
        """The pods in ``namespace`` whose volumes reference the claim, by name."""
        return self.pods_using_claims(namespace, [name]).get(name, [])

    def pods_using_claims(self, namespace: str, names: Iterable[str]) -> dict[str, list[PodUse]]:
        """For each of the claims ``names`` in ``namespace``, the pods whose volumes reference it (sorted by
        name; claims no pod uses are absent): one paged LIST of the namespace's pods for all of them, each
        page parsed on its own and reduced to the holders' names, uids and phases (the memory is one page's,
        not the namespace's: 20,000 finished pods are ~100 MB of JSON)."""
        wanted = set(names)
        for _attempt in range(3):
            users: dict[str, list[PodUse]] = {}
            try:
                for page in self._pages(f"listing pods in {namespace}", self._core.list_namespaced_pod, namespace):
                    for claim, pods in claim_users(page.get("items") or [], wanted).items():
                        users.setdefault(claim, []).extend(pods)
                    del page
            except ListExpired:
                continue  # the continue token outlived etcd's compaction: start a fresh list
            return {claim: sorted(pods_, key=lambda p: p.name) for claim, pods_ in users.items()}
        raise KubeUnavailable(f"listing pods in {namespace}: the list kept expiring (410 Gone) before it completed")

    def delete_pod(self, namespace: str, name: str, *, uid: str) -> bool:
        """Delete a pod with a uid precondition; False when it is already gone or is another pod now."""
        try:
            with self._errors(f"deleting pod {namespace}/{name}"):
                _drain(self._core.delete_namespaced_pod(name, namespace, body={"preconditions": {"uid": uid}},
                                                        _preload_content=False, _request_timeout=self._timeout))
        except NotFound:
            return False
        except AlreadyExists:  # 409: the uid precondition failed, a new pod took the name; never touch it
            return False
        return True


class UidMismatch(Exception):
    """A delete's uid precondition failed: the name now belongs to a different PVC."""
