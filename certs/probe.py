"""Which certificate each webhook replica serves: a TLS handshake to each endpoint, nothing verified
(the answer is compared with the Secret's CA by ``certs.wiring``; no request is sent)."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable

Endpoints = Callable[[], list[tuple[str, int]]]


def served_certificate(host: str, port: int, *, timeout: float = 3.0) -> bytes | None:
    """The PEM certificate served at host:port, or None when no handshake completes."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # reading what is served, not trusting it
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                context.wrap_socket(raw, server_hostname=None) as tls:
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None
    return ssl.DER_cert_to_PEM_cert(der).encode() if der else None


def served_certificates(endpoints: Endpoints, *, timeout: float = 3.0) -> Callable[[], dict[str, bytes | None]]:
    """A poll of every endpoint: ``{"ip:port": pem or None}``."""
    def poll() -> dict[str, bytes | None]:
        return {f"{host}:{port}": served_certificate(host, port, timeout=timeout) for host, port in endpoints()}
    return poll
