"""A small authoritative DNS responder for the RFC 3263 tests (no tests here): it answers SRV,
A and AAAA from a dict the test changes at will, over UDP on 127.0.0.1, and counts queries.
Its wire format is written here independently of gateway.sip.dns (no name compression, except
where a test asks for it), so the parser is checked against a second implementation."""

from __future__ import annotations

import asyncio
import ipaddress
import struct
from dataclasses import dataclass, field

SRV, A, AAAA, SOA = 33, 1, 28, 6


def name_bytes(name: str) -> bytes:
    return b"".join(bytes((len(p),)) + p.encode() for p in name.rstrip(".").split(".") if p) \
        + b"\0"


@dataclass
class Rr:
    name: str
    rtype: int
    ttl: int
    value: object  # (priority, weight, port, target) for SRV, an IP text for A/AAAA

    def wire(self, compress_at: int | None = None) -> bytes:
        owner = struct.pack("!H", 0xC000 | compress_at) if compress_at is not None \
            else name_bytes(self.name)
        if self.rtype == SRV:
            prio, weight, port, target = self.value  # type: ignore[misc]
            rdata = struct.pack("!HHH", prio, weight, port) + name_bytes(target)
        elif self.rtype == SOA:
            rdata = name_bytes("ns.test") + name_bytes("admin.test") + struct.pack(
                "!IIIII", 1, 60, 60, 60, int(self.value))  # type: ignore[call-overload]
        else:
            rdata = ipaddress.ip_address(self.value).packed  # type: ignore[arg-type]
        return owner + struct.pack("!HHIH", self.rtype, 1, self.ttl, len(rdata)) + rdata


def reply(query: bytes, answers: list[Rr], *, additional: list[Rr] = (),  # type: ignore[assignment]
          authority: list[Rr] = (), rcode: int = 0, compress: bool = False) -> bytes:  # type: ignore[assignment]
    """The answer to ``query`` (its id and question echoed)."""
    qid = struct.unpack_from("!H", query)[0]
    end = 12
    while query[end]:
        end += query[end] + 1
    question = query[12:end + 5]
    head = struct.pack("!HHHHHH", qid, 0x8180 | rcode, 1, len(answers), len(authority),
                       len(additional))
    body = b"".join(r.wire(12 if compress else None) for r in answers)
    body += b"".join(r.wire() for r in authority) + b"".join(r.wire() for r in additional)
    return head + question + body


def question(query: bytes) -> tuple[str, int]:
    labels, pos = [], 12
    while query[pos]:
        labels.append(query[pos + 1:pos + 1 + query[pos]].decode())
        pos += query[pos] + 1
    return ".".join(labels).lower(), struct.unpack_from("!H", query, pos + 1)[0]


@dataclass
class Zone:
    """Records by (name, type); a missing name is NXDOMAIN with a 1 s negative TTL."""

    records: dict[tuple[str, int], list[Rr]] = field(default_factory=dict)
    queries: list[tuple[str, int]] = field(default_factory=list)

    def srv(self, name: str, *targets: tuple[int, int, int, str], ttl: int = 60) -> None:
        self.records[(name, SRV)] = [Rr(name, SRV, ttl, t) for t in targets]

    def a(self, name: str, *ips: str, ttl: int = 60) -> None:
        self.records[(name, A)] = [Rr(name, A, ttl, ip) for ip in ips]

    def answer(self, query: bytes) -> bytes:
        q = question(query)
        self.queries.append(q)
        found = self.records.get(q)
        if found is None:
            known = any(name == q[0] for name, _ in self.records)
            return reply(query, [], authority=[Rr("test", SOA, 1, 1)], rcode=0 if known else 3)
        return reply(query, found)


class _Server(asyncio.DatagramProtocol):
    def __init__(self, zone: Zone) -> None:
        self.zone = zone
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(self.zone.answer(data), addr)


async def serve(zone: Zone) -> tuple[asyncio.DatagramTransport, tuple[str, int]]:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: _Server(zone),
                                                       local_addr=("127.0.0.1", 0))
    return transport, transport.get_extra_info("sockname")[:2]  # type: ignore[return-value]
