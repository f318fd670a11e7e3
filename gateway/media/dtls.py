"""DTLS-SRTP key agreement (RFC 5763/5764) as a sans-IO core over pyOpenSSL memory BIOs.

Datagrams and time go in, datagrams, one timer and events come out; the caller owns the socket
and the clock. (OpenSSL keeps its own retransmission clock; its relative timeout is turned into
an absolute timer on the caller's ``now``, so only the retransmit instant can drift by the delay
between the two clocks.) The session only negotiates: once the handshake is done and the peer's
certificate matches its SDP fingerprint it hands out SRTP keys, and the relay's own SRTP contexts
carry the media. Until then no key leaves, so no media can flow.

Compared with aiortc's transport this widens interop for SIP peers: ECDHE-RSA suites (baresip
uses a self-signed RSA certificate), sha-1 fingerprints when configured, all four DTLS-SRTP
profiles, and a persistent certificate instead of a 30-day generated one.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from OpenSSL import SSL, crypto

from gateway.media.dtls_events import (
    DtlsClosed,
    DtlsEvent,
    DtlsFailed,
    HandshakeCompleted,
    SrtpKeyMaterial,
)
from gateway.media.dtls_identity import DtlsIdentity, certificate_fingerprint, verify_fingerprint
from gateway.media.dtls_records import pack_datagrams, split_records

Role = Literal["client", "server"]
State = Literal["new", "handshaking", "verifying", "connected", "failed", "closed"]


@dataclass(frozen=True, slots=True)
class Profile:
    openssl: bytes
    suite: str
    key_len: int
    salt_len: int


# RFC 5764 §4.1.2 and RFC 7714 §14.2; keyed by our (config) suite names.
PROFILES: dict[str, Profile] = {
    "AEAD_AES_256_GCM": Profile(b"SRTP_AEAD_AES_256_GCM", "AEAD_AES_256_GCM", 32, 12),
    "AEAD_AES_128_GCM": Profile(b"SRTP_AEAD_AES_128_GCM", "AEAD_AES_128_GCM", 16, 12),
    "AES_CM_128_HMAC_SHA1_80": Profile(b"SRTP_AES128_CM_SHA1_80", "AES_CM_128_HMAC_SHA1_80",
                                       16, 14),
    "AES_CM_128_HMAC_SHA1_32": Profile(b"SRTP_AES128_CM_SHA1_32", "AES_CM_128_HMAC_SHA1_32",
                                       16, 14),
}
DEFAULT_SUITES = tuple(PROFILES)

# ECDHE only (forward secrecy), AEAD first; RSA suites included because SIP endpoints such as
# baresip present RSA certificates.
CIPHERS = b":".join([
    b"ECDHE-ECDSA-AES128-GCM-SHA256", b"ECDHE-RSA-AES128-GCM-SHA256",
    b"ECDHE-ECDSA-AES256-GCM-SHA384", b"ECDHE-RSA-AES256-GCM-SHA384",
    b"ECDHE-ECDSA-CHACHA20-POLY1305", b"ECDHE-RSA-CHACHA20-POLY1305",
    b"ECDHE-ECDSA-AES128-SHA", b"ECDHE-RSA-AES128-SHA",
    b"ECDHE-ECDSA-AES256-SHA", b"ECDHE-RSA-AES256-SHA",
])
DTLS1_2_VERSION = 0xFEFD
DEFAULT_MTU = 1200
_READ_CHUNK = 65536


class DtlsConfigError(ValueError):
    """The session was asked for something it cannot negotiate (e.g. no DTLS-SRTP suite)."""


def dtls_suites(suites: Sequence[str]) -> tuple[str, ...]:
    """The subset of a trunk's SRTP suites that DTLS-SRTP can negotiate, order kept."""
    return tuple(s for s in suites if s in PROFILES)


