"""TLS checks: versions, suites, compression, renegotiation, certificate, mutual TLS.

References: 3GPP TS 33.210 §6.2 (TLS 1.0/1.1 shall not, 1.2 and 1.3 shall be supported),
RFC 9325 (suites, compression, renegotiation_info), RFC 5922 (SIP certificate identity),
RFC 5246 §7.4.6/RFC 8446 §4.4.2 (client certificates). The judging functions take observations
only; ``observe`` gathers them with raw hellos (``hello``) and real handshakes.
"""

from __future__ import annotations

import contextlib
import datetime
import socket
import ssl
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from gateway.sip.identity import cert_identities, identity_matches
from gateway.tools.probe import hello as h
from gateway.tools.probe.findings import Finding, judge, skip
from gateway.tools.probe.target import Endpoint, Guard

REF_VERSIONS = "3GPP TS 33.210 §6.2; RFC 8996"
REF_SUITES = "RFC 9325 §4.1-4.2"
REF_COMPRESSION = "RFC 9325 §3.3"
REF_RENEG = "RFC 5746; RFC 9325 §3.5"
REF_SAN = "RFC 5922 §7.1-7.2"
REF_EXPIRY = "RFC 5280 §4.1.2.5"
REF_CHAIN = "RFC 5280 §6; 3GPP TS 33.210 §6.2"
REF_SIG = "RFC 9155; RFC 9325 §4.2"
REF_MTLS = "RFC 5922 §7.4; 3GPP TS 33.210 §6.2"
EXPIRY_WARNING_DAYS = 30


@dataclass
class MtlsAttempt:
    """A connection with the wrong (or no) client certificate, and what the target did."""

    handshake: bool
    answer: str | None = None  # the SIP status line the target answered, if it did
    error: str | None = None

    @property
    def refused(self) -> bool:
        return self.answer is None


@dataclass
class TlsObservations:
    versions: dict[int, h.Flight | str] = field(default_factory=dict)
    suites: dict[str, h.Flight | str] = field(default_factory=dict)
    compression: h.Flight | str | None = None
    chain: list[bytes] = field(default_factory=list)
    verify_error: str | None = None
    verified: bool | None = None  # None: no --ca given
    no_cert: MtlsAttempt | None = None
    foreign_cert: MtlsAttempt | None = None


# --------------------------------------------------------------------------- judging


def _accepted(flight: h.Flight | str | None, version: int | None = None) -> h.ServerHello | None:
    if not isinstance(flight, h.Flight) or flight.hello is None:
        return None
    if version is not None and flight.hello.version != version and not (
            version == h.TLS13 and flight.hello.retry):
        return None
    return flight.hello


def _refusal(flight: h.Flight | str | None) -> str:
    if isinstance(flight, str):
        return flight
    if flight is None:
        return "not tried"
    if flight.alert is not None:
        return f"refused (alert {flight.alert.name})"
    if flight.hello is not None:
        return f"answered {flight.hello.version_name} instead"
    return "refused (connection closed)"


def judge_versions(obs: TlsObservations) -> list[Finding]:
    out = []
    for version, level, want in ((h.TLS10, "MUST", False), (h.TLS11, "MUST", False),
                                 (h.TLS12, "SHOULD", True), (h.TLS13, "MUST", True)):
        name = h.VERSION_NAMES[version]
        flight = obs.versions.get(version)
        hello = _accepted(flight, version)
        evidence = (f"accepted ({hello.suite_name})" if hello is not None
                    else _refusal(flight))
        ok = (hello is not None) == want
        check = f"tls.version.{name.split()[1]}"
        out.append(judge(ok, check, level, evidence if ok or not want
                         else f"not supported: {evidence}", REF_VERSIONS))  # type: ignore[arg-type]
    return out


_SUITE_CHECKS = (
    ("null", "MUST", "NULL (no encryption)"),
    ("rc4", "MUST", "RC4"),
    ("cbc_sha1", "SHOULD", "CBC with SHA-1 MAC"),
    ("static_rsa", "SHOULD", "static RSA key exchange (no forward secrecy)"),
)


