"""A burst of one run's pods on the warm path (real apiserver, real PostgreSQL): concurrent admissions of one run
all get its claim, and a reclaim committed before a pod arrives is never missed."""

from __future__ import annotations

import concurrent.futures

import pytest
import sqlalchemy as sa

from tests.e2e.gc_support import Bench
from tests.support.pods import admission_review, task_pod
from webhook.handler import AdmissionHandler, Outcome
from webhook.intent import SizePolicy
from webhook.review import parse_review

pytestmark = pytest.mark.e2e


def _burst(handler: AdmissionHandler, namespace: str, run: str, n: int) -> list[Outcome]:
    reviews = [parse_review(admission_review(task_pod("fan", run), namespace, uid=f"{run}-{i}")) for i in range(n)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(handler.handle, reviews))


def test_a_burst_shares_the_run_and_a_committed_reclaim_denies_every_later_pod(bench: Bench) -> None:
    provisioner = bench.provisioner()
    handler = AdmissionHandler(provisioner=provisioner, sizes=SizePolicy("1Gi", "10Gi"), budget=30)
    claim = bench.admit("fan", "out")  # the cold path: claim and row exist
    warm = _burst(handler, bench.namespace, "out", 64)
    assert {(o.verdict.allowed, o.verdict.reason) for o in warm} == {(True, "patched")}
    assert {o.ensured.pvc_name for o in warm if o.ensured} == {claim}

    with bench.engine.begin() as conn:  # the GC's first step of a reclaim, committed
        conn.execute(sa.text("UPDATE staging_volumes SET state = 'reclaiming', delete_reason = 'run_succeeded', "
                             "reclaim_started_at = now() WHERE pvc_name = :p"), {"p": claim})
    later = _burst(handler, bench.namespace, "out", 64)
    assert {(o.verdict.allowed, o.verdict.reason, o.verdict.retriable) for o in later} == {
        (False, "reclaiming", True)}
