"""Which trunk a new dialog goes to.

Which trunk a request came from is the firewall's decision (``gateway.policy.acl.Acl``, carried
in its verdict), so one classifier serves admission and routing alike. This module only picks
the destination: pure functions over the config, asked once per new dialog.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config import Config, Trunk


@dataclass(frozen=True, slots=True)
class Routed:
    """Where a new dialog goes, and the Request-URI user to send there."""

    trunk: Trunk
    user: str


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
