"""4. GC sweeps over 10k and 100k live rows with 10 % reclaimable.

Every row has its PVC in the real apiserver (as in a real cluster, so nothing is "healed");
the reclaimable 10 % are deleted for real. By default the sweep is the program the CronJob runs
(``leoflow-staging gc``, a child process with the default settings): its wall from start to exit and its
peak resident memory (the kernel's, interpreter and libraries included). ``in_process=True`` (``--profile``
implies it) runs the sweep inside this process instead, under tracemalloc (which slows Python ~2x), counting
its SQL statements and optionally splitting its time. Both report the database-side share (the batched
plan: reading rows and run states).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime as dt
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from kubernetes import client, config

from bench.cpu import tree_cpu_seconds
from bench.env import NAMESPACE, RWX_CLASS, BenchEnv, create_database
from bench.gc_profile import Split
from devenv.assets import ensure_assets
from devenv.controlplane import ControlPlane
from devenv.postgres import Postgres
from gc_job.plan import GcPolicy, plan_batch
from gc_job.sweep import SweepConfig, Sweeper
from shared import labels
from shared.db import runs_repo, volumes_repo
from shared.kube import KubeApi, make_api_client
from shared.naming import pvc_name
from shared.objects import ClaimSpec
from shared.settings import RunsTable

RUNS = RunsTable()
POLICY = GcPolicy(failed_ttl=dt.timedelta(hours=24), success_states=("success",), failed_states=("failed",),
                  adopt_min_age=dt.timedelta(0))


@dataclass
class GcEnv:
    """What the GC benchmark needs: the control plane and PostgreSQL (no webhook)."""

    plane: ControlPlane
    pg: Postgres


@contextlib.contextmanager
def gc_env() -> Iterator[GcEnv]:
    """A control plane (etcd, kube-apiserver, kube-controller-manager) and PostgreSQL of its own."""
    workdir = Path(tempfile.mkdtemp(prefix="leoflow-gc-bench-"))
    plane = ControlPlane(assets=ensure_assets(), workdir=workdir / "controlplane")
    pg = Postgres()
    try:
        plane.start()
        pg.start()
        api = config.new_client_from_config(config_file=str(plane.kubeconfig_path))
        client.CoreV1Api(api).create_namespace({"metadata": {"name": NAMESPACE, "labels": {
            labels.INSTANCE: labels.DEFAULT_INSTANCE}}})
        client.StorageV1Api(api).create_storage_class({"metadata": {"name": RWX_CLASS},
                                                       "provisioner": "nfs.csi.k8s.io"})
        yield GcEnv(plane=plane, pg=pg)
    finally:
        plane.stop()
        pg.stop()
        pg.cleanup()


def _seed(env: BenchEnv | GcEnv, engine: sa.Engine, kube: KubeApi, rows: int, prefix: str) -> None:
    """``rows`` live rows and PVCs; every tenth run succeeded, the rest are running."""
    now = dt.datetime.now(dt.UTC)
    specs = [ClaimSpec(namespace=prefix, name=pvc_name(prefix, f"r{i}"), dag_id=prefix, run_id=f"r{i}",
                       storage_class=RWX_CLASS, size="1Gi") for i in range(rows)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        claims = list(pool.map(kube.create_claim, specs, chunksize=64))
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO staging_volumes (namespace, pvc_name, pvc_uid, dag_id, run_id, storage_class, size, state, "
            "created_at) VALUES (:ns, :name, :uid, :dag, :run, :sc, '1Gi', 'active', :now)"),
            [{"ns": c.namespace, "name": c.name, "uid": c.uid, "dag": prefix, "run": s.run_id, "sc": RWX_CLASS,
              "now": now} for c, s in zip(claims, specs, strict=True)])
        conn.execute(sa.text("INSERT INTO dag_run (dag_id, run_id, state, end_date) VALUES (:d, :r, :s, :e)"),
                     [{"d": prefix, "r": f"r{i}", "s": "success" if i % 10 == 0 else "running",
                       "e": now if i % 10 == 0 else None} for i in range(rows)])


def _reset_peak_rss() -> bool:
    """Reset the kernel's resident-set high-water mark of this process (Linux: clear_refs 5)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _peak_rss_mb() -> float | None:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


class _Counter:
    def __init__(self, engine: sa.Engine) -> None:
        self.count = 0
        sa.event.listen(engine, "before_cursor_execute", self._on)

    def _on(self, *args: Any) -> None:
        self.count += 1


