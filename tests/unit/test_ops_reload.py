"""Reload logic: load -> validate -> swap, or refuse with the reason and keep the old config."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import Config, load_config
from gateway.ops.keys import init_keys, make_self_signed, write_private_key
from gateway.ops.reload import Reloader, ReloadRefused, changed_settings, check_tls_material

BASE = """
[admin]
listen = "127.0.0.1:9061"

[[listener]]
name = "udp"
transport = "udp"
address = "127.0.0.1"
port = 5060

[[listener]]
name = "tls"
transport = "tls"
address = "127.0.0.1"
port = 5061

[tls]
certificate = "{keys}/gateway.crt"
private_key = "{keys}/gateway.key"
ca_file = "{keys}/ca.crt"

[[trunk]]
name = "pbx"
side = "legacy"
listener = "udp"
transport = "udp"
peer = "127.0.0.1:5070"
media = "rtp"
route_to = "carrier"
allowed_sources = ["127.0.0.1/32"]
max_calls = {max_calls}

[[trunk]]
name = "carrier"
side = "secure"
listener = "tls"
transport = "tls"
peer = "127.0.0.1:5081"
media = "srtp"
route_to = "pbx"
tls_identity = ["sip:peer.srtpgw.test"]
allowed_sources = ["127.0.0.1/32"]
"""


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    keys = init_keys(tmp_path / "keys").dir
    path = tmp_path / "gw.toml"
    path.write_text(BASE.format(keys=keys, max_calls=10))
    return path, keys


class App:
    """Records what it was given; refuses when told to, like an app whose apply fails."""

    def __init__(self) -> None:
        self.applied: list[Config] = []
        self.refuse: str | None = None

    def apply(self, cfg: Config) -> None:
        if self.refuse:
            raise ValueError(self.refuse)
        self.applied.append(cfg)


def test_good_reload_swaps_and_reports_changes(setup: tuple[Path, Path]) -> None:
    path, keys = setup
    app = App()
    r = Reloader(path, load_config(path), app.apply)
    path.write_text(BASE.format(keys=keys, max_calls=99).replace(
        "9061", "9062") + '\n[firewall]\nunknown_source = "403"\n')
    res = r.reload()
    assert res.ok, res.error
    assert "trunk pbx changed" in res.changed and "firewall.unknown_source" in res.changed
    assert res.restart_needed == ["admin.listen"]
    assert app.applied[-1].trunk("pbx").max_calls == 99
    assert r.current is app.applied[-1]
    assert r.counts == {"ok": 1, "refused": 0}


def test_invalid_config_is_refused_and_old_kept(setup: tuple[Path, Path]) -> None:
    path, keys = setup
    app = App()
    old = load_config(path)
    r = Reloader(path, old, app.apply)
    path.write_text(BASE.format(keys=keys, max_calls=0))
    res = r.reload()
    assert not res.ok and "trunk[0].max_calls" in (res.error or "")
    assert app.applied == [] and r.current is old
    path.write_text("[[listener]\n")
    assert "TOML syntax error" in (r.reload().error or "")
    assert r.counts == {"ok": 0, "refused": 2}


def test_mismatched_key_is_refused_without_leaking_it(setup: tuple[Path, Path]) -> None:
    path, keys = setup
    other, _ = make_self_signed("other")
    (keys / "gateway.key").unlink()
    write_private_key(keys / "gateway.key", other)
    app = App()
    r = Reloader(path, load_config(path), app.apply)
    res = r.reload()
    assert not res.ok
    assert "gateway.key" in (res.error or "") and "KEY_VALUES_MISMATCH" in (res.error or "")
    assert "PRIVATE" not in (res.error or "") and app.applied == []


def test_unparsable_certificate_is_refused(setup: tuple[Path, Path]) -> None:
    path, keys = setup
    (keys / "ca.crt").write_text("not a certificate\n")
    with pytest.raises(ReloadRefused, match=r"ca: .*not a PEM certificate"):
        check_tls_material(load_config(path))


def test_app_refusal_keeps_old_config(setup: tuple[Path, Path]) -> None:
    path, _ = setup
    app = App()
    old = load_config(path)
    r = Reloader(path, old, app.apply)
    app.refuse = "listener set changed"
    res = r.reload()
    assert not res.ok and res.error == "not applied: listener set changed"
    assert r.current is old


def test_changed_settings_lists_trunk_adds_and_removals(setup: tuple[Path, Path]) -> None:
    path, keys = setup
    old = load_config(path)
    text = BASE.format(keys=keys, max_calls=10).replace('name = "carrier"', 'name = "carrier2"')
    text = text.replace('route_to = "carrier"', 'route_to = "carrier2"')
    path.write_text(text)
    new = load_config(path)
    assert set(changed_settings(old, new)) == {"trunk carrier2 added", "trunk carrier removed",
                                               "trunk pbx changed"}
    assert changed_settings(old, old) == []


def test_listener_change_is_refused(setup: tuple[Path, Path]) -> None:
    path, keys = setup
    app = App()
    old = load_config(path)
    r = Reloader(path, old, app.apply)
    path.write_text(BASE.format(keys=keys, max_calls=10).replace("port = 5060", "port = 5062"))
    res = r.reload()
    assert not res.ok and "listener" in (res.error or "") and "restart" in (res.error or "")
    assert app.applied == [] and r.current is old
