"""The GC's pod reads are paged (issue 26, part 3): holders are found across page boundaries, and the
finished ones among them are deleted, with a page of 2 pods against the real apiserver."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from kubernetes import client

from shared.kube import KubeApi
from shared.objects import PodUse
from shared.volumes import DeleteReason, VolumeState
from tests.e2e.gc_support import T0, Bench
from tests.support.orchestrator import set_run

pytestmark = pytest.mark.e2e


def _pod(core: client.CoreV1Api, namespace: str, name: str, claims: tuple[str, ...], phase: str,
         *, scheduled: bool = False) -> str:
    """A pod naming ``claims`` (never run: no node), its status phase set through the status subresource.
    ``scheduled`` presets ``spec.nodeName``, so pvc-protection counts it as holding its claims."""
    spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}],
                            "volumes": [{"name": f"v{i}", "persistentVolumeClaim": {"claimName": c}}
                                        for i, c in enumerate(claims)]}
    if scheduled:
        spec["nodeName"] = "node-1"
    pod = core.create_namespaced_pod(namespace, {"metadata": {"name": name}, "spec": spec})
    if phase != "Pending":
        core.patch_namespaced_pod_status(name, namespace, {"status": {"phase": phase}})
    return str(pod.metadata.uid)


def _counting_pod_lists(kube: KubeApi, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Record the arguments of each pod LIST the adapter sends (the calls still go to the apiserver)."""
    calls: list[dict[str, Any]] = []
    real = kube._core.list_namespaced_pod

    def counted(*args: Any, **kw: Any) -> Any:
        calls.append(kw)
        return real(*args, **kw)

    monkeypatch.setattr(kube._core, "list_namespaced_pod", counted)
    return calls


def test_holders_are_found_across_page_boundaries(bench: Bench, core: client.CoreV1Api,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    kube, ns = bench.kube, bench.namespace
    kube.page_size = 2
    layout = {"p1": ("c1",), "p2": (), "p3": ("c2",), "p4": (), "p5": ("c1", "c2"), "p6": (), "p7": ("c1",)}
    phases = {"p1": "Succeeded", "p3": "Failed", "p5": "Running", "p7": "Pending"}
    uids = {name: _pod(core, ns, name, claims, phases.get(name, "Succeeded")) for name, claims in layout.items()}
    calls = _counting_pod_lists(kube, monkeypatch)
    users = kube.pods_using_claims(ns, ["c1", "c2", "c3"])
    assert users == {
        "c1": [PodUse("p1", uids["p1"], "Succeeded"), PodUse("p5", uids["p5"], "Running"),
               PodUse("p7", uids["p7"], "Pending")],
        "c2": [PodUse("p3", uids["p3"], "Failed"), PodUse("p5", uids["p5"], "Running")],
    }
    assert len(calls) == 4 and all(c["limit"] == 2 for c in calls)  # 7 pods, 2 a page
    assert [bool(c["_continue"]) for c in calls] == [False, True, True, True]


def test_finished_holders_on_later_pages_are_deleted_and_the_claim_goes(
        bench: Bench, core: client.CoreV1Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "leoflow_staging.gc")
    bench.kube.page_size = 2
    pvc = bench.admit("etl", "paged")
    for i in range(5):  # finished pods of other runs fill the first pages
        _pod(core, bench.namespace, f"a-other-{i}", (), "Succeeded")
    for name in ("z-done-1", "z-done-2"):  # the claim's holders come last, on the later pages
        _pod(core, bench.namespace, name, (pvc,), "Succeeded", scheduled=True)
    set_run(bench.engine, "etl", "paged", "success", T0)
    assert bench.sweep(settle=1.0) == 0
    deleted = sorted(fields["pod"] for r in caplog.records
                     if isinstance(fields := getattr(r, "fields", None), dict)
                     and fields.get("event") == "finished_pod_deleted")
    assert deleted == ["z-done-1", "z-done-2"]
    bench.sweep(settle=5.0)  # the claim went once its holders did
    assert [(r.state, r.delete_reason) for r in bench.rows()] == [(VolumeState.DELETED, DeleteReason.RUN_SUCCEEDED)]