def judge_suites(obs: TlsObservations) -> list[Finding]:
    tls12 = _accepted(obs.versions.get(h.TLS12), h.TLS12) is not None
    out = []
    for key, level, what in _SUITE_CHECKS:
        check = f"tls.suites.{key}"
        if not tls12:
            out.append(judge(True, check, level, "TLS 1.2 refused: only TLS 1.3 AEAD suites",
                             REF_SUITES))  # type: ignore[arg-type]
            continue
        hello = _accepted(obs.suites.get(key))
        evidence = (f"{what} accepted: {hello.suite_name}" if hello is not None
                    else f"{what} {_refusal(obs.suites.get(key))}")
        out.append(judge(hello is None, check, level, evidence, REF_SUITES))  # type: ignore[arg-type]
    best = _accepted(obs.versions.get(h.TLS12), h.TLS12)
    if best is not None:
        fs = "ECDHE" in best.suite_name or "DHE" in best.suite_name
        out.append(judge(fs, "tls.suites.forward_secrecy", "MUST",
                         f"from a broad TLS 1.2 offer the target picks {best.suite_name}",
                         REF_SUITES))
    return out


def judge_compression(obs: TlsObservations) -> Finding:
    hello = _accepted(obs.compression)
    if hello is None:
        return judge(True, "tls.compression", "MUST",
                     f"offer with DEFLATE {_refusal(obs.compression)}", REF_COMPRESSION)
    ok = hello.compression == 0
    return judge(ok, "tls.compression", "MUST",
                 "null compression chosen when DEFLATE is offered" if ok
                 else f"compression method {hello.compression} chosen (CRIME)", REF_COMPRESSION)


def judge_renegotiation(obs: TlsObservations) -> Finding:
    hello = _accepted(obs.versions.get(h.TLS12), h.TLS12) or _accepted(
        obs.versions.get(h.TLS11), h.TLS11) or _accepted(obs.versions.get(h.TLS10), h.TLS10)
    if hello is None:
        return judge(True, "tls.renegotiation", "MUST", "TLS 1.3 only: no renegotiation",
                     REF_RENEG)
    ok = hello.secure_renegotiation
    return judge(ok, "tls.renegotiation", "MUST",
                 f"{hello.version_name}: renegotiation_info "
                 + ("answered (secure renegotiation only)" if ok else
                    "missing: insecure legacy renegotiation"), REF_RENEG)


def judge_certificate(obs: TlsObservations, domain: str | None,
                      now: datetime.datetime) -> list[Finding]:
    if not obs.chain:
        why = "no certificate seen"
        return [skip(c, "MUST", why, r) for c, r in (("tls.cert.san", REF_SAN),
                                                      ("tls.cert.expiry", REF_EXPIRY))]
    try:
        leaf = x509.load_der_x509_certificate(obs.chain[0])
    except ValueError:
        return [judge(False, "tls.cert.san", "MUST", "certificate unreadable", REF_SAN)]
    out = []
    names = cert_identities(obs.chain[0])
    if domain is None:
        out.append(skip("tls.cert.san", "MUST", f"no SIP domain given (--domain); "
                        f"certificate names {', '.join(names) or 'nothing'}", REF_SAN))
    else:
        ok = identity_matches((domain,), names)
        out.append(judge(ok, "tls.cert.san", "MUST",
                         f"{'matches' if ok else 'does not match'} {domain}: "
                         f"{', '.join(names) or 'no identities'}", REF_SAN))
    end = leaf.not_valid_after_utc
    start = leaf.not_valid_before_utc
    days = (end - now).total_seconds() / 86400
    if now < start or days < 0:
        out.append(judge(False, "tls.cert.expiry", "MUST",
                         f"not valid now ({start:%Y-%m-%d} .. {end:%Y-%m-%d})", REF_EXPIRY))
    else:
        out.append(judge(days >= EXPIRY_WARNING_DAYS, "tls.cert.expiry", "SHOULD"
                         if days >= 0 else "MUST", f"expires {end:%Y-%m-%d} "
                         f"({days:.0f} days)", REF_EXPIRY))
    algo = leaf.signature_hash_algorithm
    weak = algo is None or algo.name in ("md5", "sha1")
    key = leaf.public_key()
    small = isinstance(key, rsa.RSAPublicKey) and key.key_size < 2048
    desc = f"{algo.name if algo else 'unknown hash'}, " + (
        f"RSA {key.key_size}" if isinstance(key, rsa.RSAPublicKey) else type(key).__name__
        .replace("_", "").replace("PublicKey", ""))
    out.append(judge(not weak and not small, "tls.cert.strength", "SHOULD", desc, REF_SIG))
    if obs.verified is None:
        out.append(skip("tls.cert.chain", "MUST", f"no --ca given; {len(obs.chain)} "
                        "certificate(s) presented", REF_CHAIN))
    else:
        out.append(judge(obs.verified, "tls.cert.chain", "MUST",
                         "verifies against --ca" if obs.verified
                         else f"does not verify against --ca: {obs.verify_error}", REF_CHAIN))
    return out


