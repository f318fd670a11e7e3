"""SDP (RFC 4566) parsing and serialization, SDES (RFC 4568), offer/answer rewriting per leg.

Public API: ``parse_sdp`` -> ``SessionDescription`` (``.to_bytes()``), ``SdpError(status,
reason)``, ``parse_crypto``/``format_crypto``/``CryptoAttribute``, and the per-leg offer/answer
functions in ``gateway.sdp.offer_answer``.
"""

from gateway.sdp.crypto import CryptoAttribute, KeyParam, format_crypto, parse_crypto
from gateway.sdp.errors import SdpError
from gateway.sdp.model import Attribute, Connection, Media, Origin, SessionDescription, parse_sdp

__all__ = [
    "Attribute",
    "Connection",
    "CryptoAttribute",
    "KeyParam",
    "Media",
    "Origin",
    "SdpError",
    "SessionDescription",
    "format_crypto",
    "parse_crypto",
    "parse_sdp",
]
