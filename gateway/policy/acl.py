"""Admission: which trunk, if any, a source belongs to.

A source is admitted to a trunk when it arrives on the trunk's listener from one of its allowed
networks (or, with none configured, from the trunk's peer address) and, for TLS trunks, presents
the configured certificate identity (RFC 5922) and, if pinned, a certificate fingerprint.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import ExtensionOID, NameOID

from gateway.config import Config, Trunk
from gateway.policy.bounded import BoundedTable

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


class CertificateError(ValueError):
    """The peer certificate could not be read."""


def normalize_identity(name: str) -> str:
    """RFC 5922 §7.2 compares SIP domains case-insensitively; scheme and root dot are noise."""
    text = name.strip().lower()
    for scheme in ("sips:", "sip:"):
        if text.startswith(scheme):
            text = text[len(scheme):]
            break
    return text.rstrip(".")


def normalize_fingerprint(text: str) -> str:
    """Accept ``AB:CD:..``, ``abcd..`` and an optional ``sha256:``/``sha-256 `` prefix."""
    t = text.strip().lower()
    for prefix in ("sha-256 ", "sha256 ", "sha-256:", "sha256:"):
        if t.startswith(prefix):
            t = t[len(prefix):]
            break
    return t.replace(":", "").strip()


def identity_matches(presented: tuple[str, ...], wanted: tuple[str, ...]) -> bool:
    """True when one presented identity equals one wanted identity; wildcards never match.

    RFC 5922 §7.2: a certificate with a wildcard in a SIP domain identity must not match.
    """
    want = {normalize_identity(w) for w in wanted}
    for p in presented:
        name = normalize_identity(p)
        if "*" not in name and name in want:
            return True
    return False


def cert_identities(der: bytes) -> tuple[str, ...]:
    """SIP identities of a certificate per RFC 5922 §7.1.

    URI SANs with a sip/sips scheme, then DNS SANs; the subject CN only when the certificate has
    no subjectAltName at all.
    """
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise CertificateError(f"unreadable certificate: {exc}") from None
    try:
        san = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    except x509.ExtensionNotFound:
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return tuple(str(a.value) for a in cns)
    uris = [u for u in san.get_values_for_type(x509.UniformResourceIdentifier)
            if u.lower().startswith(("sip:", "sips:"))]
    return tuple(uris) + tuple(san.get_values_for_type(x509.DNSName))


def cert_fingerprint(der: bytes) -> str:
    """sha256 of the DER certificate, lower-case hex without separators."""
    return hashlib.sha256(der).hexdigest()


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
                if r.identities and not identity_matches(source.tls_identities, r.identities):
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
        if any(r.identities and not identity_matches(source.tls_identities, r.identities)
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