def _context(identity: DtlsIdentity, profiles: list[Profile]) -> SSL.Context:
    """The identity's shared context for this profile list (built once, reused per call)."""
    srtp = b":".join(p.openssl for p in profiles)
    ctx = identity.contexts.get(srtp)
    if ctx is None:
        ctx = SSL.Context(SSL.DTLS_METHOD)
        # No renegotiation: keys are exported once, a renegotiated session would silently
        # diverge from the SRTP keys the relay runs.
        ctx.set_options(SSL.OP_NO_TICKET | SSL.OP_NO_QUERY_MTU | SSL.OP_NO_COMPRESSION
                        | SSL.OP_NO_RENEGOTIATION)
        ctx.set_max_proto_version(DTLS1_2_VERSION)
        ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
        ctx.use_certificate(identity.certificate)
        ctx.use_privatekey(identity.private_key)
        ctx.set_cipher_list(CIPHERS)
        ctx.set_tlsext_use_srtp(srtp)
        identity.contexts[srtp] = ctx
    return ctx


def _reason(exc: SSL.Error) -> str:
    """A short reason from OpenSSL's error queue (``tlsv1 alert ...`` etc.)."""
    errors = exc.args[0] if exc.args and isinstance(exc.args[0], list) else []
    for entry in reversed(errors):
        if isinstance(entry, tuple) and entry and entry[-1]:
            return str(entry[-1])
    return type(exc).__name__


