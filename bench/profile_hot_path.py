"""Profile the warm path in-process (pyinstrument): the Flask app from the real factory, the real
database and apiserver, 2000 warm admissions through the WSGI test client.

The app runs in a child process (``python -m bench.profile_hot_path DATABASE_URL KUBECONFIG REQUESTS``, one JSON
line out): its watch-fed caches and database pool end with the child, instead of watching the apiserver from the
benchmark's process during the benchmarks that follow (the GC's 100k claims)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.env import NAMESPACE, BenchEnv
from bench.realistic_pod import realistic_review

OUT = Path(__file__).resolve().parent / "profile.txt"
REPO = OUT.parents[1]


def profile(database_url: str, kubeconfig: str, requests: int) -> dict[str, float]:
    from pyinstrument import Profiler  # noqa: PLC0415 - in the child only

    from shared.settings import Settings  # noqa: PLC0415
    from webhook.factory import build_app  # noqa: PLC0415

    app = build_app(Settings(database_url=database_url, kubeconfig=kubeconfig))
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


def run(env: BenchEnv, *, requests: int = 2000) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "bench.profile_hot_path", env.db_url,
                           str(env.plane.kubeconfig_path), str(requests)], cwd=REPO, capture_output=True,
                          text=True, check=False, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"the profile's child failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


if __name__ == "__main__":
    print(json.dumps(profile(sys.argv[1], sys.argv[2], int(sys.argv[3]))))
    sys.exit(0)
