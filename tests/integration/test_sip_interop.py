"""Interop with real peers: SIPp 3.6 (UDP, TCP; calls both ways) and the OpenSSL client (TLS)."""

from __future__ import annotations

import asyncio
import socket

import pytest
import uvloop

from gateway.sip.message import SipRequest, SipResponse
from gateway.sip.stack import IncomingRequest
from gateway.sip.transport import Target
from tests.conftest import require_tool
from tests.integration.test_sip_helpers import Keys, config, make_keys, request, started

pytestmark = [pytest.mark.interop,
              pytest.mark.filterwarnings("ignore:Overriding the \"event_loop_policy\"")]
SDP = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       b"m=audio 30000 RTP/AVP 0\r\n")
CALLS = 20


@pytest.fixture(scope="module")
def event_loop_policy() -> uvloop.EventLoopPolicy:
    return uvloop.EventLoopPolicy()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("sipkeys"))


async def sipp(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        require_tool("sipp"), *args, "-nostdin", "-timeout", "30s", "-i", "127.0.0.1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")[-3000:]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_sipp_calls_into_stack(keys: Keys, transport: str) -> None:
    seen: list[str] = []

    def answer(incoming: IncomingRequest) -> None:
        req = incoming.request
        seen.append(req.method)
        if incoming.tid is None or incoming.cancels:
            return
        resp = req.create_response(200, to_tag=f"gw{len(seen)}")
        if req.method == "INVITE":
            resp.headers.add("Contact", incoming.stack.contact(transport))
            resp.headers.add("Content-Type", "application/sdp")
            resp.body = SDP
        incoming.respond(resp)

    stack = await started(config(keys, t1=0.5), answer)  # type: ignore[arg-type]
    try:
        port = stack.bound(transport)[1]
        code, out = await sipp("-sn", "uac", "-s", "svc", f"127.0.0.1:{port}", "-m", str(CALLS),
                               "-r", "50", "-l", "10", "-d", "10", "-p", "0",
                               "-t", "u1" if transport == "udp" else "t1")
        assert code == 0, out
        assert (seen.count("INVITE"), seen.count("ACK"), seen.count("BYE")) == (CALLS,) * 3
    finally:
        await stack.stop()


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_stack_calls_sipp(keys: Keys, transport: str) -> None:
    stack = await started(config(keys, t1=0.5), lambda incoming: None)  # type: ignore[arg-type]
    port = free_port(socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM)
    peer = asyncio.ensure_future(sipp("-sn", "uas", "-p", str(port), "-m", "1",
                                      "-t", "u1" if transport == "udp" else "t1"))
    try:
        await asyncio.sleep(0.5)  # SIPp binds its port
        dest = Target(transport, "127.0.0.1", port)  # type: ignore[arg-type]
        invite = request("INVITE", "to-sipp", SDP)
        invite.headers.add("Contact", stack.contact(transport))
        invite.headers.add("Content-Type", "application/sdp")
        provisional: list[SipResponse] = []
        ok = await asyncio.wait_for(stack.request(invite, dest, provisional.append), 10)
        assert ok.status == 200 and [r.status for r in provisional] == [180]
        assert ok.to.tag is not None
        ack = in_dialog(invite, ok, "ACK", 1)
        stack.send_ack(ack, dest)
        bye = await asyncio.wait_for(stack.request(in_dialog(invite, ok, "BYE", 2), dest), 10)
        assert bye.status == 200
        code, out = await peer
        assert code == 0, out
    finally:
        if not peer.done():
            peer.cancel()
        await stack.stop()


def in_dialog(invite: SipRequest, ok: SipResponse, method: str, cseq: int) -> SipRequest:
    req = request(method, invite.call_id)
    req.headers.set("From", invite.headers.get("From") or "")
    req.headers.set("To", ok.headers.get("To") or "")
    req.headers.set("CSeq", f"{cseq} {method}")
    if ok.contact:  # the remote target (§12.1.2)
        req.uri = ok.contact[0].uri
    return req


@pytest.mark.parametrize(("flags", "answered"), [
    (("-tls1_3",), True), (("-tls1_2",), True), (("-tls1_1",), False), (("-no_cert",), False)])
async def test_openssl_client_over_tls(keys: Keys, flags: tuple[str, ...], answered: bool) -> None:
    """OpenSSL's own client as the TLS peer: modern versions with a client certificate get an
    answer; TLS 1.1 or no certificate (the listener requires one) do not."""
    from tests.integration.test_sip_helpers import Answering, options

    stack = await started(config(keys), Answering())
    try:
        host, port = stack.bound("tls")
        cert = () if "-no_cert" in flags else (
            "-cert", str(keys.pem("peer.crt")), "-key", str(keys.pem("peer.key")))
        args = [a for a in flags if a != "-no_cert"]
        if "-tls1_1" in args:
            args += ["-cipher", "DEFAULT:@SECLEVEL=0"]
        proc = await asyncio.create_subprocess_exec(
            require_tool("openssl"), "s_client", "-connect", f"{host}:{port}", "-quiet",
            "-CAfile", str(keys.pem("ca.crt")), *cert, *args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(options("TLS", call_id="openssl"))
        await proc.stdin.drain()
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), 5)
        finally:
            proc.stdin.close()
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
        assert line.startswith(b"SIP/2.0 200 OK") == answered, line
    finally:
        await stack.stop()
