"""The registrar: bindings of phones and PBXs that REGISTER with the gateway (RFC 3261 §10.3).

A phone that is a TLS client only can be called solely over a connection it opened, so a binding
remembers the flow its REGISTER arrived on (RFC 5626 SIP Outbound: ``+sip.instance``/``reg-id``,
``Flow-Timer``; RFC 3327 ``Path``). Sans-IO: requests and ``now`` in, a response and the flow
decisions out; the B2BUA sends the response and watches the flow's connection.

Requests toward a binding go to the address the REGISTER came from (never to a host its Contact
names), at the Contact's port, over the flow while it is open.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.config import HostPort, RegistrarSection, Trunk
from gateway.sip.headers import NameAddr, split_list
from gateway.sip.message import SipRequest
from gateway.sip.transport import MessageSource
from gateway.sip.uri import SipUri

FLOW_DEAD_FACTOR = 1.5   # a flow silent for this many Flow-Timers is gone (RFC 5626 §4.4.1)


@dataclass(slots=True)
class Binding:
    """One registered contact of a trunk's user."""

    trunk: str
    user: str
    contact: str                  # the registered Contact URI (the Request-URI of calls to it)
    peer: HostPort                # the REGISTER's source address, at the Contact's port
    transport: str
    connection: int | None        # the flow (TCP/TLS connection) it was registered over
    expires_at: float
    call_id: str
    cseq: int
    instance: str | None = None   # RFC 5626 +sip.instance
    reg_id: int | None = None
    path: tuple[str, ...] = ()    # RFC 3327: the Route set toward it

    @property
    def outbound(self) -> bool:
        return self.instance is not None and self.reg_id is not None

    def key(self) -> tuple[str, str, str | int | None]:
        """Outbound bindings are one per instance and reg-id (a new flow replaces the old);
        others one per Contact URI (§10.3)."""
        if self.outbound:
            return (self.trunk, self.user, f"{self.instance};{self.reg_id}")
        return (self.trunk, self.user, self.contact)


