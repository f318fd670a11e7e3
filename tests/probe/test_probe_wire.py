"""The probe's own IO against real local peers: raw TLS hellos against Python's TLS server,
and the RTP bleed check against a deliberately naive latching relay (a positive control: the
check must be able to fail)."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from gateway.ops.keys import init_keys
from gateway.tools.probe import bleed, hello
from gateway.tools.probe.target import Endpoint, Guard
from gateway.tools.probe.tls import ask
from gateway.tools.probe.wire import MediaSocket


@contextlib.contextmanager
def tls_server(tmp: Path, minimum: ssl.TLSVersion) -> Iterator[Endpoint]:
    keys = init_keys(tmp / "keys", domain="tls.probe.test")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = minimum
    ctx.load_cert_chain(keys.gateway_cert, keys.gateway_key)
    lsock = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        lsock.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = lsock.accept()
            except TimeoutError:
                continue
            with contextlib.suppress(OSError, ssl.SSLError):
                conn.settimeout(2)
                ctx.wrap_socket(conn, server_side=True).close()
            conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield Endpoint("127.0.0.1", lsock.getsockname()[1], "tls")
    finally:
        stop.set()
        t.join(2)
        lsock.close()


def guard(ep: Endpoint) -> Guard:
    return Guard(frozenset({ep.address}), {ep.host}, 50, 30)


def test_raw_hellos_read_versions_suites_and_the_clear_chain(tmp_path: Path) -> None:
    with tls_server(tmp_path, ssl.TLSVersion.TLSv1_2) as ep:
        g = guard(ep)
        old = ask(ep, g, hello.TLS10, hello.BROAD, server_name="tls.probe.test")
        assert isinstance(old, hello.Flight) and old.alert is not None
        assert old.alert.name == "protocol_version"
        tls12 = ask(ep, g, hello.TLS12, hello.BROAD, server_name="tls.probe.test")
        assert isinstance(tls12, hello.Flight) and tls12.hello is not None
        assert tls12.hello.version == hello.TLS12 and tls12.hello.secure_renegotiation
        assert "ECDHE" in tls12.hello.suite_name
        leaf = x509.load_der_x509_certificate(tls12.certificates[0])
        assert "tls.probe.test" in str(leaf.subject)
        tls13 = ask(ep, g, hello.TLS13, hello.TLS13_SUITES, server_name=None)
        assert isinstance(tls13, hello.Flight) and tls13.hello is not None
        assert tls13.hello.version == hello.TLS13
        null = ask(ep, g, hello.TLS12, hello.NULL, server_name=None)
        assert isinstance(null, hello.Flight) and null.hello is None and null.alert is not None
        assert g.sent == 4


class LatchingRelay:
    """Forwards between two ports and latches onto the first source it hears on each: the
    behaviour RTP bleed exploits. ``strict`` takes packets only from peers set up front (the
    signalled addresses). A test peer, not part of the product."""

    def __init__(self, strict: bool = False) -> None:
        self.strict = strict
        self.a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for s in (self.a, self.b):
            s.bind(("127.0.0.1", 0))
            s.settimeout(0.05)
        self.peer: dict[int, tuple[str, int]] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.is_set():
            for src, dst in ((self.a, self.b), (self.b, self.a)):
                try:
                    data, addr = src.recvfrom(2048)
                except (TimeoutError, OSError):
                    continue
                known = self.peer.setdefault(src.fileno(), addr)
                if self.strict and known != addr:
                    continue
                to = self.peer.get(dst.fileno())
                if to is not None:
                    dst.sendto(data, to)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        self.a.close()
        self.b.close()


@pytest.mark.parametrize("latching", [True, False])
def test_bleed_check_catches_a_latching_relay(latching: bool) -> None:
    g = Guard(frozenset(), {"127.0.0.1"}, 500, 30)
    secure, legacy = MediaSocket(g, "127.0.0.1"), MediaSocket(g, "127.0.0.1")
    relay = LatchingRelay(strict=not latching)
    if not latching:  # told the signalled addresses up front, it neither latches nor forwards
        relay.peer[relay.a.fileno()] = secure.local
        relay.peer[relay.b.fileno()] = legacy.local
    try:
        obs = bleed.run(g, secure=secure, legacy=legacy,
                        secure_target=relay.a.getsockname(), legacy_target=relay.b.getsockname(),
                        our_key=None, local_ip="127.0.0.1")
    finally:
        relay.close()
        secure.close()
        legacy.close()
    finding = bleed.judge_bleed(obs)
    if latching:
        assert finding.must_failed and obs.secure_stranger_got > 0
    else:
        assert finding.result == "pass", finding.evidence


def test_a_target_that_does_not_answer_is_a_failed_must_not_a_pass() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "probe",
                             f"udp:127.0.0.1:{port}", "--profile", "pbx", "--json"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    doc = json.loads(result.stdout)
    checks = {f["check"]: f["result"] for f in doc["findings"]}
    assert checks["sip.options"] == "fail"
    assert "media.plain_rtp_refused" not in checks  # nothing judged on silence
