"""The webhook's listening socket: every accepted connection inherits the read timeout (no server needed)."""

from __future__ import annotations

import socket
import struct
import time

import pytest

from webhook.serving import listening_socket


@pytest.mark.parametrize("timeout", [0.3, 1.5])
def test_accepted_connections_inherit_the_read_timeout(timeout: float) -> None:
    listener = listening_socket("127.0.0.1", 0, read_timeout=timeout)
    try:
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            client.sendall(b"POST /mutate HTTP/1.1\r\n")  # and then nothing more
            conn, _ = listener.accept()
            with conn:
                conn.setblocking(True)  # what gunicorn's thread does before it reads
                seconds, micros = struct.unpack("ll", conn.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16))
                assert seconds + micros / 1e6 == pytest.approx(timeout)
                assert conn.recv(1024) == b"POST /mutate HTTP/1.1\r\n"
                started = time.monotonic()
                with pytest.raises(BlockingIOError):  # the stalled read ends instead of waiting for ever
                    conn.recv(1024)
                assert time.monotonic() - started >= timeout * 0.9
    finally:
        listener.close()


def test_zero_means_no_read_timeout() -> None:
    listener = listening_socket("127.0.0.1", 0, read_timeout=0)
    try:
        assert struct.unpack("ll", listener.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16)) == (0, 0)
    finally:
        listener.close()