@dataclass(slots=True)
class RegisterResult:
    """The answer to a REGISTER: status, extra headers, and the flow to watch (outbound)."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    watch_flow: float | None = None   # idle limit for the REGISTER's connection, in seconds


class Registrar:
    """Bindings per trunk and user, bounded by ``[registrar]``."""

    def __init__(self, section: RegistrarSection) -> None:
        self.section = section
        self._bindings: dict[tuple[str, str, str | int | None], Binding] = {}

    def __len__(self) -> int:
        return len(self._bindings)

    @staticmethod
    def authorize(src: MessageSource, trunk: Trunk) -> bool:
        """Mutual TLS: a verified client certificate on the connection (its identity was
        matched against the trunk's ``tls_identity`` when the firewall classified the source).
        Digest authentication plugs in here."""
        return (trunk.registrar and src.transport == trunk.transport == "tls"
                and bool(src.tls_identities))

    def register(self, req: SipRequest, src: MessageSource, trunk: Trunk,
                 now: float) -> RegisterResult:
        if not self.authorize(src, trunk):
            return RegisterResult(403)
        to = req.to.uri
        if not isinstance(to, SipUri) or not to.user:
            return RegisterResult(404)
        user = to.user
        try:
            default = _expires(req.headers.get("Expires"), self.section.default_expires)
        except ValueError:
            return RegisterResult(400)
        if req.contact_star:
            if default != 0:
                return RegisterResult(400)
            for key in [k for k, b in self._bindings.items()
                        if (b.trunk, b.user) == (trunk.name, user)]:
                del self._bindings[key]
            return RegisterResult(200)
        supported = {v.lower() for v in req.headers.values("Supported")}
        path = tuple(p.strip() for v in req.headers.get_all("Path") for p in split_list(v))
        stream = src.connection_id is not None
        result = RegisterResult(200)
        for na in req.contact:
            try:
                binding = self._binding(na, req, src, trunk, user, default, path, now)
            except ValueError:
                return RegisterResult(400)
            if binding is None:   # expires 0: remove
                continue
            if 0 < binding.expires_at - now < self.section.min_expires:
                return RegisterResult(423, [("Min-Expires", str(self.section.min_expires))])
            if binding.outbound and not stream:
                binding.instance = binding.reg_id = None   # no flow to keep over UDP here
            old = self._bindings.get(binding.key())
            if old is not None and old.call_id == binding.call_id and old.cseq >= binding.cseq:
                continue   # §10.3 step 7: an older REGISTER overtaken by a newer one
            if old is None and not self._room(trunk.name, user):
                return RegisterResult(403, [("Warning", '399 - "too many bindings"')])
            self._bindings[binding.key()] = binding
        self._remove_zero(req, trunk.name, user, default)
        mine = self.bindings_of(trunk.name, user, now)
        for b in mine:
            result.headers.append(("Contact", f"<{b.contact}>;expires={int(b.expires_at - now)}"))
        for p in path:
            result.headers.append(("Path", p))
        flows = [b for b in mine if b.outbound and b.connection == src.connection_id]
        if flows and "outbound" in supported:
            result.headers += [("Require", "outbound"),
                               ("Flow-Timer", str(self.section.flow_timer))]
            result.watch_flow = self.section.flow_timer * FLOW_DEAD_FACTOR
        return result

    def _binding(self, na: NameAddr, req: SipRequest, src: MessageSource, trunk: Trunk,
                 user: str, default: int, path: tuple[str, ...], now: float) -> Binding | None:
        expires = _expires(na.params.get("expires"), default)
        if expires == 0:
            return None
        expires = min(expires, self.section.max_expires)
        uri = na.uri
        if not isinstance(uri, SipUri):
            raise ValueError("not a SIP URI")
        port = (uri.port or trunk.peer.port) if src.transport != "udp" else src.port
        reg_id = na.params.get("reg-id")
        instance = na.params.get("+sip.instance")
        return Binding(trunk=trunk.name, user=user, contact=str(uri),
                       peer=HostPort(src.ip, port), transport=src.transport,
                       connection=src.connection_id, expires_at=now + expires,
                       call_id=req.call_id, cseq=req.cseq.number,
                       instance=instance.strip('"') if instance else None,
                       reg_id=int(reg_id) if reg_id and reg_id.isdigit() else None, path=path)

    def _remove_zero(self, req: SipRequest, trunk: str, user: str, default: int) -> None:
        """Contacts registered with expires 0 (or ``Expires: 0``) are removed."""
        for na in req.contact:
            try:
                gone = _expires(na.params.get("expires"), default) == 0
            except ValueError:
                continue
            if not gone:
                continue
            instance = (na.params.get("+sip.instance") or "").strip('"') or None
            for key in [k for k, b in self._bindings.items()
                        if (b.trunk, b.user) == (trunk, user)
                        and (b.contact == str(na.uri) or (instance and b.instance == instance))]:
                del self._bindings[key]

    def _room(self, trunk: str, user: str) -> bool:
        if len(self._bindings) >= self.section.max_bindings:
            return False
        same = sum(1 for b in self._bindings.values() if (b.trunk, b.user) == (trunk, user))
        return same < self.section.max_bindings_per_aor

    def bindings_of(self, trunk: str, user: str, now: float) -> list[Binding]:
        return [b for b in self._bindings.values()
                if (b.trunk, b.user) == (trunk, user) and b.expires_at > now]

    def lookup(self, trunk: str, user: str, now: float) -> Binding | None:
        """Where a call to ``user`` of ``trunk`` goes: its latest live binding."""
        live = self.bindings_of(trunk, user, now)
        return max(live, key=lambda b: b.expires_at) if live else None

    def flow_closed(self, connection: int) -> list[Binding]:
        """The connection is gone: so are the bindings registered over it."""
        gone = [k for k, b in self._bindings.items() if b.connection == connection]
        return [self._bindings.pop(k) for k in gone]

    def expire(self, now: float) -> list[Binding]:
        gone = [k for k, b in self._bindings.items() if b.expires_at <= now]
        return [self._bindings.pop(k) for k in gone]

    def retain(self, trunks: set[str]) -> None:
        """After a reload: bindings of trunks that no longer register are dropped."""
        for key in [k for k, b in self._bindings.items() if b.trunk not in trunks]:
            del self._bindings[key]

    def listing(self, now: float) -> list[dict[str, object]]:
        """For the status view: no Contact host (it may name an internal address)."""
        return [{"trunk": b.trunk, "user": b.user, "transport": b.transport,
                 "flow": b.connection, "outbound": b.outbound,
                 "expires_in": round(b.expires_at - now, 1)}
                for b in self._bindings.values() if b.expires_at > now]


def _expires(value: str | None, default: int) -> int:
    if value is None:
        return default
    text = value.strip()
    if not text.isdigit() or len(text) > 10:
        raise ValueError(f"bad expires {value!r}")
    return int(text)

