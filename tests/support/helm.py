"""Rendering the chart with the real helm binary and applying it with server-side apply."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, dynamic

CHART = Path(__file__).resolve().parents[2] / "charts" / "leoflow-staging"


def helm(assets: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(assets / "helm"), *args], capture_output=True, text=True, check=check, timeout=120)


def render(assets: Path, *, namespace: str = "platform", release: str = "staging",
           values: dict[str, Any] | None = None, check: bool = True) -> list[dict[str, Any]] | str:
    """The rendered objects, or helm's error text when ``check`` is False and rendering fails."""
    args = ["template", release, str(CHART), "--namespace", namespace]
    merged = {"database": {"existingSecret": "leoflow-db"}} | (values or {})
    args += ["--values", "-"]
    proc = subprocess.run([str(assets / "helm"), *args], input=json.dumps(merged), capture_output=True, text=True,
                          timeout=120, check=False)
    if proc.returncode != 0:
        if check:
            raise AssertionError(proc.stderr)
        return proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def apply(api: client.ApiClient, obj: dict[str, Any], *, dry_run: bool = False) -> Any:
    """Server-side apply one object (the API validates and stores it; with ``dry_run``, validates only)."""
    dyn = dynamic.DynamicClient(api)
    resource = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    namespace = obj["metadata"].get("namespace") if resource.namespaced else None
    extra = {"dry_run": "All"} if dry_run else {}
    return resource.server_side_apply(body=obj, name=obj["metadata"]["name"], namespace=namespace,
                                      field_manager="leoflow-staging-tests", force_conflicts=True, **extra)


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str, name_part: str = "") -> dict[str, Any]:
    found = [o for o in by_kind(objects, kind) if name_part in o["metadata"]["name"]]
    assert len(found) == 1, (kind, name_part, [o["metadata"]["name"] for o in found])
    return found[0]
