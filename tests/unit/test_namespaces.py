"""Which namespaces an installation serves, and what the GC keeps of a page of pods (pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shared.namespaces import Served, instance_selector, served_namespaces
from shared.objects import PodUse, claim_users, pod_use

names = st.sets(st.sampled_from(["a", "b", "c", "d", "e"]))


def test_without_a_list_every_labelled_namespace_is_served() -> None:
    assert served_namespaces(["a", "b"], ()) == Served(namespaces=frozenset({"a", "b"}))
    assert instance_selector("prod") == "leoflow.io/staging-instance=prod"


def test_a_listed_namespace_is_served_only_when_labelled_for_the_instance() -> None:
    served = served_namespaces(["a", "b"], ["b", "c"])
    assert served.namespaces == {"b"} and "b" in served and "a" not in served
    assert served.unlabelled == ("c",)  # reported, never acted in


@given(labelled=names, listed=names)
def test_served_is_always_labelled_and_within_the_list(labelled: set[str], listed: set[str]) -> None:
    served = served_namespaces(labelled, sorted(listed))
    assert served.namespaces <= labelled
    if listed:
        assert served.namespaces <= listed and set(served.unlabelled) == listed - labelled
    else:
        assert served.namespaces == labelled and served.unlabelled == ()


def _pod(name: str, phase: str | None, *claims: str, extra: int = 0) -> dict[str, object]:
    volumes: list[dict[str, object]] = [{"name": f"v{i}", "persistentVolumeClaim": {"claimName": c}}
                                        for i, c in enumerate(claims)]
    volumes += [{"name": f"cm{i}", "configMap": {"name": "x"}} for i in range(extra)]
    return {"metadata": {"name": name, "uid": f"uid-{name}", "labels": {"big": "x" * 100}},
            "spec": {"volumes": volumes, "containers": [{"name": "c", "env": [{"name": "SECRET", "value": "s"}]}]},
            "status": {"phase": phase} if phase else {}}


def test_a_pod_is_reduced_to_name_uid_phase_and_claim_names() -> None:
    use, claims = pod_use(_pod("p", "Succeeded", "c1", "c2", extra=2))
    assert use == PodUse(name="p", uid="uid-p", phase="Succeeded") and claims == {"c1", "c2"}
    assert pod_use({"metadata": {"name": "q"}})[0].phase == "Unknown"  # no status yet


def test_a_page_gives_the_holders_of_the_wanted_claims_only() -> None:
    page = [_pod("p1", "Succeeded", "c1"), _pod("p2", "Running", "c1", "c2"), _pod("p3", "Failed", "other"),
            _pod("p4", None)]
    users = claim_users(page, {"c1", "c2", "unused"})
    assert users == {"c1": [PodUse("p1", "uid-p1", "Succeeded"), PodUse("p2", "uid-p2", "Running")],
                     "c2": [PodUse("p2", "uid-p2", "Running")]}
