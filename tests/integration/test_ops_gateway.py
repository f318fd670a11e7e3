"""Operations against the real gateway: calls from a legacy phone (SIP/UDP, RTP) through the
in-process ``Gateway`` to a secure phone (SIP/TLS, SRTP), with metrics, status, reload, drain and
CDRs observed over the admin endpoint and on disk.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import Gateway
from gateway.config import HostPort, load_config
from gateway.ops import demo
from gateway.ops.demo_phone import DemoPhone, server_context
from gateway.ops.gateway_view import attach_ops
from gateway.ops.keys import (
    init_keys,
    load_private_key,
    make_leaf,
    write_cert,
    write_private_key,
)
from gateway.ops.service import OpsService
from gateway.ops.status import request
from tests.support.logcheck import assert_structured

from .test_ops_admin import get, http

CONFIG = """
[gateway]
name = "ops-test"

[tls]
certificate = "{keys}/gateway.crt"
private_key = "{keys}/gateway.key"
ca_file = "{keys}/ca.crt"

[media]
address = "127.0.0.1"
port_min = {media_min}
port_max = {media_max}

[sip]
t1 = 0.1
t2 = 0.4
t4 = 0.5

[admin]
listen = "127.0.0.1:{admin}"
drain_timeout = {drain_timeout}
token_file = "{keys}/admin.token"

[cdr]
path = "{dir}/cdr.jsonl"

[[listener]]
name = "udp"
transport = "udp"
address = "127.0.0.1"
port = {udp}

[[listener]]
name = "tls"
transport = "tls"
address = "127.0.0.1"
port = {tls}

[[trunk]]
name = "pbx"
side = "legacy"
listener = "udp"
transport = "udp"
peer = "127.0.0.1:{legacy}"
allowed_sources = ["127.0.0.1/32"]
media = "rtp"
route_to = "carrier"

