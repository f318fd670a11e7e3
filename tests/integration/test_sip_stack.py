"""SipStack over real loopback sockets and real certificates: requests, responses, CANCEL, ACK,
timeouts, invalid input and the firewall hooks, on UDP, TCP and TLS (uvloop)."""

from __future__ import annotations

import asyncio
import socket

import pytest
import uvloop

from gateway.sip.errors import SipParseError, TransactionTimeout, TransportFailure
from gateway.sip.message import SipRequest, SipResponse, parse_message
from gateway.sip.stack import IncomingRequest
from gateway.sip.transport import MessageSource, Target
from tests.integration.test_sip_helpers import (
    GATEWAY_ID,
    PEER_ID,
    Answering,
    Keys,
    client_tls,
    config,
    make_keys,
    options,
    read_message,
    request,
    started,
    udp_recv,
    udp_socket,
)

pytestmark = pytest.mark.filterwarnings("ignore:Overriding the \"event_loop_policy\"")


@pytest.fixture(scope="module")
def event_loop_policy() -> uvloop.EventLoopPolicy:
    return uvloop.EventLoopPolicy()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("sipkeys"))


def target(stack_port: tuple[str, int], transport: str) -> Target:
    return Target(transport, stack_port[0], stack_port[1],  # type: ignore[arg-type]
                  listener=transport, tls_identity=(GATEWAY_ID,))


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
async def test_options_from_raw_client_answered_200(keys: Keys, transport: str) -> None:
    handler = Answering()
    stack = await started(config(keys), handler)
    try:
        data = options(transport.upper(), call_id=f"raw-{transport}")
        if transport == "udp":
            sock = udp_socket()
            sock.sendto(data, stack.bound("udp"))
            resp = parse_message(await udp_recv(sock))
            sock.close()
        else:
            ssl_ctx = client_tls(keys) if transport == "tls" else None
            reader, writer = await asyncio.open_connection(*stack.bound(transport), ssl=ssl_ctx)
            writer.write(data)
            resp = await read_message(reader)
            writer.close()
        assert isinstance(resp, SipResponse) and resp.status == 200
        assert resp.call_id == f"raw-{transport}" and resp.to.tag == "gw"
        (incoming,) = handler.requests
        src = incoming.source
        assert src.transport == transport and src.ip == "127.0.0.1"
        via = incoming.request.top_via
        assert via is not None and via.received == "127.0.0.1" and via.rport == src.port
        if transport == "tls":
            assert src.tls_identities == (PEER_ID, "peer.srtpgw.test")
            assert src.tls_fingerprint is not None and len(src.tls_fingerprint) == 64
            assert src.connection_id is not None
    finally:
        await stack.stop()


async def test_udp_response_goes_to_sent_by_port_without_rport(keys: Keys) -> None:
    stack = await started(config(keys), Answering())
    sender, listener = udp_socket(), udp_socket()
    try:
        port = listener.getsockname()[1]
        data = options("UDP", port=port).replace(b";rport", b"")
        sender.sendto(data, stack.bound("udp"))
        resp = parse_message(await udp_recv(listener))
        assert isinstance(resp, SipResponse) and resp.status == 200
        assert resp.top_via is not None and resp.top_via.received is None  # same host
    finally:
        sender.close()
        listener.close()
        await stack.stop()


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
async def test_stack_to_stack_request(keys: Keys, transport: str) -> None:
    server_handler = Answering()
    server = await started(config(keys), server_handler)
    client = await started(config(keys), Answering())
    try:
        provisional: list[SipResponse] = []
        resp = await asyncio.wait_for(
            client.request(request("OPTIONS", f"s2s-{transport}"),
                           target(server.bound(transport), transport), provisional.append), 5)
        assert resp.status == 200 and provisional == []
        assert len(resp.via) == 1 and resp.via[0].transport == transport.upper()
        (incoming,) = server_handler.requests
        assert incoming.request.max_forwards == 70
        if transport == "tls":  # the client presents the gateway certificate
            assert GATEWAY_ID in incoming.source.tls_identities
    finally:
        await client.stop()
        await server.stop()


