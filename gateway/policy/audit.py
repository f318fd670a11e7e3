"""``srtpgw audit``: a config checked rule by rule against good interconnect practice.

Each finding is PASS, WARN or FAIL at level MUST or SHOULD; a failed MUST makes the exit code
non-zero so the audit can gate a deployment pipeline.
"""

from __future__ import annotations

import ipaddress
import re
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

from cryptography import x509

from gateway.config import Config

Level = Literal["MUST", "SHOULD"]
Outcome = Literal["PASS", "WARN", "FAIL"]

# Headers that reveal the inside of a network when copied from one leg to the other.
TOPOLOGY_HEADERS = frozenset(h.lower() for h in (
    "Via", "Record-Route", "Route", "Contact", "Call-ID", "Server", "User-Agent", "Organization",
    "Warning", "P-Asserted-Identity", "History-Info", "Diversion", "Path", "Service-Route"))
# Product names or version numbers in a User-Agent/Server header help scanners fingerprint.
_VERSIONED = re.compile(r"\d+\.\d+|srtpgw|python|asyncio", re.I)


@dataclass(frozen=True, slots=True)
class Finding:
    rule: str
    level: Level
    outcome: Outcome
    detail: str

    def line(self) -> str:
        return f"[{self.outcome}] {self.level:<6} {self.rule}: {self.detail}"


Check = Callable[[Config], Iterator[Finding]]


def _tls_version(cfg: Config) -> Iterator[Finding]:
    ok = cfg.tls.min_version in ("1.2", "1.3")
    yield Finding("tls.min_version", "MUST", "PASS" if ok else "FAIL",
                  f"TLS {cfg.tls.min_version} or newer accepted (RFC 9325: never below 1.2)")


def _tls_ciphers(cfg: Config) -> Iterator[Finding]:
    if not _uses_tls(cfg):
        return
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.set_ciphers(cfg.tls.ciphers)
    except ssl.SSLError:
        yield Finding("tls.ciphers", "MUST", "FAIL",
                      f"{cfg.tls.ciphers!r} selects no cipher OpenSSL knows")
        return
    weak = sorted({c["name"] for c in ctx.get_ciphers()
                   if c["protocol"] != "TLSv1.3"
                   and (c.get("kea") not in ("kx-ecdhe", "kx-dhe") or not c.get("aead")
                        or c.get("auth") == "auth-null")})
    if weak:
        yield Finding("tls.ciphers", "SHOULD", "WARN",
                      "TLS 1.2 suites without forward secrecy, AEAD or authentication: "
                      + ", ".join(weak[:6]) + (" ..." if len(weak) > 6 else ""))
    else:
        yield Finding("tls.ciphers", "SHOULD", "PASS",
                      "TLS 1.2 suites are all ECDHE/DHE with AEAD (RFC 9325 §4.2)")


def _uses_tls(cfg: Config) -> bool:
    return any(li.transport == "tls" for li in cfg.listeners)


def _mtls(cfg: Config) -> Iterator[Finding]:
    for li in cfg.listeners:
        secure = [t.name for t in cfg.trunks if t.listener == li.name and t.secure]
        if li.transport != "tls" or not secure:
            continue
        ok = li.tls_client_auth == "require"
        yield Finding(f"listener.{li.name}.tls_client_auth", "MUST", "PASS" if ok else "FAIL",
                      f"mutual TLS on the listener of secure trunk(s) {', '.join(secure)}: "
                      f"tls_client_auth = {li.tls_client_auth}"
                      + ("" if ok else " (set it to \"require\")"))


def _secure_signalling(cfg: Config) -> Iterator[Finding]:
    for t in cfg.trunks:
        if t.secure:
            ok = t.transport == "tls"
            yield Finding(f"trunk.{t.name}.transport", "SHOULD", "PASS" if ok else "WARN",
                          f"secure trunk signals over {t.transport}"
                          + ("" if ok else ": peer identity and SDP are not protected"))


def _sdes_over_clear(cfg: Config) -> Iterator[Finding]:
    for t in cfg.trunks:
        if t.media in ("srtp", "srtp-optional"):
            ok = t.transport == "tls"
            yield Finding(f"trunk.{t.name}.media", "MUST", "PASS" if ok else "FAIL",
                          f"SDES keys ({t.media}) carried over {t.transport}"
                          + ("" if ok else ": anyone on the path reads the media keys"))


