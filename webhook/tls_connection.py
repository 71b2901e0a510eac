"""The webhook's TLS connections: every read bounded in time (a client that stalls is treated as gone), and the
time the data read had reached the host (so an admission's budget counts from its request's arrival).

gunicorn's gthread worker hands a connection to a pool thread once its first bytes arrive; the thread then reads
the TLS handshake, the headers and the body with blocking reads that gunicorn does not bound. About 16 connections
that send half a request would hold every thread of a replica, and with ``failurePolicy: Fail`` every opted-in
pod would be refused.

The webhook's ``ssl_context`` (gunicorn's documented hook) sets ``SSLContext.sslsocket_class`` (Python's documented
way to choose the class ``wrap_socket`` returns) to a subclass of ``ssl.SSLSocket`` in which:
- "blocking" means "blocking for at most ``read_timeout`` seconds per operation" (a socket timeout, set from the
  handshake on), so the handshake, every header and body read and every write wait at most that long for the peer;
- a read that times out ends the connection as if the client had closed it, and a handshake that times out as if
  it had reset it: gunicorn closes it quietly, and a body cut short is answered 400 by the route that reads it.
  One WARNING line says who stalled.
Non-blocking mode (gthread's poller, where idle keep-alive connections wait) is unchanged, so the apiserver's kept
connections are never timed out by this; gunicorn's ``keepalive`` setting bounds those.

The bound is per operation: a client that sends a byte just before each timeout keeps its thread longer. What
limits who may connect at all is the chart's optional NetworkPolicy (docs/operators.md).

Arrival: a request may wait in gthread's queue for a free thread before anything reads it. Each read that returns
data records ``received_at``: now minus the age of the last data segment the kernel received on the connection
(Linux ``TCP_INFO``, ``tcpi_last_data_recv``, in milliseconds). The route finds the connection in the WSGI environ
under ``gunicorn.socket`` (gunicorn's extension variable) and starts the admission's deadline there, so time spent
waiting for a thread is counted and the answer never comes after the apiserver gave up. Where either is missing,
the deadline starts when the route runs, as before.
"""

from __future__ import annotations

import errno
import logging
import socket
import ssl
import struct
import time
from typing import Any

log = logging.getLogger("leoflow_staging.webhook")

_LAST_DATA_RECV = 52  # offset of tcpi_last_data_recv (u32, milliseconds) in Linux's struct tcp_info


def data_age(sock: socket.socket) -> float:
    """Seconds since the kernel received the last data segment on ``sock`` (0.0 where TCP_INFO is missing)."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    except (OSError, AttributeError):
        return 0.0
    return float(struct.unpack_from("I", info, _LAST_DATA_RECV)[0]) / 1000


class TlsConnection(ssl.SSLSocket):
    """An ``SSLSocket`` whose blocking operations time out after ``read_timeout`` seconds (0: never), and which
    knows when the data it read last had arrived (``received_at``, ``time.monotonic()``; None before any read)."""

    read_timeout: float = 2.0
    received_at: float | None = None

    def setblocking(self, flag: bool) -> None:
        if flag and self.read_timeout > 0:
            self.settimeout(self.read_timeout)
        else:
            super().setblocking(flag)

    def do_handshake(self, block: bool = False) -> None:
        if self.gettimeout() is None and self.read_timeout > 0:  # wrapped from a blocking socket
            self.settimeout(self.read_timeout)
        try:
            super().do_handshake(block)
        except TimeoutError:
            self._stalled()
            raise ConnectionResetError(errno.ECONNRESET, "no TLS handshake within the read timeout") from None

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        try:
            data = super().recv(buflen, flags)
        except TimeoutError:
            self._stalled()
            return b""
        if data:
            self.received_at = time.monotonic() - data_age(self)
        return data

    def recv_into(self, buffer: Any, nbytes: int | None = None, flags: int = 0) -> int:
        try:
            count = super().recv_into(buffer, nbytes, flags)
        except TimeoutError:
            self._stalled()
            return 0
        if count:
            self.received_at = time.monotonic() - data_age(self)
        return count

    def _stalled(self) -> None:
        try:
            peer = "%s:%s" % self.getpeername()[:2]  # noqa: UP031 - IPv4 and IPv6 tuples alike
        except OSError:
            peer = "a client"
        log.warning("closing the connection from %s: no data for %.1f s", peer, self.read_timeout)


def bounded_read_context(context: ssl.SSLContext, read_timeout: float) -> ssl.SSLContext:
    """``context``, wrapping sockets in a ``TlsConnection`` subclass bound to ``read_timeout``."""
    context.sslsocket_class = type("TlsConnection", (TlsConnection,), {"read_timeout": read_timeout})
    return context


def request_arrival(environ: dict[str, Any]) -> float | None:
    """When the request in ``environ`` had reached the host (``time.monotonic()``), where its connection tells."""
    arrived = getattr(environ.get("gunicorn.socket"), "received_at", None)
    return arrived if isinstance(arrived, float) else None


__all__ = ["TlsConnection", "bounded_read_context", "data_age", "request_arrival"]