async def test_tls_connection_reused_and_reopened(keys: Keys) -> None:
    handler = Answering()
    server = await started(config(keys), handler)
    client = await started(config(keys), Answering())
    dest = target(server.bound("tls"), "tls")
    try:
        for i in range(3):
            assert (await client.request(request("OPTIONS", f"reuse-{i}"), dest)).status == 200
        cids = {r.source.connection_id for r in handler.requests}
        assert len(cids) == 1 and client.transports.connections == 1
        conn = server.transports.connection(cids.pop())  # type: ignore[arg-type]
        assert conn is not None
        conn.close()
        for _ in range(50):
            if client.transports.connections == 0:
                break
            await asyncio.sleep(0.02)
        assert (await client.request(request("OPTIONS", "reopened"), dest)).status == 200
        assert len({r.source.connection_id for r in handler.requests}) == 2
    finally:
        await client.stop()
        await server.stop()


async def test_requests_to_inbound_peer_reuse_its_connection(keys: Keys) -> None:
    """RFC 5923 spirit: a request to a peer that connected to us (and proved the expected
    identity) goes over that connection, not a new one, when it is for the port the peer's
    Via named; a request for another port of that address does not take it."""
    a_handler = Answering()
    a = await started(config(keys), a_handler)
    b_handler = Answering()
    b = await started(config(keys), b_handler)
    try:
        assert (await a.request(request("OPTIONS", "a-to-b"), target(b.bound("tls"), "tls"))
                ).status == 200
        assert len(b_handler.requests) == 1
        other = Target("tls", "127.0.0.1", 9, tls_identity=(GATEWAY_ID,))  # another peer's port
        assert b.transports.reusable(other) is None
        back = Target("tls", "127.0.0.1", a.bound("tls")[1], tls_identity=(GATEWAY_ID,))
        assert b.transports.reusable(back) is not None
        assert (await b.request(request("OPTIONS", "b-to-a"), back)).status == 200
        assert a_handler.requests[0].source.connection_id is not None
        assert b.transports.connections == 1 and a.transports.connections == 1
    finally:
        await a.stop()
        await b.stop()


class InviteHandler:
    """Answers INVITE 180, then 487 on CANCEL, or 200 right away when ``answer`` is set."""

    def __init__(self, answer: bool = False) -> None:
        self.answer = answer
        self.invites: dict[tuple[object, ...], SipRequest] = {}
        self.seen: list[IncomingRequest] = []

    def __call__(self, incoming: IncomingRequest) -> None:
        self.seen.append(incoming)
        req = incoming.request
        if incoming.cancels:
            invite = self.invites[incoming.tid]  # type: ignore[index]
            incoming.stack.respond(incoming.tid, invite.create_response(487, to_tag="x"))
        elif req.method == "INVITE":
            assert incoming.tid is not None
            self.invites[incoming.tid] = req
            incoming.respond(req.create_response(200 if self.answer else 180, to_tag="x"))


@pytest.mark.parametrize("transport", ["udp", "tls"])
async def test_invite_cancel_487(keys: Keys, transport: str) -> None:
    handler = InviteHandler()
    server = await started(config(keys), handler)
    strays: list[SipResponse] = []
    client = await started(config(keys), Answering(),
                           on_stray_response=lambda r, s: strays.append(r))
    try:
        tx = client.client(request("INVITE", f"cancel-{transport}"),
                           target(server.bound(transport), transport))
        assert (await asyncio.wait_for(tx.response(), 5)).status == 180  # no 100: TU was quick
        assert tx.cancel()
        final = await asyncio.wait_for(tx.response(), 5)
        assert final.status == 487
        cancels = [s for s in handler.seen if s.cancels]
        assert len(cancels) == 1 and cancels[0].request.method == "CANCEL"
        for _ in range(50):  # the client transaction ACKs the 487 itself
            if server.layer.state(cancels[0].tid) != "completed":  # type: ignore[arg-type]
                break
            await asyncio.sleep(0.02)
        assert server.layer.state(cancels[0].tid) in ("confirmed", None)  # type: ignore[arg-type]
        assert strays == []  # the 200 to our CANCEL stays inside the stack
    finally:
        await client.stop()
        await server.stop()