def _plan_only(engine: sa.Engine, batch_size: int) -> tuple[float, int, int]:
    """The database side of a sweep: batched rows + run states -> decisions (no Kubernetes)."""
    counter = _Counter(engine)
    started = time.perf_counter()
    now = dt.datetime.now(dt.UTC)
    reclaim = 0
    with engine.connect() as conn:
        for batch in volumes_repo.iter_live(conn, batch_size=batch_size):
            runs = runs_repo.run_states(conn, RUNS, (v.run for v in batch))
            reclaim += sum(1 for d in plan_batch(batch, runs, None, now=now, policy=POLICY) if d.reason)
    return time.perf_counter() - started, counter.count, reclaim


def run(env: BenchEnv | GcEnv, *, sizes: tuple[int, ...] = (10_000, 100_000), batch_size: int = 500,
        profile: bool = False, parallelism: int = 8, in_process: bool = False,
        settings: dict[str, str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for rows in sizes:
        # Its own installation label: the server benchmark's PVCs (another database) stay apart.
        kube = KubeApi(make_api_client(str(env.plane.kubeconfig_path), pool_size=max(16, 2 * parallelism)),
                       timeout=30,
                       instance=f"gc{rows}")
        engine = sa.create_engine(create_database(env.pg, f"gc{rows}"), pool_size=4)
        seed_started = time.perf_counter()
        # ... and a namespace of its own, labelled for it (an installation acts only in its namespaces).
        client.CoreV1Api(config.new_client_from_config(config_file=str(env.plane.kubeconfig_path))).create_namespace(
            {"metadata": {"name": f"gc{rows}", "labels": {labels.INSTANCE: f"gc{rows}"}}})
        _seed(env, engine, kube, rows, f"gc{rows}")
        seed_s = time.perf_counter() - seed_started
        db_s, db_statements, planned = _plan_only(engine, batch_size)
        figures: dict[str, Any] = {"rows": rows, "reclaimable": planned, "db_side_plan_s": round(db_s, 2),
                                   "db_side_sql_statements": db_statements, "seed_s": round(seed_s, 1),
                                   "parallelism": parallelism}
        if in_process or profile:
            figures.update(_sweep_in_process(engine, kube, batch_size=batch_size, parallelism=parallelism,
                                             profile=profile))
        else:
            figures.update(_sweep_as_program(env, rows, batch_size=batch_size, parallelism=parallelism,
                                             settings=settings))
        with engine.connect() as conn:
            figures["reclaimed"] = conn.execute(sa.text(
                "SELECT count(*) FROM staging_volumes WHERE state = 'deleted'")).scalar()
        out[str(rows)] = figures
        engine.dispose()
        if rows == sizes[-1]:
            break
        # Leave the API lean for the next size: the namespace's PVCs go with their rows.
        claims = [c for page in kube.list_managed_claims() for c in page]
        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda c, k=kube: k.delete_claim(c.namespace, c.name, uid=c.uid), claims, chunksize=64))
    return out


