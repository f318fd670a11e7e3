"""Config validation: every class of bad input names the file, the key path and the reason."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config, parse_hostport
from gateway.ops.keys import init_keys

ROOT = Path(__file__).resolve().parents[2]

BASE = """
[gateway]
domain = "gw.example.test"

[tls]
certificate = "keys/gateway.crt"
private_key = "keys/gateway.key"
ca_file = "keys/ca.crt"

[[listener]]
name = "legacy"
transport = "udp"
address = "127.0.0.1"
port = 5060

[[listener]]
name = "secure"
transport = "tls"
address = "127.0.0.1"
port = 5061

[[trunk]]
name = "pbx"
side = "legacy"
listener = "legacy"
transport = "udp"
peer = "127.0.0.1:5070"
allowed_sources = ["127.0.0.0/8", "::1/128"]
media = "rtp"
route_to = "carrier"

[[trunk]]
name = "carrier"
side = "secure"
listener = "secure"
transport = "tls"
peer = "127.0.0.1"
tls_identity = ["sip:carrier.example.test"]
media = "srtp"
route_to = "pbx"
"""


@pytest.fixture(scope="module")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cfg")
    init_keys(d / "keys")
    return d


def write(keydir: Path, text: str, name: str = "gw.toml") -> Path:
    p = keydir / name
    p.write_text(text)
    return p


def expect_error(keydir: Path, text: str, key: str, reason_part: str) -> ConfigError:
    path = write(keydir, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    err = info.value
    assert err.file == str(path)
    assert err.key == key, str(err)
    assert reason_part in err.reason, str(err)
    assert str(path) in str(err) and key in str(err)
    return err


def test_valid_config_loads_into_frozen_dataclasses(keydir: Path) -> None:
    cfg = load_config(write(keydir, BASE))
    pbx, carrier = cfg.trunks
    assert pbx.allowed_sources == (ipaddress.ip_network("127.0.0.0/8"),
                                   ipaddress.ip_network("::1/128"))
    assert carrier.peer.port == 5061, "TLS trunk peers default to port 5061"
    assert carrier.suites[0] == "AEAD_AES_256_GCM"
    assert cfg.tls.certificate == keydir / "keys/gateway.crt", "paths are relative to the file"
    with pytest.raises(AttributeError):
        cfg.trunks[0].name = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("old", "new", "key", "reason"),
    [
        ('port = 5060', 'port = 70000', "listener[0].port", "outside 1-65535"),
        ('port = 5060', 'port = "5060"', "listener[0].port", "expected an integer"),
        ('peer = "127.0.0.1:5070"', 'peer = "127.0.0.1:99999"', "trunk[0].peer", "outside"),
        ('peer = "127.0.0.1:5070"', 'peer = "bad host!:5070"', "trunk[0].peer", "neither"),
        ('peer = "127.0.0.1:5070"', 'peer = "::1:5070"', "trunk[0].peer", "[addr]:port"),
        ('allowed_sources = ["127.0.0.0/8", "::1/128"]', 'allowed_sources = ["10.0.0.0/33"]',
         "trunk[0].allowed_sources[0]", "not an IP network"),
        ('media = "rtp"', 'media = "zrtp"', "trunk[0].media", "must be one of"),
        ('side = "legacy"', 'side = "both"', "trunk[0].side", "must be one of"),
        ('route_to = "carrier"', 'route_to = "nowhere"', "trunk[0].route_to", "no trunk named"),
        ('route_to = "carrier"', 'route_to = "pbx"', "trunk[0].route_to", "itself"),
        ('listener = "legacy"', 'listener = "nope"', "trunk[0].listener", "no listener named"),
        ('address = "127.0.0.1"\nport = 5060', 'address = "localhost"\nport = 5060',
         "listener[0].address", "not an IP address"),
        ('domain = "gw.example.test"', 'domain = "gw.example.test"\ncolour = "blue"',
         "gateway.colour", "unknown key"),
        ('media = "srtp"', 'media = "srtp"\nsuites = ["NULL"]', "trunk[1].suites[0]",
         "unknown SRTP suite"),
        ('media = "srtp"', 'media = "rtp"', "trunk[1].media", "secure trunk"),
        ('media = "srtp"', 'media = "srtp-optional"', "trunk[1].media", "fall back"),
    ],
)
def test_bad_values_name_file_key_and_reason(keydir: Path, old: str, new: str, key: str,
                                             reason: str) -> None:
    assert old in BASE
    expect_error(keydir, BASE.replace(old, new, 1), key, reason)


def test_sdes_over_udp_is_refused_unless_explicitly_allowed(keydir: Path) -> None:
    text = BASE.replace('media = "rtp"', 'media = "srtp"', 1)
    expect_error(keydir, text, "trunk[0].media", "in clear")
    cfg = load_config(write(keydir, text.replace('media = "srtp"',
                                                 'media = "srtp"\nallow_sdes_over_insecure = true',
                                                 1)))
    assert any("in clear" in w for w in cfg.warnings)


def test_port_range_must_be_even_and_non_empty(keydir: Path) -> None:
    expect_error(keydir, BASE + "\n[media]\nport_min = 30001\n", "media.port_min", "even")
    expect_error(keydir, BASE + "\n[media]\nport_min = 30000\nport_max = 30001\n",
                 "media.port_max", "too small")


def test_duplicate_listener_socket_and_trunk_names(keydir: Path) -> None:
    dup = BASE.replace('name = "secure"\ntransport = "tls"\naddress = "127.0.0.1"\nport = 5061',
                       'name = "legacy2"\ntransport = "udp"\naddress = "127.0.0.1"\nport = 5060')
    expect_error(keydir, dup, "listener[1].port", "used by another listener")
    expect_error(keydir, BASE.replace('name = "carrier"', 'name = "pbx"'), "trunk[1].name",
                 "duplicate trunk name")


def test_unreadable_key_file_is_named(keydir: Path) -> None:
    text = BASE.replace('private_key = "keys/gateway.key"', 'private_key = "keys/missing.key"')
    expect_error(keydir, text, "tls.private_key", "cannot read")


def test_syntax_errors_and_missing_files(keydir: Path, tmp_path: Path) -> None:
    expect_error(keydir, "[gateway\nname=1", "<file>", "TOML syntax error")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml")
    assert info.value.key == "<file>" and "no such file" in info.value.reason


def test_at_least_one_listener(keydir: Path) -> None:
    expect_error(keydir, "[gateway]\nname = 'x'\n", "listener", "at least one")


def test_rate_limit_and_pike_are_validated(keydir: Path) -> None:
    limit = 'route_to = "pbx"\nrate_limit = { new_dialogs_burst = 0 }'
    text = BASE.replace('route_to = "pbx"', limit)
    expect_error(keydir, text, "trunk[1].rate_limit.new_dialogs_burst", "between")
    expect_error(keydir, BASE + "\n[firewall.pike]\nwindow = -1\n", "firewall.pike.window",
                 "between")
    expect_error(keydir, BASE + "\n[firewall]\nuser_agent_deny = ['(']\n",
                 "firewall.user_agent_deny[0]", "regular expression")


def test_shipped_configs_pass(tmp_path: Path) -> None:
    """Every config we ship must load (keys made on the fly where they point into keys/)."""
    shipped = sorted((ROOT / "deploy").rglob("*.toml"))
    assert shipped, "deploy/ ships example configs"
    for path in shipped:
        cfg = load_config(path, check_files=False)
        assert cfg.listeners, path


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [("127.0.0.1:5060", "127.0.0.1", 5060), ("[::1]:5061", "::1", 5061),
     ("sip.example.test", "sip.example.test", 5060), ("[2001:db8::1]", "2001:db8::1", 5060)],
)
def test_parse_hostport(text: str, host: str, port: int) -> None:
    hp = parse_hostport(text, 5060)
    assert (hp.host, hp.port) == (host, port)


def test_connection_cap_and_first_message_deadline(keydir: Path) -> None:
    """[sip] max_connections_per_source and first_message_timeout (issue 13 item 4)."""
    expect_error(keydir, BASE + "\n[sip]\nmax_connections_per_source = 0\n",
                 "sip.max_connections_per_source", "between")
    expect_error(keydir, BASE + "\n[sip]\nfirst_message_timeout = -1\n",
                 "sip.first_message_timeout", "between")
    sip = load_config(write(keydir, BASE + "\n[sip]\nmax_connections_per_source = 8\n"
                                            "first_message_timeout = 0\n")).sip
    assert (sip.max_connections_per_source, sip.first_message_timeout) == (8, 0.0)
