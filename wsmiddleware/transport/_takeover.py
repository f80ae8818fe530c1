"""Helpers the adapters share: our own socket on a server's descriptor, and
the bytes a server's reader buffered past the request head."""

from __future__ import annotations

import io
import socket
import sys
from typing import Any

from gevent.monkey import get_original

from ._base import RECV_SIZE, TLSTransport, Transport

__all__ = ["is_tls", "own_socket", "take_buffered", "transport_for"]

_stdlib_socket = get_original("socket", "socket")


def is_tls(sock: Any) -> bool:
    # Looked up, not imported: without TLS in use, ssl stays unloaded.
    gevent_ssl = sys.modules.get("gevent.ssl")
    return gevent_ssl is not None and isinstance(sock, gevent_ssl.SSLSocket)


def own_socket(fd: int) -> socket.socket:
    """A non-blocking standard-library socket on ``fd`` (which it now owns).

    The standard library's class even in a monkey-patched process: a gevent
    socket would bring two watchers of its own per connection, and the
    transport waits with its own watcher anyway.
    """
    sock = _stdlib_socket(fileno=fd)
    sock.setblocking(False)
    return sock


def take_buffered(reader: Any, sock: Any) -> bytes:
    """What ``reader`` (a buffered reader of ``sock``) holds, read without waiting.

    A compliant client sends nothing before the 101, but what it did send must
    not be lost. A non-blocking read of an empty reader gives b"" or raises.
    """
    if not isinstance(reader, io.BufferedReader):
        return b""
    chunks = []
    timeout = sock.gettimeout()
    sock.settimeout(0.0)
    try:
        while True:
            chunk = reader.read1(RECV_SIZE)
            if not chunk:
                break
            chunks.append(chunk)
            if len(chunk) < RECV_SIZE:
                break
    except (OSError, ValueError):
        pass
    finally:
        sock.settimeout(timeout)
    return b"".join(chunks)


def transport_for(server_sock: Any, *, pending: bytes, remote_addr: str | None, detach: bool,
                  parkable: bool = False, origin: Any = None) -> Transport:
    """A transport on the server's socket.

    ``detach``: take the descriptor from the server's socket object (which is
    left closed), so that nothing the server does after the WSGI call can read
    from it; otherwise share the server's socket object, made non-blocking (the
    adapter gives it its timeout back at the end), and the server closes it.
    TLS connections keep the server's SSL socket (its state is in user space).
    """
    if is_tls(server_sock):
        return TLSTransport(server_sock, pending=pending, remote_addr=remote_addr, origin=origin)
    if detach:
        return Transport(own_socket(server_sock.detach()), pending=pending, remote_addr=remote_addr, owned=True,
                         parkable=parkable, origin=origin)
    # Not a duplicate descriptor: that would double what each connection costs
    # against the process's file limit. A gevent socket with timeout 0 never waits.
    server_sock.settimeout(0.0)
    return Transport(server_sock, pending=pending, remote_addr=remote_addr, origin=origin)