def _sweep_as_program(env: BenchEnv | GcEnv, rows: int, *, batch_size: int, parallelism: int,
                      settings: dict[str, str] | None = None) -> dict[str, Any]:
    """``leoflow-staging gc`` as the CronJob runs it (default settings but the benchmark's instance, batch
    size and parallelism; runs may be reclaimed at once): wall from start to exit, the child's peak RSS."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LEOFLOW_STAGING_")}
    environ.update({
        "LEOFLOW_STAGING_DATABASE_URL": env.pg.url(f"gc{rows}"), "LEOFLOW_STAGING_KUBECONFIG": str(
            env.plane.kubeconfig_path), "LEOFLOW_STAGING_INSTANCE": f"gc{rows}",
        "LEOFLOW_STAGING_GC_BATCH_SIZE": str(batch_size), "LEOFLOW_STAGING_GC_PARALLELISM": str(parallelism),
        "LEOFLOW_STAGING_GC_SETTLE_SECONDS": "30", "LEOFLOW_STAGING_ADOPT_MIN_AGE": "0s",
        **{f"LEOFLOW_STAGING_{k}": v for k, v in (settings or {}).items()}})
    plane = [p.pid for p in env.plane.processes]  # etcd, kube-apiserver, kube-controller-manager
    pg = [env.pg.process.pid] if env.pg.process else []
    before = tree_cpu_seconds(plane), tree_cpu_seconds(pg)
    with tempfile.NamedTemporaryFile(prefix=f"leoflow-gc{rows}-", suffix=".log", delete=False) as log:
        started = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-m", "leoflow_staging", "gc"], env=environ,
                                 stdout=log, stderr=subprocess.STDOUT)
        rss: list[tuple[float, float, float]] = []  # (seconds since start, RSS, peak RSS in MiB)
        sampler = threading.Thread(target=_sample_rss, args=(child.pid, started, rss), daemon=True)
        sampler.start()
        _, status, usage = os.wait4(child.pid, 0)
        sampler.join()
        wall = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
    plane_cpu, pg_cpu = tree_cpu_seconds(plane) - before[0], tree_cpu_seconds(pg) - before[1]
    if child.returncode != 0:
        tail = Path(log.name).read_text(errors="replace").splitlines()[-3:]
        print(f"bench: the GC program exited {child.returncode} (whole log: {log.name}):", *tail, sep="\n  ",
              file=sys.stderr)
    else:
        Path(log.name).unlink()
    return {"exit_code": child.returncode, "mode": "program", "sweep_wall_s": round(wall, 2),
            # the program's own high-water mark, last seen at most 0.25 s before it exited
            "sweep_peak_rss_mb": max((hwm for _, _, hwm in rss), default=None), "sweep_cpu_s": round(
                usage.ru_utime + usage.ru_stime, 1),
            # what the sweep cost the others on the same cores (the webhook's benchmark server is idle then)
            "control_plane_cpu_s": round(plane_cpu, 1), "postgres_cpu_s": round(pg_cpu, 1),
            "rss_mb_every_10pct_of_wall": [max((m for t, m, _ in rss if t <= wall * k / 10), default=0.0)
                                           for k in range(1, 11)]}


def _sample_rss(pid: int, started: float, out: list[tuple[float, float, float]]) -> None:
    """The child's resident set and its high-water mark (MiB) every 0.25 s until it exits. (The kernel's
    ``ru_maxrss`` of a child is no use here: it counts the pages of the forking parent before the exec.)"""
    status = Path(f"/proc/{pid}/status")
    while True:
        try:
            mem = {k: int(v.split()[0]) / 1024 for k, v in (x.split(":", 1) for x in status.read_text().splitlines())
                   if k in ("VmRSS", "VmHWM")}
        except OSError:  # gone
            return
        if len(mem) < 2:  # a zombie has no memory: done
            return
        out.append((time.perf_counter() - started, round(mem["VmRSS"], 1), round(mem["VmHWM"], 1)))
        time.sleep(0.25)


def _sweep_in_process(engine: sa.Engine, kube: KubeApi, *, batch_size: int, parallelism: int,
                      profile: bool) -> dict[str, Any]:
    """The sweep in this process, under tracemalloc, its SQL statements counted (and split with
    ``profile``)."""
    counter = _Counter(engine)
    sweeper = Sweeper(engine=engine, kube=kube, out=io.StringIO(),
                      config=SweepConfig(runs=RUNS, policy=POLICY, batch_size=batch_size, settle_seconds=30,
                                         parallelism=parallelism))
    split = Split() if profile else None
    if split is not None:
        split.install(engine)
    rss_reset = _reset_peak_rss()
    tracemalloc.start()
    started = time.perf_counter()
    code = sweeper.run()
    wall = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    if split is not None:
        split.uninstall()
    figures: dict[str, Any] = {
        "exit_code": code, "mode": "in-process", "sweep_wall_s": round(wall, 2),
        "sweep_sql_statements": counter.count, "sweep_peak_mb": round(peak / 2**20, 1),
        # this process's resident peak during the sweep: includes the heap the seeding left, an upper bound
        "sweep_peak_rss_mb": _peak_rss_mb() if rss_reset else None,
    }
    if split is not None:
        figures["split"] = split.as_dict()
    return figures


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.gc_bench [SIZE ...] [--profile]``: the GC sweep alone, on its own control plane
    and PostgreSQL (as ``make bench`` runs it, without the webhook and the other benchmarks)."""
    parser = argparse.ArgumentParser(prog="python -m bench.gc_bench")
    parser.add_argument("sizes", nargs="*", type=int, default=[10_000])
    parser.add_argument("--profile", action="store_true", help="split the sweep's time by call kind")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--parallelism", type=int, default=8, help="LEOFLOW_STAGING_GC_PARALLELISM")
    parser.add_argument("--in-process", action="store_true",
                        help="sweep in this process under tracemalloc, counting SQL statements (--profile implies it)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for the GC program (LEOFLOW_STAGING_<NAME>), e.g. --set EVENTS=false")
    args = parser.parse_args(argv)
    with gc_env() as env:
        print(f"bench: GC sweeps of {args.sizes} rows ...", flush=True)
        results = run(env, sizes=tuple(args.sizes), batch_size=args.batch_size, profile=args.profile,
                      parallelism=args.parallelism, in_process=args.in_process,
                      settings=dict(item.split("=", 1) for item in args.set))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