def _secure_media(cfg: Config) -> Iterator[Finding]:
    for t in cfg.trunks:
        if t.secure:
            ok = t.media in ("srtp", "dtls-srtp")
            yield Finding(f"trunk.{t.name}.media_required", "MUST", "PASS" if ok else "FAIL",
                          f"secure trunk media = {t.media}"
                          + ("" if ok else ": plain RTP would be accepted from an interconnect"))


def _suites(cfg: Config) -> Iterator[Finding]:
    for t in cfg.trunks:
        if t.media == "rtp":
            continue
        short = [s for s in t.suites if s.endswith("_32") or "NULL" in s]
        if t.secure:
            yield Finding(f"trunk.{t.name}.suites", "SHOULD", "WARN" if short else "PASS",
                          ("32-bit-tag or NULL suites allowed on an interconnect: "
                           + ", ".join(short)) if short else
                          "only full-strength suites: " + ", ".join(t.suites))


def _acl(cfg: Config) -> Iterator[Finding]:
    for t in cfg.trunks:
        if t.allowed_sources:
            wide = [str(n) for n in t.allowed_sources if n.prefixlen == 0]
            yield Finding(f"trunk.{t.name}.allowed_sources", "MUST", "FAIL" if wide else "PASS",
                          ("admits the whole internet: " + ", ".join(wide)) if wide else
                          "source ACL: " + ", ".join(str(n) for n in t.allowed_sources))
        else:
            yield Finding(f"trunk.{t.name}.allowed_sources", "SHOULD", "WARN",
                          f"no allowed_sources: only the peer address {t.peer.host} is "
                          "admitted; list the peer's networks explicitly")
        if t.transport == "tls" and t.secure:
            pinned = bool(t.tls_identity or t.tls_fingerprints)
            yield Finding(f"trunk.{t.name}.tls_identity", "SHOULD", "PASS" if pinned else "WARN",
                          "certificate identity pinned: " + ", ".join(
                              t.tls_identity + tuple(f"sha256 {f[:16]}..."
                                                     for f in t.tls_fingerprints))
                          if pinned else "no tls_identity: any certificate from the CA is "
                          "accepted for this trunk (RFC 5922)")


def _rate_limits(cfg: Config) -> Iterator[Finding]:
    for t in cfg.trunks:
        rl = t.rate_limit
        ok = rl.new_dialogs_per_source <= rl.new_dialogs_per_trunk
        yield Finding(f"trunk.{t.name}.rate_limit", "SHOULD", "PASS" if ok else "WARN",
                      f"new dialogs {rl.new_dialogs_per_source:g}/s per source "
                      f"(burst {rl.new_dialogs_burst}), {rl.new_dialogs_per_trunk:g}/s per trunk, "
                      f"out-of-dialog {rl.out_of_dialog_per_source:g}/s per source"
                      + ("" if ok else ": the per-source rate exceeds the trunk rate"))


def _pike(cfg: Config) -> Iterator[Finding]:
    p = cfg.firewall.pike
    yield Finding("firewall.pike", "SHOULD", "PASS" if p.enabled else "WARN",
                  f"flood bans: more than {p.max_requests} requests in {p.window:g}s ban a "
                  f"source for {p.ban_time:g}s on the listener it floods"
                  if p.enabled else "flood bans are off")
    for t in cfg.trunks:
        tp = t.pike
        if tp is None:
            continue
        if not tp.enabled:
            yield Finding(f"trunk.{t.name}.pike", "SHOULD", "WARN",
                          "exempt from flood bans: its sources are never banned (rate limits "
                          "still apply)")
        else:
            yield Finding(f"trunk.{t.name}.pike", "SHOULD", "PASS",
                          f"own flood limit: more than {tp.max_requests} requests in "
                          f"{tp.window:g}s ban for {tp.ban_time:g}s")


def _unknown_sources(cfg: Config) -> Iterator[Finding]:
    fw = cfg.firewall
    yield Finding("firewall.unknown_source", "SHOULD",
                  "PASS" if fw.unknown_source == "drop" else "WARN",
                  "unknown sources are dropped silently" if fw.unknown_source == "drop" else
                  "unknown sources get 403, which tells scanners a SIP server is here")
    yield Finding("firewall.user_agent_deny", "SHOULD",
                  "PASS" if fw.user_agent_deny else "WARN",
                  f"{len(fw.user_agent_deny)} scanner User-Agent patterns dropped"
                  if fw.user_agent_deny else "no scanner User-Agent patterns")