def judge_mtls(obs: TlsObservations, level: str) -> list[Finding]:
    out = []
    for check, attempt, what in (("tls.mtls.no_cert", obs.no_cert, "no client certificate"),
                                 ("tls.mtls.foreign_ca", obs.foreign_cert,
                                  "a certificate from a foreign CA")):
        if attempt is None:
            out.append(skip(check, level, "not tried", REF_MTLS))  # type: ignore[arg-type]
            continue
        if attempt.refused:
            evidence = (f"with {what}: " + ("handshake refused" if not attempt.handshake
                                            else "connection closed before any SIP answer")
                        + (f" ({attempt.error})" if attempt.error else ""))
        else:
            evidence = f"with {what} the target answered {attempt.answer}"
        out.append(judge(attempt.refused, check, level, evidence, REF_MTLS))  # type: ignore[arg-type]
    return out


def judge_all(obs: TlsObservations, domain: str | None, mtls_level: str,
              now: datetime.datetime) -> list[Finding]:
    if not any(_accepted(f) for f in obs.versions.values()):
        reasons = sorted({_refusal(f) for f in obs.versions.values()})
        return [judge(False, "tls.handshake", "MUST", "no TLS version accepted: "
                      + "; ".join(reasons), REF_VERSIONS)]
    return [*judge_versions(obs), *judge_suites(obs), judge_compression(obs),
            judge_renegotiation(obs), *judge_certificate(obs, domain, now),
            *judge_mtls(obs, mtls_level)]


# --------------------------------------------------------------------------- observing


def ask(endpoint: Endpoint, guard: Guard, version: int, suites: Sequence[int], *,
        server_name: str | None, compression: bytes = b"\x00", timeout: float = 3.0
        ) -> h.Flight | str:
    """Send one raw ClientHello and read the server's clear flight (bounded by ``timeout``)."""
    guard.signalling(endpoint.address)
    try:
        sock = socket.create_connection(endpoint.address, timeout=timeout)
    except OSError as exc:
        return f"connect failed: {exc}"
    data = b""
    try:
        sock.sendall(h.client_hello(version, suites, server_name=server_name,
                                    compression=compression))
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                chunk = sock.recv(65535)
            except TimeoutError:
                break
            except OSError:
                break
            if not chunk:
                break
            data += chunk
            flight = h.read_flight(data)
            if flight.done:
                return flight
        return h.read_flight(data)
    except h.HelloError as exc:
        return f"not TLS: {exc}"
    finally:
        sock.close()


def _context(ca: Path | None, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # identity is judged by RFC 5922 rules, not HTTPS ones
    if ca is not None:
        ctx.load_verify_locations(cafile=str(ca))
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.verify_mode = ssl.CERT_NONE
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key) if key else None)
    return ctx


