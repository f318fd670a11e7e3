"""Which trunk a request came from, and which trunk it goes to.

Pure functions over the config: the B2BUA asks them once per new dialog, the firewall can ask
``classify`` too. A request is admitted on a trunk only when the listener, the source address
and (on TLS) the peer certificate identity all match, so a peer cannot borrow another trunk's
routing by connecting to a shared listener.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.config import Config, Trunk


@dataclass(frozen=True, slots=True)
class Routed:
    """Where a new dialog goes, and the Request-URI user to send there."""

    trunk: Trunk
    user: str


def source_allowed(trunk: Trunk, source_ip: str) -> bool:
    """Source inside ``allowed_sources``, or equal to the peer address when none are set."""
    try:
        ip = ipaddress.ip_address(source_ip.strip("[]"))
    except ValueError:
        return False
    if trunk.allowed_sources:
        return any(ip in net for net in trunk.allowed_sources)
    try:
        return ip == ipaddress.ip_address(trunk.peer.host)
    except ValueError:
        return False


def identity_allowed(trunk: Trunk, identities: Iterable[str], fingerprint: str | None) -> bool:
    """A TLS trunk with ``tls_identity``/``tls_fingerprints`` needs a matching peer certificate.

    Identities are compared case-insensitively (host names and URIs from the certificate SAN,
    RFC 5922 §7.1); fingerprints ignore case and colons.
    """
    if not trunk.tls_identity and not trunk.tls_fingerprints:
        return True
    wanted = {i.lower() for i in trunk.tls_identity}
    if wanted & {i.lower() for i in identities}:
        return True
    if fingerprint and trunk.tls_fingerprints:
        have = _norm_fp(fingerprint)
        return any(_norm_fp(fp) == have for fp in trunk.tls_fingerprints)
    return False


def _norm_fp(fp: str) -> str:
    text = fp.split(" ", 1)[-1] if " " in fp.strip() else fp
    return text.replace(":", "").strip().lower()


def classify(config: Config, listener: str, source_ip: str,
             identities: Iterable[str] = (), fingerprint: str | None = None) -> Trunk | None:
    """The first trunk (config order) that admits a request from this listener and peer."""
    ids = tuple(identities)
    for trunk in config.trunks:
        if (trunk.listener == listener and source_allowed(trunk, source_ip)
                and identity_allowed(trunk, ids, fingerprint)):
            return trunk
    return None


def select_route(config: Config, trunk: Trunk, user: str, host: str) -> Routed | None:
    """Explicit routes first (R-URI user prefix and/or domain), then the trunk's ``route_to``."""
    for rt in trunk.routes:
        if rt.prefix is not None and not user.startswith(rt.prefix):
            continue
        if rt.domain is not None and host.lower().rstrip(".") != rt.domain.lower().rstrip("."):
            continue
        return Routed(config.trunk(rt.to), user[rt.strip:])
    if trunk.route_to is not None:
        return Routed(config.trunk(trunk.route_to), user)
    return None
