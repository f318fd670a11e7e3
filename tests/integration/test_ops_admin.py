"""The admin endpoint over real loopback sockets: metrics, health, status, reload, strictness.

The gateway side is a ``GatewayView`` over plain counters (the operations layer's contract with
the app); the end-to-end run through the real gateway is in test_ops_gateway.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import AdminSection, Config, HostPort, load_config
from gateway.ops import admin as admin_mod
from gateway.ops import status
from gateway.ops.keys import init_keys
from gateway.ops.metrics import Stats
from gateway.ops.service import OpsService

CONFIG = """
[admin]
listen = "127.0.0.1:9061"
cert_warning_days = {warn}
drain_timeout = 1.5
token_file = "{keys}/admin.token"

[tls]
certificate = "{keys}/gateway.crt"
private_key = "{keys}/gateway.key"
ca_file = "{keys}/ca.crt"

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


class View:
    """Counters and calls as plain data, standing in for the app's components."""

    def __init__(self) -> None:
        self.stats_value = Stats(calls_active={"pbx": 1}, ports_used=4, ports_total=1000,
                                 media_packets={("srtp", "in"): 500, ("rtp", "out"): 498},
                                 srtp_auth_failures={"srtp": 3})
        self.bound = {"udp": True, "tls": True}
        self.applied: list[Config] = []
        self.ended: list[str] = []
        self.accepting = True

    def stats(self) -> Stats:
        return dataclasses.replace(self.stats_value)

    def listeners_bound(self) -> dict[str, bool]:
        return dict(self.bound)

    def runtime(self) -> dict[str, int | None]:
        return {"tasks": 1}

    def calls(self) -> list[dict[str, Any]]:
        return [{"call": "a1b2c3d4e5f60718", "from_trunk": "pbx", "to_trunk": "carrier",
                 "state": "confirmed", "duration": 12.5, "media": "rtp/srtp"}
                for _ in range(sum(self.stats_value.calls_active.values()))]

    def active_calls(self) -> int:
        return sum(self.stats_value.calls_active.values())

    def bindings(self) -> list[dict[str, Any]]:
        return []

    def apply_config(self, cfg: Config) -> None:
        self.applied.append(cfg)

    def stop_accepting(self) -> None:
        self.accepting = False

    async def end_calls(self, cause: str) -> None:
        self.ended.append(cause)
        self.stats_value.calls_active = {}


def write_config(path: Path, keys: Path, warn: int = 14, max_calls: int = 10) -> None:
    path.write_text(CONFIG.format(keys=keys, warn=warn, max_calls=max_calls))


@pytest.fixture
async def ops(tmp_path: Path):
    keys = init_keys(tmp_path / "keys").dir
    path = tmp_path / "gw.toml"
    write_config(path, keys)
    cfg = load_config(path)
    cfg = dataclasses.replace(cfg, admin=dataclasses.replace(
        cfg.admin, listen=HostPort("127.0.0.1", 0)))
    service = OpsService(cfg, View())
    await service.start(handle_signals=False)
    service.keys = keys  # type: ignore[attr-defined]
    yield service
    await service.stop()


def token(ops: OpsService) -> str:
    """The admin token ``init_keys`` wrote next to the fixture's keys."""
    return (ops.keys / "admin.token").read_text().strip()  # type: ignore[attr-defined]


