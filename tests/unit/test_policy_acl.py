"""Admission: source networks, TLS identity (RFC 5922) and pinned fingerprints."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from gateway.ops.keys import init_keys
from gateway.policy.acl import Acl, Source
from gateway.sip.identity import cert_identities
from tests.security.policy_configs import make_config


def udp(ip: str) -> Source:
    return Source("legacy", "udp", ip, 5070)


def tls(ip: str, *ids: str, fp: str | None = None) -> Source:
    return Source("secure", "tls", ip, 40000, tuple(ids), fp)


def test_networks_v4_v6_and_mapped() -> None:
    acl = Acl(make_config())
    assert acl.classify(udp("127.0.0.1")).name == "pbx"
    assert acl.classify(udp("10.1.200.3")).name == "pbx"
    assert acl.classify(udp("fd12::1")).name == "pbx"
    assert acl.classify(udp("::ffff:10.1.0.9")).name == "pbx"
    assert acl.classify(udp("10.2.0.1")) is None
    assert acl.classify(udp("127.0.0.2")) is None
    assert acl.classify(udp("not-an-ip")) is None
    assert acl.why_not(udp("10.2.0.1")) == "source-not-allowed"


def test_listener_matters() -> None:
    acl = Acl(make_config())
    assert acl.classify(Source("secure", "tls", "10.1.0.1", 1, ("sip:carrier.example.test",))) \
        is None
    assert not acl.network_allows("nope", "127.0.0.1")
    assert acl.network_allows("legacy", "10.1.0.1")


def test_peer_address_when_no_networks() -> None:
    acl = Acl(make_config(trunk0={"allowed_sources": [], "peer": "192.0.2.7:5060"}))
    assert acl.classify(udp("192.0.2.7")).name == "pbx"
    assert acl.classify(udp("192.0.2.8")) is None


def test_tls_identity() -> None:
    acl = Acl(make_config())
    assert acl.classify(tls("127.0.0.5", "sip:carrier.example.test")).name == "carrier"
    assert acl.classify(tls("127.0.0.5", "CARRIER.example.test.")).name == "carrier"
    assert acl.classify(tls("127.0.0.5", "sip:other.example.test")) is None
    assert acl.why_not(tls("127.0.0.5", "sip:other.example.test")) == "identity-mismatch"
    assert acl.classify(tls("127.0.0.5")) is None
    assert acl.why_not(tls("127.0.0.5")) == "no-client-certificate"


def test_wildcard_certificate_never_matches() -> None:
    acl = Acl(make_config(trunk1={"tls_identity": ["*.example.test"]}))
    assert acl.classify(tls("127.0.0.5", "*.example.test")) is None
    assert acl.classify(tls("127.0.0.5", "sip:carrier.example.test")) is None


def test_fingerprint_pinning() -> None:
    fp = "AB:" * 31 + "CD"
    acl = Acl(make_config(trunk1={"tls_fingerprints": [f"sha-256 {fp}"]}))
    good = fp.replace(":", "").lower()
    assert acl.classify(tls("127.0.0.1", "sip:carrier.example.test", fp=good)).name == "carrier"
    assert acl.classify(tls("127.0.0.1", "sip:carrier.example.test", fp="00" * 32)) is None
    assert acl.classify(tls("127.0.0.1", "sip:carrier.example.test")) is None
    assert acl.why_not(tls("127.0.0.1", "sip:carrier.example.test")) == "fingerprint-mismatch"


def test_identity_and_fingerprint_both_required_when_both_set() -> None:
    fp = "AB:" * 31 + "CD"
    good = fp.replace(":", "").lower()
    both = Acl(make_config(trunk1={"tls_fingerprints": [fp]}))
    assert both.classify(tls("127.0.0.1", "sip:other.example.test", fp=good)) is None
    assert both.classify(tls("127.0.0.1", "sip:carrier.example.test", fp=good)).name == "carrier"
    pinned_only = Acl(make_config(trunk1={"tls_identity": [], "tls_fingerprints": [fp]}))
    assert pinned_only.classify(tls("127.0.0.1", "sip:anyone.test", fp=good)).name == "carrier"
    assert pinned_only.classify(tls("127.0.0.1", "sip:carrier.example.test")) is None


def test_identities_of_a_real_client_certificate(tmp_path: Path) -> None:
    init_keys(tmp_path)
    cert = x509.load_pem_x509_certificate((tmp_path / "peer.crt").read_bytes())
    ids = cert_identities(cert.public_bytes(Encoding.DER))
    acl = Acl(make_config(trunk1={"tls_identity": ["sip:peer.srtpgw.test"]}))
    assert acl.classify(tls("127.0.0.1", *ids)).name == "carrier"
