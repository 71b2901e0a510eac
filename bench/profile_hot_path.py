"""Profile the warm path in-process (pyinstrument): the Flask app from the real factory, the real
database and apiserver, 2000 warm admissions through the WSGI test client."""

from __future__ import annotations

import json
from pathlib import Path

from pyinstrument import Profiler

from bench.env import NAMESPACE, BenchEnv
from bench.realistic_pod import realistic_review
from shared.settings import Settings
from webhook.factory import build_app

OUT = Path(__file__).resolve().parent / "profile.txt"


def run(env: BenchEnv, *, requests: int = 2000) -> dict[str, float]:
    settings = Settings(database_url=env.db_url, kubeconfig=str(env.plane.kubeconfig_path))
    app = build_app(settings)
    web = app.test_client()
    body = realistic_review("profile_dag", "manual__profile", NAMESPACE)  # the pod of the wrk benchmark
    assert web.post("/mutate", data=body, content_type="application/json").status_code == 200  # warm it
    profiler = Profiler(interval=0.0002)
    profiler.start()
    for _ in range(requests):
        resp = web.post("/mutate", data=body, content_type="application/json")
        assert json.loads(resp.data)["response"]["allowed"]
    session = profiler.stop()
    OUT.write_text(profiler.output_text(unicode=False, color=False, show_all=False))
    return {"requests": requests, "in_process_ms_per_request": round(session.duration * 1000 / requests, 3)}
