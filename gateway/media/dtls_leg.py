"""DTLS-SRTP on one relay leg stream: the handshake rides the leg's own media socket (RFC 7983
demultiplexing in the relay) and the exported keys go into the relay's SRTP contexts, so a keyed
DTLS leg runs exactly the SDES hot path.

Call-layer sequence for a ``media = "dtls-srtp"`` trunk (see ``gateway.sdp.dtls`` for the SDP):

- we offer: ``DtlsLeg.for_trunk(...)`` as soon as the relay session exists (it listens at
  once, because the answerer's ClientHello may beat its SDP answer); put
  ``dtls_attributes(leg.fingerprint, "actpass", leg.tls_id)`` in the offer; on the answer call
  ``leg.start(role_from_answer(answer.setup), remote, answer.fingerprints, base)``.
- we answer: ``check_fingerprints(offer, accept_sha1=...)``, ``DtlsLeg.for_trunk(...)``, then
  ``leg.start(role_for_setup(setup), remote, offer.fingerprints, base)`` with
  ``setup = answer_setup(offer.setup)``, and answer with
  ``dtls_attributes(leg.fingerprint, setup, leg.tls_id)``.
- every ``update_leg`` for this leg uses ``leg.config(base)``, which carries the DTLS keys once
  they exist (dtls=True with no keys until then: the relay passes no media).
- re-INVITE: ``needs_new_association(old, new)`` false (hold/resume) -> keep the leg, call
  ``leg.set_remote(remote, base)`` if the address changed; true -> ``leg.close()`` and build a
  new one.
- DTLS is accepted from the signalled address only; with the trunk's ``nat_learning`` the first
  source latches instead, and a handshake that fails from such a learned source restarts (up to
  ``MAX_RESTARTS``) so an impostor racing the real peer cannot end the call.
- ``on_failed(reason)`` means the stream is dead (fingerprint mismatch, timeout, alert): tear
  the call down. ``leg.close()`` on BYE sends close_notify.
- without rtcp-mux (``base.rtcp_mux`` False) RFC 5764 §4.1 wants a second DTLS association on
  the RTCP port: ``start`` runs one there too (same role and fingerprints, toward
  ``base.remote_rtcp`` or RTP port + 1), and its exported keys become the leg's SRTCP keys
  (``LegConfig.rtcp_rx``/``rtcp_tx``). Its failure is not fatal: the peer's RTCP is then dropped
  (counted as no_keys) while RTP keeps flowing, and ``rtcp_failed`` says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable, Sequence
from typing import Protocol

from gateway.config import DtlsSection, Trunk
from gateway.media.api import (
    Address,
    DtlsSocketApi,
    LegConfig,
    MediaError,
    SrtpParams,
    UnknownSession,
)
from gateway.media.dtls import DEFAULT_SUITES, DtlsConfigError, DtlsSession, Role, dtls_suites
from gateway.media.dtls_endpoint import DtlsEndpoint
from gateway.media.dtls_events import HandshakeCompleted, SrtpKeyMaterial
from gateway.media.dtls_identity import DtlsIdentity
from gateway.ops.log import security_event

EARLY_QUEUE = 8  # DTLS datagrams kept while our role is unknown (offer sent, no answer yet)
MAX_RESTARTS = 3  # fresh handshakes after a failed one from a learned (unsignalled) source


class _Relay(DtlsSocketApi, Protocol):
    async def update_leg(self, session_id: str, leg: int, stream: int,
                         cfg: LegConfig) -> None: ...


class _Component:
    """One DTLS association of the leg: the RTP port's, or the separate RTCP port's."""

    __slots__ = ("early", "endpoint", "failed", "keys", "latched", "peer", "restarts", "rtcp",
                 "signalled")

    def __init__(self, rtcp: bool) -> None:
        self.rtcp = rtcp
        self.endpoint: DtlsEndpoint | None = None
        self.early: list[tuple[bytes, Address]] = []
        self.signalled: Address | None = None
        self.peer: Address | None = None
        self.latched = False
        self.restarts = 0
        self.keys: SrtpKeyMaterial | None = None
        self.failed: str | None = None


class DtlsLeg:
    """The DTLS association(s) of one leg's stream: RTP, plus RTCP without rtcp-mux."""

    def __init__(self, relay: _Relay, session_id: str, leg: int, stream: int,
                 identity: DtlsIdentity, tls_id: str, *,
                 on_failed: Callable[[str], None],
                 on_connected: Callable[[HandshakeCompleted], None] | None = None,
                 suites: Sequence[str] = DEFAULT_SUITES, accept_sha1: bool = False,
                 handshake_timeout: float = 10.0, nat_learning: bool = False) -> None:
        if not dtls_suites(suites):
            raise DtlsConfigError(f"none of the suites {list(suites)} has a DTLS-SRTP profile")
        self._relay = relay
        self._where = (session_id, leg, stream)
        self._identity = identity
        self.tls_id = tls_id
        self._on_failed = on_failed
        self._on_connected = on_connected
        self._suites = tuple(suites)
        self._accept_sha1 = accept_sha1
        self._timeout = handshake_timeout
        self._nat_learning = nat_learning
        self._rtp, self._rtcp = _Component(False), _Component(True)
        self._started = False
        self._role: Role = "server"
        self._fingerprints: tuple[tuple[str, str], ...] = ()
        self._base = LegConfig(dtls=True)
        self._install: asyncio.Task[None] | None = None
        self.dropped = 0  # DTLS datagrams from sources other than the peer
        relay.set_dtls_handler(session_id, leg, stream,
                               lambda data, addr: self._datagram(self._rtp, data, addr))
        relay.set_dtls_handler(session_id, leg, stream,
                               lambda data, addr: self._datagram(self._rtcp, data, addr),
                               rtcp=True)

    @classmethod
    def for_trunk(cls, relay: _Relay, session_id: str, leg: int, stream: int,
                  identity: DtlsIdentity, tls_id: str, dtls: DtlsSection, trunk: Trunk, *,
                  on_failed: Callable[[str], None],
                  on_connected: Callable[[HandshakeCompleted], None] | None = None) -> DtlsLeg:
        """A leg with the trunk's suites and NAT setting and the [dtls] section's limits.

        DtlsConfigError (a ValueError: answer 488) when the trunk allows no DTLS-SRTP profile.
        """
        return cls(relay, session_id, leg, stream, identity, tls_id, on_failed=on_failed,
                   on_connected=on_connected, suites=trunk.suites,
                   accept_sha1=dtls.accept_sha1_fingerprint,
                   handshake_timeout=dtls.handshake_timeout, nat_learning=trunk.nat_learning)

    @property
    def fingerprint(self) -> tuple[str, str]:
        """Ours, for ``a=fingerprint`` (sha-256, RFC 8122)."""
        return "sha-256", self._identity.fingerprint("sha-256")

    @property
    def keys(self) -> SrtpKeyMaterial | None:
        """SRTP keys from the RTP port's association, once verified."""
        return self._rtp.keys

    @property
    def rtcp_keys(self) -> SrtpKeyMaterial | None:
        """SRTCP keys from the RTCP port's association (no rtcp-mux), once verified."""
        return self._rtcp.keys

    @property
    def failed(self) -> str | None:
        return self._rtp.failed

    @property
    def rtcp_failed(self) -> str | None:
        return self._rtcp.failed

    @property
    def state(self) -> str:
        return self._state(self._rtp)

    @property
    def rtcp_state(self) -> str:
        """``idle`` once started with rtcp-mux (no RTCP association)."""
        if self._started and self._rtcp.endpoint is None and self._base.rtcp_mux:
            return "idle"
        return self._state(self._rtcp)

    @staticmethod
    def _state(comp: _Component) -> str:
        if comp.endpoint is None:
            return "failed" if comp.failed else "listening"
        return comp.endpoint.session.state

    def start(self, role: Role, remote: Address, fingerprints: Sequence[tuple[str, str]],
              base: LegConfig) -> None:
        """The roles are settled (answer received, or we are answering): run the handshake(s)."""
        if self._started:
            return
        self._started = True
        self._role, self._fingerprints = role, tuple(fingerprints)
        self._base = base
        self._rtp.signalled = remote
        self._begin(self._rtp)
        if not base.rtcp_mux:
            self._rtcp.signalled = _rtcp_remote(remote, base)
            self._begin(self._rtcp)

    def _begin(self, comp: _Component) -> None:
        self._open(comp)
        early, comp.early = comp.early, []
        for data, addr in early:
            self._datagram(comp, data, addr)

    def _open(self, comp: _Component) -> None:
        comp.peer, comp.latched = comp.signalled, False
        session = DtlsSession(self._identity, self._role, remote_fingerprints=self._fingerprints,
                              suites=self._suites, accept_sha1=self._accept_sha1,
                              handshake_timeout=self._timeout)
        sid, leg, stream = self._where
        context: dict[str, object] = {"session": sid, "leg": leg, "stream": stream}
        if comp.rtcp:
            context["component"] = "rtcp"
        comp.endpoint = DtlsEndpoint(session, lambda data: self._send(comp, data),
                                     on_connected=lambda e: self._connected(comp, e),
                                     on_failed=lambda r: self._failed(comp, r), context=context)
        comp.endpoint.start()

    def set_remote(self, remote: Address, base: LegConfig) -> None:
        """Same association(s), new address or leg settings (re-INVITE without re-keying)."""
        for comp, addr in ((self._rtp, remote), (self._rtcp, _rtcp_remote(remote, base))):
            if addr != comp.signalled:
                comp.signalled = comp.peer = addr
                comp.latched = False
        self._base = base
        if self._started and not base.rtcp_mux and self._rtcp.endpoint is None:
            self._begin(self._rtcp)

    def config(self, base: LegConfig) -> LegConfig:
        """``base`` as a DTLS leg, with the negotiated keys once each handshake verified."""
        self._base = base
        rtp = self._rtp.keys
        rtcp = None if base.rtcp_mux else self._rtcp.keys
        return dataclasses.replace(
            base, dtls=True,
            rx=None if rtp is None else SrtpParams(rtp.suite, rtp.rx),
            tx=None if rtp is None else SrtpParams(rtp.suite, rtp.tx),
            rtcp_rx=None if rtcp is None else SrtpParams(rtcp.suite, rtcp.rx),
            rtcp_tx=None if rtcp is None else SrtpParams(rtcp.suite, rtcp.tx))

    def close(self) -> None:
        """Send close_notify and detach from the relay sockets (idempotent)."""
        for comp in (self._rtp, self._rtcp):
            if comp.endpoint is not None:
                comp.endpoint.close()
        if self._install is not None:
            self._install.cancel()
        with contextlib.suppress(MediaError):  # the relay session may already be gone
            self._relay.set_dtls_handler(*self._where, None)
            self._relay.set_dtls_handler(*self._where, None, rtcp=True)

    # ------------------------------------------------------------------ internals

    def _datagram(self, comp: _Component, data: bytes, addr: Address) -> None:
        if comp.endpoint is None:
            if not self._started and len(comp.early) < EARLY_QUEUE:
                comp.early.append((data, addr))
            return
        if addr != comp.peer:
            if not self._nat_learning or comp.latched:
                self.dropped += 1
                return
            comp.peer = addr
        comp.latched = True
        comp.endpoint.datagram_received(data)

    def _send(self, comp: _Component, data: bytes) -> None:
        if comp.peer is None:
            return
        try:
            self._relay.send_raw(*self._where, data, comp.peer, rtcp=comp.rtcp)
        except MediaError:  # the call ended and its relay session with it
            if comp.endpoint is not None:
                comp.endpoint.abandon()

    def _connected(self, comp: _Component, event: HandshakeCompleted) -> None:
        comp.keys = event.keys
        if self._install is not None:
            self._install.cancel()
        self._install = asyncio.get_running_loop().create_task(self._install_keys())
        if self._on_connected is not None and not comp.rtcp:
            self._on_connected(event)

    async def _install_keys(self) -> None:
        try:
            await self._relay.update_leg(*self._where, self.config(self._base))
        except UnknownSession:
            return  # the call ended while the handshake finished
        except MediaError as exc:
            self._failed(self._rtp, f"key-install: {type(exc).__name__}")

    def _failed(self, comp: _Component, reason: str) -> None:
        if (comp.keys is None and comp.latched and comp.peer != comp.signalled
                and comp.restarts < MAX_RESTARTS):
            # nat_learning latched a source other than the signalled one and its handshake
            # failed: an impostor racing the real peer must not be able to end the call.
            comp.restarts += 1
            security_event("dtls.source_rejected", reason=reason, source=comp.peer,
                           session=self._where[0], leg=self._where[1],
                           component="rtcp" if comp.rtcp else "rtp")
            self._open(comp)
            return
        comp.failed = reason
        if not comp.rtcp:
            self._on_failed(reason)


def _rtcp_remote(remote: Address, base: LegConfig) -> Address:
    return base.remote_rtcp or (remote[0], remote[1] + 1)
