"""The GC's LIST of managed PVCs at 100k objects, decode side only: one 500-item page as the apiserver sends
it, decoded 200 times (100k PVCs) three ways: the client's typed models (``V1PersistentVolumeClaimList`` via
``ApiClient.deserialize``, what ``_preload_content=True`` does), ``json.loads`` + ``claim_info`` (what
``KubeApi.list_managed_claims`` does), and the same with orjson when it is installed.

``python -m bench.list_decode_bench`` prints seconds and peak traced memory for each; figures only.
"""

from __future__ import annotations

import json
import sys
import time
import tracemalloc
import uuid
from collections.abc import Callable
from typing import Any

from kubernetes import client

from shared.objects import ClaimSpec, claim_info, claim_manifest

PAGE, PAGES = 500, 200


def page_bytes() -> bytes:
    items = []
    for i in range(PAGE):
        run = f"scheduled__2026-11-{i % 28 + 1:02d}T00:00:00+00:00"
        name = f"leoflow-staging-dag-{i}-{uuid.uuid4().hex[:10]}"
        pvc = claim_manifest(ClaimSpec(namespace=f"team-{i % 40}", name=name,
                                       dag_id=f"analytics/dag_{i}", run_id=run, storage_class="nfs", size="10Gi"))
        pvc["metadata"].update(uid=str(uuid.uuid4()), resourceVersion=str(100000 + i),
                               creationTimestamp="2026-11-28T10:00:00Z", finalizers=["kubernetes.io/pvc-protection"],
                               managedFields=[{"manager": "leoflow-staging", "operation": "Update", "apiVersion": "v1",
                                               "time": "2026-11-28T10:00:00Z", "fieldsType": "FieldsV1",
                                               "fieldsV1": {"f:metadata": {"f:labels": {".": {}}}}}])
        pvc["status"] = {"phase": "Bound", "accessModes": ["ReadWriteMany"], "capacity": {"storage": "10Gi"}}
        pvc["spec"]["volumeName"] = f"pvc-{uuid.uuid4()}"
        items.append(pvc)
    return json.dumps({"kind": "PersistentVolumeClaimList", "apiVersion": "v1",
                       "metadata": {"resourceVersion": "200000", "continue": "x"}, "items": items}).encode()


def measure(name: str, decode: Callable[[bytes], list[Any]], body: bytes) -> dict[str, float]:
    tracemalloc.start()
    started = time.perf_counter()
    kept: list[Any] = []
    for _ in range(PAGES):
        kept += decode(body)  # the GC keeps the listing (plain ClaimInfo) for its stray/healing checks
    wall = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(kept) == PAGE * PAGES
    return {"seconds": round(wall, 2), "peak_mib": round(peak / 2**20, 1)}


def main() -> int:
    body = page_bytes()
    api = client.ApiClient()

    def typed(data: bytes) -> list[Any]:
        pvcs = api.deserialize(data.decode(), "V1PersistentVolumeClaimList", "application/json")
        return [claim_info(api.sanitize_for_serialization(p)) for p in pvcs.items]

    def raw(data: bytes) -> list[Any]:
        return [claim_info(item) for item in json.loads(data)["items"]]

    ways: list[tuple[str, Callable[[bytes], list[Any]]]] = [("typed models", typed), ("raw json", raw)]
    try:
        import orjson  # noqa: PLC0415

        ways.append(("raw orjson", lambda data: [claim_info(i) for i in orjson.loads(data)["items"]]))
    except ImportError:
        pass
    out = {"page_bytes": len(body), "pvcs": PAGE * PAGES}
    for name, fn in ways:
        out[name] = measure(name, fn, body)  # type: ignore[assignment]
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