class DtlsSession:
    """One DTLS association on one media stream, in a fixed role.

    ``remote_fingerprints`` may arrive later (``set_remote_fingerprints``): when we are the
    offerer, the answerer's ClientHello can beat its SDP answer. The handshake then completes but
    the keys are held back until the fingerprint arrives and matches (RFC 5763 §6.6).
    """

    def __init__(self, identity: DtlsIdentity, role: Role, *,
                 remote_fingerprints: Sequence[tuple[str, str]] = (),
                 suites: Sequence[str] = DEFAULT_SUITES, accept_sha1: bool = False,
                 handshake_timeout: float = 10.0, mtu: int = DEFAULT_MTU) -> None:
        profiles = [PROFILES[s] for s in dtls_suites(suites)]
        if not profiles:
            raise DtlsConfigError(f"none of the suites {list(suites)} has a DTLS-SRTP profile")
        self.role: Role = role
        self.state: State = "new"
        self._profiles = {p.openssl: p for p in profiles}
        self._remote: tuple[tuple[str, str], ...] = tuple(remote_fingerprints)
        self._accept_sha1 = accept_sha1
        self._timeout = handshake_timeout
        self._mtu = mtu
        self._deadline: float | None = None
        self._retransmit_at: float | None = None
        self._verify_reason: str | None = None
        self._events: deque[DtlsEvent] = deque()
        self._out: list[bytes] = []
        self._ssl = SSL.Connection(_context(identity, profiles))
        self._ssl.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, self._verify)
        self._ssl.set_ciphertext_mtu(mtu)
        if role == "client":
            self._ssl.set_connect_state()
        else:
            self._ssl.set_accept_state()

    def _verify(self, conn: SSL.Connection, cert: crypto.X509, errno: int, depth: int,
                ok: int) -> bool:
        """Self-signed chains are expected; the fingerprint is the check, when we know it."""
        if depth != 0 or not self._remote:
            return True
        self._verify_reason = verify_fingerprint(cert.to_cryptography(), self._remote,
                                                 accept_sha1=self._accept_sha1)
        return self._verify_reason is None

    # ------------------------------------------------------------------ inputs

    def start(self, now: float) -> None:
        """Arm the handshake deadline; as client, send the ClientHello."""
        if self.state != "new":
            return
        self.state = "handshaking"
        self._deadline = now + self._timeout
        self._handshake(now)

    def set_remote_fingerprints(self, fingerprints: Sequence[tuple[str, str]],
                                now: float) -> None:
        """The peer's ``a=fingerprint`` values (algorithm, hex) from its SDP."""
        self._remote = tuple(fingerprints)
        if self.state == "verifying":
            self._finish(now)

    def receive_datagram(self, data: bytes, now: float) -> None:
        if self.state == "new":
            self.start(now)
        if self.state in ("failed", "closed"):
            return
        self._ssl.bio_write(data)
        if self.state == "handshaking":
            self._handshake(now)
            return
        try:
            self._ssl.recv(_READ_CHUNK)
        except SSL.WantReadError:
            pass
        except SSL.ZeroReturnError:
            self._flush(now)
            self._end(DtlsClosed(by_peer=True))
            return
        except SSL.Error as exc:
            self._flush(now)
            self._fail(f"alert: {_reason(exc)}")
            return
        self._flush(now)

    def handle_timer(self, now: float) -> None:
        if self.state in ("handshaking", "verifying") and self._deadline is not None \
                and now >= self._deadline:
            self._fail("handshake-timeout" if self.state == "handshaking"
                       else "fingerprint-timeout")
            return
        if self._retransmit_at is not None and now >= self._retransmit_at:
            try:
                self._ssl.DTLSv1_handle_timeout()
            except SSL.Error as exc:
                self._fail(f"handshake-error: {_reason(exc)}")
                return
            self._flush(now)

    def close(self, now: float) -> None:
        """Send close_notify (if the association is up) and stop."""
        if self.state in ("failed", "closed"):
            return
        if self.state in ("connected", "verifying"):
            self._send_close_notify(now)
        self._end(DtlsClosed(by_peer=False))

    # ------------------------------------------------------------------ outputs

    def datagrams_to_send(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        if self.state in ("failed", "closed"):
            return None
        timers = [t for t in (self._retransmit_at,) if t is not None]
        if self.state in ("handshaking", "verifying") and self._deadline is not None:
            timers.append(self._deadline)
        return min(timers) if timers else None

    def next_event(self) -> DtlsEvent | None:
        return self._events.popleft() if self._events else None

    # ------------------------------------------------------------------ internals

    def _handshake(self, now: float) -> None:
        try:
            self._ssl.do_handshake()
        except SSL.WantReadError:
            self._flush(now)
            return
        except SSL.Error as exc:
            self._flush(now)
            self._fail(self._verify_reason or f"handshake-error: {_reason(exc)}")
            return
        self._flush(now)
        self.state = "verifying"
        if self._remote:
            self._finish(now)

    def _finish(self, now: float) -> None:
        cert = self._ssl.get_peer_certificate(as_cryptography=True)
        if cert is None:
            self._abort(now, "no-peer-certificate")
            return
        reason = verify_fingerprint(cert, self._remote, accept_sha1=self._accept_sha1)
        if reason is not None:
            self._abort(now, reason)
            return
        profile = self._profiles.get(self._ssl.get_selected_srtp_profile())
        if profile is None:
            self._abort(now, "no-srtp-profile")
            return
        self.state = "connected"
        self._events.append(HandshakeCompleted(
            keys=self._export(profile), cipher=self._ssl.get_cipher_name() or "",
            version=self._ssl.get_protocol_version_name(),
            peer_fingerprint=certificate_fingerprint(cert)))

    def _export(self, p: Profile) -> SrtpKeyMaterial:
        """RFC 5764 §4.2: client key, server key, client salt, server salt."""
        n, s = p.key_len, p.salt_len
        m = self._ssl.export_keying_material(b"EXTRACTOR-dtls_srtp", 2 * (n + s))
        client = m[:n] + m[2 * n:2 * n + s]
        server = m[n:2 * n] + m[2 * n + s:]
        if self.role == "client":
            return SrtpKeyMaterial(p.suite, tx=client, rx=server)
        return SrtpKeyMaterial(p.suite, tx=server, rx=client)

    def _abort(self, now: float, reason: str) -> None:
        self._send_close_notify(now)
        self._fail(reason)

    def _send_close_notify(self, now: float) -> None:
        with contextlib.suppress(SSL.Error):
            self._ssl.shutdown()
        self._flush(now)

    def _fail(self, reason: str) -> None:
        self._end(DtlsFailed(reason))

    def _end(self, event: DtlsEvent) -> None:
        self.state = "failed" if isinstance(event, DtlsFailed) else "closed"
        self._retransmit_at = None
        self._events.append(event)

    def _flush(self, now: float) -> None:
        stream = b""
        while True:
            try:
                chunk = self._ssl.bio_read(_READ_CHUNK)
            except SSL.WantReadError:
                break
            if not chunk:
                break
            stream += chunk
        if stream:
            self._out.extend(pack_datagrams(split_records(stream), self._mtu))
        delay = self._ssl.DTLSv1_get_timeout()
        self._retransmit_at = None if delay is None else now + delay
