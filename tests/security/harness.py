"""The running gateway for security tests: `srtpgw run` as a subprocess on free loopback ports,
plus a raw SIP sender that knows nothing of gateway.sip (bytes out, bytes back).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from gateway.ops.keys import init_keys
from tests.conftest import require
from tests.support.logcheck import unwatch, watch

ROOT = Path(__file__).resolve().parents[2]


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CONFIG = """
[gateway]
domain = "gateway.srtpgw.test"

[logging]
level = "info"
format = "json"
file = "{tmp}/gateway.log"
{security}

[tls]
certificate = "{keys}/gateway.crt"
private_key = "{keys}/gateway.key"
ca_file = "{keys}/ca.crt"
min_version = "1.2"

[media]
address = "127.0.0.1"
port_min = {media_min}
port_max = {media_max}

[admin]
listen = "127.0.0.1:{admin}"
{admin_extra}

[firewall]
log_interval = 5
[firewall.pike]
window = 1.0
max_requests = {pike_max}
ban_time = 60

[[listener]]
name = "udp"
transport = "udp"
address = "127.0.0.1"
port = {udp}

[[listener]]
name = "tcp"
transport = "tcp"
address = "127.0.0.1"
port = {tcp}

[[listener]]
name = "tls"
transport = "tls"
address = "127.0.0.1"
port = {tls}
tls_client_auth = "require"

[[trunk]]
name = "pbx"
side = "legacy"
listener = "udp"
transport = "udp"
peer = "127.0.0.1:{pbx_peer}"
allowed_sources = ["127.0.0.1/32", "127.0.0.2/32"]
media = "rtp"
route_to = "carrier"
[trunk.rate_limit]
new_dialogs_per_source = {rate}
new_dialogs_burst = {burst}
out_of_dialog_per_source = 50
out_of_dialog_burst = 100

[[trunk]]
name = "pbx-tcp"
side = "legacy"
listener = "tcp"
transport = "tcp"
peer = "127.0.0.1:{pbx_peer}"
allowed_sources = {tcp_sources}
media = "rtp"
route_to = "carrier"

