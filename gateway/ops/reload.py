"""Live reload: load -> validate -> swap, or refuse and keep the running config.

New trunks, routes, limits, firewall settings and certificates apply to new calls and new TLS
connections; established calls and connections keep what they started with. A changed listener
set is refused (trunks name listeners, so half-applying it would misroute calls); the admin
address and the relay address and port range are reported as needing a restart and keep their
running values until then.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.config import Config, ConfigError, load_config
from gateway.ops.health import CertificateError, configured_certificates, read_certificate
from gateway.ops.log import get_logger

log = get_logger("reload")

# Settings that only take effect at start-up (they own bound sockets).
RESTART_ONLY = ("admin.listen", "media.address", "media.port_min", "media.port_max")


class ReloadRefused(Exception):
    """The new config or certificates are not usable; the running config stays."""


@dataclass(slots=True)
class ReloadResult:
    ok: bool
    error: str | None = None
    changed: list[str] = field(default_factory=list)
    restart_needed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "error": self.error, "changed": self.changed,
                "restart_needed": self.restart_needed, "warnings": self.warnings}


def check_tls_material(cfg: Config) -> None:
    """Certificates parse and each private key matches its certificate (errors name files only)."""
    for name, path in configured_certificates(cfg).items():
        try:
            read_certificate(name, path)
        except CertificateError as exc:
            raise ReloadRefused(str(exc)) from None
    pairs = []
    if "tls" in configured_certificates(cfg):
        pairs.append(("tls", cfg.tls.certificate, cfg.tls.private_key))
    if "dtls" in configured_certificates(cfg):
        pairs.append(("dtls", cfg.dtls.certificate, cfg.dtls.private_key))
    for name, cert, key in pairs:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            ctx.load_cert_chain(cert, key)
        except (ssl.SSLError, OSError) as exc:
            # The ssl message names the failure (e.g. KEY_VALUES_MISMATCH), never key bytes.
            reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or "unusable"
            raise ReloadRefused(f"{name}: certificate {cert} and key {key} unusable: "
                                f"{reason}") from None


def changed_settings(old: Config, new: Config) -> list[str]:
    """Dotted names of what differs, e.g. ``trunk carrier``, ``firewall``, ``admin.listen``."""
    out: list[str] = []
    for section in ("gateway", "logging", "tls", "dtls", "media", "sip", "admin", "cdr",
                    "firewall"):
        a, b = getattr(old, section), getattr(new, section)
        if a != b:
            out.extend(f"{section}.{f}" for f in a.__dataclass_fields__
                       if getattr(a, f) != getattr(b, f))
    old_t = {t.name: t for t in old.trunks}
    new_t = {t.name: t for t in new.trunks}
    out.extend(f"trunk {n} added" for n in new_t if n not in old_t)
    out.extend(f"trunk {n} removed" for n in old_t if n not in new_t)
    out.extend(f"trunk {n} changed" for n in new_t if n in old_t and old_t[n] != new_t[n])
    return out


class Reloader:
    """Re-reads the config file on demand and hands a validated Config to ``apply``.

    ``apply`` must be all-or-nothing: it raises (ReloadRefused or any error) before changing
    anything if it cannot take the new config.
    """

    def __init__(self, path: Path, current: Config, apply: Callable[[Config], None]) -> None:
        self.path = path
        self.current = current
        self._apply = apply
        self.counts = {"ok": 0, "refused": 0}

    def reload(self) -> ReloadResult:
        try:
            new = load_config(self.path)
            check_tls_material(new)
        except (ConfigError, ReloadRefused) as exc:
            return self._refuse(str(exc))
        if new.listeners != self.current.listeners:
            return self._refuse("the [[listener]] set changed: restart the gateway to apply it")
        changed = changed_settings(self.current, new)
        restart = [c for c in changed if c in RESTART_ONLY]
        try:
            self._apply(new)
        except Exception as exc:  # the app names why it cannot take the config
            return self._refuse(f"not applied: {exc}")
        self.current = new
        self.counts["ok"] += 1
        log.info("config.reloaded", path=str(self.path), changed=",".join(changed) or "nothing",
                 restart_needed=",".join(restart) or "nothing")
        for w in new.warnings:
            log.warning("config.warning", detail=w)
        return ReloadResult(True, None, changed, restart, list(new.warnings))

    def _refuse(self, error: str) -> ReloadResult:
        self.counts["refused"] += 1
        log.error("config.reload_refused", path=str(self.path), error=error)
        return ReloadResult(False, error)