def _topology(cfg: Config) -> Iterator[Finding]:
    ua = cfg.gateway.user_agent
    if ua is None:
        yield Finding("gateway.user_agent", "SHOULD", "PASS",
                      "no User-Agent/Server header is sent")
    else:
        leaky = bool(_VERSIONED.search(ua))
        yield Finding("gateway.user_agent", "SHOULD", "WARN" if leaky else "PASS",
                      f"User-Agent {ua!r}" + (" names a product or version" if leaky else
                                              " is neutral"))
    for t in cfg.trunks:
        leaks = sorted(h for h in t.pass_headers if h.lower() in TOPOLOGY_HEADERS)
        if leaks:
            yield Finding(f"trunk.{t.name}.pass_headers", "SHOULD", "WARN",
                          "copies topology-revealing headers across legs: " + ", ".join(leaks))


def _dtls(cfg: Config) -> Iterator[Finding]:
    if any(t.media == "dtls-srtp" for t in cfg.trunks) and cfg.dtls.accept_sha1_fingerprint:
        yield Finding("dtls.accept_sha1_fingerprint", "SHOULD", "WARN",
                      "sha-1 certificate fingerprints accepted in SDP (needed by some peers)")


def _server_names(cfg: Config) -> Iterator[Finding]:
    """Phones dial a name and many match only DNS SANs (linphone's mbedtls ignores IP SANs):
    a server certificate with IP SANs alone fails their host-name check."""
    if not any(li.transport == "tls" for li in cfg.listeners):
        return
    path = cfg.tls.certificate
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        yield Finding("tls.certificate.dns_names", "SHOULD", "WARN",
                      f"{path}: cannot read the certificate ({type(exc).__name__})")
        return
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns, ips = san.get_values_for_type(x509.DNSName), san.get_values_for_type(x509.IPAddress)
    except x509.ExtensionNotFound:
        dns, ips = [], []
    if dns:
        yield Finding("tls.certificate.dns_names", "SHOULD", "PASS",
                      f"server certificate names {', '.join(dns[:4])} (DNS SANs phones can match)")
    else:
        what = "IP SANs only" if ips else "no DNS SAN"
        yield Finding("tls.certificate.dns_names", "SHOULD", "WARN",
                      f"server certificate has {what}: phones that match DNS names only "
                      "(linphone) refuse it; add the names phones dial as DNS SANs")


def _admin(cfg: Config) -> Iterator[Finding]:
    if not cfg.admin.enabled:
        return
    try:
        loopback = ipaddress.ip_address(cfg.admin.listen.host).is_loopback
    except ValueError:
        loopback = False
    yield Finding("admin.listen", "SHOULD", "PASS" if loopback else "WARN",
                  f"admin interface on {cfg.admin.listen}"
                  + ("" if loopback else ": reachable from the network"))
    if not loopback and cfg.admin.token_file is None:
        yield Finding("admin.token_file", "SHOULD", "WARN",
                      f"admin interface on {cfg.admin.listen} without a token: anyone who "
                      "reaches it reads /metrics and /status (POST /reload is refused)")
    elif cfg.admin.token_file is not None:
        yield Finding("admin.token_file", "SHOULD", "PASS",
                      "POSTs (and remote GETs but the probes) need the bearer token")


CHECKS: tuple[Check, ...] = (_tls_version, _tls_ciphers, _mtls, _secure_signalling,
                             _sdes_over_clear, _secure_media, _suites, _acl, _rate_limits, _pike,
                             _unknown_sources, _topology, _dtls, _server_names, _admin)


def audit(config: Config) -> list[Finding]:
    return [f for check in CHECKS for f in check(config)]


def run_audit(config: Config) -> tuple[str, int]:
    """The report text and the exit code (1 when a MUST fails)."""
    findings = audit(config)
    lines = [f"srtpgw audit of {config.path}"]
    lines += [f.line() for f in findings]
    lines += [f"[NOTE]        config: {w}" for w in config.warnings]
    fails = sum(1 for f in findings if f.outcome == "FAIL")
    warns = sum(1 for f in findings if f.outcome == "WARN")
    passes = sum(1 for f in findings if f.outcome == "PASS")
    must_fail = any(f.outcome == "FAIL" and f.level == "MUST" for f in findings)
    lines.append(f"{passes} pass, {warns} warn, {fails} fail"
                 + (": a MUST rule fails" if must_fail else ""))
    return "\n".join(lines), 1 if must_fail else 0