[[trunk]]
name = "carrier"
side = "secure"
listener = "tls"
transport = "tls"
peer = "127.0.0.1:{carrier_peer}"
allowed_sources = ["127.0.0.1/32"]
tls_identity = ["sip:peer.srtpgw.test"]
media = "srtp"
route_to = "pbx"
"""


@dataclass
class Gateway:
    """A running gateway; ``log()`` and ``events()`` read what it wrote so far."""

    tmp: Path
    keys: Path
    ports: dict[str, int]
    proc: subprocess.Popen[bytes] | None = None
    stderr: Path = field(init=False)

    def __post_init__(self) -> None:
        self.stderr = self.tmp / "stderr.txt"

    def log(self) -> str:
        parts = [p.read_text(errors="replace") for p in (self.tmp / "gateway.log", self.stderr)
                 if p.exists()]
        return "\n".join(parts)

    def events(self) -> list[dict[str, object]]:
        """Security events from the JSON log, with ``kind`` like the SIEM sink writes it."""
        path = self.tmp / "gateway.log"
        if not path.exists():
            return []
        out = []
        for line in path.read_text(errors="replace").splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict) and doc.get("logger") == "srtpgw.security":
                out.append({**doc, "kind": doc.get("event")})
        return out

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def assert_clean_log(gw: Gateway) -> None:
    """What a run against hostile input must never leave: a traceback (in the JSON log or as
    plain text on stderr) or an error-level ``*.internal_error`` event."""
    text = gw.log()
    assert "Traceback" not in text, text[-4000:]
    errors = [line for line in text.splitlines()
              if "internal_error" in line and re.search(r'"level": "error"|level=error', line)]
    assert not errors, "\n".join(errors[:5])


def rss_kib(pid: int) -> int:
    """Resident memory of a process (the gateway's), KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def needs_app() -> None:
    require(importlib.util.find_spec("gateway.app") is not None,
            "gateway.app (srtpgw run) has not landed yet")


def start_gateway(tmp: Path, *, rate: float = 20, burst: int = 40, pike_max: int = 400,
                  pbx_peer: int | None = None, carrier_peer: int | None = None,
                  keys: Path | None = None, security_file: Path | None = None,
                  extra: str = "", admin: str = "",
                  tcp_sources: str = '["127.0.0.1/32"]') -> Gateway:
    """``extra`` is TOML appended to the config (a ``[trunk.x]`` table there belongs to the
    last trunk, the carrier; ``{tmp}`` in it is the gateway's directory); ``admin`` is added to
    the ``[admin]`` table; ``tcp_sources`` is the TCP trunk's allowed_sources (a TOML array)."""
    keys = keys or init_keys(tmp / "keys").dir
    ports = {"udp": free_port(socket.SOCK_DGRAM), "tcp": free_port(socket.SOCK_STREAM),
             "tls": free_port(socket.SOCK_STREAM), "admin": free_port(socket.SOCK_STREAM),
             "pbx_peer": pbx_peer or free_port(socket.SOCK_DGRAM),
             "carrier_peer": carrier_peer or free_port(socket.SOCK_STREAM)}
    media_min = 44000 + (os.getpid() % 100) * 40
    text = CONFIG.format(tmp=tmp, keys=keys, media_min=media_min, media_max=media_min + 39,
                         rate=rate, burst=burst, pike_max=pike_max,
                         security=f'security_file = "{security_file}"' if security_file else "",
                         admin_extra=admin.replace("{tmp}", str(tmp)), tcp_sources=tcp_sources,
                         **ports)
    path = tmp / "gw.toml"
    path.write_text(text + extra.replace("{tmp}", str(tmp)))
    gw = Gateway(tmp, Path(keys), ports)
    watch(tmp / "gateway.log", "json")
    watch(gw.stderr, "json")  # the log goes to its file: stderr must hold nothing else
    with open(gw.stderr, "wb") as err:
        gw.proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", "-c", str(path)],
                                   cwd=tmp, stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if "gateway.ready" in gw.log():
            return gw
        if gw.proc.poll() is not None:
            break
        time.sleep(0.1)
    out = gw.log()
    gw.stop()
    unwatch(gw.stderr)
    raise AssertionError(f"gateway did not become ready:\n{out[-4000:]}")


# --------------------------------------------------------------------------- raw SIP


def request(method: str, *, transport: str = "UDP", host: str = "127.0.0.1", port: int = 5070,
            call_id: str | None = None, extra: str = "", body: str = "",
            ruri: str = "sip:100@gateway.srtpgw.test") -> bytes:
    tag = uuid.uuid4().hex[:8]
    cid = call_id or f"{uuid.uuid4().hex}@{host}"
    ctype = "Content-Type: application/sdp\r\n" if body else ""
    return (f"{method} {ruri} SIP/2.0\r\n"
            f"Via: SIP/2.0/{transport} {host}:{port};branch=z9hG4bK{uuid.uuid4().hex};rport\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:pbx@{host}>;tag={tag}\r\n"
            f"To: <sip:100@gateway.srtpgw.test>\r\n"
            f"Call-ID: {cid}\r\n"
            f"CSeq: 1 {method}\r\n"
            f"Contact: <sip:pbx@{host}:{port}>\r\n"
            f"{extra}{ctype}Content-Length: {len(body.encode())}\r\n\r\n{body}").encode()


_STATUS = re.compile(rb"^SIP/2\.0 (\d{3}) ")


def status_of(data: bytes) -> int | None:
    m = _STATUS.match(data)
    return int(m.group(1)) if m else None


_CALL_ID = re.compile(rb"(?im)^(?:call-id|i)[ \t]*:[ \t]*(\S+)")


def call_id_of(data: bytes) -> bytes | None:
    m = _CALL_ID.search(data)
    return m.group(1) if m else None


def final_status(responses: list[bytes]) -> int | None:
    codes = [c for c in (status_of(r) for r in responses) if c is not None]
    finals = [c for c in codes if c >= 200]
    return finals[0] if finals else None


class UdpClient:
    """A UDP socket on a chosen loopback address that sends and collects responses."""

    def __init__(self, ip: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ip, 0))
        self.ip, self.port = self.sock.getsockname()

    def send(self, data: bytes, port: int) -> None:
        self.sock.sendto(data, ("127.0.0.1", port))

    def collect(self, wait: float, until_final: bool = True,
                call_id: bytes | None = None) -> list[bytes]:
        """Responses within ``wait`` (only those of ``call_id`` when given)."""
        out: list[bytes] = []
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data, _ = self.sock.recvfrom(65535)
            except (TimeoutError, OSError):
                break
            if call_id is not None and call_id_of(data) != call_id:
                continue
            out.append(data)
            if until_final and (status_of(data) or 0) >= 200:
                break
        return out

    def close(self) -> None:
        self.sock.close()


def stream_exchange(data: bytes, port: int, wait: float,
                    ctx: ssl.SSLContext | None = None) -> list[bytes]:
    """Send over TCP (or TLS with ``ctx``) and read until a final response or ``wait``."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=wait)
    sock: socket.socket = (ctx.wrap_socket(raw, server_hostname="gateway.srtpgw.test")
                           if ctx is not None else raw)
    try:
        sock.sendall(data)
        buf = b""
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                chunk = sock.recv(65535)
            except (TimeoutError, OSError):
                break
            if not chunk:
                break
            buf += chunk
            if final_status(_split(buf)) is not None:
                break
        return _split(buf)
    finally:
        sock.close()


def _split(buf: bytes) -> list[bytes]:
    return [b"SIP/2.0 " + part for part in buf.split(b"SIP/2.0 ")[1:] if _STATUS.match(
        b"SIP/2.0 " + part)]


def client_context(keys: Path, cert: str | None = "peer", *,
                   version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(keys / "ca.crt")
    if cert is not None:
        ctx.load_cert_chain(keys / f"{cert}.crt", keys / f"{cert}.key")
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    return ctx