def client_context(ca: Path | None, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    """The probe's own identity for the SIP checks (``--cert/--key``, trusting ``--ca``)."""
    return _context(ca, cert, key)


def _foreign_identity(directory: Path) -> tuple[Path, Path]:
    """A throwaway self-signed certificate no target trusts (made fresh per run, never kept)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "srtpgw-probe foreign CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("probe.invalid")]), False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "foreign.crt", directory / "foreign.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.touch(0o600)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def _attempt(endpoint: Endpoint, guard: Guard, ctx: ssl.SSLContext, server_name: str | None,
             options: bytes, timeout: float) -> MtlsAttempt:
    guard.signalling(endpoint.address)
    try:
        raw = socket.create_connection(endpoint.address, timeout=timeout)
    except OSError as exc:
        return MtlsAttempt(False, error=f"connect failed: {exc}")
    try:
        try:
            sock = ctx.wrap_socket(raw, server_hostname=server_name)
        except (ssl.SSLError, OSError) as exc:
            return MtlsAttempt(False, error=_short(exc))
        try:
            guard.signalling(endpoint.address)
            sock.sendall(options)
            buf = b""
            deadline = time.monotonic() + timeout
            while b"\r\n" not in buf and (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                chunk = sock.recv(4096)
                if not chunk:
                    break
                buf += chunk
        except (ssl.SSLError, OSError) as exc:
            return MtlsAttempt(True, error=_short(exc))
        line = buf.split(b"\r\n", 1)[0].decode("utf-8", "replace")
        return MtlsAttempt(True, answer=line[8:] if line.startswith("SIP/2.0 ") else None)
    finally:
        with contextlib.suppress(OSError):
            raw.close()


def _short(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return exc.reason.lower().replace("_", " ")
    return str(exc) or type(exc).__name__


def observe(endpoint: Endpoint, guard: Guard, *, server_name: str | None, ca: Path | None,
            cert: Path | None, key: Path | None, options: bytes,
            timeout: float = 3.0) -> TlsObservations:
    """Thirteen connections at most: four version hellos, four suite hellos, one compression
    hello, one verifying handshake, two mutual-TLS attempts."""
    obs = TlsObservations()
    sni = server_name
    for version in (h.TLS10, h.TLS11, h.TLS12):
        obs.versions[version] = ask(endpoint, guard, version, h.BROAD, server_name=sni,
                                    timeout=timeout)
    obs.versions[h.TLS13] = ask(endpoint, guard, h.TLS13, h.TLS13_SUITES, server_name=sni,
                                timeout=timeout)
    tls12 = _accepted(obs.versions[h.TLS12], h.TLS12) is not None
    if tls12:
        for name, suites in (("null", h.NULL), ("rc4", h.RC4), ("cbc_sha1", h.CBC_SHA1),
                             ("static_rsa", h.STATIC_RSA)):
            obs.suites[name] = ask(endpoint, guard, h.TLS12, suites, server_name=sni,
                                   timeout=timeout)
        flight = obs.versions[h.TLS12]
        if isinstance(flight, h.Flight):
            obs.chain = list(flight.certificates)
        obs.compression = ask(endpoint, guard, h.TLS12, h.BROAD, server_name=sni,
                              compression=bytes([h.COMPRESSION_DEFLATE, 0]), timeout=timeout)
    full = _attempt(endpoint, guard, _context(ca, cert, key), sni, options, timeout)
    if ca is not None:
        obs.verified = full.handshake
        obs.verify_error = full.error if not full.handshake else None
    if not obs.chain:
        obs.chain = _leaf(endpoint, guard, sni, cert, key, timeout)
    obs.no_cert = _attempt(endpoint, guard, _context(None, None, None), sni, options, timeout)
    with tempfile.TemporaryDirectory(prefix="srtpgw-probe-") as tmp:
        fcert, fkey = _foreign_identity(Path(tmp))
        obs.foreign_cert = _attempt(endpoint, guard, _context(None, fcert, fkey), sni, options,
                                    timeout)
    return obs


def _leaf(endpoint: Endpoint, guard: Guard, sni: str | None, cert: Path | None,
          key: Path | None, timeout: float) -> list[bytes]:
    """The server certificate from a real handshake (TLS 1.3 sends it encrypted)."""
    guard.signalling(endpoint.address)
    try:
        with socket.create_connection(endpoint.address, timeout=timeout) as raw, \
                _context(None, cert, key).wrap_socket(raw, server_hostname=sni) as sock:
            der = sock.getpeercert(binary_form=True)
    except (ssl.SSLError, OSError):
        return []
    return [der] if der else []
