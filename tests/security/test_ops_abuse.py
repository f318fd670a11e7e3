"""Issue 13's policy and operations defects, each against the running gateway (`srtpgw run`)
on the transport where it was found: spoofed UDP banning a TLS trunk, security events written
once per attempt, bans counted twice, a CDR without the 503 its caller got, the admin endpoint
open to browsers and starved by idle connections, misspelt config tables."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from gateway.config import load_config
from tests.security.harness import (
    Gateway,
    UdpClient,
    assert_clean_log,
    client_context,
    needs_app,
    request,
    start_gateway,
    status_of,
    stream_exchange,
)

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "s3cret-admin-token-0123456789abcdef"


def metrics(gw: Gateway, name: str) -> dict[str, float]:
    """Samples of one metric family by label text, from the running gateway's /metrics."""
    url = f"http://127.0.0.1:{gw.ports['admin']}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key[len(name):]] = float(value)
    return out


def wait_until(cond, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return bool(cond())


@pytest.fixture
def running(tmp_path: Path, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    needs_app()
    gw = start_gateway(tmp_path, **getattr(request, "param", {}))
    try:
        yield gw
    finally:
        gw.stop()
        assert "Traceback" not in gw.log(), gw.log()[-4000:]


# ----------------------------------------------------------------------------- item 3: pike


@pytest.mark.parametrize("running", [{"pike_max": 20}], indirect=True)
def test_spoofed_udp_flood_bans_only_on_udp_never_the_tls_trunk(running: Gateway) -> None:
    """~200 UDP packets carrying the carrier's address used to black out its mutual-TLS trunk:
    the ban now holds on the UDP listener, the authenticated TLS peer still gets answers."""
    gw = running
    udp = UdpClient("127.0.0.1")
    try:
        for _ in range(60):
            udp.send(request("OPTIONS", port=udp.port), gw.ports["udp"])
        udp.collect(0.5, until_final=False)
        assert wait_until(lambda: any(e["kind"] == "pike.ban" for e in gw.events()))
        ban = next(e for e in gw.events() if e["kind"] == "pike.ban")
        assert ban["listener"] == "udp" and ban["transport"] == "udp"
        udp.send(request("OPTIONS", port=udp.port), gw.ports["udp"])
        assert udp.collect(0.5) == []  # banned where it flooded
    finally:
        udp.close()
    got = stream_exchange(request("OPTIONS", transport="TLS"), gw.ports["tls"], 5.0,
                          client_context(gw.keys))
    assert [status_of(r) for r in got] == [200]


@pytest.mark.parametrize("running", [{"pike_max": 20, "extra": """
[trunk.pike]
enabled = false
"""}], indirect=True)
def test_trunk_exempt_from_pike_is_never_banned(running: Gateway) -> None:
    """``[trunk.pike] enabled = false`` on the carrier: its TLS source is not counted."""
    gw = running
    ctx = client_context(gw.keys)
    for _ in range(30):  # each request on its own connection: 30 > 20 in the window
        got = stream_exchange(request("OPTIONS", transport="TLS"), gw.ports["tls"], 5.0, ctx)
        assert [status_of(r) for r in got] == [200]
    assert not [e for e in gw.events() if e["kind"] == "pike.ban"]


# ----------------------------------------------------------------------------- items 5 and 8b


def _failed_handshakes(gw: Gateway, n: int) -> None:
    """``n`` TLS connections, all accepted first, then each fails its handshake (garbage)."""
    socks = [socket.create_connection(("127.0.0.1", gw.ports["tls"]), timeout=5)
             for _ in range(n)]
    time.sleep(0.3)  # every connection admitted before the first failure
    for s in socks:
        s.sendall(b"\x16\x03\x01\x00\x05hello-not-tls" * 4)
    for s in socks:
        with contextlib.suppress(OSError):
            s.recv(100)
        s.close()


def test_tls_handshake_failures_written_once_per_source_and_interval(running: Gateway) -> None:
    """10k failed handshakes wrote 10k events: now one per source and interval, and the
    metric still counts every failure."""
    gw = running
    _failed_handshakes(gw, 40)
    assert wait_until(lambda: sum(metrics(gw, "srtpgw_tls_handshake_failures_total").values())
                      >= 40)
    written = [e for e in gw.events() if e["kind"] == "tls.handshake_failed"]
    assert len(written) == 1 and written[0]["suppressed"] == 0
    assert sum(1 for e in gw.events() if e["kind"] == "firewall.tls.failure") == 1
    assert metrics(gw, "srtpgw_firewall_suppressed_reports_total")[""] >= 78


@pytest.mark.parametrize("running", [{"pike_max": 10}], indirect=True)
def test_a_banned_source_is_banned_once(running: Gateway) -> None:
    """Failures of connections accepted before the ban went on counting and banned the source
    again: bans_total said 3 for one source."""
    gw = running
    _failed_handshakes(gw, 45)
    assert wait_until(lambda: sum(metrics(gw, "srtpgw_tls_handshake_failures_total").values())
                      >= 45)
    assert metrics(gw, "srtpgw_firewall_bans_total")[""] == 1
    assert metrics(gw, "srtpgw_firewall_bans_active")[""] == 1


def _log_lines(gw: Gateway, event: str) -> list[dict[str, object]]:
    out = []
    for line in (gw.tmp / "gateway.log").read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            doc = json.loads(line)
            if isinstance(doc, dict) and doc.get("event") == event:
                out.append(doc)
    return out


def test_malformed_messages_are_logged_once_per_source_and_counted_all(running: Gateway) -> None:
    """sip.invalid_message and sip.framing_error were one info line per attempt: a spoofed
    admitted source could flood the log. Now one per source and interval, counters count all."""
    gw = running
    before = metrics(gw, "srtpgw_sip_messages_total").get('{event="invalid"}', 0.0)
    clients = [UdpClient("127.0.0.1"), UdpClient("127.0.0.2")]
    for client in clients:
        for i in range(40):  # no From, To or CSeq: a parse error answered 400
            client.send(f"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {client.ip}:"
                        f"{client.port};branch=z9hG4bKbad{i}\r\nCall-ID: bad{i}\r\n"
                        f"Content-Length: 0\r\n\r\n".encode(), gw.ports["udp"])
    for _ in range(20):  # a framing error closes each connection
        with socket.create_connection(("127.0.0.1", gw.ports["tcp"]), timeout=5) as s:
            s.sendall(b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nContent-Length: abc\r\n\r\n")
            with contextlib.suppress(OSError):
                while s.recv(4096):
                    pass
    assert wait_until(lambda: metrics(gw, "srtpgw_sip_messages_total").get(
        '{event="invalid"}', 0.0) - before >= 100)
    assert wait_until(lambda: metrics(gw, "srtpgw_sip_connections_total").get(
        '{event="framing_errors"}', 0.0) >= 20)
    invalid = _log_lines(gw, "sip.invalid_message")
    assert sorted(str(d["peer"]).split(":")[0] for d in invalid if d["transport"] == "udp") == [
        "127.0.0.1", "127.0.0.2"]
    assert all(d["suppressed"] == 0 for d in invalid)
    assert len(_log_lines(gw, "sip.framing_error")) == 1
    for client in clients:
        client.sock.close()
    assert_clean_log(gw)


# ----------------------------------------------------------------------------- item 8a: CDR


@pytest.mark.parametrize("running", [{"extra": '\n[cdr]\npath = "{tmp}/cdr.jsonl"\n'}],
                         indirect=True)
def test_cdr_final_status_is_the_503_the_caller_got(running: Gateway) -> None:
    gw = running  # the carrier's peer port is closed: the INVITE cannot go on
    udp = UdpClient("127.0.0.1")
    try:
        udp.send(request("INVITE", port=udp.port), gw.ports["udp"])
        finals = [r for r in udp.collect(10.0) if (status_of(r) or 0) >= 200]
    finally:
        udp.close()
    assert [status_of(r) for r in finals] == [503]
    cdr_path = gw.tmp / "cdr.jsonl"
    assert wait_until(lambda: cdr_path.exists() and cdr_path.read_text().strip() != "")
    (cdr,) = [json.loads(line) for line in cdr_path.read_text().splitlines()]
    assert cdr["final_status"] == 503 and cdr["answer"] is None


# ----------------------------------------------------------------------------- items 9, 13


def admin_raw(gw: Gateway, raw: bytes, timeout: float = 5.0) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", gw.ports["admin"]), timeout=timeout) as s:
        s.sendall(raw)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def _token_file(tmp: Path, mode: int = 0o600) -> Path:
    path = tmp / "admin.token"
    path.write_text(TOKEN + "\n")
    path.chmod(mode)
    return path


@pytest.fixture
def guarded(tmp_path: Path):  # type: ignore[no-untyped-def]
    needs_app()
    _token_file(tmp_path)
    gw = start_gateway(tmp_path, admin='token_file = "{tmp}/admin.token"')
    try:
        yield gw
    finally:
        gw.stop()
        assert "Traceback" not in gw.log(), gw.log()[-4000:]


def test_admin_refuses_rebinding_cross_origin_and_tokenless_posts(guarded: Gateway) -> None:
    gw = guarded
    host = f"127.0.0.1:{gw.ports['admin']}".encode()
    rebound = b"GET /status HTTP/1.1\r\nHost: rebind.attacker.example:9060\r\n\r\n"
    assert admin_raw(gw, rebound)[0] == 421
    cross = b"GET /status HTTP/1.1\r\nHost: " + host + b"\r\nOrigin: http://evil.example\r\n\r\n"
    assert admin_raw(gw, cross)[0] == 403
    assert admin_raw(gw, b"GET /status HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")[0] == 200
    post = b"POST /reload HTTP/1.1\r\nHost: " + host + b"\r\nContent-Length: 0\r\n"
    assert admin_raw(gw, post + b"\r\n")[0] == 401
    assert admin_raw(gw, post + b"Authorization: Bearer wrong-token-000000000\r\n\r\n")[0] == 401
    code, body = admin_raw(gw, post + f"Authorization: Bearer {TOKEN}\r\n\r\n".encode())
    assert code == 200 and json.loads(body)["ok"]
    # the CLI reads the token from the config's token_file
    cli = subprocess.run([sys.executable, "-m", "gateway.cli", "reload", "-c",
                          str(gw.tmp / "gw.toml")], capture_output=True, text=True, timeout=30)
    assert cli.returncode == 0, cli.stderr
    assert TOKEN not in gw.log()


def test_admin_without_token_file_refuses_every_post_even_on_loopback(running: Gateway) -> None:
    """Any local process could reload a loopback endpoint: without a token nothing is POSTed."""
    gw = running
    host = f"127.0.0.1:{gw.ports['admin']}".encode()
    post = b"POST /reload HTTP/1.1\r\nHost: " + host + b"\r\nContent-Length: 0\r\n"
    code, body = admin_raw(gw, post + b"\r\n")
    error = json.loads(body)["error"]
    assert code == 403 and "[admin] token_file" in error and "SIGHUP" in error
    assert admin_raw(gw, post + b"Authorization: Bearer anything-at-all-0000\r\n\r\n")[0] == 403
    cli = subprocess.run([sys.executable, "-m", "gateway.cli", "reload", "-c",
                          str(gw.tmp / "gw.toml")], capture_output=True, text=True, timeout=30)
    assert cli.returncode == 1 and "token_file" in cli.stderr
    status = json.loads(admin_raw(gw, b"GET /status HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")[1])
    assert status["counters"]["reloads_ok"] == 0


def test_keys_init_token_and_demo_style_reload(tmp_path: Path) -> None:
    """`srtpgw keys init` writes the token the demo config names (relative to the config);
    `srtpgw reload -c` then works against the running gateway, and the token is never shown."""
    needs_app()
    cli = [sys.executable, "-m", "gateway.cli"]
    made = subprocess.run([*cli, "keys", "init", "--dir", str(tmp_path / "keys")],
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    path = tmp_path / "keys" / "admin.token"
    token = path.read_text().strip()
    assert path.stat().st_mode & 0o777 == 0o600 and len(token) >= 32
    assert token not in made.stdout + made.stderr
    again = subprocess.run([*cli, "keys", "token", "--dir", str(tmp_path / "keys")],
                           capture_output=True, text=True, timeout=30)
    assert again.returncode == 1 and "already exists" in again.stderr
    assert path.read_text().strip() == token  # not overwritten without --force
    gw = start_gateway(tmp_path, keys=tmp_path / "keys", admin='token_file = "keys/admin.token"')
    try:
        rl = subprocess.run([*cli, "reload", "-c", str(tmp_path / "gw.toml")],
                            capture_output=True, text=True, timeout=30)
        assert rl.returncode == 0, rl.stderr
        assert token not in gw.log() and token not in rl.stdout + rl.stderr
    finally:
        gw.stop()
    demo = load_config(ROOT / "deploy" / "demo.toml", check_files=False)
    assert demo.admin.token_file is not None
    assert demo.admin.token_file.resolve() == (ROOT / "keys" / "admin.token").resolve()


def test_admin_token_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    needs_app()
    _token_file(tmp_path, 0o644)
    with pytest.raises(AssertionError, match="readable by others"):
        start_gateway(tmp_path, admin='token_file = "{tmp}/admin.token"')


def test_idle_admin_connections_cannot_starve_the_probes(running: Gateway) -> None:
    """32 idle connections made /healthz answer 503 (and the liveness probe restart the
    gateway): idle connections are now closed after about a second and probes answer over
    the cap."""
    gw = running
    idle = [socket.create_connection(("127.0.0.1", gw.ports["admin"]), timeout=5)
            for _ in range(40)]
    try:
        time.sleep(0.2)
        probe = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{gw.ports['admin']}\r\n\r\n".encode()
        assert admin_raw(gw, probe)[0] == 200
        t0 = time.monotonic()
        idle[0].settimeout(5)
        idle[0].recv(1024)  # the server answers 408 / closes: it does not wait for us
        assert time.monotonic() - t0 < 3.0
    finally:
        for s in idle:
            s.close()


# ----------------------------------------------------------------------------- usability


@pytest.mark.parametrize(("table", "message"), [
    ("[[listner]]\nname = \"x\"\n", "listner: unknown key; did you mean 'listener'?"),
    ("[bogus_section]\nx = 1\n", "bogus_section: unknown key; known keys: admin,"),
    ("[[trunk]]\nname = \"t\"\n[trunk.rate_limit]\nnew_dialog_burst = 3\n",
     "trunk[0].rate_limit.new_dialog_burst: unknown key; did you mean 'new_dialogs_burst'?"),
])
def test_misspelt_table_is_named_before_anything_else(tmp_path: Path, table: str,
                                                      message: str) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(table)
    r = subprocess.run([sys.executable, "-m", "gateway.cli", "run", "-c", str(path)],
                       capture_output=True, text=True, timeout=30, env={**os.environ})
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert "at least one [[listener]] is required" not in r.stderr
    assert "Traceback" not in r.stderr

