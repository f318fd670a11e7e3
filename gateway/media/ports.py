"""The relay's port pool: even RTP ports (RTCP = RTP + 1) from the configured range. Sans-IO.

Ports are handed out least-recently-released first, so a port freed by a finished call is reused
as late as possible and stray packets of the old call cannot reach the next one. The pool only
books ports; the edge binds them and gives back, via ``busy``, those another process holds.
"""

from __future__ import annotations

from collections import deque

from gateway.media.api import InvalidParams


class PortPool:
    """Even base ports in ``[port_min, port_max]`` whose pair ``(p, p + 1)`` fits the range."""

    def __init__(self, port_min: int, port_max: int) -> None:
        first = port_min + (port_min & 1)
        if not 1024 <= port_min <= port_max <= 65535 or first + 1 > port_max:
            raise InvalidParams(f"port range {port_min}-{port_max} holds no even/odd pair")
        self._free: deque[int] = deque(range(first, port_max, 2))
        self._taken: set[int] = set()
        self.size = len(self._free)

    def __len__(self) -> int:
        return len(self._free)

    def acquire(self) -> int | None:
        """The next free even port, or None when the range is exhausted."""
        if not self._free:
            return None
        port = self._free.popleft()
        self._taken.add(port)
        return port

    def release(self, port: int) -> None:
        """Give a port back; releasing a port not taken is a no-op (close is idempotent)."""
        if port in self._taken:
            self._taken.remove(port)
            self._free.append(port)

    def busy(self, port: int) -> None:
        """The port could not be bound (another process has it): try it again last."""
        self.release(port)
