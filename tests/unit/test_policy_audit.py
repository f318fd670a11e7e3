"""srtpgw audit: each rule's PASS/WARN/FAIL and the exit code."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from gateway.policy.audit import audit, run_audit
from tests.security.policy_configs import make_config

ROOT = Path(__file__).resolve().parents[2]


def outcomes(cfg) -> dict[str, str]:
    return {f.rule: f"{f.outcome} {f.level}" for f in audit(cfg)}


def test_good_config_passes() -> None:
    report, code = run_audit(make_config())
    assert code == 0, report
    got = outcomes(make_config())
    assert got["listener.secure.tls_client_auth"] == "PASS MUST"
    assert got["trunk.carrier.media"] == "PASS MUST"
    assert got["tls.ciphers"] == "PASS SHOULD"
    assert got["firewall.pike"] == "PASS SHOULD"
    assert got["gateway.user_agent"] == "PASS SHOULD"
    assert "[FAIL]" not in report


def test_optional_client_auth_fails_must() -> None:
    raw_listeners = [
        {"name": "legacy", "transport": "udp", "address": "127.0.0.1", "port": 5060},
        {"name": "secure", "transport": "tls", "address": "127.0.0.1", "port": 5061,
         "tls_client_auth": "optional"},
    ]
    report, code = run_audit(make_config(listener=raw_listeners))
    assert code == 1
    assert "[FAIL] MUST   listener.secure.tls_client_auth" in report


def test_sdes_over_udp_fails_must() -> None:
    cfg = make_config(trunk0={"media": "srtp", "allow_sdes_over_insecure": True})
    assert outcomes(cfg)["trunk.pbx.media"] == "FAIL MUST"
    assert run_audit(cfg)[1] == 1


def test_warnings_do_not_fail() -> None:
    cfg = make_config(
        gateway={"user_agent": "srtpgw/0.1"}, firewall={"pike": {"enabled": False},
                                                        "unknown_source": "403"},
        tls={"ciphers": "ECDHE+AESGCM:AES256-SHA"},
        trunk0={"allowed_sources": [], "pass_headers": ["Allow", "Server"]},
        trunk1={"suites": ["AES_CM_128_HMAC_SHA1_32"], "tls_identity": []})
    got = outcomes(cfg)
    for rule in ("gateway.user_agent", "firewall.pike", "firewall.unknown_source", "tls.ciphers",
                 "trunk.pbx.allowed_sources", "trunk.pbx.pass_headers", "trunk.carrier.suites",
                 "trunk.carrier.tls_identity"):
        assert got[rule] == "WARN SHOULD", rule
    assert run_audit(cfg)[1] == 0


def test_secure_trunk_with_optional_srtp_fails() -> None:
    cfg = make_config()
    weak = replace(cfg, trunks=tuple(replace(t, media="srtp-optional") if t.secure else t
                                     for t in cfg.trunks))
    assert outcomes(weak)["trunk.carrier.media_required"] == "FAIL MUST"
    assert outcomes(cfg)["trunk.carrier.media_required"] == "PASS MUST"


def test_open_acl_fails() -> None:
    cfg = make_config(trunk0={"allowed_sources": ["0.0.0.0/0"]})
    assert outcomes(cfg)["trunk.pbx.allowed_sources"] == "FAIL MUST"


def test_cli_exit_code(tmp_path: Path) -> None:
    toml = tmp_path / "gw.toml"
    toml.write_text("""
[[listener]]
name = "s"
transport = "tls"
address = "127.0.0.1"
port = 5061
tls_client_auth = "off"

[[trunk]]
name = "carrier"
side = "secure"
listener = "s"
transport = "tls"
peer = "127.0.0.1"
media = "srtp"
""")
    from gateway.ops.keys import init_keys
    init_keys(tmp_path / "keys")
    toml.write_text(toml.read_text().replace(
        "[[listener]]", f'[tls]\ncertificate = "{tmp_path}/keys/gateway.crt"\n'
        f'private_key = "{tmp_path}/keys/gateway.key"\nca_file = "{tmp_path}/keys/ca.crt"\n\n'
        "[[listener]]", 1))
    r = subprocess.run([sys.executable, "-m", "gateway.cli", "audit", "-c", str(toml)],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "[FAIL] MUST   listener.s.tls_client_auth" in r.stdout


def test_admin_beyond_loopback_without_token_warns(tmp_path: Path) -> None:
    cfg = make_config(admin={"listen": "0.0.0.0:9060"})
    got = outcomes(cfg)
    assert got["admin.listen"] == "WARN SHOULD" and got["admin.token_file"] == "WARN SHOULD"
    token = tmp_path / "admin.token"
    token.write_text("t" * 32)
    cfg = make_config(admin={"listen": "0.0.0.0:9060", "token_file": str(token)})
    assert outcomes(cfg)["admin.token_file"] == "PASS SHOULD"
    assert "admin.token_file" not in outcomes(make_config())  # loopback, no token: nothing to say


def test_trunk_pike_exemption_and_own_limits_are_reported() -> None:
    cfg = make_config(trunk0={"pike": {"enabled": False}},
                      trunk1={"pike": {"max_requests": 2000}})
    report, _ = run_audit(cfg)
    got = outcomes(cfg)
    assert got["trunk.pbx.pike"] == "WARN SHOULD" and "exempt from flood bans" in report
    assert got["trunk.carrier.pike"] == "PASS SHOULD" and "more than 2000 requests" in report


def _server_cert(tmp_path: Path, dns: list[str], ips: list[str]) -> Path:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from gateway.ops.keys import init_keys, load_private_key, make_leaf
    keys = init_keys(tmp_path / "keys", force=True)
    ca = x509.load_pem_x509_certificate(keys.ca_cert.read_bytes())
    _, cert = make_leaf(load_private_key(keys.dir / "ca.key"), ca, "gw", dns=dns, ips=ips)
    path = tmp_path / f"server-{len(dns)}.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def test_server_certificate_with_ip_sans_only_warns(tmp_path: Path) -> None:
    base = make_config()
    ip_only = replace(base, tls=replace(base.tls, certificate=_server_cert(
        tmp_path, [], ["127.0.0.1"])))
    report, code = run_audit(ip_only)
    assert code == 0 and "[WARN] SHOULD tls.certificate.dns_names" in report
    assert "IP SANs only" in report
    named = replace(base, tls=replace(base.tls, certificate=_server_cert(
        tmp_path, ["gw.example.test"], ["127.0.0.1"])))
    assert outcomes(named)["tls.certificate.dns_names"] == "PASS SHOULD"
