"""Events a DTLS-SRTP session reports to whoever drives it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class SrtpKeyMaterial:
    """Keys exported per RFC 5764 §4.2, already split by direction for our role.

    ``tx``/``rx`` are master key || master salt. They stay out of repr so that a logged or
    raised event can never carry them.
    """

    suite: str  # config naming: AES_CM_128_HMAC_SHA1_80, AEAD_AES_128_GCM, ...
    tx: bytes = field(repr=False)
    rx: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class HandshakeCompleted:
    """The handshake finished and the peer's certificate matched its SDP fingerprint."""

    keys: SrtpKeyMaterial
    cipher: str
    version: str
    peer_fingerprint: str  # sha-256 of the peer certificate, for logs and CDRs


@dataclass(frozen=True, slots=True)
class DtlsFailed:
    """The association is dead; ``reason`` is a short code for logs and security events."""

    reason: str


@dataclass(frozen=True, slots=True)
class DtlsClosed:
    """An orderly close (close_notify), from the peer or from us."""

    by_peer: bool


DtlsEvent = HandshakeCompleted | DtlsFailed | DtlsClosed
