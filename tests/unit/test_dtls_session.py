"""The sans-IO DTLS-SRTP core: two sessions wired back to back in memory, time passed in."""

from __future__ import annotations

import warnings

import pylibsrtp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from OpenSSL import crypto

from gateway.media.dtls import PROFILES, DtlsConfigError, DtlsSession, dtls_suites
from gateway.media.dtls_events import DtlsClosed, DtlsFailed, HandshakeCompleted
from gateway.media.dtls_identity import DtlsIdentity
from gateway.media.dtls_records import is_dtls, pack_datagrams, split_records
from gateway.ops.keys import make_self_signed

LIBSRTP_PROFILE = {
    "AEAD_AES_256_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM,
    "AEAD_AES_128_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
    "AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
}
RTP = bytes([0x80, 0x00, 0x00, 0x01, 0, 0, 0, 160, 0x12, 0x34, 0x56, 0x78]) + b"\xd5" * 160


def ecdsa_identity() -> DtlsIdentity:
    key, cert = make_self_signed("test dtls")
    return DtlsIdentity(cert, key)


def rsa_sha1_identity() -> DtlsIdentity:
    """What baresip presents: self-signed RSA, signed with sha1WithRSAEncryption."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        pkey = crypto.PKey()
        pkey.generate_key(crypto.TYPE_RSA, 2048)
        x509 = crypto.X509()
        x509.get_subject().CN = "baresip"
        x509.set_issuer(x509.get_subject())
        x509.set_pubkey(pkey)
        x509.gmtime_adj_notBefore(-60)
        x509.gmtime_adj_notAfter(3600)
        x509.set_serial_number(7)
        x509.sign(pkey, "sha1")
    return DtlsIdentity(x509.to_cryptography(), pkey.to_cryptography_key())


def pair(client_id: DtlsIdentity, server_id: DtlsIdentity, **kw: object
         ) -> tuple[DtlsSession, DtlsSession]:
    client = DtlsSession(client_id, "client",
                         remote_fingerprints=[("sha-256", server_id.fingerprint())], **kw)
    server = DtlsSession(server_id, "server",
                         remote_fingerprints=[("sha-256", client_id.fingerprint())], **kw)
    return client, server


def run(a: DtlsSession, b: DtlsSession, now: float = 0.0, rounds: int = 10) -> None:
    a.start(now)
    b.start(now)
    for _ in range(rounds):
        moved = False
        for src, dst in ((a, b), (b, a)):
            for datagram in src.datagrams_to_send():
                assert is_dtls(datagram)
                dst.receive_datagram(datagram, now)
                moved = True
        if not moved:
            return


def srtp_roundtrip(sender_suite: str, tx: bytes, rx: bytes) -> bytes:
    profile = LIBSRTP_PROFILE[sender_suite]
    out = pylibsrtp.Session(pylibsrtp.Policy(key=tx, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                                             srtp_profile=profile))
    inb = pylibsrtp.Session(pylibsrtp.Policy(key=rx, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
                                             srtp_profile=profile))
    return inb.unprotect(out.protect(RTP))


@pytest.mark.parametrize("suite", list(PROFILES))
def test_handshake_exports_matching_keys_for_each_profile(suite: str) -> None:
    client, server = pair(ecdsa_identity(), ecdsa_identity(), suites=[suite])
    run(client, server)
    ce, se = client.next_event(), server.next_event()
    assert isinstance(ce, HandshakeCompleted) and isinstance(se, HandshakeCompleted)
    assert ce.keys.suite == se.keys.suite == suite
    key, salt = PROFILES[suite].key_len, PROFILES[suite].salt_len
    assert len(ce.keys.tx) == key + salt
    assert ce.keys.tx == se.keys.rx and ce.keys.rx == se.keys.tx
    assert ce.keys.tx != ce.keys.rx
    assert srtp_roundtrip(suite, ce.keys.tx, se.keys.rx) == RTP
    assert srtp_roundtrip(suite, se.keys.tx, ce.keys.rx) == RTP
    assert client.state == server.state == "connected"
    assert ce.version == "DTLSv1.2"


def test_server_preference_picks_strongest_common_profile() -> None:
    client, server = pair(ecdsa_identity(), ecdsa_identity())
    run(client, server)
    event = client.next_event()
    assert isinstance(event, HandshakeCompleted)
    assert event.keys.suite == "AEAD_AES_256_GCM"


def test_rsa_sha1_signed_peer_works_both_roles() -> None:
    for ours_is_client in (True, False):
        ours, peer = ecdsa_identity(), rsa_sha1_identity()
        client, server = pair(ours, peer) if ours_is_client else pair(peer, ours)
        run(client, server)
        ce, se = client.next_event(), server.next_event()
        assert isinstance(ce, HandshakeCompleted) and isinstance(se, HandshakeCompleted)
        # The server's certificate decides the suite: RSA when the baresip-like peer serves.
        assert ce.cipher.startswith("ECDHE-RSA-" if ours_is_client else "ECDHE-ECDSA-")


def test_fingerprint_mismatch_fails_both_sides_with_alert() -> None:
    a, b, stranger = ecdsa_identity(), ecdsa_identity(), ecdsa_identity()
    client = DtlsSession(a, "client", remote_fingerprints=[("sha-256", b.fingerprint())])
    server = DtlsSession(b, "server", remote_fingerprints=[("sha-256", stranger.fingerprint())])
    run(client, server)
    se, ce = server.next_event(), client.next_event()
    assert se == DtlsFailed("fingerprint-mismatch")
    assert isinstance(ce, DtlsFailed) and ce.reason.startswith(("alert:", "handshake-error:"))
    assert "alert" in ce.reason
    assert server.state == client.state == "failed"
    assert server.next_event() is None and client.next_event() is None


def test_keys_held_back_until_late_fingerprint_arrives() -> None:
    a, b = ecdsa_identity(), ecdsa_identity()
    client = DtlsSession(a, "client", remote_fingerprints=[("sha-256", b.fingerprint())])
    server = DtlsSession(b, "server")  # offerer: the answer (with a=fingerprint) is not here yet
    run(client, server)
    assert isinstance(client.next_event(), HandshakeCompleted)
    assert server.state == "verifying" and server.next_event() is None
    server.set_remote_fingerprints([("SHA-256", a.fingerprint().lower())], now=0.5)
    event = server.next_event()
    assert isinstance(event, HandshakeCompleted) and server.state == "connected"


def test_late_fingerprint_mismatch_fails_and_sends_close_notify() -> None:
    a, b = ecdsa_identity(), ecdsa_identity()
    client = DtlsSession(a, "client", remote_fingerprints=[("sha-256", b.fingerprint())])
    server = DtlsSession(b, "server")
    run(client, server)
    assert isinstance(client.next_event(), HandshakeCompleted)
    server.set_remote_fingerprints([("sha-256", ecdsa_identity().fingerprint())], now=0.5)
    assert server.next_event() == DtlsFailed("fingerprint-mismatch")
    for datagram in server.datagrams_to_send():
        client.receive_datagram(datagram, 0.6)
    assert client.next_event() == DtlsClosed(by_peer=True)


def test_verifying_state_times_out_without_answer() -> None:
    a, b = ecdsa_identity(), ecdsa_identity()
    client = DtlsSession(a, "client", remote_fingerprints=[("sha-256", b.fingerprint())])
    server = DtlsSession(b, "server", handshake_timeout=4.0)
    run(client, server, now=100.0)
    assert server.get_timer() == 104.0
    server.handle_timer(104.0)
    assert server.next_event() == DtlsFailed("fingerprint-timeout")


def test_handshake_timeout_without_peer() -> None:
    b = ecdsa_identity()
    client = DtlsSession(ecdsa_identity(), "client",
                         remote_fingerprints=[("sha-256", b.fingerprint())],
                         handshake_timeout=3.0)
    client.start(50.0)
    hello = client.datagrams_to_send()
    assert len(hello) == 1 and hello[0][0] == 22  # a handshake record: the ClientHello
    timer = client.get_timer()
    assert timer is not None and 50.0 < timer <= 53.0  # retransmission first, deadline later
    client.handle_timer(52.9)
    assert client.next_event() is None
    client.handle_timer(53.0)
    assert client.next_event() == DtlsFailed("handshake-timeout")
    assert client.get_timer() is None
    client.receive_datagram(b"\x16\xfe\xfd" + b"\x00" * 20, 54.0)
    assert client.datagrams_to_send() == [] and client.next_event() is None


@pytest.mark.parametrize(("accept", "expected"), [(True, True), (False, False)])
def test_sha1_fingerprint_accepted_only_when_configured(accept: bool, expected: bool) -> None:
    a, b = ecdsa_identity(), rsa_sha1_identity()
    client = DtlsSession(a, "client", remote_fingerprints=[("SHA-1", b.fingerprint("sha-1"))],
                         accept_sha1=accept)
    server = DtlsSession(b, "server", remote_fingerprints=[("sha-256", a.fingerprint())])
    run(client, server)
    event = client.next_event()
    if expected:
        assert isinstance(event, HandshakeCompleted)
    else:
        assert event == DtlsFailed("fingerprint-sha1-refused")


def test_strongest_signalled_hash_decides() -> None:
    """RFC 8122 §5: a wrong sha-512 is not excused by a right sha-256."""
    a, b = ecdsa_identity(), ecdsa_identity()
    wrong = ecdsa_identity().fingerprint("sha-512")
    client = DtlsSession(a, "client", remote_fingerprints=[("sha-256", b.fingerprint()),
                                                           ("sha-512", wrong)])
    server = DtlsSession(b, "server", remote_fingerprints=[("sha-256", a.fingerprint())])
    run(client, server)
    assert client.next_event() == DtlsFailed("fingerprint-mismatch")


def test_no_common_srtp_profile_fails() -> None:
    a, b = ecdsa_identity(), ecdsa_identity()
    client = DtlsSession(a, "client", remote_fingerprints=[("sha-256", b.fingerprint())],
                         suites=["AES_CM_128_HMAC_SHA1_32"])
    server = DtlsSession(b, "server", remote_fingerprints=[("sha-256", a.fingerprint())],
                         suites=["AEAD_AES_128_GCM"])
    run(client, server)
    assert client.next_event() == DtlsFailed("no-srtp-profile")
    assert server.next_event() == DtlsFailed("no-srtp-profile")


def test_suites_without_dtls_profile_are_refused() -> None:
    assert dtls_suites(["AES_256_CM_HMAC_SHA1_80", "AEAD_AES_128_GCM"]) == ("AEAD_AES_128_GCM",)
    with pytest.raises(DtlsConfigError):
        DtlsSession(ecdsa_identity(), "client", suites=["AES_256_CM_HMAC_SHA1_80"])


def test_close_notify_reaches_peer() -> None:
    client, server = pair(ecdsa_identity(), ecdsa_identity())
    run(client, server)
    client.next_event()
    server.next_event()
    client.close(1.0)
    assert client.next_event() == DtlsClosed(by_peer=False)
    for datagram in client.datagrams_to_send():
        server.receive_datagram(datagram, 1.0)
    assert server.next_event() == DtlsClosed(by_peer=True)
    assert server.state == "closed"


def test_garbage_during_handshake_is_a_typed_failure_not_a_traceback() -> None:
    b = ecdsa_identity()
    server = DtlsSession(b, "server", remote_fingerprints=[("sha-256", b.fingerprint())])
    server.start(0.0)
    server.receive_datagram(b"\x16\xfe\xfd\x00\x00\x00\x00\x00\x00\x00\x00\x00\x05hello", 0.1)
    server.receive_datagram(b"\x17" * 40, 0.2)
    event = server.next_event()
    assert event is None or isinstance(event, DtlsFailed)


def test_events_never_show_key_material() -> None:
    client, server = pair(ecdsa_identity(), ecdsa_identity())
    run(client, server)
    event = client.next_event()
    assert isinstance(event, HandshakeCompleted)
    text = repr(event) + str(event)
    for secret in (event.keys.tx, event.keys.rx):
        assert secret.hex() not in text.lower() and repr(secret) not in text


def test_record_split_and_pack_keep_records_whole() -> None:
    def record(kind: int, n: int) -> bytes:
        return bytes([kind, 0xFE, 0xFD]) + b"\x00" * 8 + n.to_bytes(2, "big") + b"x" * n

    records = [record(22, 100), record(22, 1000), record(20, 1), record(22, 300)]
    stream = b"".join(records)
    assert split_records(stream) == records
    assert split_records(stream + b"\x16\xfe") == [*records, b"\x16\xfe"]
    datagrams = pack_datagrams(records, 1200)
    assert b"".join(datagrams) == stream
    assert [len(d) for d in datagrams] == [113 + 1013 + 14, 313]
    assert pack_datagrams([record(22, 1500)], 1200) == [record(22, 1500)]


def test_is_dtls_follows_rfc7983_ranges() -> None:
    assert is_dtls(b"\x14") and is_dtls(b"\x3f")
    assert not is_dtls(b"\x13") and not is_dtls(b"\x40") and not is_dtls(b"\x80")
    assert not is_dtls(b"")


IDENTITY_A, IDENTITY_B = ecdsa_identity(), ecdsa_identity()
dtls_garbage = st.lists(st.binary(min_size=1, max_size=300).map(lambda b: bytes([20 + b[0] % 44])
                                                                 + b[1:]), max_size=6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(garbage=dtls_garbage, role=st.sampled_from(["client", "server"]))
def test_garbage_in_any_handshake_state_never_raises(garbage: list[bytes], role: str) -> None:
    session = DtlsSession(IDENTITY_A, role,  # type: ignore[arg-type]
                          remote_fingerprints=[("sha-256", IDENTITY_B.fingerprint())])
    session.start(0.0)
    for i, datagram in enumerate(garbage):
        session.receive_datagram(datagram, 0.1 * i)
        session.handle_timer(0.1 * i)
    while (event := session.next_event()) is not None:
        assert isinstance(event, DtlsFailed)
        assert session.state == "failed"
    assert session.state in ("handshaking", "failed")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(garbage=dtls_garbage)
def test_garbage_after_connect_never_raises_or_rekeys(garbage: list[bytes]) -> None:
    client, server = pair(IDENTITY_A, IDENTITY_B)
    run(client, server)
    assert isinstance(client.next_event(), HandshakeCompleted)
    for datagram in garbage:
        client.receive_datagram(datagram, 1.0)
    event = client.next_event()
    assert event is None or isinstance(event, (DtlsFailed, DtlsClosed))
    assert client.next_event() is None or client.state in ("failed", "closed")


def test_sessions_share_contexts_but_not_verification() -> None:
    """One OpenSSL context per identity and profile list; fingerprints stay per session."""
    ours, good, bad = ecdsa_identity(), ecdsa_identity(), ecdsa_identity()
    ok_server = DtlsSession(ours, "server", remote_fingerprints=[("sha-256", good.fingerprint())])
    bad_server = DtlsSession(ours, "server",
                             remote_fingerprints=[("sha-256", good.fingerprint())])
    assert len(ours.contexts) == 1
    DtlsSession(ours, "server", suites=["AES_CM_128_HMAC_SHA1_80"])
    assert len(ours.contexts) == 2
    ok_client = DtlsSession(good, "client", remote_fingerprints=[("sha-256", ours.fingerprint())])
    bad_client = DtlsSession(bad, "client", remote_fingerprints=[("sha-256", ours.fingerprint())])
    run(ok_client, ok_server)
    run(bad_client, bad_server)
    assert isinstance(ok_server.next_event(), HandshakeCompleted)
    assert bad_server.next_event() == DtlsFailed("fingerprint-mismatch")
    assert "contexts" not in repr(ours)
