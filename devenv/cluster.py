"""A single-node cluster whose pods run: the control plane, a real node, the RWX provisioner, PostgreSQL.

Used by ``make dev-up NODE=1``, the demo and the node tests. Every long step says what it does
and roughly how long it takes (``say``); builds are cached, so a second start builds nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config, dynamic

from devenv import provisioner
from devenv.assets import REPO
from devenv.controlplane import ControlPlane
from devenv.images import Image, build_images
from devenv.node import POD_CIDR, Node, primary_ip
from devenv.postgres import Postgres

CHART = REPO / "charts" / "leoflow-staging"


def _stderr(message: str) -> None:
    print(f"dev-node: {message}", file=sys.stderr, flush=True)


def apply_objects(api: client.ApiClient, objects: list[dict[str, Any]], *, manager: str = "leoflow-dev") -> None:
    """Server-side apply each object (create or update)."""
    dyn = dynamic.DynamicClient(api)
    for obj in objects:
        resource = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        namespace = obj["metadata"].get("namespace") if resource.namespaced else None
        resource.server_side_apply(body=obj, name=obj["metadata"]["name"], namespace=namespace,
                                   field_manager=manager, force_conflicts=True)


def wait_deployment(api: client.ApiClient, namespace: str, name: str, *, timeout: float) -> None:
    apps = client.AppsV1Api(api)
    core = client.CoreV1Api(api)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dep = apps.read_namespaced_deployment(name, namespace)
        if (dep.status.ready_replicas or 0) >= (dep.spec.replicas or 1):
            return
        time.sleep(0.5)
    events = core.list_namespaced_event(namespace).items
    story = "; ".join(f"{e.involved_object.name}: {e.reason}: {e.message}" for e in events[-8:])
    raise TimeoutError(f"deployment {namespace}/{name} not ready after {timeout:.0f}s ({story})")


@dataclass
class NodeCluster:
    """Everything ``make dev-up NODE=1`` starts, rooted in ``workdir``."""

    assets: Path
    workdir: Path
    die_with_parent: bool = True
    say: Callable[[str], None] = _stderr
    plane: ControlPlane | None = None
    node: Node | None = None
    postgres: Postgres | None = None
    images: dict[str, Image] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def api(self) -> client.ApiClient:
        assert self.plane is not None
        return config.new_client_from_config(config_file=str(self.plane.kubeconfig_path))

    def _timed(self, key: str, message: str, step: Callable[[], None]) -> None:
        self.say(message)
        start = time.monotonic()
        step()
        self.timings[key] = time.monotonic() - start
        self.say(f"{key}: done in {self.timings[key]:.1f}s")

    def start(self, *, postgres_workdir: Path | None = None) -> None:
        node_ip = primary_ip()
        self._timed("images", "building or finding the images (cold: ~6 min for the Python rootfs, the "
                    "provisioner and pause builds; warm: ~1 s)", lambda: self.images.update(build_images()))
        self.plane = ControlPlane(assets=self.assets, workdir=self.workdir / "controlplane",
                                  die_with_parent=self.die_with_parent, node_ip=node_ip)
        self.node = Node(plane=self.plane, assets=self.assets, workdir=self.workdir / "node",
                         sandbox_image=self.images["pause"].ref, die_with_parent=self.die_with_parent)
        self.postgres = Postgres(workdir=postgres_workdir, die_with_parent=self.die_with_parent,
                                 pod_access=(node_ip, POD_CIDR))
        try:
            self._timed("control_plane", "starting etcd, kube-apiserver, kube-controller-manager (~5 s)",
                        self.plane.start)
            self._timed("postgres", "starting PostgreSQL, reachable from the pod CIDR only (~2 s)",
                        self.postgres.start)
            node = self.node
            self._timed("runtime", "blackholing the pod and service CIDRs, starting containerd (~1 s)",
                        node.start_runtime)
            self._timed("import", "importing the images into the node (~10 s)", self._import)
            self._timed("node_ready", "starting kubelet, kube-scheduler, kube-proxy; waiting for Ready (~10 s)",
                        node.start)
            self._timed("provisioner", "deploying local-path-provisioner (shared-filesystem RWX) (~5 s)",
                        self._provisioner)
        except BaseException:
            self.stop()
            raise

    def _import(self) -> None:
        assert self.node is not None
        for image in self.images.values():
            self.node.import_image(image.archive, image.ref)

    def _provisioner(self) -> None:
        assert self.node is not None
        data_dir = self.node.workdir / "local-path"
        data_dir.mkdir(parents=True, exist_ok=True)
        api = self.api
        apply_objects(api, provisioner.manifests(image=self.images["provisioner"].ref,
                                                 helper_image=self.images["task"].ref, data_dir=data_dir))
        wait_deployment(api, provisioner.NAMESPACE, "local-path-provisioner", timeout=120)

    @property
    def data_dir(self) -> Path:
        assert self.node is not None
        return self.node.workdir / "local-path"

    def env(self, database: str) -> dict[str, str]:
        """The contracts §7 variables for ``.dev/env`` (node part)."""
        assert self.postgres is not None
        return {
            "DEV_PRODUCT_IMAGE": self.images["product"].ref,
            "DEV_TASK_IMAGE": self.images["task"].ref,
            "DEV_RWX_CLASS": provisioner.STORAGE_CLASS,
            "DEV_DATABASE_URL_FOR_PODS": self.postgres.pod_url(database),
            "DEV_PRODUCT_ARCHIVE": str(self.images["product"].archive),
        }

    def kubectl(self, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """kubectl as the cluster's admin; with ``check``, a failure raises with kubectl's message."""
        assert self.plane is not None
        proc = subprocess.run(["kubectl", f"--kubeconfig={self.plane.kubeconfig_path}", *args],
                              capture_output=True, text=True, check=False, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {proc.stderr}")
        return proc

    def helm(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """The built helm against this cluster; with ``check``, a failure raises with helm's output."""
        assert self.plane is not None
        proc = subprocess.run([str(self.assets / "helm"), f"--kubeconfig={self.plane.kubeconfig_path}", *args],
                              capture_output=True, text=True, check=False, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"helm {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def image_values(self) -> list[str]:
        """helm values for the product image as the node knows it (imported, never pulled)."""
        repo, tag = self.images["product"].ref.rsplit(":", 1)
        return ["--set", f"image.repository={repo}", "--set", f"image.tag={tag}", "--set", "image.pullPolicy=Never"]

    def install_chart(self, *, release: str, namespace: str, database: str, values: tuple[str, ...] = (),
                      chart: Path = CHART) -> float:
        """`helm install --wait` as docs/operators.md "Install" says (namespace, database Secret with the
        pods' URL of ``database``, install); returns the seconds it took. ``values`` come after the image's, so
        they may name another image (an earlier release's chart and image)."""
        assert self.postgres is not None
        self.kubectl("create", "namespace", namespace)
        self.kubectl("-n", namespace, "create", "secret", "generic", "leoflow-db",
                     f"--from-literal=url={self.postgres.pod_url(database)}")
        start = time.monotonic()
        self.helm("install", release, str(chart), "-n", namespace, "--set", "database.existingSecret=leoflow-db",
                  *self.image_values(), *values, "--wait", "--timeout", "5m", timeout=600)
        return time.monotonic() - start

    def gc_job(self, namespace: str, name: str, *, cronjob: str = "leoflow-staging-gc",
               timeout: float = 120) -> list[dict[str, Any]]:
        """A Job made from the chart's CronJob (as an operator does by hand); its JSON log lines."""
        self.kubectl("-n", namespace, "create", "job", name, f"--from=cronjob/{cronjob}")
        done = self.kubectl("-n", namespace, "wait", "--for=condition=complete", f"job/{name}",
                            f"--timeout={int(timeout)}s", check=False, timeout=timeout + 10)
        logs = self.kubectl("-n", namespace, "logs", f"job/{name}").stdout
        if done.returncode != 0:
            raise RuntimeError(f"GC Job {name} did not complete: {done.stderr}\n{logs}")
        return [json.loads(line) for line in logs.splitlines() if line.startswith("{")]

    def pids(self) -> list[int]:
        pids = [*(self.plane.pids() if self.plane else []), *(self.node.pids() if self.node else [])]
        if self.postgres and self.postgres.process and self.postgres.process.popen:
            pids.append(self.postgres.process.pid)
        return pids

    def log_paths(self) -> list[Path]:
        return [*(self.plane.log_paths() if self.plane else []), *(self.node.log_paths() if self.node else [])]

    def stop(self) -> list[str]:
        problems: list[str] = []
        if self.node is not None:
            problems += self.node.stop()
        if self.postgres is not None:
            self.postgres.stop()
        if self.plane is not None:
            self.plane.stop()
        return problems
