"""What the gateway implements as a SIP element: the one source of its Allow and Supported.

Each leg hears only what the gateway itself does, never the far side's Allow or Supported (those
would fingerprint the far side and promise what we may not do). A later feature (100rel with
PRACK, Replaces, REFER) adds its method or option tag here, and every Allow header, every 405
and every 420 follows: the firewall's screening and the B2BUA read the same lists.
"""

from __future__ import annotations

from gateway.config import Trunk

# Methods the gateway answers itself, in the order Allow lists them.
HANDLED = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "UPDATE")
# In-dialog methods passed to the other leg, when both legs' trunks permit them.
RELAYED = ("INFO", "MESSAGE", "NOTIFY")
# Option tags the gateway implements (RFC 3261 §19.2); a Require of any other is a 420.
SUPPORTED: tuple[str, ...] = ()


def allowed_methods(trunk: Trunk, other: Trunk | None = None) -> tuple[str, ...]:
    """The methods a request on a leg to ``trunk`` gets handled with (``other``: the far
    leg's trunk when known; a relayed method needs both to permit it)."""
    return tuple(m for m in (*HANDLED, *RELAYED) if m in trunk.methods
                 and (m not in RELAYED or other is None or m in other.methods))


def allow(trunk: Trunk, other: Trunk | None = None) -> str:
    """The Allow value for a leg (RFC 3261 §20.5)."""
    return ", ".join(allowed_methods(trunk, other))


def supported(trunk: Trunk) -> tuple[str, ...]:
    """The option tags the gateway states on a leg to ``trunk``."""
    return SUPPORTED


def capability_headers(trunk: Trunk, other: Trunk | None = None) -> list[tuple[str, str]]:
    """Our Allow and (when there is anything to state) Supported for a leg: for INVITEs, their
    2xx and OPTIONS answers (RFC 3261 §13.2.1, §13.3.1.4, §11.2)."""
    out = [("Allow", allow(trunk, other))]
    tags = supported(trunk)
    if tags:
        out.append(("Supported", ", ".join(tags)))
    return out
