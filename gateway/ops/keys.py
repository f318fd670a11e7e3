"""Development key material: a dev CA, the gateway's TLS certificate, a peer client certificate
for mutual-TLS tests, the persistent DTLS-SRTP certificate, and the admin endpoint's bearer token.

Private keys are created with mode 0600 before any byte is written, so there is no window in
which another user could read them. Existing files are never overwritten without ``force``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_DOMAIN = "gateway.srtpgw.test"
PEER_DOMAIN = "peer.srtpgw.test"
LEAF_DAYS = 397
CA_DAYS = 3650
DTLS_DAYS = 365

KEY_FILES = ("ca.key", "gateway.key", "peer.key", "dtls.key")
CERT_FILES = ("ca.crt", "gateway.crt", "peer.crt", "dtls.crt")
ADMIN_TOKEN = "admin.token"


class KeysExist(FileExistsError):
    """Key files are already there and ``force`` was not given."""


@dataclass(frozen=True, slots=True)
class KeySet:
    dir: Path

    def path(self, name: str) -> Path:
        return self.dir / name

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def gateway_cert(self) -> Path:
        return self.dir / "gateway.crt"

    @property
    def gateway_key(self) -> Path:
        return self.dir / "gateway.key"

    @property
    def peer_cert(self) -> Path:
        return self.dir / "peer.crt"

    @property
    def peer_key(self) -> Path:
        return self.dir / "peer.key"

    @property
    def dtls_cert(self) -> Path:
        return self.dir / "dtls.crt"

    @property
    def dtls_key(self) -> Path:
        return self.dir / "dtls.key"

    @property
    def admin_token(self) -> Path:
        return self.dir / ADMIN_TOKEN


def _name(cn: str, org: str = "srtpgw dev") -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _san(dns: Iterable[str] = (), ips: Iterable[str] = (), uris: Iterable[str] = ()
         ) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    names += [x509.UniformResourceIdentifier(u) for u in uris]
    return x509.SubjectAlternativeName(names)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def make_ca(cn: str = "srtpgw dev CA", days: int = CA_DAYS
            ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn)).issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_leaf(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, cn: str, *,
              dns: Iterable[str] = (), ips: Iterable[str] = (), uris: Iterable[str] = (),
              days: int = LEAF_DAYS, not_before: dt.datetime | None = None
              ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A TLS certificate usable as server and client (SIP peers are both)."""
    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or (_now() - dt.timedelta(minutes=5))
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn)).issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=True, key_cert_sign=False, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
    )
    if any((dns, ips, uris)):
        builder = builder.add_extension(_san(dns, ips, uris), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def make_self_signed(cn: str, days: int = DTLS_DAYS
                     ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """The DTLS-SRTP certificate: self-signed, authenticated by its SDP fingerprint."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn)).issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    return key, cert


def write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_admin_token(path: Path, *, force: bool = False) -> Path:
    """A random bearer token for the admin endpoint, in a file created 0600 (never printed)."""
    if path.exists() and not force:
        raise KeysExist(f"{path} already exists (use --force to replace)")
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (secrets.token_urlsafe(32) + "\n").encode("ascii"))
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def write_cert(path: Path, *certs: x509.Certificate) -> None:
    data = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: expected an EC private key")
    return key


def init_keys(directory: Path | str = "keys", *, domain: str = DEFAULT_DOMAIN,
              peer_domain: str = PEER_DOMAIN, force: bool = False) -> KeySet:
    """Create the dev CA, gateway, peer and DTLS key pairs and the admin token in ``directory``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    existing = [n for n in (*KEY_FILES, *CERT_FILES, ADMIN_TOKEN) if (d / n).exists()]
    if existing and not force:
        raise KeysExist(f"{d}: {', '.join(existing)} already exist (use --force to replace)")
    ca_key, ca_cert = make_ca()
    gw_key, gw_cert = make_leaf(ca_key, ca_cert, domain, dns=[domain], ips=["127.0.0.1", "::1"],
                                uris=[f"sip:{domain}"])
    peer_key, peer_cert = make_leaf(ca_key, ca_cert, peer_domain, dns=[peer_domain],
                                    ips=["127.0.0.1", "::1"], uris=[f"sip:{peer_domain}"])
    dtls_key, dtls_cert = make_self_signed(f"{domain} dtls")
    for name, key in (("ca.key", ca_key), ("gateway.key", gw_key), ("peer.key", peer_key),
                      ("dtls.key", dtls_key)):
        write_private_key(d / name, key)
    write_cert(d / "ca.crt", ca_cert)
    write_cert(d / "gateway.crt", gw_cert, ca_cert)
    write_cert(d / "peer.crt", peer_cert, ca_cert)
    write_cert(d / "dtls.crt", dtls_cert)
    write_admin_token(d / ADMIN_TOKEN, force=True)
    return KeySet(d)


def rotate_dtls(directory: Path | str = "keys", *, domain: str = DEFAULT_DOMAIN) -> KeySet:
    """Replace only the DTLS certificate (peers learn the new fingerprint from the next SDP)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    key, cert = make_self_signed(f"{domain} dtls")
    write_private_key(d / "dtls.key", key)
    write_cert(d / "dtls.crt", cert)
    return KeySet(d)


def fingerprint(cert: x509.Certificate, algorithm: str = "sha-256") -> str:
    """``AB:CD:...`` as in SDP ``a=fingerprint`` (RFC 8122) and TLS pinning."""
    algo = {"sha-1": hashes.SHA1(), "sha-256": hashes.SHA256(), "sha-384": hashes.SHA384(),
            "sha-512": hashes.SHA512()}[algorithm.lower()]
    return ":".join(f"{b:02X}" for b in cert.fingerprint(algo))


def describe_cert(cert: x509.Certificate) -> dict[str, str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [f"DNS:{n}" for n in san.get_values_for_type(x509.DNSName)]
        names += [f"IP:{n}" for n in san.get_values_for_type(x509.IPAddress)]
        names += [f"URI:{n}" for n in san.get_values_for_type(x509.UniformResourceIdentifier)]
    except x509.ExtensionNotFound:
        names = []
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "san": ", ".join(names) or "-",
        "not_after": cert.not_valid_after_utc.isoformat(),
        "sha256": fingerprint(cert),
    }


def show_keys(directory: Path | str = "keys") -> str:
    d = Path(directory)
    lines = []
    for name in CERT_FILES:
        path = d / name
        if not path.exists():
            lines.append(f"{name}: missing")
            continue
        cert = x509.load_pem_x509_certificates(path.read_bytes())[0]
        info = describe_cert(cert)
        mode = ""
        key_path = path.with_suffix(".key")
        if key_path.exists():
            mode = f" (key {key_path.name} mode {key_path.stat().st_mode & 0o777:o})"
        lines.append(f"{name}{mode}")
        lines.extend(f"  {k:9} {v}" for k, v in info.items())
    return "\n".join(lines)
