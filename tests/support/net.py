"""Loopback port helpers: tests bind port 0 or ask here, so parallel runs never collide."""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def free_port(kind: str = "udp", host: str = LOOPBACK) -> int:
    """A port that was free a moment ago (bind 0, read, close). Prefer binding 0 directly when
    the code under test allows it; use this for configs that need a number up front."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock_type = socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM
    with socket.socket(family, sock_type) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_port_pair(host: str = LOOPBACK) -> int:
    """An even UDP port whose odd neighbour is also free (RTP on n, RTCP on n + 1)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a:
            a.bind((host, 0))
            port = a.getsockname()[1]
            if port % 2 or port >= 65535:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
                try:
                    b.bind((host, port + 1))
                except OSError:
                    continue
                return port
    raise OSError("no free even/odd UDP port pair found")
