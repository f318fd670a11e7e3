"""A TLS ClientHello written by hand and the server's first flight read back, sans-IO.

OpenSSL on this side refuses to offer TLS 1.0, NULL or RC4 suites, so asking a server whether it
*accepts* them needs a hello we build ourselves (RFC 5246 §7.4.1.2, RFC 8446 §4.1.2). We never
finish such a handshake: the ServerHello (or the alert) is the answer, and for TLS 1.2 and below
the server's Certificate message comes in the clear with it.
"""

from __future__ import annotations

import hashlib
import secrets
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

TLS10, TLS11, TLS12, TLS13 = 0x0301, 0x0302, 0x0303, 0x0304
VERSION_NAMES = {TLS10: "TLS 1.0", TLS11: "TLS 1.1", TLS12: "TLS 1.2", TLS13: "TLS 1.3",
                 0x0300: "SSL 3.0"}

# RFC 8446 §4.1.3: a ServerHello with this random is a HelloRetryRequest.
HRR_RANDOM = hashlib.sha256(b"HelloRetryRequest").digest()

# IANA TLS cipher suite registry, the ones the checks name.
SUITES: dict[int, str] = {
    0x0001: "TLS_RSA_WITH_NULL_MD5", 0x0002: "TLS_RSA_WITH_NULL_SHA",
    0x003B: "TLS_RSA_WITH_NULL_SHA256", 0xC006: "TLS_ECDHE_ECDSA_WITH_NULL_SHA",
    0xC010: "TLS_ECDHE_RSA_WITH_NULL_SHA",
    0x0004: "TLS_RSA_WITH_RC4_128_MD5", 0x0005: "TLS_RSA_WITH_RC4_128_SHA",
    0xC007: "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA", 0xC011: "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
    0x000A: "TLS_RSA_WITH_3DES_EDE_CBC_SHA", 0xC012: "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
    0xC009: "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", 0xC00A: "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    0xC013: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", 0xC014: "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    0x0033: "TLS_DHE_RSA_WITH_AES_128_CBC_SHA", 0x0039: "TLS_DHE_RSA_WITH_AES_256_CBC_SHA",
    0x002F: "TLS_RSA_WITH_AES_128_CBC_SHA", 0x0035: "TLS_RSA_WITH_AES_256_CBC_SHA",
    0x003C: "TLS_RSA_WITH_AES_128_CBC_SHA256", 0x003D: "TLS_RSA_WITH_AES_256_CBC_SHA256",
    0x009C: "TLS_RSA_WITH_AES_128_GCM_SHA256", 0x009D: "TLS_RSA_WITH_AES_256_GCM_SHA384",
    0xC02B: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    0xC02C: "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    0xC02F: "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    0xC030: "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    0xCCA8: "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    0xCCA9: "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    0x009E: "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256", 0x009F: "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384",
    0x1301: "TLS_AES_128_GCM_SHA256", 0x1302: "TLS_AES_256_GCM_SHA384",
    0x1303: "TLS_CHACHA20_POLY1305_SHA256",
}
NULL = (0x0001, 0x0002, 0x003B, 0xC006, 0xC010)
RC4 = (0x0004, 0x0005, 0xC007, 0xC011)
CBC_SHA1 = (0xC013, 0xC014, 0xC009, 0xC00A, 0x0033, 0x0039, 0x002F, 0x0035, 0x000A, 0xC012)
STATIC_RSA = (0x002F, 0x0035, 0x003C, 0x003D, 0x009C, 0x009D, 0x000A)
FORWARD_SECRET_AEAD = (0xC02B, 0xC02C, 0xC02F, 0xC030, 0xCCA8, 0xCCA9, 0x009E, 0x009F)
TLS13_SUITES = (0x1301, 0x1302, 0x1303)
# Everything a TLS 1.0-1.2 server might pick, strong first: the version probes' offer.
BROAD = FORWARD_SECRET_AEAD + CBC_SHA1 + STATIC_RSA[2:6]

ALERTS = {0: "close_notify", 10: "unexpected_message", 20: "bad_record_mac",
          40: "handshake_failure", 42: "bad_certificate", 47: "illegal_parameter",
          50: "decode_error", 51: "decrypt_error", 70: "protocol_version",
          71: "insufficient_security", 80: "internal_error", 86: "inappropriate_fallback",
          90: "user_canceled", 100: "no_renegotiation", 109: "missing_extension",
          112: "unrecognized_name", 116: "certificate_required", 120: "no_application_protocol"}

EXT_SERVER_NAME = 0
EXT_SUPPORTED_GROUPS = 10
EXT_EC_POINT_FORMATS = 11
EXT_SIGNATURE_ALGORITHMS = 13
EXT_EXTENDED_MASTER_SECRET = 23
EXT_SUPPORTED_VERSIONS = 43
EXT_KEY_SHARE = 51
EXT_RENEGOTIATION_INFO = 0xFF01
COMPRESSION_DEFLATE = 1

_GROUPS = (29, 23, 24, 256)  # x25519, secp256r1, secp384r1, ffdhe2048
_SIGALGS = (0x0804, 0x0805, 0x0806, 0x0403, 0x0503, 0x0603, 0x0401, 0x0501, 0x0601,
            0x0201, 0x0203)


class HelloError(ValueError):
    """The server's bytes are not TLS."""


def _u16(n: int) -> bytes:
    return struct.pack("!H", n)


def _vec16(data: bytes) -> bytes:
    return _u16(len(data)) + data


def _ext(kind: int, body: bytes) -> bytes:
    return _u16(kind) + _vec16(body)