async def test_invite_200_and_ack_reach_handler(keys: Keys) -> None:
    handler = InviteHandler(answer=True)
    acked: list[object] = []
    server = await started(config(keys), handler, on_ack_timeout=acked.append)
    client = await started(config(keys), Answering())
    dest = target(server.bound("udp"), "udp")
    try:
        invite = request("INVITE", "ack-1")
        ok = await asyncio.wait_for(client.request(invite, dest), 5)
        assert ok.status == 200
        ack = request("ACK", "ack-1")
        ack.headers.set("CSeq", "1 ACK")
        ack.headers.set("To", ok.headers.get("To") or "")
        client.send_ack(ack, dest)
        for _ in range(100):
            if any(s.request.method == "ACK" for s in handler.seen):
                break
            await asyncio.sleep(0.02)
        acks = [s for s in handler.seen if s.request.method == "ACK"]
        assert len(acks) == 1 and acks[0].tid is None and not acks[0].respond(ok)
        await asyncio.sleep(0.3)  # 2xx retransmissions stopped: no stray 200 at the client
        assert acked == []
    finally:
        await client.stop()
        await server.stop()


async def test_unacked_200_reported(keys: Keys) -> None:
    handler = InviteHandler(answer=True)
    timeouts: list[object] = []
    strays: list[SipResponse] = []
    server = await started(config(keys, t1=0.01), handler, on_ack_timeout=timeouts.append)
    client = await started(config(keys, t1=0.01), Answering(),
                           on_stray_response=lambda r, s: strays.append(r))
    try:
        ok = await asyncio.wait_for(
            client.request(request("INVITE", "noack"), target(server.bound("udp"), "udp")), 5)
        assert ok.status == 200
        for _ in range(100):
            if timeouts:
                break
            await asyncio.sleep(0.02)
        assert len(timeouts) == 1
        assert strays and all(r.status == 200 for r in strays)  # retransmitted 2xx
    finally:
        await client.stop()
        await server.stop()


async def test_udp_retransmits_then_times_out(keys: Keys) -> None:
    client = await started(config(keys, t1=0.02), Answering())
    silent = udp_socket()
    try:
        port = silent.getsockname()[1]
        with pytest.raises(TransactionTimeout):
            await asyncio.wait_for(
                client.request(request("OPTIONS", "silent"), Target("udp", "127.0.0.1", port)),
                5)
        copies = 0
        while True:
            try:
                silent.recv(65535)
                copies += 1
            except BlockingIOError:
                break
        assert copies >= 6  # timer E: after 20, 40, 80, 160, 320, 640 ms, within 64*T1
        assert len(client.layer) == 0
    finally:
        silent.close()
        await client.stop()


@pytest.mark.parametrize("transport", ["tcp", "tls"])
async def test_connect_refused_is_transport_failure(keys: Keys, transport: str) -> None:
    client = await started(config(keys), Answering())
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    try:
        with pytest.raises(TransportFailure):
            await asyncio.wait_for(client.request(request("OPTIONS", "refused"),
                                                  Target(transport, "127.0.0.1", port)), 5)  # type: ignore[arg-type]
        assert len(client.layer) == 0
    finally:
        await client.stop()


async def test_invalid_request_answered_with_its_status(keys: Keys) -> None:
    errors: list[tuple[MessageSource, SipParseError]] = []
    handler = Answering()
    stack = await started(config(keys), handler, on_invalid=lambda s, e: errors.append((s, e)))
    sock = udp_socket()
    try:
        bad = options(call_id="bad-1").replace(b"To: <sip:gateway@example.com>",
                                               b'To: "open <sip:gateway@example.com>')
        sock.sendto(bad, stack.bound("udp"))
        raw = await udp_recv(sock)  # its To is as broken as the request's, so no parsing
        assert raw.startswith(b"SIP/2.0 400 Bad Request\r\n") and b"Call-ID: bad-1\r\n" in raw
        sock.sendto(options(call_id="bad-2").replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1),
                    stack.bound("udp"))
        resp = parse_message(await udp_recv(sock))
        assert isinstance(resp, SipResponse) and resp.status == 505
        for junk in (b"\x00\xff" * 100, b"INVITE sip:x SIP/2.0\r\n\r\n",
                     options().replace(b"Via:", b"X-Via:")):
            sock.sendto(junk, stack.bound("udp"))
        with pytest.raises(TimeoutError):
            await udp_recv(sock, 0.3)  # nothing to answer to without a Via
        assert [e.status for _, e in errors] == [400, 505, 400, 400, 400]
        assert handler.requests == [] and stack.counters["invalid"] == 5
    finally:
        sock.close()
        await stack.stop()


