"""Two runs whose PVC names collide never share a volume (issue 16.3): the warm path checks whose row it is."""

from __future__ import annotations

import datetime as dt

import pytest

from shared.db import volumes_repo
from shared.naming import pvc_name
from shared.objects import ClaimSpec
from shared.volumes import NewVolume
from tests.e2e.gc_support import Bench
from webhook.verdicts import Denied


def test_a_live_row_of_another_run_under_the_pods_pvc_name_is_refused(bench: Bench) -> None:
    # A collision, as a hostile DAG author could search for offline: run (other, x) owns the name that
    # (etl, b) computes. Its PVC and live row exist, with its own identity.
    name = pvc_name("etl", "b")
    claim = bench.kube.create_claim(ClaimSpec(namespace=bench.namespace, name=name, dag_id="other", run_id="x",
                                              storage_class="nfs", size="1Gi"))
    with bench.engine.begin() as conn:
        volumes_repo.insert_active(conn, NewVolume(namespace=bench.namespace, pvc_name=name, pvc_uid=claim.uid,
                                                   dag_id="other", run_id="x", storage_class="nfs", size="1Gi"),
                                   now=dt.datetime.now(dt.UTC))
    with pytest.raises(Denied) as refused:
        bench.admit("etl", "b")
    verdict = refused.value.verdict
    assert verdict.reason == "pvc_not_ours"
    assert "recorded for another run (dag_id 'other', run_id 'x')" in verdict.message
