"""The hand-built ClientHello and the reading of a server's first flight, sans-IO."""

from __future__ import annotations

import contextlib
import struct

from hypothesis import given
from hypothesis import strategies as st

from gateway.tools.probe import hello


def records(*parts: tuple[int, bytes]) -> bytes:
    return b"".join(bytes([t]) + struct.pack("!HH", 0x0303, len(b)) + b for t, b in parts)


def handshake(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + len(body).to_bytes(3, "big") + body


def server_hello(version: int = hello.TLS12, suite: int = 0xC02F, exts: bytes = b"",
                 random: bytes = b"\x01" * 32) -> bytes:
    return struct.pack("!H", version) + random + b"\x00" + struct.pack("!HB", suite, 0) + (
        struct.pack("!H", len(exts)) + exts)


def test_client_hello_is_one_handshake_record_with_what_was_asked() -> None:
    rec = hello.client_hello(hello.TLS10, hello.RC4, server_name="sbc.example")
    assert rec[0] == 22 and struct.unpack("!H", rec[3:5])[0] == len(rec) - 5
    body = rec[9:]
    assert struct.unpack("!H", body[:2])[0] == hello.TLS10
    n = struct.unpack("!H", body[67:69])[0]
    assert [struct.unpack("!H", body[69 + i:71 + i])[0] for i in range(0, n, 2)] == list(hello.RC4)
    assert b"sbc.example" in rec
    tls13 = hello.client_hello(hello.TLS13, hello.TLS13_SUITES)
    assert struct.unpack("!H", tls13[9:11])[0] == hello.TLS12  # legacy_version (RFC 8446 §4.1.2)
    assert b"\x00\x2b\x00\x03\x02\x03\x04" in tls13  # supported_versions: 1.3 only


def test_flight_with_hello_certificate_and_done_across_records() -> None:
    reneg = struct.pack("!HH", hello.EXT_RENEGOTIATION_INFO, 1) + b"\x00"
    msgs = (handshake(2, server_hello(exts=reneg)) + handshake(11, b"\x00\x00\x07\x00\x00\x04cert")
            + handshake(14, b""))
    data = records((22, msgs[:30]), (22, msgs[30:]))
    partial = hello.read_flight(data[:20])
    assert not partial.done
    f = hello.read_flight(data)
    assert f.done and f.hello is not None and f.hello.secure_renegotiation
    assert f.hello.suite_name == "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
    assert f.certificates == [b"cert"]


def test_tls13_hello_retry_and_alerts() -> None:
    sv = struct.pack("!HHH", hello.EXT_SUPPORTED_VERSIONS, 2, hello.TLS13)
    f = hello.read_flight(records((22, handshake(2, server_hello(exts=sv, suite=0x1301)))))
    assert f.done and f.hello is not None and f.hello.version_name == "TLS 1.3"
    hrr = hello.read_flight(records((22, handshake(2, server_hello(
        exts=sv, random=hello.HRR_RANDOM)))))
    assert hrr.hello is not None and hrr.hello.retry
    alert = hello.read_flight(records((21, b"\x02\x46")))
    assert alert.done and alert.alert is not None and alert.alert.name == "protocol_version"


@given(st.binary(max_size=300))
def test_read_flight_is_total(data: bytes) -> None:
    for raw in (data, records((22, data)), records((22, handshake(2, data)))):
        with contextlib.suppress(hello.HelloError):
            hello.read_flight(raw)
