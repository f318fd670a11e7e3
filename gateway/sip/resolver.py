"""The asyncio edge of RFC 3263 server location: DNS over UDP to the configured servers (or
/etc/resolv.conf's), answers cached for their TTL, SRV targets in RFC 2782 order.

Without configured ``[sip] dns_servers``, A/AAAA come from the system resolver (getaddrinfo,
so /etc/hosts still works, cached a minute as it gives no TTL); with them, everything is asked
of those servers. NAPTR is not used: the trunk's transport is configured, so the SRV name is
known (RFC 3263 §4.1 lets a client that knows its transport skip NAPTR).
"""

from __future__ import annotations

import asyncio
import random
import secrets
import socket
from collections.abc import Callable
from pathlib import Path

from gateway.config import HostPort
from gateway.ops.log import get_logger
from gateway.sip.dns import (
    AAAA,
    SRV,
    A,
    AddressRecord,
    Answer,
    DnsError,
    SrvRecord,
    build_query,
    parse_response,
)
from gateway.sip.errors import TransportFailure
from gateway.sip.locate import NEGATIVE_TTL, DnsCache, srv_name, srv_order

log = get_logger("sip")
_SYSTEM_TTL = 60.0  # getaddrinfo gives no TTL
_QUERY_TIMEOUT = 1.0  # per server; the next configured server is asked after it


def system_servers(path: Path = Path("/etc/resolv.conf")) -> tuple[HostPort, ...]:
    servers = []
    try:
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                servers.append(HostPort(parts[1].split("%")[0], 53))
    except OSError:
        pass
    return tuple(servers) or (HostPort("127.0.0.1", 53),)


class _Reply(asyncio.DatagramProtocol):
    def __init__(self, qid: int, name: str, qtype: int) -> None:
        self.question = (qid, name, qtype)
        self.done: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.done.done():
            return
        try:
            self.done.set_result(parse_response(data, *self.question))
        except DnsError as exc:
            if "not the answer" not in str(exc):  # a stray or spoofed datagram is ignored
                self.done.set_exception(exc)

    def error_received(self, exc: Exception) -> None:
        if not self.done.done():
            self.done.set_exception(DnsError(f"server unreachable: {exc}"))


class Resolver:
    """Locates SIP servers; one per gateway (its cache is shared by every trunk)."""

    def __init__(self, servers: tuple[HostPort, ...] = (), *,
                 rand: Callable[[], float] = random.random,
                 timeout: float = _QUERY_TIMEOUT) -> None:
        self.system = not servers
        self.servers = servers or system_servers()
        self.cache = DnsCache()
        self._rand = rand
        self._timeout = timeout
        self.queries = 0  # sent to a DNS server (cache misses)

    async def locate(self, transport: str, host: str, port: int, srv: bool,
                     family: int) -> tuple[list[tuple[str, int]], float]:
        """Addresses to try in order, and until when (loop time) the answer holds. ``srv``:
        ``host`` names a SIP service (no port given): its SRV targets in RFC 2782 order, else
        (no SRV records) the host's A/AAAA with ``port``. Raises TransportFailure when nothing
        is found."""
        if srv:
            records, expires = await self._srv(srv_name(transport, host))
            if records:
                out: list[tuple[str, int]] = []
                for cand in srv_order(records, self._rand):
                    try:
                        ips, until = await self.addresses(cand.host, family)
                    except TransportFailure as exc:
                        log.info("sip.srv_target_unresolved", target=cand.host, reason=str(exc))
                        continue
                    out += [(ip, cand.port) for ip in ips]
                    expires = min(expires, until)
                if not out:
                    raise TransportFailure(f"no usable SRV target for {host}")
                return out, expires
        ips, expires = await self.addresses(host, family)
        return [(ip, port) for ip in ips], expires

    async def addresses(self, host: str, family: int) -> tuple[list[str], float]:
        """IPs of ``host`` and their expiry; AF_UNSPEC asks the system for both families, the
        configured servers for A."""
        loop = asyncio.get_running_loop()
        qtype = AAAA if family == socket.AF_INET6 else A
        if self.system:
            key = qtype if family != socket.AF_UNSPEC else 0
            hit = self.cache.get(host, key, loop.time())
            if hit is not None:
                return [str(ip) for ip in hit[1]], hit[0]
            try:
                infos = await loop.getaddrinfo(host, None, family=family, type=socket.SOCK_STREAM)
            except (OSError, UnicodeError) as exc:
                raise TransportFailure(f"cannot resolve {host}: {exc}") from None
            ips = tuple(dict.fromkeys(str(i[4][0]) for i in infos))
            if not ips:
                raise TransportFailure(f"cannot resolve {host}")
            return list(ips), self.cache.put(host, key, ips, _SYSTEM_TTL, loop.time())
        records, expires = await self._records(host, qtype)
        if not records:
            raise TransportFailure(f"cannot resolve {host}: no {'AAAA' if qtype == AAAA else 'A'}"
                                   " record")
        return [r.ip for r in records if isinstance(r, AddressRecord)], expires

    async def _srv(self, name: str) -> tuple[list[SrvRecord], float]:
        try:
            records, expires = await self._records(name, SRV)
        except TransportFailure as exc:  # no SRV answer at all: the host's A/AAAA (§4.2)
            log.info("sip.srv_lookup_failed", name=name, reason=str(exc))
            return [], asyncio.get_running_loop().time() + NEGATIVE_TTL
        return [r for r in records if isinstance(r, SrvRecord)], expires

    async def _records(self, name: str, qtype: int) -> tuple[tuple[object, ...], float]:
        loop = asyncio.get_running_loop()
        key = name.rstrip(".").lower()
        hit = self.cache.get(key, qtype, loop.time())
        if hit is not None:
            return hit[1], hit[0]
        answer = await self._ask(key, qtype)
        now = loop.time()
        if answer.records:
            ttl = min(r.ttl for r in answer.records)
        else:
            ttl = answer.negative_ttl if answer.negative_ttl is not None else NEGATIVE_TTL
        expires = self.cache.put(key, qtype, answer.records, ttl, now)
        for rtype in (A, AAAA):  # SRV answers often carry their targets' addresses
            hints: dict[str, list[AddressRecord]] = {}
            for r in answer.extra:
                if (":" in r.ip) == (rtype == AAAA):
                    hints.setdefault(r.name, []).append(r)
            for owner, recs in hints.items():
                self.cache.put(owner, rtype, tuple(recs), min(r.ttl for r in recs), now)
        return answer.records, expires

    async def _ask(self, name: str, qtype: int) -> Answer:
        loop = asyncio.get_running_loop()
        reason = "no DNS server"
        for server in self.servers:
            qid = secrets.randbits(16)
            proto = _Reply(qid, name, qtype)
            self.queries += 1
            try:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda p=proto: p, remote_addr=server.addr)  # type: ignore[misc]
            except OSError as exc:
                reason = f"{server}: {exc.strerror or type(exc).__name__}"
                continue
            try:
                transport.sendto(build_query(name, qtype, qid))
                return await asyncio.wait_for(proto.done, self._timeout)
            except TimeoutError:
                reason = f"{server}: timeout"
            except DnsError as exc:
                reason = f"{server}: {exc}"
            finally:
                transport.close()
        raise TransportFailure(f"cannot look up {name}: {reason}")
