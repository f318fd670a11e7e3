"""Shared plumbing for the SIP integration tests (no tests here): keys, configs, raw clients."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from gateway.config import Config, Listener, SipSection, TlsSection
from gateway.ops.keys import init_keys, load_private_key, make_leaf, write_cert, write_private_key
from gateway.sip.message import SipRequest, SipResponse, parse_message
from gateway.sip.stack import IncomingRequest, SipStack
from gateway.sip.transaction import new_branch

GATEWAY_ID = "sip:gateway.srtpgw.test"
PEER_ID = "sip:peer.srtpgw.test"


@dataclass(frozen=True)
class Keys:
    dir: Path
    other: Path  # a second, unrelated CA and its certs

    def pem(self, name: str) -> Path:
        return self.dir / name


def make_keys(base: Path) -> Keys:
    init_keys(base / "main")
    init_keys(base / "other")
    return Keys(base / "main", base / "other")


def extra_leaf(keys: Keys, name: str, *, dns: list[str], uris: list[str]) -> tuple[Path, Path]:
    """A certificate from the main CA with chosen identities (e.g. a wrong one)."""
    from cryptography import x509

    ca_key = load_private_key(keys.dir / "ca.key")
    ca_cert = x509.load_pem_x509_certificate((keys.dir / "ca.crt").read_bytes())
    key, cert = make_leaf(ca_key, ca_cert, name, dns=dns, ips=["127.0.0.1"], uris=uris)
    cert_path, key_path = keys.dir / f"{name}.crt", keys.dir / f"{name}.key"
    write_cert(cert_path, cert, ca_cert)
    write_private_key(key_path, key)
    return cert_path, key_path


def config(keys: Keys, *, client_auth: str = "require", cert: str = "gateway",
           **sip: float) -> Config:
    tls = TlsSection(certificate=keys.dir / f"{cert}.crt", private_key=keys.dir / f"{cert}.key",
                     ca_file=keys.dir / "ca.crt", handshake_timeout=2.0)
    return Config(
        path=Path("test.toml"), tls=tls,
        sip=SipSection(**{"t1": 0.05, "keepalive_interval": 0.0, **sip}),  # type: ignore[arg-type]
        listeners=(Listener("udp", "udp", "127.0.0.1", 0),
                   Listener("tcp", "tcp", "127.0.0.1", 0),
                   Listener("tls", "tls", "127.0.0.1", 0,
                            tls_client_auth=client_auth)),  # type: ignore[arg-type]
    )


def options(transport: str = "UDP", call_id: str = "c1", port: int = 5999,
            method: str = "OPTIONS") -> bytes:
    return (f"{method} sip:gateway@127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/{transport} 127.0.0.1:{port};branch={new_branch()};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:tester@example.com>;tag=t1\r\n"
            f"To: <sip:gateway@example.com>\r\nCall-ID: {call_id}\r\nCSeq: 1 {method}\r\n"
            f"Content-Length: 0\r\n\r\n").encode()


def request(method: str, call_id: str, body: bytes = b"") -> SipRequest:
    data = (f"{method} sip:svc@gateway.srtpgw.test SIP/2.0\r\n"
            f"From: <sip:a@example.com>;tag=f{call_id}\r\nTo: <sip:svc@gateway.srtpgw.test>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 {method}\r\nVia: SIP/2.0/UDP 192.0.2.9;branch=x\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    req = parse_message(data)
    assert isinstance(req, SipRequest)
    req.headers.remove("Via")  # the stack adds its own
    return req


class Answering:
    """A handler that records requests and answers non-INVITE ones 200."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.requests: list[IncomingRequest] = []

    def __call__(self, incoming: IncomingRequest) -> None:
        self.requests.append(incoming)
        if incoming.request.method not in ("INVITE", "ACK") and not incoming.cancels:
            incoming.respond(incoming.request.create_response(self.status, to_tag="gw"))


def client_tls(keys: Keys, *, cert: str | None = "peer", ca_dir: Path | None = None,
               max_version: ssl.TLSVersion | None = None,
               min_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(keys.dir / "ca.crt")
    if cert is not None:
        d = ca_dir or keys.dir
        ctx.load_cert_chain(d / f"{cert}.crt", d / f"{cert}.key")
    if min_version is not None:
        ctx.minimum_version = min_version
    if max_version is not None:
        ctx.maximum_version = max_version
    return ctx


async def read_message(reader: asyncio.StreamReader, timeout: float = 3.0) -> SipResponse:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    body = await asyncio.wait_for(reader.readexactly(length), timeout) if length else b""
    msg = parse_message(head + body, stream=True)
    assert isinstance(msg, SipResponse)
    return msg


async def closed_by_peer(reader: asyncio.StreamReader, timeout: float) -> bool:
    """True when the server closes the connection within ``timeout``."""
    try:
        while await asyncio.wait_for(reader.read(65536), timeout):
            pass
    except (ConnectionError, ssl.SSLError):
        return True
    except TimeoutError:
        return False
    return True


def udp_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s


async def udp_recv(sock: socket.socket, timeout: float = 2.0) -> bytes:
    loop = asyncio.get_running_loop()
    return await asyncio.wait_for(loop.sock_recv(sock, 65535), timeout)


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def events(self, name: str) -> list[dict[str, object]]:
        return [dict(getattr(r, "fields", {})) for r in self.records if r.getMessage() == name]


@contextmanager
def capture(logger: str = "srtpgw") -> Iterator[Captured]:
    handler = Captured()
    log = logging.getLogger(logger)
    old_level = log.level
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)


async def started(cfg: Config, handler: Answering, **kw: object) -> SipStack:
    stack = SipStack(cfg, handler, **kw)  # type: ignore[arg-type]
    await stack.start()
    return stack
