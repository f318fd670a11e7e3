"""Our persistent DTLS certificate (from `srtpgw keys init`) and RFC 8122 fingerprint checks."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from gateway.config import DtlsSection
from gateway.media.dtls_identity import (
    DtlsIdentity,
    DtlsIdentityError,
    certificate_fingerprint,
    verify_fingerprint,
)
from gateway.ops.keys import fingerprint, init_keys, make_self_signed


def test_loads_the_keys_init_certificate(tmp_path: Path) -> None:
    keys = init_keys(tmp_path)
    identity = DtlsIdentity.from_config(DtlsSection(certificate=keys.dtls_cert,
                                                    private_key=keys.dtls_key))
    assert identity.fingerprint() == fingerprint(identity.certificate)
    assert identity.fingerprint("SHA-1") == fingerprint(identity.certificate, "sha-1")
    left = identity.certificate.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=300) < left <= dt.timedelta(days=366)  # persistent, not 30 days
    pem = keys.dtls_key.read_text()
    assert pem.split("\n")[1] not in repr(identity)


def test_key_not_matching_certificate_is_refused(tmp_path: Path) -> None:
    keys = init_keys(tmp_path)
    with pytest.raises(DtlsIdentityError) as info:
        DtlsIdentity.from_files(keys.dtls_cert, keys.gateway_key)
    assert "does not match" in str(info.value)
    assert "PRIVATE KEY" not in str(info.value)


def test_unreadable_or_garbage_files_are_typed_errors(tmp_path: Path) -> None:
    keys = init_keys(tmp_path)
    junk = tmp_path / "junk.pem"
    junk.write_text("not pem at all")
    with pytest.raises(DtlsIdentityError, match="not a PEM certificate"):
        DtlsIdentity.from_files(junk, keys.dtls_key)
    with pytest.raises(DtlsIdentityError, match="not an unencrypted PEM private key"):
        DtlsIdentity.from_files(keys.dtls_cert, junk)
    with pytest.raises(DtlsIdentityError, match="cannot read"):
        DtlsIdentity.from_files(tmp_path / "missing.crt", keys.dtls_key)


def test_encrypted_key_is_refused(tmp_path: Path) -> None:
    key, cert = make_self_signed("x")
    kp, cp = tmp_path / "k.pem", tmp_path / "c.pem"
    kp.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.BestAvailableEncryption(b"pw")))
    cp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(DtlsIdentityError):
        DtlsIdentity.from_files(cp, kp)


def test_verify_fingerprint_rules() -> None:
    _, cert = make_self_signed("peer")
    _, other = make_self_signed("other")
    good256 = certificate_fingerprint(cert, "sha-256")
    good1 = certificate_fingerprint(cert, "sha-1")
    assert verify_fingerprint(cert, [("SHA-256", good256.lower())], accept_sha1=False) is None
    assert verify_fingerprint(cert, [("sha-256", certificate_fingerprint(other))],
                              accept_sha1=True) == "fingerprint-mismatch"
    # Several fingerprints of the chosen hash: one match is enough (one per certificate).
    assert verify_fingerprint(cert, [("sha-256", certificate_fingerprint(other)),
                                     ("sha-256", good256)], accept_sha1=False) is None
    assert verify_fingerprint(cert, [("sha-1", good1)], accept_sha1=True) is None
    assert verify_fingerprint(cert, [("sha-1", good1)], accept_sha1=False) == \
        "fingerprint-sha1-refused"
    assert verify_fingerprint(cert, [("md5", "00:11")], accept_sha1=True) == \
        "fingerprint-algorithm-unsupported"
    assert verify_fingerprint(cert, [], accept_sha1=True) == "fingerprint-algorithm-unsupported"
    # With sha-1 refused, a sha-256 next to a (wrong) sha-1 still decides.
    assert verify_fingerprint(cert, [("sha-1", "00"), ("sha-256", good256)],
                              accept_sha1=False) is None
