"""Binding listening sockets before the server starts, with errors that name the transport."""

from __future__ import annotations

import socket

from iggy_fast.config import split_address
from iggy_fast.server.core import StartupError

BACKLOG = 1024


def os_reason(e: OSError) -> str:
    """"address already in use": an OSError's reason, for a sentence."""
    text = e.strerror or str(e)
    return text[:1].lower() + text[1:]


def bind(name: str, address: str, kind: int = socket.SOCK_STREAM) -> list[socket.socket]:
    """Sockets bound to every address `address` resolves to (as asyncio's create_server binds
    them), not listening yet; `kind` SOCK_DGRAM for UDP. StartupError names the transport and
    the address."""
    host, port = split_address(address)
    sockets: list[socket.socket] = []
    try:
        infos = socket.getaddrinfo(host, port, type=kind, flags=socket.AI_PASSIVE)
        for family, kind_, proto, _, sockaddr in dict.fromkeys(infos):
            sock = socket.socket(family, kind_, proto)
            sockets.append(sock)
            if kind == socket.SOCK_STREAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(sockaddr)
    except OSError as e:
        for sock in sockets:
            sock.close()
        raise StartupError(f"{name} cannot listen on {address}: {os_reason(e)}") from None
    return sockets

