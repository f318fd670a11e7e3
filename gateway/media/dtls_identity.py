"""Our DTLS-SRTP certificate and the fingerprint rules that authenticate peers (RFC 8122).

DTLS-SRTP peers use self-signed certificates; the only thing binding a certificate to the call is
the ``a=fingerprint`` carried in SDP. So the checks here are the whole of peer authentication.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.config import DtlsSection

# Strongest first: RFC 8122 §5 says verify against the peer's fingerprints of the hash we prefer.
HASHES: dict[str, hashes.HashAlgorithm] = {
    "sha-512": hashes.SHA512(),
    "sha-384": hashes.SHA384(),
    "sha-256": hashes.SHA256(),
    "sha-224": hashes.SHA224(),
    "sha-1": hashes.SHA1(),
}


class DtlsIdentityError(Exception):
    """Our DTLS certificate or key cannot be used; names the file, never key bytes."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def certificate_fingerprint(cert: x509.Certificate, algorithm: str = "sha-256") -> str:
    """``AB:CD:...`` upper-case hex, as written in ``a=fingerprint``."""
    digest = cert.fingerprint(HASHES[algorithm.lower()])
    return ":".join(f"{b:02X}" for b in digest)


def verify_fingerprint(cert: x509.Certificate, fingerprints: Sequence[tuple[str, str]], *,
                       accept_sha1: bool) -> str | None:
    """None when ``cert`` matches the peer's signalled fingerprints, else the refusal reason.

    Picks the strongest hash the peer signalled that we support (RFC 8122 §5); the certificate
    must match one fingerprint of that hash. sha-1 counts only when ``accept_sha1``.
    """
    usable = {a.lower() for a, _ in fingerprints} & set(HASHES)
    if not accept_sha1:
        usable.discard("sha-1")
    if not usable:
        if any(a.lower() == "sha-1" for a, _ in fingerprints):
            return "fingerprint-sha1-refused"
        return "fingerprint-algorithm-unsupported"
    algorithm = next(a for a in HASHES if a in usable)
    ours = certificate_fingerprint(cert, algorithm).encode()
    for a, value in fingerprints:
        if a.lower() == algorithm and hmac.compare_digest(value.upper().encode(), ours):
            return None
    return "fingerprint-mismatch"


@dataclass(frozen=True, slots=True)
class DtlsIdentity:
    """A certificate and its private key, shared by every DTLS association of the gateway."""

    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = field(repr=False)
    # OpenSSL contexts built from this identity, one per SRTP profile list (gateway.media.dtls):
    # building one costs as much as a third of a handshake, so calls share them.
    contexts: dict[bytes, Any] = field(default_factory=dict, repr=False, compare=False,
                                       hash=False)

    @classmethod
    def from_files(cls, certificate: Path, private_key: Path) -> DtlsIdentity:
        try:
            cert = x509.load_pem_x509_certificate(certificate.read_bytes())
        except OSError as exc:
            raise DtlsIdentityError(certificate, f"cannot read: {exc.strerror or exc}") from None
        except ValueError:
            raise DtlsIdentityError(certificate, "not a PEM certificate") from None
        try:
            key = serialization.load_pem_private_key(private_key.read_bytes(), password=None)
        except OSError as exc:
            raise DtlsIdentityError(private_key, f"cannot read: {exc.strerror or exc}") from None
        except (ValueError, TypeError):
            raise DtlsIdentityError(private_key, "not an unencrypted PEM private key") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise DtlsIdentityError(private_key, "only ECDSA and RSA keys are supported")
        if key.public_key().public_numbers() != cert.public_key().public_numbers():
            raise DtlsIdentityError(private_key, f"does not match the certificate {certificate}")
        return cls(cert, key)

    @classmethod
    def from_config(cls, section: DtlsSection) -> DtlsIdentity:
        return cls.from_files(section.certificate, section.private_key)

    def fingerprint(self, algorithm: str = "sha-256") -> str:
        return certificate_fingerprint(self.certificate, algorithm)
