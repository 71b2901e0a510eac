"""TLS connections whose reads are bounded in time (webhook.tls_connection), on real sockets over loopback."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
import time
from collections.abc import Iterator

import pytest

from certs.issuance import issue_ca, issue_serving
from webhook.tls_connection import bounded_read_context

TIMEOUT = 0.3


@pytest.fixture(scope="module")
def contexts(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    now, validity = dt.datetime.now(dt.UTC), dt.timedelta(days=1)
    ca = issue_ca(common_name="test-ca", now=now, validity=validity)
    leaf = issue_serving(ca, hosts=("localhost",), now=now, validity=validity)
    folder = tmp_path_factory.mktemp("tls")
    (folder / "tls.crt").write_bytes(leaf.cert_pem)
    (folder / "tls.key").write_bytes(leaf.key_pem)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(folder / "tls.crt", folder / "tls.key")
    client = ssl.create_default_context(cadata=ca.cert_pem.decode())
    client.check_hostname = False
    return bounded_read_context(server, TIMEOUT), client


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
        server.setblocking(True)  # as gunicorn's thread does before it wraps the connection
        with client, server:
            yield server, client


def test_a_client_that_stalls_mid_request_reads_as_closed(contexts: tuple[ssl.SSLContext, ssl.SSLContext],
                                                          pair: tuple[socket.socket, socket.socket]) -> None:
    server_ctx, client_ctx = contexts
    raw_server, raw_client = pair
    box: dict[str, ssl.SSLSocket] = {}
    shaker = threading.Thread(target=lambda: box.update(tls=client_ctx.wrap_socket(raw_client)))
    shaker.start()
    tls = server_ctx.wrap_socket(raw_server, server_side=True, do_handshake_on_connect=False)
    tls.do_handshake()
    shaker.join()
    box["tls"].sendall(b"POST /mutate HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")  # then nothing
    assert tls.recv(4096).startswith(b"POST /mutate")
    started = time.monotonic()
    assert tls.recv(4096) == b""  # the stalled client is treated as gone, not waited for
    assert time.monotonic() - started >= TIMEOUT * 0.9
    tls.setblocking(False)  # gthread's poller: non-blocking mode stays untouched
    assert tls.gettimeout() == 0.0
    tls.setblocking(True)  # back in a thread: blocking means "for at most the read timeout"
    assert tls.gettimeout() == TIMEOUT


def test_a_client_that_never_starts_tls_is_reset(contexts: tuple[ssl.SSLContext, ssl.SSLContext],
                                                 pair: tuple[socket.socket, socket.socket]) -> None:
    server_ctx, _ = contexts
    raw_server, _ = pair
    tls = server_ctx.wrap_socket(raw_server, server_side=True, do_handshake_on_connect=False)
    with pytest.raises(ConnectionResetError):
        tls.do_handshake()


def test_zero_means_blocking_without_a_bound() -> None:
    ctx = bounded_read_context(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), 0)
    assert ctx.sslsocket_class.read_timeout == 0  # type: ignore[attr-defined]
