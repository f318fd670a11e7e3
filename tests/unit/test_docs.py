"""The operator docs stay in step with the code: every config key is documented."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gateway import config

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"

SECTIONS = {
    "gateway": config.GatewaySection, "logging": config.LoggingSection,
    "tls": config.TlsSection, "dtls": config.DtlsSection, "media": config.MediaSection,
    "sip": config.SipSection, "registrar": config.RegistrarSection,
    "admin": config.AdminSection, "cdr": config.CdrSection,
    "firewall": config.FirewallSection, "firewall.pike": config.PikeSection,
    "listener": config.Listener, "trunk": config.Trunk, "trunk.route": config.Route,
    "trunk.rate_limit": config.RateLimit,
}
# Fields whose TOML spelling differs from the dataclass field.
TOML_NAME = {("trunk", "routes"): "[[trunk.route]]", ("firewall", "pike"): "[firewall.pike]"}


@pytest.mark.parametrize(("section", "cls"), SECTIONS.items())
def test_every_config_key_is_documented(section: str, cls: type) -> None:
    text = DOC.read_text()
    missing = [f.name for f in dataclasses.fields(cls)
               if f"`{TOML_NAME.get((section, f.name), f.name)}`" not in text]
    assert not missing, f"[{section}] keys missing from docs/configuration.md: {missing}"