async def http(addr: HostPort, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection(addr.host, addr.port)
    writer.write(raw)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


async def get(addr: HostPort, path: str) -> tuple[int, dict[str, str], bytes]:
    return await http(addr, f"GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n".encode())


async def test_metrics_scrape_parses(ops: OpsService) -> None:
    code, headers, body = await get(ops.admin.address, "/metrics")
    assert code == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
    pkts = {(s.labels["leg_kind"], s.labels["direction"]): s.value
            for s in fams["srtpgw_media_packets"].samples}
    assert pkts == {("srtp", "in"): 500.0, ("rtp", "out"): 498.0}
    assert fams["srtpgw_calls_active"].samples[0].value == 1
    assert {s.labels["certificate"] for s in
            fams["srtpgw_certificate_expiry_timestamp_seconds"].samples} == {"tls", "ca"}
    assert fams["srtpgw_event_loop_lag_seconds"].type == "histogram"


async def test_healthz_follows_listeners(ops: OpsService) -> None:
    code, _, body = await get(ops.admin.address, "/healthz")
    assert code == 200 and json.loads(body) == {"ok": True, "reasons": []}
    ops.view.bound["tls"] = False  # type: ignore[attr-defined]
    code, _, body = await get(ops.admin.address, "/healthz")
    assert code == 503 and json.loads(body)["reasons"] == ["listener tls not bound"]


async def test_readyz_follows_ports_and_certificates(ops: OpsService, tmp_path: Path) -> None:
    assert (await get(ops.admin.address, "/readyz"))[0] == 200
    ops.view.stats_value.ports_used = 999  # type: ignore[attr-defined]
    code, _, body = await get(ops.admin.address, "/readyz")
    assert code == 503 and "port pool exhausted" in json.loads(body)["reasons"][0]
    ops.view.stats_value.ports_used = 0  # type: ignore[attr-defined]
    # The dev leaf certificate lives 397 days: a 400-day warning window makes it "expiring".
    write_config(ops.config.path, ops.keys, warn=400)  # type: ignore[attr-defined]
    assert await asyncio.to_thread(status.main_reload, ops.admin.address, io.StringIO(),
                                   token(ops)) == 0
    code, _, body = await get(ops.admin.address, "/readyz")
    assert code == 503
    assert any("certificate tls" in r and "expires in" in r for r in json.loads(body)["reasons"])


async def test_status_command_prints_calls_and_counters(ops: OpsService) -> None:
    out = io.StringIO()
    assert await asyncio.to_thread(status.main, ops.admin.address, out) == 0
    text = out.getvalue()
    assert "active calls: 1" in text and "a1b2c3d4e5f60718" in text
    assert "srtp_auth_failures  3" in text and "media_packets_in    500" in text
    assert "media_packets_out   498" in text
    assert "ready" in text.splitlines()[0]


async def test_reload_good_and_bad_config(ops: OpsService) -> None:
    view = ops.view
    path = ops.config.path
    write_config(path, ops.keys, max_calls=77)  # type: ignore[attr-defined]
    out = io.StringIO()
    assert await asyncio.to_thread(status.main_reload, ops.admin.address, out, token(ops)) == 0
    assert "trunk pbx changed" in out.getvalue()
    assert "admin.listen" in out.getvalue()  # the fixture runs on port 0: a restart item
    assert view.applied[-1].trunk("pbx").max_calls == 77  # type: ignore[attr-defined]
    path.write_text(path.read_text().replace('media = "srtp"', 'media = "rtp"'))
    code, _, body = await http(ops.admin.address, b"POST /reload HTTP/1.1\r\nHost: localhost\r\n"
                               b"Content-Length: 0\r\nAuthorization: Bearer "
                               + token(ops).encode() + b"\r\n\r\n")
    doc = json.loads(body)
    assert code == 409 and not doc["ok"] and "trunk[1].media" in doc["error"]
    assert ops.config.trunk("pbx").max_calls == 77 and len(view.applied) == 1  # type: ignore
    assert await asyncio.to_thread(status.main_reload, ops.admin.address, io.StringIO(),
                                   token(ops)) == 1
    assert ops.reloader.counts == {"ok": 1, "refused": 2}


async def test_sighup_reloads(ops: OpsService) -> None:
    await ops.stop()
    await ops.start(handle_signals=True)
    write_config(ops.config.path, ops.keys, max_calls=5)  # type: ignore[attr-defined]
    os.kill(os.getpid(), signal.SIGHUP)
    for _ in range(100):
        if ops.reloader.counts["ok"]:
            break
        await asyncio.sleep(0.02)
    assert ops.config.trunk("pbx").max_calls == 5


@pytest.mark.parametrize(("raw", "code"), [
    (b"GET /nope HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 404),
    (b"GET /reload HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 405),
    (b"POST /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 405),
    (b"BREW /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 405),
    (b"GET /metrics HTTP/9\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
    (b"POST /reload HTTP/1.1\r\nContent-Length: 5000\r\n\r\n", 413),
    (b"POST /reload HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://evil.example\r\n\r\n",
     403),
    (b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://evil.example\r\n\r\n",
     403),
    (b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nSec-Fetch-Site: cross-site\r\n\r\n", 403),
    (b"GET /status HTTP/1.1\r\n\r\n", 400),  # no Host
    (b"GET /status HTTP/1.1\r\nHost: rebind.attacker.example:9060\r\n\r\n", 421),
])
async def test_strict_http(ops: OpsService, raw: bytes, code: int) -> None:
    got, headers, body = await http(ops.admin.address, raw)
    assert got == code and "error" in json.loads(body)
    if code == 405:
        assert "Allow" in headers


async def test_slow_request_times_out(ops: OpsService, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(admin_mod, "REQUEST_TIMEOUT", 0.2)
    reader, writer = await asyncio.open_connection(*ops.admin.address.addr)
    writer.write(b"GET /metrics HTTP/1.1\r\n")
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert data.startswith(b"HTTP/1.1 408 ")


async def test_connection_cap(ops: OpsService, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over the cap, work is refused but the probes still answer (issue 13 item 13: 32 idle
    connections made /healthz answer 503, and the liveness probe restarted the gateway)."""
    idle = [await asyncio.open_connection(*ops.admin.address.addr)
            for _ in range(admin_mod.MAX_CONNECTIONS)]
    await asyncio.sleep(0.1)
    assert (await get(ops.admin.address, "/metrics"))[0] == 503
    assert (await get(ops.admin.address, "/healthz"))[0] == 200
    assert (await get(ops.admin.address, "/readyz"))[0] == 200
    for _, w in idle:
        w.close()
    await asyncio.sleep(0.1)
    assert (await get(ops.admin.address, "/healthz"))[0] == 200


async def test_admin_disabled_binds_nothing(tmp_path: Path) -> None:
    keys = init_keys(tmp_path / "keys").dir
    write_config(tmp_path / "gw.toml", keys)
    cfg = load_config(tmp_path / "gw.toml")
    cfg = dataclasses.replace(cfg, admin=AdminSection(enabled=False))
    service = OpsService(cfg, View())
    await service.start(handle_signals=False)
    assert service.admin is None and service.liveness().ok
    await service.stop()


async def test_status_lists_at_most_a_bounded_number_of_calls(ops: OpsService) -> None:
    ops.view.stats_value.calls_active = {"pbx": 250}  # type: ignore[attr-defined]
    _, doc = await asyncio.to_thread(status.request, ops.admin.address, "GET", "/status")
    assert doc["calls"]["active"] == 250 and doc["calls"]["listed"] == 200
    assert len(doc["calls"]["list"]) == 200
    out = io.StringIO()
    status.render_status(doc, out)
    assert "active calls: 250\n(listing the first 200)" in out.getvalue()