[[trunk]]
name = "carrier"
side = "secure"
listener = "tls"
transport = "tls"
peer = "127.0.0.1:{secure}"
tls_server_name = "peer.srtpgw.test"
tls_identity = ["sip:peer.srtpgw.test"]
allowed_sources = ["127.0.0.1/32"]
media = "srtp"
route_to = "pbx"
max_calls = {max_calls}
"""



@dataclass
class Rig:
    gw: Gateway
    ops: OpsService
    legacy: DemoPhone
    secure: DemoPhone
    path: Path
    values: dict[str, object]
    stopped: asyncio.Event

    @property
    def admin(self) -> HostPort:
        assert self.ops.admin is not None
        return self.ops.admin.address

    @property
    def reload_request(self) -> bytes:
        """POST /reload with the admin token ``init_keys`` wrote."""
        token = (Path(str(self.values["keys"])) / "admin.token").read_text().strip()
        return (b"POST /reload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n"
                b"Authorization: Bearer " + token.encode() + b"\r\n\r\n")

    def write(self, **changes: object) -> None:
        self.path.write_text(CONFIG.format(**{**self.values, **changes}))

    async def call(self, phone: DemoPhone | None = None) -> int:
        phone = phone or self.legacy
        host, port = self.gw.stack.bound("udp")
        return await phone.call((host, port), f"sip:4930123@{host}:{port}")

    def cdrs(self) -> list[dict[str, object]]:
        path = Path(str(self.values["dir"])) / "cdr.jsonl"
        return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def phones(keys: Path) -> tuple[DemoPhone, DemoPhone]:
    legacy = DemoPhone("pbx-phone", demo.LEGACY_MARKER, transport="udp", media="rtp")
    secure = DemoPhone("carrier-phone", demo.SECURE_MARKER, transport="tls", media="srtp",
                       server_tls=server_context(str(keys / "peer.crt"), str(keys / "peer.key"),
                                                 str(keys / "ca.crt")))
    legacy.expect_peer_marker(demo.SECURE_MARKER)
    secure.expect_peer_marker(demo.LEGACY_MARKER)
    legacy.packets = secure.packets = 1000  # audio for the whole test, until the BYE
    return legacy, secure


def config_values(tmp: Path, keys: Path, legacy: DemoPhone, secure: DemoPhone,
                  drain_timeout: float = 5.0) -> dict[str, object]:
    media_min, media_max = demo.free_range()
    return {"dir": tmp, "keys": keys, "media_min": media_min, "media_max": media_max,
            "admin": demo.free_port(socket.SOCK_STREAM), "udp": demo.free_port(),
            "tls": demo.free_port(socket.SOCK_STREAM), "legacy": legacy.sip_port,
            "secure": secure.sip_port, "drain_timeout": drain_timeout, "max_calls": 10}


@pytest.fixture
async def rig(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    keys = init_keys(tmp_path / "keys").dir
    legacy, secure = phones(keys)
    await legacy.start()
    await secure.start()
    values = config_values(tmp_path, keys, legacy, secure, getattr(request, "param", 5.0))
    path = tmp_path / "gw.toml"
    path.write_text(CONFIG.format(**values))
    gw = Gateway(load_config(path))
    stopped = asyncio.Event()
    ops = attach_ops(gw, on_drained=stopped.set)
    await gw.start()
    await ops.start(handle_signals=False)
    try:
        yield Rig(gw, ops, legacy, secure, path, values, stopped)
    finally:
        await ops.stop()
        await gw.stop()
        await legacy.close()
        await secure.close()


def scrape(text: bytes) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for fam in text_string_to_metric_families(text.decode()):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


async def wait_for(cond, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.02)


async def test_call_metrics_status_reload_and_cdr(rig: Rig, caplog: pytest.LogCaptureFixture,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logging.getLogger("srtpgw"), "propagate", True)
    caplog.set_level(logging.INFO, logger="srtpgw")
    assert await rig.call() == 200
    await asyncio.wait_for(rig.secure.answered.wait(), 5)
    await wait_for(lambda: rig.secure.report.received >= 10)

    m = scrape((await get(rig.admin, "/metrics"))[2])
    assert m["srtpgw_calls_active"][(("trunk", "pbx"),)] == 1
    assert m["srtpgw_calls_active"][(("trunk", "carrier"),)] == 0
    assert m["srtpgw_sip_requests_total"][(("method", "INVITE"), ("transport", "udp"))] == 1
    pkts = m["srtpgw_media_packets_total"]
    assert pkts[(("direction", "in"), ("leg_kind", "rtp"))] >= 10  # from the legacy phone
    assert pkts[(("direction", "out"), ("leg_kind", "srtp"))] >= 10  # to the secure phone
    assert m["srtpgw_srtp_auth_failures_total"] == {(("leg_kind", "srtp"),): 0.0}
    assert m["srtpgw_media_ports_used"][()] == 2  # one RTP/RTCP pair per leg

    _, doc = await asyncio.to_thread(request, rig.admin, "GET", "/status")
    (listed,) = doc["calls"]["list"]
    assert listed["from_trunk"] == "pbx" and listed["to_trunk"] == "carrier"
    call_id = listed["call"]

    # Good reload under the call: a limit changes for new calls, the call keeps its media.
    rig.write(max_calls=3)
    code, _, body = await http(rig.admin, rig.reload_request)
    assert code == 200 and "trunk carrier changed" in json.loads(body)["changed"]
    assert rig.gw.config.trunk("carrier").max_calls == 3
    before = rig.secure.report.received
    await wait_for(lambda: rig.secure.report.received > before + 3)

    # Bad reload: refused with the reason, the running config stays, media still flows.
    rig.path.write_text(rig.path.read_text().replace('media = "srtp"', 'media = "rtp"'))
    code, _, body = await http(rig.admin, rig.reload_request)
    assert code == 409 and "a secure trunk must use" in json.loads(body)["error"]
    assert rig.gw.config.trunk("carrier").max_calls == 3
    before = rig.secure.report.received
    await wait_for(lambda: rig.secure.report.received > before + 3)

    assert await rig.legacy.hangup() == 200
    await asyncio.wait_for(rig.secure.ended.wait(), 5)
    await wait_for(lambda: bool(rig.cdrs()))
    (cdr,) = rig.cdrs()
    assert cdr["call"] == call_id and cdr["end_cause"] == "caller_bye"
    assert cdr["from_trunk"] == "pbx" and cdr["to_trunk"] == "carrier"
    assert cdr["caller"] == "pbx-phone" and cdr["callee"] == "4930123"
    legacy_leg, secure_leg = cdr["legs"]  # type: ignore[misc]
    assert secure_leg["media"] == "srtp" and secure_leg["transport"] == "tls"
    assert secure_leg["packets_out"] >= 10 and legacy_leg["packets_in"] >= 10
    assert "inline" not in json.dumps(cdr)
    m = scrape((await get(rig.admin, "/metrics"))[2])
    assert m["srtpgw_calls_total"][(("outcome", "answered"), ("trunk", "pbx"))] == 1
    # Ended calls keep counting: the counters never go back after the session closes.
    srtp_out = m["srtpgw_media_packets_total"][(("direction", "out"), ("leg_kind", "srtp"))]
    assert srtp_out == secure_leg["packets_out"]
    assert m["srtpgw_config_reloads_total"][(("result", "refused"),)] == 1
    tagged = [r for r in caplog.records if (getattr(r, "fields", None) or {}).get("call")
              == call_id]
    assert {r.msg for r in tagged} >= {"call.start", "call.end"}


async def test_reload_adds_a_trunk_for_new_calls(rig: Rig) -> None:
    """A trunk and a route added by reload take the next call; the running call is untouched."""
    keys = Path(str(rig.values["keys"]))
    assert await rig.call() == 200  # before the reload: 4930123 goes to the carrier
    await asyncio.wait_for(rig.secure.answered.wait(), 5)
    partner = DemoPhone("partner-phone", b"PARTNER-AUDIO-", transport="tls", media="srtp",
                        host="127.0.0.2",
                        server_tls=server_context(str(keys / "peer.crt"),
                                                  str(keys / "peer.key"), str(keys / "ca.crt")))
    caller = DemoPhone("pbx-phone-2", b"PBX2-AUDIO-", transport="udp", media="rtp")
    await partner.start()
    await caller.start()
    try:
        text = CONFIG.format(**rig.values).replace(
            'route_to = "carrier"\n', 'route_to = "carrier"\n\n[[trunk.route]]\n'
            'prefix = "77"\nto = "partner"\n', 1)
        text += (f'\n[[trunk]]\nname = "partner"\nside = "secure"\nlistener = "tls"\n'
                 f'transport = "tls"\npeer = "127.0.0.2:{partner.sip_port}"\n'
                 'tls_server_name = "peer.srtpgw.test"\n'
                 'tls_identity = ["sip:peer.srtpgw.test"]\n'
                 'allowed_sources = ["127.0.0.2/32"]\nmedia = "srtp"\nroute_to = "pbx"\n')
        rig.path.write_text(text)
        code, _, body = await http(rig.admin, rig.reload_request)
        changed = json.loads(body)["changed"]
        assert code == 200 and "trunk partner added" in changed and "trunk pbx changed" in changed
        host, port = rig.gw.stack.bound("udp")
        assert await caller.call((host, port), f"sip:77123@{host}:{port}") == 200
        await asyncio.wait_for(partner.answered.wait(), 5)
        assert partner.incoming_invite is not None
        assert str(partner.incoming_invite.uri).startswith("sip:77123@")
        before = rig.secure.report.received
        await wait_for(lambda: rig.secure.report.received > before + 3)  # first call unharmed
        assert await caller.hangup() == 200
        assert await rig.legacy.hangup() == 200
        await wait_for(lambda: len(rig.cdrs()) == 2)
        assert sorted(c["to_trunk"] for c in rig.cdrs()) == ["carrier", "partner"]
    finally:
        await caller.close()
        await partner.close()


async def test_certificate_reload_keeps_established_calls(rig: Rig) -> None:
    """New certificate files are read on reload; the established TLS leg carries on."""
    keys = Path(str(rig.values["keys"]))
    assert await rig.call() == 200
    await asyncio.wait_for(rig.secure.answered.wait(), 5)
    _, doc = await asyncio.to_thread(request, rig.admin, "GET", "/status")
    assert {c["name"]: c["days_left"] for c in doc["certificates"]}["tls"] > 300
    ca_key = load_private_key(keys / "ca.key")
    ca_cert = x509.load_pem_x509_certificate((keys / "ca.crt").read_bytes())
    key, cert = make_leaf(ca_key, ca_cert, "gateway.srtpgw.test", dns=["gateway.srtpgw.test"],
                          ips=["127.0.0.1"], uris=["sip:gateway.srtpgw.test"], days=30)
    write_private_key(keys / "gateway.key", key)
    write_cert(keys / "gateway.crt", cert, ca_cert)
    code, _, body = await http(rig.admin, rig.reload_request)
    assert code == 200, body
    _, doc = await asyncio.to_thread(request, rig.admin, "GET", "/status")
    assert 29 < {c["name"]: c["days_left"] for c in doc["certificates"]}["tls"] <= 30
    assert "gateway.srtpgw.test" in {c["name"]: c["subject"] for c in doc["certificates"]}["tls"]
    before = rig.secure.report.received
    await wait_for(lambda: rig.secure.report.received > before + 3)
    assert await rig.legacy.hangup() == 200
    await asyncio.wait_for(rig.secure.ended.wait(), 5)  # BYE over the pre-reload TLS connection


async def test_drain_refuses_new_calls_and_waits(rig: Rig, tmp_path: Path) -> None:
    assert await rig.call() == 200
    await asyncio.wait_for(rig.secure.answered.wait(), 5)
    rig.ops.request_drain()
    assert (await get(rig.admin, "/readyz"))[0] == 503
    late = DemoPhone("late-phone", b"LATE-", transport="udp", media="rtp")
    await late.start()
    try:
        assert await rig.call(late) == 503
        assert late.last_final is not None and late.last_final.headers.get("Retry-After")
    finally:
        await late.close()
    await asyncio.sleep(0.3)
    assert not rig.stopped.is_set()  # the active call holds the drain open
    before = rig.secure.report.received
    await wait_for(lambda: rig.secure.report.received > before + 3)  # and still has media
    assert await rig.legacy.hangup() == 200
    await asyncio.wait_for(rig.stopped.wait(), 3)
    assert rig.ops.drain_result is not None and rig.ops.drain_result.ended_by_us == 0
    assert [c["end_cause"] for c in rig.cdrs()] == ["caller_bye"]


@pytest.mark.parametrize("rig", [0.4], indirect=True)
async def test_drain_deadline_ends_calls_with_bye(rig: Rig) -> None:
    assert await rig.call() == 200
    await asyncio.wait_for(rig.secure.answered.wait(), 5)
    rig.ops.request_drain()
    await asyncio.wait_for(rig.stopped.wait(), 3)
    assert rig.ops.drain_result is not None and rig.ops.drain_result.ended_by_us == 1
    await asyncio.wait_for(rig.secure.ended.wait(), 3)  # BYE reached both phones
    await asyncio.wait_for(rig.legacy.ended.wait(), 3)
    await wait_for(lambda: bool(rig.cdrs()))
    assert rig.cdrs()[0]["end_cause"] == "shutdown"


async def test_srtpgw_run_sighup_and_sigterm(tmp_path: Path) -> None:
    """The real command: SIGHUP with a broken config is refused, SIGTERM drains, exit 0."""
    keys = init_keys(tmp_path / "keys").dir
    legacy, secure = phones(keys)
    await legacy.start()
    await secure.start()
    values = config_values(tmp_path, keys, legacy, secure)
    path = tmp_path / "gw.toml"
    path.write_text(CONFIG.format(**values))
    admin = HostPort("127.0.0.1", int(str(values["admin"])))
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", "-c", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        async def healthy() -> bool:
            try:
                return (await asyncio.to_thread(request, admin, "GET", "/healthz"))[0] == 200
            except Exception:
                return False
        for _ in range(100):
            if await healthy():
                break
            await asyncio.sleep(0.1)
        assert await healthy()
        path.write_text(path.read_text().replace("max_calls = 10", "max_calls = 0"))
        proc.send_signal(signal.SIGHUP)
        for _ in range(50):
            _, doc = await asyncio.to_thread(request, admin, "GET", "/status")
            if doc["counters"]["reloads_refused"]:
                break
            await asyncio.sleep(0.1)
        assert doc["counters"]["reloads_refused"] == 1 and doc["counters"]["reloads_ok"] == 0
        cli = [sys.executable, "-m", "gateway.cli"]
        st = await asyncio.to_thread(subprocess.run, [*cli, "status", "--admin", str(admin)],
                                     capture_output=True, text=True, timeout=30)
        assert st.returncode == 0 and "active calls: 0" in st.stdout, st.stderr
        rl = await asyncio.to_thread(subprocess.run, [*cli, "reload", "--admin", str(admin),
                                            "--token-file", str(keys / "admin.token")],
                                     capture_output=True, text=True, timeout=30)
        assert rl.returncode == 1 and "refused" in rl.stderr and "max_calls" in rl.stderr
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 15) == 0
        err = proc.stderr.read().decode()  # type: ignore[union-attr]
        assert "config.reload_refused" in err
        assert_structured(err, "kv", "srtpgw run stderr")
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        await legacy.close()
        await secure.close()


def test_demo_command(tmp_path: Path) -> None:
    out = io.StringIO()
    assert demo.main(tmp_path / "demo", out) == 0, out.getvalue()
    text = out.getvalue()
    assert "FAILED" not in text and "[ok] no legacy plaintext on the secure side" in text
    assert "suite: AEAD_AES_256_GCM" in text
    assert (tmp_path / "demo" / "cdr.jsonl").exists()


async def test_firewall_and_parser_counters_reach_metrics(rig: Rig) -> None:
    host, port = rig.gw.stack.bound("udp")
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.bind(("127.0.0.2", 0))  # not in any trunk's allowed_sources
    known = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    known.bind(("127.0.0.1", 0))
    try:
        options = (f"OPTIONS sip:{host}:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5060;"
                   "branch=z9hG4bKx1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\n"
                   "Call-ID: fw1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                   "Content-Length: 0\r\n\r\n").encode()
        stranger.sendto(options, (host, port))
        known.sendto(b"INVITE this is not SIP\r\n\r\n", (host, port))
        await asyncio.sleep(0.3)
    finally:
        stranger.close()
        known.close()
    m = scrape((await get(rig.admin, "/metrics"))[2])
    assert m["srtpgw_firewall_rule_hits_total"][(("rule", "acl.unknown_source"),)] >= 1
    assert m["srtpgw_sip_messages_total"][(("event", "invalid"),)] >= 1
    assert (("rule", "accepted"),) not in m["srtpgw_firewall_rule_hits_total"]