async def test_admit_drops_before_parsing(keys: Keys) -> None:
    seen: list[MessageSource] = []

    def admit(source: MessageSource) -> bool:
        seen.append(source)
        return False

    handler = Answering()
    stack = await started(config(keys), handler, admit=admit)
    sock = udp_socket()
    try:
        sock.sendto(options(), stack.bound("udp"))
        sock.sendto(b"garbage", stack.bound("udp"))
        with pytest.raises(TimeoutError):
            await udp_recv(sock, 0.3)
        reader, writer = await asyncio.open_connection(*stack.bound("tcp"))
        assert await asyncio.wait_for(reader.read(), 2) == b""  # refused at accept
        writer.close()
        assert handler.requests == [] and len(seen) == 3
        assert stack.counters["dropped"] == 2 and stack.transports.counters["refused"] == 1
    finally:
        sock.close()
        await stack.stop()


async def test_handler_exception_becomes_500(keys: Keys) -> None:
    def broken(incoming: IncomingRequest) -> None:
        raise RuntimeError("bug")

    stack = await started(config(keys), broken)  # type: ignore[arg-type]
    sock = udp_socket()
    try:
        sock.sendto(options(), stack.bound("udp"))
        resp = parse_message(await udp_recv(sock))
        assert isinstance(resp, SipResponse) and resp.status == 500
        assert resp.to.tag  # §8.2.6.2
    finally:
        sock.close()
        await stack.stop()


async def test_response_with_two_vias_discarded(keys: Keys) -> None:
    client = await started(config(keys, t1=0.02), Answering())
    peer = udp_socket()
    try:
        port = peer.getsockname()[1]
        task = asyncio.ensure_future(
            client.request(request("OPTIONS", "twovia"), Target("udp", "127.0.0.1", port)))
        req = parse_message(await udp_recv(peer))
        addr = client.bound("udp")
        assert isinstance(req, SipRequest)
        resp = req.create_response(200)
        resp.headers.add("Via", "SIP/2.0/UDP 255.255.255.255;branch=z9hG4bKbcast")
        peer.sendto(resp.to_bytes(), addr)
        with pytest.raises(TransactionTimeout):
            await asyncio.wait_for(task, 5)
        assert client.counters["dropped"] >= 1
    finally:
        peer.close()
        await client.stop()


def test_target_from_trunk(keys: Keys) -> None:
    from gateway.config import HostPort, Trunk

    trunk = Trunk("carrier", "secure", "tls", HostPort("127.0.0.1", 5061), "tls", "srtp",
                  tls_identity=("sip:carrier.example",), tls_fingerprints=("ab",),
                  tls_server_name="carrier.example")
    t = Target.from_trunk(trunk)
    assert (t.transport, t.host, t.port, t.listener, t.server_name) == \
        ("tls", "127.0.0.1", 5061, "tls", "carrier.example")
    assert t.tls_identity == ("sip:carrier.example",) and t.tls_fingerprints == ("ab",)
    assert Target.from_trunk(trunk, HostPort("127.0.0.2", 5071)).port == 5071


async def test_contact_uses_bound_port(keys: Keys) -> None:
    stack = await started(config(keys), Answering())
    try:
        port = stack.bound("tls")[1]
        assert stack.contact("tls") == f"sip:127.0.0.1:{port};transport=tls"
    finally:
        await stack.stop()


async def test_via_stamped_in_place(keys: Keys) -> None:
    handler = Answering()
    stack = await started(config(keys), handler)
    sock = udp_socket()
    try:
        data = options().replace(b";rport\r\n",
                                 b";rport, SIP/2.0/TCP 192.0.2.5;branch=z9hG4bKb\r\n")
        data = data.replace(b"Via: SIP/2.0/UDP 127.0.0.1", b"Via: SIP/2.0/UDP 192.0.2.77")
        sock.sendto(data, stack.bound("udp"))
        resp = parse_message(await udp_recv(sock))  # rport: back to the real source port
        assert isinstance(resp, SipResponse) and resp.status == 200
        req = handler.requests[0].request
        names = [n for n, _ in req.headers]
        assert names.index("Via") == 0 and names.count("Via") == 1
        top, second = req.via
        assert (top.host, top.received, top.rport) == ("192.0.2.77", "127.0.0.1",
                                                       sock.getsockname()[1])
        assert second.host == "192.0.2.5" and second.received is None
        assert resp.via == req.via
    finally:
        sock.close()
        await stack.stop()


