"""The media relay's typed, message-shaped API: plain frozen data in and out.

The call layer (B2BUA) and the DTLS layer code against these types and the ``MediaRelayApi``
protocol only, so a relay worker can live in this process (``gateway.media.relay.MediaRelay``) or
behind the control protocol in another process (``gateway.media.control.RelayClient``) without the
callers changing. Legs are numbered 0 and 1; streams (m= lines) 0..n-1.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

Address = tuple[str, int]

# suite -> (master key length, master salt length) in bytes (RFC 4568 §6.2, RFC 6188, RFC 7714)
SUITE_KEY_LENGTHS: dict[str, tuple[int, int]] = {
    "AES_CM_128_HMAC_SHA1_80": (16, 14),
    "AES_CM_128_HMAC_SHA1_32": (16, 14),
    "AES_256_CM_HMAC_SHA1_80": (32, 14),
    "AEAD_AES_128_GCM": (16, 12),
    "AEAD_AES_256_GCM": (32, 12),
}
# RFC 7714 §14.2: AEAD suites authenticate and encrypt as one operation; no unencrypted variant.
_AEAD_SUITES = frozenset({"AEAD_AES_128_GCM", "AEAD_AES_256_GCM"})

# Why a packet was dropped; the keys of StreamStats.drops.
DROP_CAUSES = (
    "source",      # came from an address this leg has not latched / was not signalled
    "auth",        # SRTP/SRTCP authentication failed (tampered, wrong key)
    "replay",      # SRTP/SRTCP replay check failed (duplicate or too old)
    "plain_rtcp",  # plain RTCP on a leg that negotiated SRTCP (accept_plain_rtcp = false)
    "no_keys",     # SRTP/DTLS leg whose keys are not installed yet
    "no_remote",   # nowhere to send: the other leg has no signalled or latched address
    "malformed",   # too short, not RTP/RTCP, or an SRTP error other than auth/replay
    "send_error",  # the kernel refused the send
    "repeat_index",  # its SRTP index was already sent under this key (RFC 3711 §9.1), or its
                     # SSRC's outbound stream was evicted: never protected twice
)


class MediaError(Exception):
    """Base of every error the media layer raises to its callers."""


class PortsExhausted(MediaError):
    """No free port pair left in the configured range (the call layer answers 503)."""


class UnknownSession(MediaError, KeyError):
    """No session (or leg/stream) with that id; it may have been closed or timed out."""


class InvalidParams(MediaError, ValueError):
    """A suite, key length, leg/stream index or address that the relay cannot use."""


@dataclass(frozen=True, slots=True)
class SrtpParams:
    """One direction's SRTP crypto: suite and master key || master salt.

    ``key`` is never shown in repr. ``unencrypted_srtp``/``unencrypted_srtcp`` are the RFC 4568
    §6.3 session parameters (authentication only); they are refused for AEAD suites.
    """

    suite: str
    key: bytes = field(repr=False)
    unencrypted_srtp: bool = False
    unencrypted_srtcp: bool = False

    def __post_init__(self) -> None:
        lengths = SUITE_KEY_LENGTHS.get(self.suite)
        if lengths is None:
            raise InvalidParams(f"unsupported SRTP suite {self.suite!r}")
        if not isinstance(self.key, bytes):
            raise InvalidParams("SRTP key must be bytes")
        if len(self.key) != sum(lengths):
            raise InvalidParams(f"{self.suite} needs {sum(lengths)} bytes of key||salt, "
                                f"got {len(self.key)}")
        if self.suite in _AEAD_SUITES and (self.unencrypted_srtp or self.unencrypted_srtcp):
            raise InvalidParams(f"{self.suite} has no unencrypted mode")


def generate_params(suite: str, *, unencrypted_srtp: bool = False,
                    unencrypted_srtcp: bool = False) -> SrtpParams:
    """Fresh random master key and salt for ``suite`` (our outbound key for one leg)."""
    lengths = SUITE_KEY_LENGTHS.get(suite)
    if lengths is None:
        raise InvalidParams(f"unsupported SRTP suite {suite!r}")
    return SrtpParams(suite, secrets.token_bytes(sum(lengths)), unencrypted_srtp,
                      unencrypted_srtcp)


@dataclass(frozen=True, slots=True)
class LegConfig:
    """Where one leg's stream sends to and how it is protected.

    ``rx`` is the peer's key (we unprotect what it sends), ``tx`` ours (we protect what we send to
    it); both None = plain RTP. ``dtls=True`` marks a DTLS-SRTP leg: no media flows on it until
    ``rx`` and ``tx`` are installed. ``remote_rtcp`` None without rtcp-mux means RTP port + 1.

    ``rtcp_rx``/``rtcp_tx``, only without rtcp-mux: separate SRTCP keys, for DTLS-SRTP where the
    RTCP port runs its own association (RFC 5764 §4.1); None = SRTCP uses ``rx``/``tx``, except
    on a DTLS leg without rtcp-mux, whose RTCP waits for its own keys. Either pair may arrive
    first: RTCP or RTP flows as soon as its own keys are in.
    """

    remote_rtp: Address | None = None
    remote_rtcp: Address | None = None
    rtcp_mux: bool = True
    rx: SrtpParams | None = None
    tx: SrtpParams | None = None
    nat_learning: bool = False
    accept_plain_rtcp: bool = False
    dtls: bool = False
    rtcp_rx: SrtpParams | None = None
    rtcp_tx: SrtpParams | None = None

    def __post_init__(self) -> None:
        if (self.rx is None) != (self.tx is None):
            raise InvalidParams("rx and tx must both be set (SRTP) or both be None (plain RTP)")
        if (self.rtcp_rx is None) != (self.rtcp_tx is None):
            raise InvalidParams("rtcp_rx and rtcp_tx must both be set or both be None")
        if self.rtcp_rx is not None and (self.rtcp_mux or (not self.dtls and self.rx is None)):
            raise InvalidParams("separate SRTCP keys need a secure leg without rtcp-mux")


@dataclass(frozen=True, slots=True)
class LocalStream:
    """The relay's own addresses for one leg's stream; ``rtcp == rtp`` when rtcp-mux."""

    rtp: Address
    rtcp: Address


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """What the call layer puts into each leg's SDP: ``legs[leg][stream]``."""

    session_id: str
    legs: tuple[tuple[LocalStream, ...], tuple[LocalStream, ...]]

    def local(self, leg: int, stream: int = 0) -> LocalStream:
        return self.legs[leg][stream]


