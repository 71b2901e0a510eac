"""``hold``, ``release`` and ``reclaim``: what a person does with one run's volume.

Each finds the run's live row (``-n`` picks the namespace when the run has volumes in several), acts, and prints
one line saying what happened. Exit codes: 0 done, 1 refused (the run has not ended, a hold keeps the volume, the
GC got there first), 2 bad input (a duration, an unknown run), 3 the database or Kubernetes is unavailable.
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
import socket
import sys
from collections.abc import Callable

from leoflow_staging.run_problem import RunProblem
from shared.db import holds_repo, runs_repo
from shared.db.engine import make_engine, translate_errors
from shared.holds import check_reason, describe_hold, parse_hold_for
from shared.settings import Settings
from shared.volumes import DeleteReason, VolumeRecord, VolumeState

EXIT_REFUSED = 1


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def who() -> str:
    """Who is acting, as far as the CLI can tell: the OS user and the host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's arbitrary uid)
        user = f"uid {os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def _run_text(dag_id: str, run_id: str) -> str:
    return f"run {run_id!r} of DAG {dag_id!r}"


def live_row(rows: list[VolumeRecord], dag_id: str, run_id: str, namespace: str | None) -> VolumeRecord:
    """The run's one live row among ``rows`` (newest first), or a ``RunProblem`` saying precisely why not."""
    where = f" in namespace {namespace!r}" if namespace else ""
    live = [r for r in rows if r.state is not VolumeState.DELETED]
    if not live:
        if rows:
            last = rows[0]
            at = last.deleted_at.isoformat() if last.deleted_at else "?"
            reason = last.delete_reason.value if last.delete_reason else "?"
            raise RunProblem(f"the volume of {_run_text(dag_id, run_id)}{where} was already reclaimed at {at} "
                             f"({reason}); there is no live volume", code=2)
        raise RunProblem(f"no staging volume is recorded for {_run_text(dag_id, run_id)}{where} (check the ids "
                         "with `leoflow-staging volumes --dag DAG_ID`)", code=2)
    namespaces = sorted({r.namespace for r in live})
    if len(namespaces) > 1:
        raise RunProblem(f"{_run_text(dag_id, run_id)} has volumes in namespaces {', '.join(namespaces)}: choose one "
                         "with -n NAMESPACE", code=2)
    return live[0]


def _find(settings: Settings, dag_id: str, run_id: str, namespace: str | None) -> VolumeRecord:
    engine = make_engine(settings.database_url, timeout=settings.db_timeout, pool_size=1)
    with translate_errors("reading staging_volumes"), engine.connect() as conn:
        return live_row(holds_repo.run_rows(conn, dag_id, run_id, namespace=namespace), dag_id, run_id, namespace)


def _refuse(message: str, command: str) -> int:
    print(f"leoflow-staging {command}: {message}", file=sys.stderr)
    return EXIT_REFUSED


def hold(settings: Settings, *, dag_id: str, run_id: str, duration: str, reason: str | None,
         namespace: str | None, now: dt.datetime | None = None) -> int:
    """Keep the run's volume for ``duration`` past its normal reclaim."""
    length = parse_hold_for(duration)
    why = check_reason(reason)
    row = _find(settings, dag_id, run_id, namespace)
    now = now or _utcnow()
    if row.state is VolumeState.RECLAIMING:
        return _refuse(f"{row.namespace}/{row.pvc_name} is already being reclaimed (reason "
                       f"{row.delete_reason.value if row.delete_reason else '?'}); too late to hold it", "hold")
    engine = make_engine(settings.database_url, timeout=settings.db_timeout, pool_size=1)
    with translate_errors("setting the hold"), engine.begin() as conn:
        held = holds_repo.set_hold(conn, row.id, until=now + length, reason=why, by=who(), now=now)
    if held is None or held.held_until is None:
        return _refuse(f"{row.namespace}/{row.pvc_name} started being reclaimed meanwhile; too late to hold it",
                       "hold")
    print(f"{held.namespace}/{held.pvc_name} ({_run_text(dag_id, run_id)}): "
          f"{describe_hold(until=held.held_until, by=held.held_by, reason=held.hold_reason)}")
    return 0


