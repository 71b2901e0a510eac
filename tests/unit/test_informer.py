"""The informer's pure parts: folding events into the store, freshness, relist on 410, backoff."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.kube.informer import Gone, Informer, Page, Store, backoff_delays


def _obj(name: str, rv: int, ns: str = "ns", uid: str = "u") -> dict[str, Any]:
    return {"metadata": {"namespace": ns, "name": name, "uid": uid, "resourceVersion": str(rv)}}


def _uid(o: dict[str, Any]) -> str:
    return str(o["metadata"]["uid"])


def test_events_fold_and_deleted_objects_leave() -> None:
    store: Store[str] = Store(_uid)
    store.replace(*store.build(iter([Page([_obj("a", 1)], "5"), Page([_obj("b", 2)], "5")])))
    assert store.items == {("ns", "a"): "u", ("ns", "b"): "u"} and store.resource_version == "5"
    store.apply({"type": "MODIFIED", "object": _obj("a", 6, uid="v")})
    store.apply({"type": "DELETED", "object": _obj("b", 7)})
    store.apply({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}})
    assert store.items == {("ns", "a"): "v"} and store.resource_version == "9"
    with pytest.raises(Gone):
        store.apply({"type": "ERROR", "object": {"code": 410, "message": "too old"}})
    with pytest.raises(ValueError, match="unknown"):
        store.apply({"type": "WHAT", "object": {}})


@given(st.lists(st.tuples(st.sampled_from(["ADDED", "MODIFIED", "DELETED"]), st.integers(0, 20)), max_size=200))
def test_the_store_holds_exactly_the_live_objects(events: list[tuple[str, int]]) -> None:
    store: Store[str] = Store(_uid)
    live: set[str] = set()
    for rv, (kind, n) in enumerate(events, start=1):
        store.apply({"type": kind, "object": _obj(f"p{n}", rv)})
        (live.discard if kind == "DELETED" else live.add)(f"p{n}")
    assert {name for _, name in store.items} == live  # bounded by the live set: deletes are removed


def test_backoff_grows_to_its_cap_with_jitter() -> None:
    delays = backoff_delays(base=1, cap=8)
    got = [next(delays) for _ in range(6)]
    assert all(0.5 * b <= d <= b for d, b in zip(got, [1, 2, 4, 8, 8, 8], strict=True))


class _Script:
    """list/watch functions that follow a script, then block until released (like a quiet watch)."""

    def __init__(self, watches: list[Any]) -> None:
        self.lists = 0
        self.watched_from: list[str] = []
        self._watches = watches
        self.release = threading.Event()
        self.done = threading.Event()

    def list_pages(self) -> Iterator[Page]:
        self.lists += 1
        yield Page([_obj("a", 1, uid=f"list{self.lists}")], str(100 * self.lists))

    def watch(self, rv: str) -> Iterator[dict[str, Any]]:
        self.watched_from.append(rv)
        if not self._watches:
            self.done.set()
            self.release.wait(5)
            return iter(())
        step = self._watches.pop(0)
        if isinstance(step, Exception):
            raise step
        return iter(step)


def test_informer_relists_on_gone_and_resumes_from_the_version_seen() -> None:
    script = _Script([
        [{"type": "MODIFIED", "object": _obj("a", 101, uid="w1")}],  # the server ends the watch: resume
        [{"type": "ERROR", "object": {"code": 410, "message": "too old"}}],  # compacted: relist
    ])
    inf: Informer[str] = Informer("t", list_fn=script.list_pages, watch_fn=script.watch, convert=_uid,
                                  stale_after=1)
    inf.start()
    assert script.done.wait(5)
    assert script.lists == 2 and script.watched_from == ["100", "101", "200"]
    assert inf.get("ns", "a") == (True, "list2") and inf.problem() is None
    script.release.set()
    inf.stop()


def test_a_broken_watch_is_trusted_only_within_the_bound() -> None:
    now = [0.0]
    script = _Script([ConnectionError("reset")])
    inf: Informer[str] = Informer("t", list_fn=script.list_pages, watch_fn=script.watch, convert=_uid,
                                  stale_after=2, clock=lambda: now[0])
    assert inf.get("ns", "a") == (False, None) and inf.snapshot() is None  # never listed: not fresh
    assert inf.problem() == "t cache not synced yet"
    inf.start()
    assert script.done.wait(5)  # listed, watch failed once (broken at t=0), reopened after the backoff
    assert inf.fresh()
    script.release.set()
    inf.stop()


def test_freshness_bound_without_the_thread() -> None:
    now = [10.0]
    inf: Informer[str] = Informer("t", list_fn=lambda: iter(()), watch_fn=lambda rv: iter(()), convert=_uid,
                                  stale_after=2, clock=lambda: now[0])
    inf._synced = True
    assert inf.fresh()
    inf._broken(ConnectionError("reset"))
    now[0] = 11.5
    assert inf.fresh()
    now[0] = 12.5
    assert not inf.fresh() and inf.snapshot() is None and inf.get("ns", "a") == (False, None)
    assert "watch broken" in str(inf.problem()) and "reset" in str(inf.problem())


def test_after_a_gone_the_cache_is_not_fresh_until_relisted() -> None:
    inf: Informer[str] = Informer("t", list_fn=lambda: iter(()), watch_fn=lambda rv: iter(()), convert=_uid,
                                  stale_after=60)
    inf._synced, inf._missed = True, True
    assert not inf.fresh() and inf.problem() == "t cache relisting after 410 Gone"
    inf._missed = False
    assert inf.fresh()