@dataclass(frozen=True, slots=True)
class StreamStats:
    """Counters of packets received on one leg's stream (in) and sent out of it (out).

    ``packets_in`` counts valid packets (authenticated, or from an admitted plain source) whether
    or not they could be forwarded; ``drops`` counts every packet not forwarded, by cause, so a
    valid packet the other leg could not take (no_remote, no_keys, send_error) is in both.
    """

    packets_in: int = 0
    bytes_in: int = 0
    packets_out: int = 0
    bytes_out: int = 0
    auth_failures: int = 0
    replays: int = 0
    drops: dict[str, int] = field(default_factory=dict)
    last_packet: float | None = None  # loop time a valid packet was last seen (±1 s)
    latched_rtp: Address | None = None
    latched_rtcp: Address | None = None
    failed_source: Address | None = None  # where the last packet that failed auth/replay came from


@dataclass(frozen=True, slots=True)
class SessionStats:
    """Per-session counters, ``legs[leg][stream]``; auth/replay sums feed the firewall."""

    session_id: str
    legs: tuple[tuple[StreamStats, ...], tuple[StreamStats, ...]]

    @property
    def auth_failures(self) -> int:
        return sum(s.auth_failures for leg in self.legs for s in leg)

    @property
    def replays(self) -> int:
        return sum(s.replays for leg in self.legs for s in leg)


@dataclass(frozen=True, slots=True)
class RelayTotals:
    """Totals across all sessions ever run by this relay (monotonic, for a metrics scraper)."""

    sessions_active: int
    sessions_created: int
    ports_free: int
    packets_in: int
    bytes_in: int
    packets_out: int
    bytes_out: int
    auth_failures: int
    replays: int
    drops: dict[str, int]
    timeouts: int


DtlsHandler = Callable[[bytes, Address], None]
TimeoutHandler = Callable[[str, int], None]


class MediaRelayApi(Protocol):
    """What the call layer may ask of a relay, local or in another process."""

    async def create_session(self, streams: int = 1,
                             rtcp_mux: tuple[bool, bool] = (True, True),
                             timeout: float | None = None) -> SessionInfo:
        """Allocate ports for both legs of ``streams`` streams; PortsExhausted when none left.

        ``timeout`` overrides the configured inactivity timeout for this session.
        """
        ...

    async def update_leg(self, session_id: str, leg: int, stream: int, cfg: LegConfig) -> None:
        """Install or replace a leg's remote address and keys.

        Unchanged ``rx``/``tx`` params keep their SRTP contexts (and so the ROC); a changed
        ``rx`` keeps the previous inbound context as a fallback until a packet authenticates
        with the new one, so a re-key has no gap. A changed key continues each SSRC's rollover
        counter (RFC 3711 §3.3.1, RFC 4568 §7.1.4; see ``gateway.media.srtp``).
        """
        ...

    async def add_rx(self, session_id: str, leg: int, stream: int, params: SrtpParams) -> None:
        """Offer-time re-key: also accept ``params`` inbound until commit (update_leg) or drop."""
        ...

    async def drop_rx(self, session_id: str, leg: int, stream: int) -> None:
        """The offer was rejected: forget the inbound context added by ``add_rx``."""
        ...

    async def stats(self, session_id: str) -> SessionStats: ...

    async def close_session(self, session_id: str) -> None:
        """Release the session's ports; unknown ids are ignored (close is idempotent)."""
        ...

    def totals(self) -> RelayTotals: ...

    async def close(self) -> None: ...


class DtlsSocketApi(Protocol):
    """The DTLS layer's door to a leg's socket (in-process relays only).

    Datagrams whose first byte is 20..63 (RFC 7983) go to the handler set for that leg/stream
    and port (RTP, or the separate RTCP port without rtcp-mux) instead of the media path; keys
    the handshake derives are then installed with update_leg.
    """

    def set_dtls_handler(self, session_id: str, leg: int, stream: int,
                         handler: DtlsHandler | None, rtcp: bool = False) -> None:
        """``rtcp=True``: the handler for DTLS arriving on the leg's separate RTCP port."""
        ...

    def send_raw(self, session_id: str, leg: int, stream: int, data: bytes,
                 addr: Address, rtcp: bool = False) -> None:
        """Send ``data`` as is from the leg's RTP socket, or with ``rtcp=True`` from its separate
        RTCP socket, bound on first use (DTLS records, STUN); InvalidParams if it is taken."""
        ...
