"""Admission: which trunk, if any, a source belongs to.

A source is admitted to a trunk when it arrives on the trunk's listener from one of its allowed
networks (or, with none configured, from the trunk's peer address) and, for TLS trunks, presents
the configured certificate identity (RFC 5922) and, if pinned, a certificate fingerprint.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from gateway.config import Config, Trunk
from gateway.policy.bounded import BoundedTable
from gateway.sip.identity import identity_matches, normalize_fingerprint

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Source:
    """Where a message came from, as far as the transport knows before parsing."""

    listener: str
    transport: str
    ip: str
    port: int
    tls_identities: tuple[str, ...] = ()
    tls_fingerprint: str | None = None


@dataclass(frozen=True, slots=True)
class _TrunkRule:
    trunk: Trunk
    networks: tuple[IPNetwork, ...]
    identities: tuple[str, ...]
    fingerprints: frozenset[str]


class Acl:
    """Classifies sources to trunks; built once per config, read on every message."""

    def __init__(self, config: Config) -> None:
        by_listener: dict[str, list[_TrunkRule]] = {}
        for t in config.trunks:
            nets = t.allowed_sources or (ipaddress.ip_network(t.peer.host, strict=False),)
            rule = _TrunkRule(
                trunk=t, networks=tuple(nets), identities=t.tls_identity,
                fingerprints=frozenset(normalize_fingerprint(f) for f in t.tls_fingerprints))
            by_listener.setdefault(t.listener, []).append(rule)
        self._by_listener = {k: tuple(v) for k, v in by_listener.items()}
        self._cache: BoundedTable[Source, Trunk | None] = BoundedTable(4096)

    def network_allows(self, listener: str, ip: str) -> bool:
        """Any trunk on this listener takes this address (identity not yet considered)."""
        addr = _address(ip)
        if addr is None:
            return False
        return any(_in(addr, r.networks) for r in self._by_listener.get(listener, ()))

    def network_trunk(self, listener: str, ip: str) -> Trunk | None:
        """The first trunk on this listener whose networks hold this address."""
        addr = _address(ip)
        if addr is None:
            return None
        return next((r.trunk for r in self._by_listener.get(listener, ())
                     if _in(addr, r.networks)), None)

    def classify(self, source: Source) -> Trunk | None:
        """The first trunk whose network, identity and fingerprint rules the source meets."""
        if source in self._cache:
            return self._cache.get(source)
        trunk = self._classify(source)
        self._cache.put(source, trunk)
        return trunk

    def _classify(self, source: Source) -> Trunk | None:
        addr = _address(source.ip)
        if addr is None:
            return None
        for r in self._by_listener.get(source.listener, ()):
            if not _in(addr, r.networks):
                continue
            if r.trunk.transport == "tls" or source.transport == "tls":
                if r.identities and not identity_matches(r.identities, source.tls_identities):
                    continue
                if r.fingerprints and (source.tls_fingerprint is None or normalize_fingerprint(
                        source.tls_fingerprint) not in r.fingerprints):
                    continue
            return r.trunk
        return None

    def why_not(self, source: Source) -> str:
        """A short reason for a failed classification, for the security event."""
        addr = _address(source.ip)
        if addr is None:
            return "bad-address"
        rules = [r for r in self._by_listener.get(source.listener, ()) if _in(addr, r.networks)]
        if not rules:
            return "source-not-allowed"
        if any(r.identities for r in rules) and not source.tls_identities:
            return "no-client-certificate"
        if any(r.identities and not identity_matches(r.identities, source.tls_identities)
               for r in rules):
            return "identity-mismatch"
        return "fingerprint-mismatch"


def _address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _in(addr: ipaddress.IPv4Address | ipaddress.IPv6Address,
        networks: tuple[IPNetwork, ...]) -> bool:
    return any(addr.version == n.version and addr in n for n in networks)