def client_hello(version: int, suites: Sequence[int], *, server_name: str | None = None,
                 compression: bytes = b"\x00", random: bytes | None = None) -> bytes:
    """One TLS record holding a ClientHello. ``version`` TLS13 offers only 1.3 (through
    supported_versions, with an x25519 key share of random bytes: we never compute a secret)."""
    rnd = random if random is not None else secrets.token_bytes(32)
    exts = b""
    if server_name:
        name = server_name.encode("idna")
        exts += _ext(EXT_SERVER_NAME, _vec16(b"\x00" + _vec16(name)))
    exts += _ext(EXT_SUPPORTED_GROUPS, _vec16(b"".join(_u16(g) for g in _GROUPS)))
    exts += _ext(EXT_EC_POINT_FORMATS, b"\x01\x00")
    exts += _ext(EXT_SIGNATURE_ALGORITHMS, _vec16(b"".join(_u16(s) for s in _SIGALGS)))
    exts += _ext(EXT_EXTENDED_MASTER_SECRET, b"")
    exts += _ext(EXT_RENEGOTIATION_INFO, b"\x00")
    legacy = version
    if version == TLS13:
        legacy = TLS12
        exts += _ext(EXT_SUPPORTED_VERSIONS, b"\x02" + _u16(TLS13))
        share = _u16(29) + _vec16(secrets.token_bytes(32))
        exts += _ext(EXT_KEY_SHARE, _vec16(share))
    body = (_u16(legacy) + rnd + b"\x20" + secrets.token_bytes(32)
            + _vec16(b"".join(_u16(s) for s in suites))
            + bytes([len(compression)]) + compression + _vec16(exts))
    handshake = b"\x01" + struct.pack("!I", len(body))[1:] + body
    return b"\x16" + _u16(TLS10) + _vec16(handshake)


@dataclass(frozen=True, slots=True)
class ServerHello:
    version: int  # the negotiated one (supported_versions wins over legacy_version)
    suite: int
    compression: int
    extensions: dict[int, bytes]
    retry: bool = False  # a HelloRetryRequest: TLS 1.3 is spoken, another group wanted

    @property
    def version_name(self) -> str:
        return VERSION_NAMES.get(self.version, f"0x{self.version:04x}")

    @property
    def suite_name(self) -> str:
        return SUITES.get(self.suite, f"0x{self.suite:04X}")

    @property
    def secure_renegotiation(self) -> bool:
        return EXT_RENEGOTIATION_INFO in self.extensions


@dataclass(frozen=True, slots=True)
class Alert:
    level: int
    description: int

    @property
    def name(self) -> str:
        return ALERTS.get(self.description, str(self.description))


@dataclass
class Flight:
    """What the server sent before it waits for us: hello or alert, and clear certificates."""

    hello: ServerHello | None = None
    alert: Alert | None = None
    certificates: list[bytes] = field(default_factory=list)
    done: bool = False  # ServerHelloDone seen, or nothing more comes in the clear (TLS 1.3)


def read_flight(data: bytes) -> Flight:
    """Parse the records received so far; ``done`` tells the caller it may stop reading."""
    flight = Flight()
    handshake = b""
    pos = 0
    while pos + 5 <= len(data):
        ctype, _, length = struct.unpack_from("!BHH", data, pos)
        if ctype not in (20, 21, 22, 23) or length > 18432:
            raise HelloError(f"not a TLS record (type {ctype})")
        if pos + 5 + length > len(data):
            break
        body = data[pos + 5:pos + 5 + length]
        pos += 5 + length
        if ctype == 21 and len(body) >= 2:
            flight.alert = Alert(body[0], body[1])
            flight.done = True
            return flight
        if ctype == 22:
            handshake += body
        else:  # ChangeCipherSpec or encrypted data: the clear part is over
            flight.done = flight.hello is not None or bool(handshake)
            break
    _handshake_messages(handshake, flight)
    return flight


def _handshake_messages(data: bytes, flight: Flight) -> None:
    pos = 0
    while pos + 4 <= len(data):
        kind = data[pos]
        length = int.from_bytes(data[pos + 1:pos + 4], "big")
        if pos + 4 + length > len(data):
            return
        body = data[pos + 4:pos + 4 + length]
        pos += 4 + length
        if kind == 2:
            flight.hello = parse_server_hello(body)
            if flight.hello.version == TLS13 or flight.hello.retry:
                flight.done = True
                return
        elif kind == 11:
            flight.certificates = _certificates(body)
        elif kind == 14:
            flight.done = True
            return


def parse_server_hello(body: bytes) -> ServerHello:
    try:
        legacy = struct.unpack_from("!H", body, 0)[0]
        rnd = body[2:34]
        sid_len = body[34]
        pos = 35 + sid_len
        suite, compression = struct.unpack_from("!HB", body, pos)
        pos += 3
        exts: dict[int, bytes] = {}
        if pos + 2 <= len(body):
            end = pos + 2 + struct.unpack_from("!H", body, pos)[0]
            pos += 2
            while pos + 4 <= end:
                kind, n = struct.unpack_from("!HH", body, pos)
                exts[kind] = body[pos + 4:pos + 4 + n]
                pos += 4 + n
    except (struct.error, IndexError):
        raise HelloError("truncated ServerHello") from None
    version = legacy
    chosen = exts.get(EXT_SUPPORTED_VERSIONS)
    if chosen is not None and len(chosen) == 2:
        version = struct.unpack("!H", chosen)[0]
    return ServerHello(version, suite, compression, exts, retry=rnd == HRR_RANDOM)


def _certificates(body: bytes) -> list[bytes]:
    out = []
    total = int.from_bytes(body[0:3], "big")
    pos = 3
    end = min(3 + total, len(body))
    while pos + 3 <= end:
        n = int.from_bytes(body[pos:pos + 3], "big")
        out.append(body[pos + 3:pos + 3 + n])
        pos += 3 + n
    return out
