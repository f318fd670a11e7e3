"""Smoke test: `srtpgw run` on the shipped demo config, as an operator starts it.

Starts the real command as a subprocess (with dev keys made in a temp dir and the demo's ports
moved to free ones), waits for the ready line, checks that the legacy side answers SIP OPTIONS
over UDP and that the secure side completes a mutual-TLS handshake verified against the dev CA,
then sends SIGTERM and expects a clean exit 0 within 2 s.
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from gateway.ops.keys import init_keys
from tests.support.logcheck import assert_structured

ROOT = Path(__file__).resolve().parents[2]


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def media_port_start() -> int:
    """An even range start per test process; the relay skips ports others hold anyway."""
    return 40000 + (os.getpid() % 200) * 100


def demo_config(tmp: Path) -> tuple[Path, int, int]:
    keys = init_keys(tmp / "keys")
    udp, tls = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
    text = (ROOT / "deploy/demo.toml").read_text()
    text = text.replace("../keys/", f"{keys.dir}/")
    text = text.replace("port = 5060", f"port = {udp}").replace("port = 5061", f"port = {tls}")
    admin = free_port(socket.SOCK_STREAM)
    text = text.replace('listen = "127.0.0.1:9060"', f'listen = "127.0.0.1:{admin}"')
    start = media_port_start()
    text = re.sub(r"port_min = \d+", f"port_min = {start}", text)
    text = re.sub(r"port_max = \d+", f"port_max = {start + 63}", text)
    path = tmp / "demo.toml"
    path.write_text(text)
    return path, udp, tls


def wait_for_line(proc: subprocess.Popen[bytes], pattern: str, timeout: float) -> str:
    """stderr must be unbuffered (bufsize=0): a buffered reader may hold the awaited line
    after select() has reported the pipe empty."""
    deadline = time.monotonic() + timeout
    seen = []
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 0.1)
        if ready:
            line = proc.stderr.readline().decode(errors="replace")
            if not line and proc.poll() is not None:
                break
            seen.append(line)
            if pattern in line:
                return line
        elif proc.poll() is not None:
            break
    raise AssertionError(f"no {pattern!r} within {timeout}s; output:\n{''.join(seen)}")


def options_request(port: int, local_port: int) -> bytes:
    branch = "z9hG4bK" + uuid.uuid4().hex
    return (
        f"OPTIONS sip:gateway.srtpgw.test SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch={branch};rport\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:pbx@127.0.0.1>;tag={uuid.uuid4().hex[:8]}\r\n"
        f"To: <sip:gateway.srtpgw.test>\r\n"
        f"Call-ID: {uuid.uuid4().hex}@127.0.0.1\r\n"
        f"CSeq: 1 OPTIONS\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


def test_run_demo_config_answers_and_stops_cleanly(tmp_path: Path) -> None:
    config, udp_port, tls_port = demo_config(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "run", "-c", str(config)],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, bufsize=0,
    )
    try:
        ready = wait_for_line(proc, "event=gateway.ready", timeout=20)
        assert f"127.0.0.1:{udp_port}" in ready and f"127.0.0.1:{tls_port}" in ready

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.settimeout(5)
            s.sendto(options_request(udp_port, s.getsockname()[1]), ("127.0.0.1", udp_port))
            data, _ = s.recvfrom(65535)
        assert data.startswith(b"SIP/2.0 200 "), data[:80]
        assert b"CSeq: 1 OPTIONS" in data

        keys = tmp_path / "keys"
        ctx = ssl.create_default_context(cafile=str(keys / "ca.crt"))
        ctx.load_cert_chain(keys / "peer.crt", keys / "peer.key")
        with socket.create_connection(("127.0.0.1", tls_port), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname="gateway.srtpgw.test") as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
            peer = tls.getpeercert()
            assert ("DNS", "gateway.srtpgw.test") in peer["subjectAltName"]

        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        assert proc.wait(timeout=5) == 0
        assert time.monotonic() - t0 < 2.0
        assert proc.stderr is not None
        rest = proc.stderr.read().decode(errors="replace")
        assert "Traceback" not in rest, rest
        assert_structured(ready + "\n" + rest, "kv", "srtpgw run stderr")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_bad_config_exits_non_zero_without_starting(tmp_path: Path) -> None:
    config, udp_port, _ = demo_config(tmp_path)
    config.write_text(config.read_text().replace('media = "srtp"', 'media = "plain"'))
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "run", "-c", str(config)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert str(config) in result.stderr and "trunk[1].media" in result.stderr
    assert "Traceback" not in result.stderr
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", udp_port))  # nothing was left listening


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["keys", "--help"]])
def test_cli_help_and_version(argv: list[str]) -> None:
    result = subprocess.run([sys.executable, "-m", "gateway.cli", *argv], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0
    assert "srtpgw" in result.stdout
