"""The apiserver as its admin, over one keep-alive HTTPS session (raw JSON: no client-side models to build)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import requests

from devenv.controlplane import ControlPlane


@dataclass
class AdminApi:
    server: str
    session: requests.Session

    @classmethod
    def of(cls, plane: ControlPlane) -> AdminApi:
        plane.get("/version")  # writes the admin client certificate files
        pki = plane.workdir / "pki"
        session = requests.Session()
        session.trust_env = False
        session.verify = str(pki / "ca.crt")
        session.cert = (str(pki / "admin.crt"), str(pki / "admin.key"))
        return cls(server=plane.server, session=session)

    def post(self, path: str, body: dict[str, Any] | bytes) -> requests.Response:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.session.post(self.server + path, data=data, headers={"Content-Type": "application/json"},
                                 timeout=30)

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body``; an object that already exists is left as it is."""
        resp = self.post(path, body)
        if resp.status_code not in (201, 409):
            raise RuntimeError(f"POST {path}: {resp.status_code} {resp.text[:500]}")
        return dict(resp.json())

    def delete(self, path: str) -> None:
        resp = self.session.delete(self.server + path, timeout=120)
        if resp.status_code not in (200, 202, 404):
            raise RuntimeError(f"DELETE {path}: {resp.status_code} {resp.text[:500]}")

    def get_text(self, path: str) -> str:
        resp = self.session.get(self.server + path, timeout=60)
        resp.raise_for_status()
        return resp.text


def timed_create(api: AdminApi, path: str, body: bytes) -> tuple[float, requests.Response]:
    """One CREATE: the seconds from sending to the whole answer read, and the answer (201 or an error)."""
    started = time.perf_counter()
    resp = api.post(path, body)
    elapsed = time.perf_counter() - started
    if resp.status_code != 201:
        raise RuntimeError(f"create {path} failed: {resp.status_code} {resp.text[:300]}")
    return elapsed, resp
