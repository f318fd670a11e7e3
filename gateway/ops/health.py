"""Liveness and readiness verdicts, computed from plain facts with ``now`` passed in.

Liveness (``/healthz``) says the process is up and its listeners are bound: restart me if not.
Readiness (``/readyz``) says new calls would succeed: not draining, relay ports left, certificates
valid long enough. A load balancer stops sending new calls when it fails; nothing is restarted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from gateway.config import Config


class CertificateError(Exception):
    """A configured certificate file cannot be read or parsed."""


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    reasons: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "reasons": list(self.reasons)}


@dataclass(frozen=True, slots=True)
class CertInfo:
    name: str
    path: Path
    not_after: float  # unix time
    subject: str


def read_certificate(name: str, path: Path) -> CertInfo:
    """Expiry and subject of the first certificate in a PEM file (never reads key files)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CertificateError(f"{name}: cannot read {path}: {exc.strerror or exc}") from None
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise CertificateError(f"{name}: {path} is not a PEM certificate: {exc}") from None
    return CertInfo(name, path, cert.not_valid_after_utc.timestamp(), cert.subject.rfc4514_string())


def configured_certificates(cfg: Config) -> dict[str, Path]:
    """The certificates this config actually uses (TLS only if a TLS listener/trunk exists)."""
    out: dict[str, Path] = {}
    if any(li.transport == "tls" for li in cfg.listeners) or any(
            t.transport == "tls" for t in cfg.trunks):
        out["tls"] = cfg.tls.certificate
        out["ca"] = cfg.tls.ca_file
    if any(t.media == "dtls-srtp" for t in cfg.trunks):
        out["dtls"] = cfg.dtls.certificate
    return out


def liveness(listeners_bound: Mapping[str, bool]) -> Verdict:
    down = sorted(name for name, up in listeners_bound.items() if not up)
    return Verdict(not down, tuple(f"listener {name} not bound" for name in down))


@dataclass(frozen=True, slots=True)
class ReadinessFacts:
    draining: bool
    ports_used: int
    ports_total: int
    certificates: tuple[CertInfo, ...] = ()
    cert_errors: tuple[str, ...] = field(default=())


def readiness(facts: ReadinessFacts, now: float, warning_days: int) -> Verdict:
    reasons: list[str] = []
    if facts.draining:
        reasons.append("draining")
    if facts.ports_total and facts.ports_total - facts.ports_used < 2:
        reasons.append(f"media port pool exhausted ({facts.ports_used}/{facts.ports_total})")
    reasons.extend(facts.cert_errors)
    horizon = now + warning_days * 86400
    for c in facts.certificates:
        if c.not_after <= now:
            reasons.append(f"certificate {c.name} ({c.path}) expired")
        elif c.not_after <= horizon:
            days = (c.not_after - now) / 86400
            reasons.append(f"certificate {c.name} ({c.path}) expires in {days:.1f} days "
                           f"(< {warning_days})")
    return Verdict(not reasons, tuple(reasons))
