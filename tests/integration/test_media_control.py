"""The relay as its own process (``python -m gateway.media``) driven over the control socket."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import MediaSection
from gateway.media.api import LegConfig, PortsExhausted, UnknownSession, generate_params
from gateway.media.control import ControlError, ControlServer, RelayClient
from gateway.media.relay import MediaRelay
from gateway.media.srtp import SrtpContext
from tests.support.logcheck import watch


def free_range(size: int) -> tuple[int, int]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        base = s.getsockname()[1]
    base = min(base, 65535 - size - 2) & ~1
    return base, base + size - 1


def rtp(seq: int, ssrc: int = 0x77) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, ssrc) + b"\x01" * 160


@pytest.fixture
def relay_process(tmp_path: Path):
    control = str(tmp_path / "relay.sock")
    lo, hi = free_range(8)
    err = tmp_path / "relay.stderr"
    with open(err, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "gateway.media", "--control", control,
                                 "--port-min", str(lo), "--port-max", str(hi), "--timeout",
                                 "0.4"], stdout=subprocess.PIPE, stderr=fh)
    watch(err, "kv")  # the worker's stderr carries its kv log and nothing else
    assert proc.stdout is not None
    ready = json.loads(proc.stdout.readline())
    assert ready == {"ready": True, "control": control, "pid": proc.pid, "engine": "native"}
    yield proc, control
    if proc.poll() is None:
        proc.kill()
        proc.wait()


async def test_worker_process_relays_and_reports(relay_process) -> None:
    proc, control = relay_process
    assert stat.S_IMODE(os.stat(control).st_mode) == 0o600
    timeouts: list[tuple[str, int]] = []
    client = await RelayClient.connect(control, on_timeout=lambda s, n: timeouts.append((s, n)))
    loop = asyncio.get_running_loop()
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for s in (a, b):
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
    keys = [generate_params("AEAD_AES_128_GCM") for _ in range(2)]
    info = await client.create_session()
    await client.update_leg(info.session_id, 0, 0, LegConfig(remote_rtp=a.getsockname()))
    await client.update_leg(info.session_id, 1, 0, LegConfig(remote_rtp=b.getsockname(),
                                                             rx=keys[0], tx=keys[1]))
    a.sendto(rtp(1), info.local(0).rtp)
    got = await asyncio.wait_for(loop.sock_recv(b, 2048), 2)
    assert SrtpContext(keys[1], outbound=False).unprotect(got) == rtp(1)
    stats = await client.stats(info.session_id)
    assert stats.legs[0][0].packets_in == 1 and stats.legs[1][0].packets_out == 1
    assert stats.legs[0][0].latched_rtp == a.getsockname()
    await client.add_rx(info.session_id, 1, 0, generate_params("AEAD_AES_128_GCM"))
    await client.drop_rx(info.session_id, 1, 0)
    with pytest.raises(PortsExhausted):
        for _ in range(3):
            await client.create_session()
    with pytest.raises(UnknownSession):
        await client.stats("nope")
    await asyncio.sleep(1.5)
    assert (info.session_id, 0) in timeouts
    assert client.totals().packets_in == 1
    assert (await client.fetch_totals()).timeouts >= 1
    await client.close_session(info.session_id)
    await client.close()
    a.close()
    b.close()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert not os.path.exists(control)


async def test_bad_control_lines_get_error_replies(tmp_path: Path) -> None:
    lo, hi = free_range(8)
    relay = MediaRelay(MediaSection(port_min=lo, port_max=hi))
    server = ControlServer(relay, str(tmp_path / "c.sock"))
    for line, error in [(b"not json\n", "InvalidParams"), (b"[1]\n", "InvalidParams"),
                        (b'{"id": 3, "op": "explode"}\n', "InvalidParams"),
                        (b'{"id": 4, "op": "update_leg", "session_id": "x", "config": {}}\n',
                         "UnknownSession"),
                        (b'{"id": 5, "op": "create_session", "streams": "many"}\n',
                         "InvalidParams")]:
        reply = await server.handle(line)
        assert reply["ok"] is False and reply["error"] == error, (line, reply)
    reply = await server.handle(b'{"id": 8, "op": "create_sessions", "count": 5}\n')
    assert reply["error"] == "PortsExhausted" and relay.totals().sessions_active == 0
    assert relay.totals().ports_free == 4
    info = (await server.handle(b'{"id": 6, "op": "create_session"}\n'))["result"]
    bad_key = {"id": 7, "op": "update_leg", "session_id": info["session_id"], "leg": 0,
               "config": {"rx": {"suite": "AEAD_AES_128_GCM", "key": "c2VjcmV0"},
                          "tx": {"suite": "AEAD_AES_128_GCM", "key": "!!"}}}
    reply = await server.handle(json.dumps(bad_key).encode())
    assert reply["error"] == "InvalidParams" and "c2VjcmV0" not in json.dumps(reply)
    await relay.close()


async def test_client_fails_typed_when_the_relay_is_gone_or_silent(tmp_path: Path) -> None:
    with pytest.raises(ControlError):
        await RelayClient.connect(str(tmp_path / "nobody.sock"))
    silent = await asyncio.start_unix_server(lambda r, w: None, str(tmp_path / "silent.sock"))
    client = await RelayClient.connect(str(tmp_path / "silent.sock"), reply_timeout=0.2)
    with pytest.raises(ControlError):
        await client.stats("x")
    await client.close()
    silent.close()
