"""Peer identity from a TLS certificate, per RFC 5922 (SIP domain certificates).

Identities are the subjectAltName URIs of scheme sip/sips and the DNS names; the subject CN only
when the certificate has no subjectAltName. Wildcards never match a SIP domain (§7.2).
"""

from __future__ import annotations

import hashlib

from cryptography import x509
from cryptography.x509.oid import ExtensionOID, NameOID


def normalize_identity(name: str) -> str:
    """Compare domains case-insensitively, without scheme or trailing root dot."""
    text = name.strip().lower()
    for scheme in ("sips:", "sip:"):
        if text.startswith(scheme):
            text = text[len(scheme):]
            break
    return text.rstrip(".")


def normalize_fingerprint(text: str) -> str:
    """``AB:CD:..``, ``abcd..`` or with a ``sha256:``/``sha-256 `` prefix -> lower-case hex."""
    t = text.strip().lower()
    for prefix in ("sha-256 ", "sha256 ", "sha-256:", "sha256:"):
        if t.startswith(prefix):
            t = t[len(prefix):]
            break
    return t.replace(":", "").strip()


def identity_matches(expected: tuple[str, ...], presented: tuple[str, ...]) -> bool:
    """True when one presented identity equals one expected identity (no wildcard matching)."""
    want = {normalize_identity(w) for w in expected}
    return any("*" not in (n := normalize_identity(p)) and n in want for p in presented)


def fingerprint_matches(pins: tuple[str, ...], presented: str | None) -> bool:
    return presented is not None and normalize_fingerprint(presented) in {
        normalize_fingerprint(p) for p in pins}


def cert_identities(der: bytes) -> tuple[str, ...]:
    """RFC 5922 §7.1 identities of a DER certificate (empty when it cannot be read)."""
    try:
        cert = x509.load_der_x509_certificate(der)
        san = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    except x509.ExtensionNotFound:
        try:
            names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        except ValueError:
            return ()
        return tuple(str(a.value) for a in names)
    except ValueError:  # OpenSSL accepted it, but an extension does not parse (lazily read)
        return ()
    uris = [u for u in san.get_values_for_type(x509.UniformResourceIdentifier)
            if u.lower().startswith(("sip:", "sips:"))]
    return (*uris, *san.get_values_for_type(x509.DNSName))


def cert_fingerprint(der: bytes) -> str:
    """sha256 of the DER certificate, lower-case hex (the form Trunk.tls_fingerprints pins)."""
    return hashlib.sha256(der).hexdigest()
