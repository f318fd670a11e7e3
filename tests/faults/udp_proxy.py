"""A loopback UDP proxy that loses, duplicates and reorders datagrams, seeded and counted.

``front`` is where the phone sends; the proxy forwards from ``back``, which is also the address
the gateway's trunk names as its peer, so the gateway's answers and requests come back through
it. Each datagram, each way, is dropped with ``loss``, sent twice with ``dup``, or held back until
the next one (or ``hold`` seconds) with ``reorder``.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field

Address = tuple[str, int]


class _Side(asyncio.DatagramProtocol):
    def __init__(self, proxy: ImpairingProxy, front: bool) -> None:
        self.proxy, self.front = proxy, front
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.proxy.received(data, addr, self.front)


@dataclass
class ImpairingProxy:
    upstream: Address  # the gateway's listener
    loss: float = 0.2
    dup: float = 0.1
    reorder: float = 0.1
    hold: float = 0.05
    seed: int = 4475
    counts: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._phone: Address | None = None
        self._held: dict[bool, tuple[bytes, Address] | None] = {True: None, False: None}
        self._front: _Side | None = None
        self._back: _Side | None = None

    async def start(self, host: str = "127.0.0.1") -> None:
        loop = asyncio.get_running_loop()
        _, self._front = await loop.create_datagram_endpoint(lambda: _Side(self, True),
                                                             local_addr=(host, 0))
        _, self._back = await loop.create_datagram_endpoint(lambda: _Side(self, False),
                                                            local_addr=(host, 0))

    @property
    def front(self) -> Address:
        assert self._front is not None and self._front.transport is not None
        return self._front.transport.get_extra_info("sockname")[:2]

    @property
    def back(self) -> Address:
        assert self._back is not None and self._back.transport is not None
        return self._back.transport.get_extra_info("sockname")[:2]

    def close(self) -> None:
        for side in (self._front, self._back):
            if side is not None and side.transport is not None:
                side.transport.close()

    def received(self, data: bytes, addr: Address, from_phone: bool) -> None:
        if from_phone:
            self._phone = addr
            dest, out = self.upstream, self._back
        else:
            if self._phone is None:
                return
            dest, out = self._phone, self._front
        assert out is not None and out.transport is not None
        send = out.transport.sendto
        direction = "up" if from_phone else "down"
        self.counts[f"{direction}.in"] += 1
        roll = self._rng.random()
        if roll < self.loss:
            self.counts[f"{direction}.lost"] += 1
            return
        held = self._held[from_phone]
        if roll < self.loss + self.reorder and held is None:
            self.counts[f"{direction}.reordered"] += 1
            self._held[from_phone] = (data, dest)
            asyncio.get_running_loop().call_later(self.hold, self._release, from_phone, data)
            return
        send(data, dest)
        if roll < self.loss + self.reorder + self.dup:
            self.counts[f"{direction}.duplicated"] += 1
            send(data, dest)
        self._release(from_phone, None)  # a held datagram goes after the one that passed it

    def _release(self, from_phone: bool, only: bytes | None) -> None:
        held = self._held[from_phone]
        if held is None or (only is not None and held[0] is not only):
            return
        self._held[from_phone] = None
        out = self._back if from_phone else self._front
        assert out is not None and out.transport is not None
        out.transport.sendto(*held)
