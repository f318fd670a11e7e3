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


class DtlsLeg:
    """The DTLS association of one leg's stream."""

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
        self._endpoint: DtlsEndpoint | None = None
        self._early: list[tuple[bytes, Address]] = []
        self._role: Role = "server"
        self._fingerprints: tuple[tuple[str, str], ...] = ()
        self._signalled: Address | None = None
        self._peer: Address | None = None
        self._latched = False
        self._restarts = 0
        self._base = LegConfig(dtls=True)
        self._install: asyncio.Task[None] | None = None
        self.keys: SrtpKeyMaterial | None = None
        self.failed: str | None = None
        self.dropped = 0  # DTLS datagrams from sources other than the peer
        relay.set_dtls_handler(session_id, leg, stream, self._datagram)

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
    def state(self) -> str:
        if self._endpoint is None:
            return "failed" if self.failed else "listening"
        return self._endpoint.session.state

    def start(self, role: Role, remote: Address, fingerprints: Sequence[tuple[str, str]],
              base: LegConfig) -> None:
        """The roles are settled (answer received, or we are answering): run the handshake."""
        if self._endpoint is not None:
            return
        self._role, self._fingerprints = role, tuple(fingerprints)
        self._signalled, self._base = remote, base
        self._open()
        early, self._early = self._early, []
        for data, addr in early:
            self._datagram(data, addr)

    def _open(self) -> None:
        self._peer, self._latched = self._signalled, False
        session = DtlsSession(self._identity, self._role, remote_fingerprints=self._fingerprints,
                              suites=self._suites, accept_sha1=self._accept_sha1,
                              handshake_timeout=self._timeout)
        sid, leg, stream = self._where
        self._endpoint = DtlsEndpoint(session, self._send, on_connected=self._connected,
                                      on_failed=self._failed,
                                      context={"session": sid, "leg": leg, "stream": stream})
        self._endpoint.start()

    def set_remote(self, remote: Address, base: LegConfig) -> None:
        """Same association, new address or leg settings (re-INVITE without re-keying)."""
        if remote != self._signalled:
            self._signalled = self._peer = remote
            self._latched = False
        self._base = base

    def config(self, base: LegConfig) -> LegConfig:
        """``base`` as a DTLS leg, with the negotiated keys once the handshake verified."""
        self._base = base
        if self.keys is None:
            return dataclasses.replace(base, dtls=True, rx=None, tx=None)
        return dataclasses.replace(base, dtls=True, rx=SrtpParams(self.keys.suite, self.keys.rx),
                                   tx=SrtpParams(self.keys.suite, self.keys.tx))

    def close(self) -> None:
        """Send close_notify and detach from the relay socket (idempotent)."""
        if self._endpoint is not None:
            self._endpoint.close()
        if self._install is not None:
            self._install.cancel()
        with contextlib.suppress(MediaError):  # the relay session may already be gone
            self._relay.set_dtls_handler(*self._where, None)

    # ------------------------------------------------------------------ internals

    def _datagram(self, data: bytes, addr: Address) -> None:
        if self._endpoint is None:
            if len(self._early) < EARLY_QUEUE:
                self._early.append((data, addr))
            return
        if addr != self._peer:
            if not self._nat_learning or self._latched:
                self.dropped += 1
                return
            self._peer = addr
        self._latched = True
        self._endpoint.datagram_received(data)

    def _send(self, data: bytes) -> None:
        if self._peer is None:
            return
        try:
            self._relay.send_raw(*self._where, data, self._peer)
        except MediaError:  # the call ended and its relay session with it
            if self._endpoint is not None:
                self._endpoint.abandon()

    def _connected(self, event: HandshakeCompleted) -> None:
        self.keys = event.keys
        self._install = asyncio.get_running_loop().create_task(self._install_keys())
        if self._on_connected is not None:
            self._on_connected(event)

    async def _install_keys(self) -> None:
        try:
            await self._relay.update_leg(*self._where, self.config(self._base))
        except UnknownSession:
            return  # the call ended while the handshake finished
        except MediaError as exc:
            self._failed(f"key-install: {type(exc).__name__}")

    def _failed(self, reason: str) -> None:
        if (self.keys is None and self._latched and self._peer != self._signalled
                and self._restarts < MAX_RESTARTS):
            # nat_learning latched a source other than the signalled one and its handshake
            # failed: an impostor racing the real peer must not be able to end the call.
            self._restarts += 1
            security_event("dtls.source_rejected", reason=reason, source=self._peer,
                           session=self._where[0], leg=self._where[1])
            self._open()
            return
        self.failed = reason
        self._on_failed(reason)