def release(settings: Settings, *, dag_id: str, run_id: str, namespace: str | None,
            now: dt.datetime | None = None) -> int:
    """End the run's hold now: the GC treats the volume by its run's state again from its next sweep."""
    row = _find(settings, dag_id, run_id, namespace)
    now = now or _utcnow()
    engine = make_engine(settings.database_url, timeout=settings.db_timeout, pool_size=1)
    with translate_errors("releasing the hold"), engine.begin() as conn:
        released = holds_repo.release_hold(conn, row.id, now=now)
    if released is None:
        print(f"{row.namespace}/{row.pvc_name} ({_run_text(dag_id, run_id)}): not held; nothing to release")
        return 0
    print(f"{released.namespace}/{released.pvc_name} ({_run_text(dag_id, run_id)}): hold released; the GC "
          "reclaims it by its run's state from its next sweep")
    return 0


def reclaim(settings: Settings, *, dag_id: str, run_id: str, namespace: str | None, yes: bool,
            confirm: Callable[[str], bool], now: Callable[[], dt.datetime] = _utcnow) -> int:
    """Free the run's volume now, if its run has ended or is gone (through the GC's guarded path)."""
    from gc_job.operator_reclaim import reclaim_now  # noqa: PLC0415 - the GC's code only for this command
    from gc_job.plan import GcPolicy, operator_verdict  # noqa: PLC0415
    from gc_job.results import Outcome  # noqa: PLC0415
    from shared.kube import KubeApi, make_api_client  # noqa: PLC0415

    row = _find(settings, dag_id, run_id, namespace)
    label = f"{row.namespace}/{row.pvc_name} ({_run_text(dag_id, run_id)})"
    if row.state is VolumeState.RECLAIMING:
        return _refuse(f"{label} is already being reclaimed; the GC finishes it", "reclaim")
    if row.held_until is not None and row.held(now()):
        hold_text = describe_hold(until=row.held_until, by=row.held_by, reason=row.hold_reason)
        return _refuse(f"{label} is {hold_text}; release the hold first", "reclaim")
    policy = GcPolicy(failed_ttl=settings.failed_ttl, success_states=settings.runs.success_states,
                      failed_states=settings.runs.failed_states, adopt_min_age=settings.adopt_min_age)
    engine = make_engine(settings.database_url, timeout=settings.gc_db_timeout, pool_size=2)
    with translate_errors("reading the runs table"), engine.connect() as conn:
        run = runs_repo.run_states(conn, settings.runs, [row.run]).get(row.run)
    verdict = operator_verdict(run, policy=policy)
    if not isinstance(verdict, DeleteReason):  # a StrEnum is a str too: test for the reason
        return _refuse(f"{label}: {verdict}; a volume is reclaimed only once its run has ended "
                       f"({', '.join((*policy.success_states, *policy.failed_states))}) or is gone", "reclaim")
    state = f"state {run.state}" if run else "gone from the runs table"
    if not yes and not confirm(f"Reclaim {label}, {state}? Its files are deleted. [y/N] "):
        return _refuse("not confirmed (pass --yes to reclaim without asking)", "reclaim")
    kube = KubeApi(make_api_client(settings.kubeconfig, pool_size=2), timeout=max(settings.kube_timeout, 5.0),
                   instance=settings.instance)
    directories = None
    if row.shared_claim is not None:  # a run's directory: removed by a cleanup pod
        from gc_job import directory_reclaim  # noqa: PLC0415

        directories = directory_reclaim.from_settings(settings, engine=engine, kube=kube, policy=policy, clock=now,
                                                      pool_size=2)
    result = reclaim_now(row, run, engine=engine, kube=kube, runs=settings.runs, policy=policy, clock=now,
                         settle_seconds=settings.gc_settle_seconds,
                         delete_finished_pods=settings.gc_delete_finished_pods, directories=directories)
    if result.outcome is Outcome.RECLAIMED:
        print(f"{label}: reclaimed (operator_request)")
        return 0
    if result.outcome is Outcome.HEALED:
        print(f"{label}: its PVC was already gone; the row is closed (pvc_missing)")
        return 0
    if result.outcome is Outcome.TERMINATING:
        print(f"{label}: delete issued; the PVC is Terminating ({result.detail}); the next GC sweep finishes it")
        return 0
    if result.outcome is Outcome.CLEANING:
        print(f"{label}: the directory's cleanup started ({result.detail}); the next GC sweep finishes it")
        return 0
    if result.outcome is Outcome.FAILED:
        print(f"leoflow-staging reclaim: {label}: {result.detail}", file=sys.stderr)
        return 3
    return _refuse(f"{label}: not reclaimed: {result.detail} (the run came back, or a hold was set meanwhile)",
                   "reclaim")


def ask(prompt: str) -> bool:
    """A yes/no question on the terminal; without one, no (``--yes`` is required)."""
    if not sys.stdin.isatty():
        return False
    return input(prompt).strip().lower() in {"y", "yes"}
