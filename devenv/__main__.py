"""``python -m devenv up|down|status``: the dev control plane and PostgreSQL.

``up`` starts them in the background and writes ``.dev/env`` (KUBECONFIG and
LEOFLOW_STAGING_DATABASE_URL, shell-sourceable); ``down`` stops every process it started.
``up --node`` (``make dev-up NODE=1``) also starts a real node, the RWX provisioner and imports the
images (contracts §7); ``down`` then also undoes what the node changed on the host.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from devenv.assets import REPO, ensure_assets
from devenv.cluster import NodeCluster
from devenv.controlplane import ControlPlane
from devenv.node import cleanup_host
from devenv.postgres import Postgres, find_bindir
from devenv.processes import kill_group

DEV = REPO / ".dev"
STATE = DEV / "state.json"
DATABASE = "leoflow"


def _alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _state() -> dict[str, object] | None:
    if not STATE.exists():
        return None
    data: dict[str, object] = json.loads(STATE.read_text())
    return data


def up_node() -> int:
    """Control plane + node + provisioner + PostgreSQL reachable from pods; images imported."""
    assets = ensure_assets(node=True)
    pg_workdir = Path("/tmp") / f"leoflow-dev-pg-{os.getuid()}"
    cluster = NodeCluster(assets=assets, workdir=DEV / "cluster", die_with_parent=False)
    state: dict[str, object] = {"pids": [], "pg_workdir": str(pg_workdir),
                                "node_workdir": str(DEV / "cluster" / "node"), "assets": str(assets)}
    STATE.write_text(json.dumps(state))  # a crash half-way is still undone by `down`
    cluster.start(postgres_workdir=pg_workdir)
    assert cluster.plane is not None and cluster.postgres is not None
    subprocess.run([str(find_bindir() / "createdb"), "-h", "127.0.0.1", "-p", str(cluster.postgres.port),
                    "-U", "leoflow", DATABASE], check=True, capture_output=True)
    url = cluster.postgres.libpq_url(DATABASE)
    lines = [f"export KUBECONFIG={cluster.plane.kubeconfig_path}",
             f"export LEOFLOW_STAGING_DATABASE_URL={url}",
             f"export PATH={assets}:$PATH",
             *(f"export {k}={v}" for k, v in cluster.env(DATABASE).items())]
    (DEV / "env").write_text("\n".join(lines) + "\n")
    state["pids"] = cluster.pids()
    state["logs"] = [str(p) for p in cluster.log_paths()]
    STATE.write_text(json.dumps(state, indent=2))
    print(f"node Ready at {cluster.plane.server}; timings (s): "
          + ", ".join(f"{k} {v:.1f}" for k, v in cluster.timings.items()))
    print(f"logs in {DEV / 'cluster'}; now: . {DEV / 'env'}")
    return 0


def up(*, node: bool = False) -> int:
    state = _state()
    pids = state.get("pids", []) if state else []
    if state and isinstance(pids, list) and pids and all(_alive(int(p)) for p in pids):
        if node and "node_workdir" not in state:
            print("a control plane without a node is up: run `make dev-down` first")
            return 1
        print(f"already up; source {DEV / 'env'}")
        return 0
    down(quiet=True)
    DEV.mkdir(exist_ok=True)
    if node:
        return up_node()
    assets = ensure_assets()
    plane = ControlPlane(assets=assets, workdir=DEV / "controlplane", die_with_parent=False)
    pg = Postgres(workdir=Path("/tmp") / f"leoflow-dev-pg-{os.getuid()}", die_with_parent=False)
    try:
        plane.start()
        pg.start()
        subprocess.run([str(find_bindir() / "createdb"), "-h", "127.0.0.1", "-p", str(pg.port),
                        "-U", "leoflow", DATABASE], check=True, capture_output=True)
    except BaseException:
        plane.stop()
        pg.stop()
        raise
    url = pg.libpq_url(DATABASE)
    (DEV / "env").write_text(
        f"export KUBECONFIG={plane.kubeconfig_path}\n"
        f"export LEOFLOW_STAGING_DATABASE_URL={url}\n"
        f"export PATH={assets}:$PATH\n"
    )
    STATE.write_text(json.dumps({
        "pids": [*plane.pids(), pg.process.pid if pg.process else 0],
        "pg_workdir": str(pg.workdir),
        "logs": [str(p) for p in plane.log_paths()],
    }, indent=2))
    print(f"control plane at {plane.server}, PostgreSQL at {url}")
    print(f"logs in {DEV / 'controlplane' / 'logs'}; now: . {DEV / 'env'}")
    return 0


def down(*, quiet: bool = False) -> int:
    state = _state()
    if state is None:
        if not quiet:
            print("nothing running")
        return 0
    pids = state.get("pids", [])
    for pid in reversed(pids if isinstance(pids, list) else []):
        if int(pid) > 0:
            kill_group(int(pid))
    node_workdir, assets = state.get("node_workdir"), state.get("assets")
    if isinstance(node_workdir, str):
        left = cleanup_host(Path(node_workdir), Path(assets) if isinstance(assets, str) else None)
        for problem in left:
            print(f"could not undo: {problem}", file=sys.stderr)
    pg_workdir = state.get("pg_workdir")
    if isinstance(pg_workdir, str):
        shutil.rmtree(pg_workdir, ignore_errors=True)
    shutil.rmtree(DEV, ignore_errors=True)
    if not quiet:
        print("stopped")
    return 0


def status(*, quiet: bool = False) -> int:
    state = _state()
    pids = state.get("pids", []) if state else []
    if not isinstance(pids, list) or not pids:
        if not quiet:
            print("down")
        return 1
    alive = [int(p) for p in pids if _alive(int(p))]
    if not quiet:
        print(f"{len(alive)}/{len(pids)} processes alive")
    return 0 if len(alive) == len(pids) else 1


def import_image() -> int:
    """Read build-images.sh's JSON on stdin; print the product image and import it into a running dev node."""
    product = json.load(sys.stdin)["product"]
    print(f"image   {product['ref']}\narchive {product['archive']}\nid      {product['id']}\n"
          f"digest  {product['digest']}")
    state = _state()
    node_workdir = state.get("node_workdir") if state else None
    if not isinstance(node_workdir, str) or status(quiet=True) != 0:
        print("no dev node is up (make dev-up NODE=1): not imported")
        return 0
    socket = Path(node_workdir) / "containerd" / "containerd.sock"
    out = subprocess.run(["ctr", "--address", str(socket), "--namespace", "k8s.io", "images", "import",
                          product["archive"]], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        print(f"importing into the dev node failed: {out.stderr.strip()}", file=sys.stderr)
        return 1
    print(f"imported into the dev node as {product['ref']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devenv")
    parser.add_argument("action", choices=["up", "down", "status", "import-image"])
    parser.add_argument("--node", action="store_true", help="also a real node, the RWX provisioner and images")
    args = parser.parse_args(argv)
    if args.action == "up":
        return up(node=args.node)
    if args.action == "down":
        return down()
    if args.action == "import-image":
        return import_image()
    return status()


if __name__ == "__main__":
    sys.exit(main())