async def test_response_reopens_connection_to_via_when_original_closed(keys: Keys) -> None:
    """§18.2.2: the request's connection is gone, so the response goes to the Via sent-by."""
    held: list[IncomingRequest] = []
    stack = await started(config(keys), held.append)  # type: ignore[arg-type]
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def via_listener(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got.put_nowait(await reader.readuntil(b"\r\n\r\n"))
        writer.close()

    server = await asyncio.start_server(via_listener, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection(*stack.bound("tcp"))
        writer.write(options("TCP", call_id="reopen", port=port).replace(b";rport", b""))
        for _ in range(100):
            if held:
                break
            await asyncio.sleep(0.01)
        writer.close()
        for _ in range(100):
            if stack.transports.connections == 0:
                break
            await asyncio.sleep(0.01)
        assert stack.transports.connections == 0
        assert held[0].respond(held[0].request.create_response(200, to_tag="late"))
        data = await asyncio.wait_for(got.get(), 3)
        assert data.startswith(b"SIP/2.0 200 OK") and b"Call-ID: reopen" in data
    finally:
        server.close()
        await stack.stop()


async def test_dropped_request_frees_its_transaction(keys: Keys) -> None:
    dropped: list[bool] = []
    stack = await started(config(keys), lambda incoming: dropped.append(incoming.drop()))  # type: ignore[arg-type]
    sock = udp_socket()
    try:
        sock.sendto(options(call_id="drop-me"), stack.bound("udp"))
        sock.sendto(options(call_id="drop-invite", method="INVITE"), stack.bound("udp"))
        with pytest.raises(TimeoutError):
            await udp_recv(sock, 0.5)  # not even a 100 Trying for the INVITE
        assert dropped == [True, True] and len(stack.layer) == 0
    finally:
        sock.close()
        await stack.stop()


async def test_slow_handler_gets_100_trying_sent_for_it(keys: Keys) -> None:
    held: list[IncomingRequest] = []
    stack = await started(config(keys), held.append)  # type: ignore[arg-type]
    sock = udp_socket()
    try:
        sock.sendto(options(call_id="slow", method="INVITE"), stack.bound("udp"))
        start = asyncio.get_running_loop().time()
        trying = parse_message(await udp_recv(sock))
        waited = asyncio.get_running_loop().time() - start
        assert isinstance(trying, SipResponse) and trying.status == 100
        assert 0.15 < waited < 1.0 and len(held) == 1
        assert held[0].respond(held[0].request.create_response(486, to_tag="b"))
        busy = parse_message(await udp_recv(sock))
        assert isinstance(busy, SipResponse) and busy.status == 486
    finally:
        sock.close()
        await stack.stop()


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
async def test_ipv6_loopback(keys: Keys, transport: str) -> None:
    import dataclasses

    cfg = config(keys)
    cfg = dataclasses.replace(cfg, listeners=tuple(dataclasses.replace(li, address="::1")
                                                   for li in cfg.listeners))
    handler = Answering()
    server = await started(cfg, handler)
    client = await started(cfg, Answering())
    try:
        port = server.bound(transport)[1]
        resp = await asyncio.wait_for(client.request(
            request("OPTIONS", f"v6-{transport}"),
            Target(transport, "::1", port, listener=transport,  # type: ignore[arg-type]
                   tls_identity=(GATEWAY_ID,))), 5)
        assert resp.status == 200
        via = handler.requests[0].request.top_via
        assert via is not None and via.host == "[::1]" and via.received == "::1"
        assert client.contact(transport).startswith("sip:[::1]:")
    finally:
        await client.stop()
        await server.stop()


async def test_failing_hook_costs_one_message_not_the_listener(keys: Keys) -> None:
    calls: list[MessageSource] = []

    def admit(source: MessageSource) -> bool:
        calls.append(source)
        if len(calls) == 1:
            raise RuntimeError("firewall bug")
        return True

    from tests.integration.test_sip_helpers import capture

    stack = await started(config(keys), Answering(), admit=admit)
    sock = udp_socket()
    try:
        with capture() as cap:
            sock.sendto(options(call_id="first"), stack.bound("udp"))
            with pytest.raises(TimeoutError):
                await udp_recv(sock, 0.3)
            assert cap.events("sip.internal_error")
        sock.sendto(options(call_id="second"), stack.bound("udp"))
        resp = parse_message(await udp_recv(sock))
        assert isinstance(resp, SipResponse) and resp.call_id == "second"
    finally:
        sock.close()
        await stack.stop()


@pytest.mark.parametrize("transport", ["tcp", "tls"])
async def test_pending_invite_fails_when_its_connection_closes(keys: Keys,
                                                               transport: str) -> None:
    """Ringing, then the peer's connection drops: the INVITE (which has no timer left in
    Proceeding) fails at once with TransportFailure instead of hanging."""
    def ring_then_vanish(incoming: IncomingRequest) -> None:
        if incoming.request.method == "INVITE":
            incoming.respond(incoming.request.create_response(180, to_tag="r"))
            conn = server.transports.connection(incoming.source.connection_id)  # type: ignore[arg-type]
            assert conn is not None
            asyncio.get_running_loop().call_later(0.1, conn.close)

    server = await started(config(keys), ring_then_vanish)  # type: ignore[arg-type]
    client = await started(config(keys), Answering())
    try:
        tx = client.client(request("INVITE", f"vanish-{transport}"),
                           target(server.bound(transport), transport))
        assert (await asyncio.wait_for(tx.response(), 5)).status == 180
        with pytest.raises(TransportFailure, match="connection closed"):
            await asyncio.wait_for(tx.response(), 2)
        assert len(client.layer) == 0
    finally:
        await client.stop()
        await server.stop()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_targets_by_host_name(keys: Keys, transport: str) -> None:
    handler = Answering()
    server = await started(config(keys), handler)
    client = await started(config(keys), Answering())
    try:
        port = server.bound(transport)[1]
        dest = Target(transport, "localhost", port, listener=transport)  # type: ignore[arg-type]
        for i in range(2):  # the second one uses the cached answer
            resp = await asyncio.wait_for(client.request(request("OPTIONS", f"name-{i}"), dest),
                                          5)
            assert resp.status == 200
        assert handler.requests[0].source.ip == "127.0.0.1"
        with pytest.raises(TransportFailure):
            await asyncio.wait_for(client.request(
                request("OPTIONS", "bad-name"),
                Target(transport, "bad..name", port)), 5)  # type: ignore[arg-type]
    finally:
        await client.stop()
        await server.stop()


async def test_responses_the_layer_sends_itself_are_counted_once(keys: Keys) -> None:
    held: list[IncomingRequest] = []
    stack = await started(config(keys), held.append)  # type: ignore[arg-type]
    sock = udp_socket()
    counts = stack.responses.counts
    try:
        invite = options(call_id="own", method="INVITE")
        sock.sendto(invite, stack.bound("udp"))
        trying = parse_message(await udp_recv(sock))
        assert isinstance(trying, SipResponse) and trying.status == 100
        sock.sendto(invite, stack.bound("udp"))  # a retransmission gets the 100 again
        assert parse_message(await udp_recv(sock)).status == 100  # type: ignore[union-attr]
        assert counts[("sent", "INVITE", "1xx", "udp")] == 1
        sock.sendto(invite.replace(b"INVITE", b"CANCEL"), stack.bound("udp"))
        ok = parse_message(await udp_recv(sock))
        assert isinstance(ok, SipResponse) and (ok.status, ok.cseq.method) == (200, "CANCEL")
        assert counts[("sent", "CANCEL", "2xx", "udp")] == 1
        assert held[0].respond(held[0].request.create_response(487, to_tag="c"))
        assert parse_message(await udp_recv(sock)).status == 487  # type: ignore[union-attr]
        assert counts[("sent", "INVITE", "4xx", "udp")] == 1
        bad = options(call_id="own-bad").replace(b"To: <sip:gateway@example.com>",
                                                 b'To: "open <sip:gateway@example.com>')
        sock.sendto(bad, stack.bound("udp"))
        assert (await udp_recv(sock)).startswith(b"SIP/2.0 400 ")
        assert counts[("sent", "OPTIONS", "4xx", "udp")] == 1
        assert sum(n for k, n in counts.items() if k[0] == "sent") == 4
    finally:
        sock.close()
        await stack.stop()
