"""Transport defences with real sockets and certificates: TLS version/cert/CA/identity failures,
buffer limits, slow loris, half-open connections, pipelining, keep-alives, certificate reload."""

from __future__ import annotations

import asyncio
import dataclasses
import ssl

import pytest
import uvloop

from gateway.config import Config, TlsSection
from gateway.sip.errors import TransportFailure
from gateway.sip.framing import PING, PONG
from gateway.sip.streams import PlainStream
from gateway.sip.transport import Connection, MessageSource, Target
from tests.integration.test_sip_helpers import (
    GATEWAY_ID,
    Answering,
    Keys,
    capture,
    client_tls,
    closed_by_peer,
    config,
    extra_leaf,
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
    k = make_keys(tmp_path_factory.mktemp("sipkeys"))
    extra_leaf(k, "evil", dns=["evil.srtpgw.test"], uris=["sip:evil.srtpgw.test"])
    extra_leaf(k, "gateway2", dns=["gateway.srtpgw.test"], uris=[GATEWAY_ID])
    return k


async def tls_attempt(port: tuple[str, int], ctx: ssl.SSLContext) -> str:
    """'answered' when an OPTIONS gets a response, else how the attempt ended."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(*port, ssl=ctx), 3)
    except (ssl.SSLError, OSError) as exc:
        return f"handshake: {type(exc).__name__}"
    try:
        writer.write(options("TLS"))
        await read_message(reader, 2)
        return "answered"
    except (ssl.SSLError, OSError, asyncio.IncompleteReadError) as exc:
        return f"after handshake: {type(exc).__name__}"
    finally:
        writer.close()


async def failure_reason(cap: object, n: int = 1) -> list[str]:
    for _ in range(100):
        events = cap.events("tls.handshake_failed")  # type: ignore[attr-defined]
        if len(events) >= n:
            return [str(e["reason"]) for e in events]
        await asyncio.sleep(0.02)
    return []


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1")
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
async def test_old_tls_versions_refused(keys: Keys, version: ssl.TLSVersion) -> None:
    stack = await started(config(keys), Answering())
    try:
        ctx = client_tls(keys, min_version=version, max_version=version)
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the client really offer the old version
        with capture() as cap:
            outcome = await tls_attempt(stack.bound("tls"), ctx)
            reasons = await failure_reason(cap)
        assert outcome.startswith("handshake")
        assert reasons and ("protocol" in reasons[0] or "version" in reasons[0]), reasons
    finally:
        await stack.stop()


async def test_tls12_and_13_accepted(keys: Keys) -> None:
    stack = await started(config(keys), Answering())
    try:
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            ctx = client_tls(keys, min_version=version, max_version=version)
            assert await tls_attempt(stack.bound("tls"), ctx) == "answered"
    finally:
        await stack.stop()


async def test_tls13_floor_refuses_12(keys: Keys) -> None:
    cfg = config(keys)
    cfg = dataclasses.replace(cfg, tls=dataclasses.replace(cfg.tls, min_version="1.3"))
    stack = await started(cfg, Answering())
    try:
        ctx = client_tls(keys, max_version=ssl.TLSVersion.TLSv1_2)
        assert (await tls_attempt(stack.bound("tls"), ctx)).startswith("handshake")
    finally:
        await stack.stop()


async def test_missing_client_certificate_refused_when_required(keys: Keys) -> None:
    handler = Answering()
    stack = await started(config(keys, client_auth="require"), handler)
    try:
        with capture() as cap:
            outcome = await tls_attempt(stack.bound("tls"), client_tls(keys, cert=None))
            reasons = await failure_reason(cap)
        assert outcome != "answered" and handler.requests == []
        assert reasons and "certificate" in reasons[0], reasons
    finally:
        await stack.stop()


async def test_client_auth_off_does_not_ask_for_a_certificate(keys: Keys) -> None:
    handler = Answering()
    stack = await started(config(keys, client_auth="off"), handler)
    try:
        assert await tls_attempt(stack.bound("tls"), client_tls(keys, cert="peer")) == "answered"
        assert handler.requests[0].source.tls_identities == ()  # never requested
    finally:
        await stack.stop()


async def test_missing_client_certificate_allowed_when_optional(keys: Keys) -> None:
    handler = Answering()
    stack = await started(config(keys, client_auth="optional"), handler)
    try:
        assert await tls_attempt(stack.bound("tls"), client_tls(keys, cert=None)) == "answered"
        assert handler.requests[0].source.tls_identities == ()
        assert handler.requests[0].source.tls_fingerprint is None
    finally:
        await stack.stop()


async def test_client_certificate_from_another_ca_refused(keys: Keys) -> None:
    handler = Answering()
    failures: list[tuple[MessageSource, str]] = []
    stack = await started(config(keys), handler,
                          on_tls_failure=lambda s, r: failures.append((s, r)))
    try:
        ctx = client_tls(keys, cert="peer", ca_dir=keys.other)
        with capture() as cap:
            outcome = await tls_attempt(stack.bound("tls"), ctx)
            reasons = await failure_reason(cap)
        assert outcome != "answered" and handler.requests == []
        assert reasons and "certificate" in reasons[0], reasons
        assert [(s.listener, r) for s, r in failures] == [("tls", reasons[0])]
    finally:
        await stack.stop()


async def test_server_with_wrong_identity_refused_outbound(keys: Keys) -> None:
    server = await started(config(keys, cert="evil"), Answering())
    client = await started(config(keys), Answering())
    try:
        dest = Target("tls", *server.bound("tls"), tls_identity=(GATEWAY_ID,))
        with capture() as cap:
            with pytest.raises(TransportFailure, match="identity"):
                await asyncio.wait_for(client.request(request("OPTIONS", "evil"), dest), 5)
            events = cap.events("tls.handshake_failed")
        outbound = [e for e in events if e.get("direction") == "outbound"]
        assert outbound and outbound[0]["reason"] == "identity mismatch"
        assert "sip:evil.srtpgw.test" in str(outbound[0]["presented"])
        assert client.transports.connections == 0
        # the same server is fine for a trunk that expects that identity
        ok = Target("tls", *server.bound("tls"), tls_identity=("sip:evil.srtpgw.test",))
        assert (await client.request(request("OPTIONS", "evil-ok"), ok)).status == 200
    finally:
        await client.stop()
        await server.stop()


async def test_server_from_unknown_ca_refused_outbound(keys: Keys) -> None:
    cfg = config(keys)
    other = dataclasses.replace(cfg, tls=TlsSection(
        certificate=keys.other / "gateway.crt", private_key=keys.other / "gateway.key",
        ca_file=keys.other / "ca.crt", handshake_timeout=2.0))
    server = await started(other, Answering())
    client = await started(cfg, Answering())
    try:
        with capture() as cap:
            with pytest.raises(TransportFailure):
                await asyncio.wait_for(client.request(
                    request("OPTIONS", "unknown-ca"),
                    Target("tls", *server.bound("tls"), tls_identity=(GATEWAY_ID,))), 5)
            reasons = await failure_reason(cap)
        assert any("certificate" in r for r in reasons), reasons
    finally:
        await client.stop()
        await server.stop()


async def test_outbound_handshake_to_a_peer_without_tls_server_is_reachability(
        keys: Keys) -> None:
    """A phone that closes inbound TLS (linphone) fails our handshake: our own reachability
    failure, logged on the ordinary logger, never a security event nor fed to the firewall;
    a wrong certificate on a connection we open stays a security event."""
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    closer = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    failures: list[tuple[MessageSource, str]] = []
    client = await started(config(keys), Answering(),
                           on_tls_failure=lambda s, r: failures.append((s, r)))
    try:
        port = closer.sockets[0].getsockname()[1]
        with capture() as cap, capture("srtpgw.security") as sec:
            with pytest.raises(TransportFailure):
                await asyncio.wait_for(client.request(request("OPTIONS", "no-server"), Target(
                    "tls", "127.0.0.1", port, tls_identity=(GATEWAY_ID,))), 5)
            events = cap.events("tls.handshake_failed")
        assert [e["direction"] for e in events] == ["outbound"]
        assert events[0]["classification"] == "reachability"
        assert sec.events("tls.handshake_failed") == [] and failures == []
        assert client.transports.counters["tls_unreachable"] == 1
        assert client.transports.counters["tls_failures"] == 0
    finally:
        await client.stop()
        closer.close()


async def test_fingerprint_pin(keys: Keys) -> None:
    server = await started(config(keys), Answering())
    client = await started(config(keys), Answering())
    try:
        port = server.bound("tls")
        with pytest.raises(TransportFailure, match="fingerprint"):
            await client.request(request("OPTIONS", "pin-bad"), Target(
                "tls", *port, tls_identity=(GATEWAY_ID,), tls_fingerprints=("00" * 32,)))
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        from gateway.sip.identity import cert_fingerprint
        cert = x509.load_pem_x509_certificate((keys.dir / "gateway.crt").read_bytes())
        pin = cert_fingerprint(cert.public_bytes(Encoding.DER)).upper()
        pin = ":".join(pin[i:i + 2] for i in range(0, len(pin), 2))
        resp = await client.request(request("OPTIONS", "pin-ok"), Target(
            "tls", *port, tls_identity=(GATEWAY_ID,), tls_fingerprints=(pin,)))
        assert resp.status == 200
    finally:
        await client.stop()
        await server.stop()


async def test_one_mebibyte_without_header_end_is_cut_off(keys: Keys) -> None:
    stack = await started(config(keys), Answering())
    try:
        reader, writer = await asyncio.open_connection(*stack.bound("tcp"))
        junk = b"OPTIONS sip:x SIP/2.0\r\nX-Junk: " + b"a" * (1 << 20)
        try:
            for i in range(0, len(junk), 16384):
                writer.write(junk[i:i + 16384])
                await asyncio.wait_for(writer.drain(), 5)
        except (ConnectionError, RuntimeError):  # RuntimeError: uvloop, transport closed
            pass
        assert await closed_by_peer(reader, 2)
        assert stack.transports.counters["framing_errors"] == 1
        assert stack.transports.connections == 0
        writer.close()
    finally:
        await stack.stop()


async def test_slow_loris_cut_off_at_header_deadline(keys: Keys) -> None:
    stack = await started(config(keys, header_timeout=0.5), Answering())
    try:
        with capture() as cap:
            reader, writer = await asyncio.open_connection(*stack.bound("tcp"))
            loop = asyncio.get_running_loop()
            start = loop.time()
            data = options("TCP")
            closed_at = None
            for i in range(len(data)):  # one byte every 50 ms would take ~15 s
                if reader.at_eof():
                    closed_at = loop.time()
                    break
                try:
                    writer.write(data[i:i + 1])
                    chunk = await asyncio.wait_for(reader.read(1), 0.05)
                except TimeoutError:
                    continue
                except (ConnectionError, RuntimeError):  # RuntimeError: uvloop, closed transport
                    closed_at = loop.time()
                    break
                if chunk == b"":
                    closed_at = loop.time()
                    break
            assert closed_at is not None and closed_at - start < 2.0
            assert cap.events("sip.slow_header")
        writer.close()
    finally:
        await stack.stop()


async def test_idle_connection_closed(keys: Keys) -> None:
    stack = await started(config(keys, tcp_idle_timeout=1.0), Answering())
    try:
        reader, writer = await asyncio.open_connection(*stack.bound("tcp"))
        writer.write(options("TCP"))
        assert (await read_message(reader)).status == 200
        assert await closed_by_peer(reader, 3)
        writer.close()
    finally:
        await stack.stop()


async def test_activity_moves_the_idle_deadline(keys: Keys) -> None:
    """Traffic every 0.25 s keeps a 0.6 s idle timeout away for 1.5 s; silence then ends it."""
    stack = await started(config(keys, tcp_idle_timeout=0.6), Answering())
    try:
        with capture() as cap:
            reader, writer = await asyncio.open_connection(*stack.bound("tcp"))
            loop = asyncio.get_running_loop()
            for i in range(6):
                writer.write(options("TCP", call_id=f"busy{i}"))
                assert (await read_message(reader)).status == 200
                await asyncio.sleep(0.25)
            quiet = loop.time()
            assert await closed_by_peer(reader, 2)
            assert 0.3 < loop.time() - quiet < 1.2
            closes = cap.events("sip.connection_closed")
        assert closes and closes[-1]["reason"] == "idle timeout"
        writer.close()
    finally:
        await stack.stop()


async def test_stalled_tls_handshake_times_out(keys: Keys) -> None:
    cfg = config(keys)
    cfg = dataclasses.replace(cfg, tls=dataclasses.replace(cfg.tls, handshake_timeout=0.5))
    stack = await started(cfg, Answering())
    try:
        with capture() as cap:
            reader, writer = await asyncio.open_connection(*stack.bound("tls"))  # no ClientHello
            assert await closed_by_peer(reader, 3)
            reasons = await failure_reason(cap)
        assert reasons == ["handshake timeout"]
        writer.close()
    finally:
        await stack.stop()


async def test_half_closed_connection_released(keys: Keys) -> None:
    stack = await started(config(keys), Answering())
    try:
        reader, writer = await asyncio.open_connection(*stack.bound("tcp"))
        writer.write(options("TCP")[:40])
        writer.write_eof()  # half-open: we will never finish the message
        assert await closed_by_peer(reader, 3)  # the server closes its side too
        writer.close()
        for _ in range(50):
            if stack.transports.connections == 0:
                break
            await asyncio.sleep(0.02)
        assert stack.transports.connections == 0
        # a complete request followed by a half-close is still answered
        reader, writer = await asyncio.open_connection(*stack.bound("tcp"))
        writer.write(options("TCP"))
        writer.write_eof()
        assert (await read_message(reader)).status == 200
        writer.close()
    finally:
        await stack.stop()


@pytest.mark.parametrize("transport", ["tcp", "tls"])
async def test_pipelined_requests_answered_in_order(keys: Keys, transport: str) -> None:
    handler = Answering()
    stack = await started(config(keys), handler)
    try:
        ctx = client_tls(keys) if transport == "tls" else None
        reader, writer = await asyncio.open_connection(*stack.bound(transport), ssl=ctx)
        burst = b"".join(options(transport.upper(), call_id=f"p{i}") for i in range(5))
        writer.write(burst)
        got = [(await read_message(reader)).call_id for _ in range(5)]
        assert got == [f"p{i}" for i in range(5)]
        one = options(transport.upper(), call_id="bytewise")
        for cut in (1, 17, 60, len(one) - 1):  # split points inside start line, headers, end
            writer.write(one[:cut])
            await writer.drain()
            await asyncio.sleep(0.01)
            writer.write(one[cut:])
            assert (await read_message(reader)).call_id == "bytewise"
        writer.close()
    finally:
        await stack.stop()


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
async def test_crlf_ping_answered_with_pong(keys: Keys, transport: str) -> None:
    stack = await started(config(keys), Answering())
    try:
        if transport == "udp":
            sock = udp_socket()
            sock.sendto(PING, stack.bound("udp"))
            assert await udp_recv(sock) == PONG
            sock.close()
            return
        ctx = client_tls(keys) if transport == "tls" else None
        reader, writer = await asyncio.open_connection(*stack.bound(transport), ssl=ctx)
        writer.write(PING)
        assert await asyncio.wait_for(reader.readexactly(2), 2) == PONG
        writer.write(options(transport.upper()))  # the connection still carries SIP
        assert (await read_message(reader)).status == 200
        writer.close()
    finally:
        await stack.stop()


async def test_outbound_connections_send_keepalive_pings(keys: Keys) -> None:
    received = bytearray()
    got_ping = asyncio.Event()

    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            received.extend(data)
            if received.endswith(PING):
                got_ping.set()
                writer.write(PONG)

    server = await asyncio.start_server(peer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = await started(config(keys, keepalive_interval=0.2), Answering())
    try:
        tx = client.client(request("OPTIONS", "ka"), Target("tcp", "127.0.0.1", port))
        await asyncio.wait_for(got_ping.wait(), 3)
        assert received.startswith(b"OPTIONS ") and tx.tid is not None
        assert client.transports.connections == 1  # the pong kept it alive and framed fine
    finally:
        await client.stop()
        server.close()


async def test_tls_reload_keeps_established_connections(keys: Keys) -> None:
    handler = Answering()
    stack = await started(config(keys), handler)
    try:
        reader, writer = await asyncio.open_connection(*stack.bound("tls"), ssl=client_tls(keys))
        writer.write(options("TLS", call_id="before"))
        assert (await read_message(reader)).status == 200
        first = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        stack.reload_tls(config(keys, cert="gateway2"))
        writer.write(options("TLS", call_id="after-reload"))
        assert (await read_message(reader)).call_id == "after-reload"
        r2, w2 = await asyncio.open_connection(*stack.bound("tls"), ssl=client_tls(keys))
        w2.write(options("TLS", call_id="new"))
        assert (await read_message(r2)).status == 200
        second = w2.get_extra_info("ssl_object").getpeercert(binary_form=True)
        assert first != second
        writer.close()
        w2.close()
    finally:
        await stack.stop()


async def test_stream_from_another_transport_can_be_attached(keys: Keys) -> None:
    """The plug-in point: any ByteStream (here a TCP stream we accepted ourselves) carries SIP
    with the same framing, limits and response routing as the built-in listeners."""
    handler = Answering()
    stack = await started(config(keys), handler)
    attached: list[Connection] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ip, port = writer.get_extra_info("peername")[:2]
        source = MessageSource("tcp", "plugged", ip, port)
        attached.append(stack.transports.attach(source, PlainStream(reader, writer)))

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
        writer.write(options("TCP", call_id="plugged") + PING)
        assert (await read_message(reader)).call_id == "plugged"
        assert await asyncio.wait_for(reader.readexactly(2), 2) == PONG
        (incoming,) = handler.requests
        assert incoming.source.listener == "plugged"
        assert incoming.source.connection_id == attached[0].id
        writer.close()
    finally:
        server.close()
        await stack.stop()


async def test_connection_limit(keys: Keys) -> None:
    stack = await started(config(keys), Answering())
    stack.transports.max_connections = 1
    try:
        r1, w1 = await asyncio.open_connection(*stack.bound("tcp"))
        w1.write(options("TCP"))
        assert (await read_message(r1)).status == 200
        with capture() as cap:
            r2, w2 = await asyncio.open_connection(*stack.bound("tcp"))
            assert await closed_by_peer(r2, 2)
            assert cap.events("sip.connection_limit")
        w1.write(options("TCP"))  # the first one is unaffected
        assert (await read_message(r1)).status == 200
        w1.close()
        w2.close()
    finally:
        await stack.stop()


async def test_outbound_sni(keys: Keys) -> None:
    names: list[str | None] = []
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(keys.pem("gateway.crt"), keys.pem("gateway.key"))
    ctx.sni_callback = lambda sock, name, c: names.append(name)  # type: ignore[assignment,misc]

    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")

    server = await asyncio.start_server(peer, "127.0.0.1", 0, ssl=ctx)
    port = server.sockets[0].getsockname()[1]
    client = await started(config(keys), Answering())
    try:
        for sni in ("gateway.srtpgw.test", None):
            client.client(request("OPTIONS", f"sni-{sni}"), Target(
                "tls", "127.0.0.1", port, server_name=sni, tls_identity=(GATEWAY_ID,)))
            for _ in range(100):
                if len(names) == (1 if sni else 2):
                    break
                await asyncio.sleep(0.02)
            for c in list(client.transports._conns.values()):
                c.close()
            await asyncio.sleep(0.05)
        assert names == ["gateway.srtpgw.test", None]  # no SNI for an IP literal
    finally:
        await client.stop()
        server.close()


async def test_inbound_identity_reaches_admit(keys: Keys) -> None:
    """The firewall hook sees each message's RFC 5922 identities and can drop a wrong one."""
    from gateway.sip.identity import identity_matches

    def admit(source: MessageSource) -> bool:
        return source.transport != "tls" or source.connection_id is None or identity_matches(
            ("sip:peer.srtpgw.test",), source.tls_identities)

    handler = Answering()
    stack = await started(config(keys), handler, admit=admit)
    try:
        assert await tls_attempt(stack.bound("tls"), client_tls(keys, cert="peer")) == "answered"
        evil = await tls_attempt(stack.bound("tls"), client_tls(keys, cert="evil"))
        assert evil == "after handshake: TimeoutError"  # dropped before parsing, no answer
        assert len(handler.requests) == 1 and stack.counters["dropped"] == 1
    finally:
        await stack.stop()


async def test_slow_body_cut_off_and_lone_crlf_tolerated(keys: Keys) -> None:
    stack = await started(config(keys, header_timeout=0.5), Answering())
    try:
        reader, writer = await asyncio.open_connection(*stack.bound("tcp"))
        writer.write(b"\r\n")  # a single-CRLF keep-alive, as some UAs send
        await asyncio.sleep(0.8)
        writer.write(options("TCP", call_id="after-crlf"))
        assert (await read_message(reader)).call_id == "after-crlf"
        body = options("TCP").replace(b"Content-Length: 0", b"Content-Length: 100")
        writer.write(body + b"x")  # the header section is complete, the body never is
        assert await closed_by_peer(reader, 3)
        writer.close()
    finally:
        await stack.stop()


async def test_unusable_server_name_is_a_transport_failure(keys: Keys) -> None:
    server = await started(config(keys), Answering())
    client = await started(config(keys), Answering())
    try:
        with pytest.raises(TransportFailure, match="invalid server name"):
            await asyncio.wait_for(client.request(request("OPTIONS", "bad-sni"), Target(
                "tls", *server.bound("tls"), server_name="bad..name",
                tls_identity=(GATEWAY_ID,))), 5)
    finally:
        await client.stop()
        await server.stop()


async def test_plain_sip_on_tls_port_refused(keys: Keys) -> None:
    handler = Answering()
    stack = await started(config(keys), handler)
    try:
        with capture() as cap:
            reader, writer = await asyncio.open_connection(*stack.bound("tls"))
            writer.write(options("TCP"))
            assert await closed_by_peer(reader, 3)
            reasons = await failure_reason(cap)
        assert reasons and handler.requests == []
        writer.close()
    finally:
        await stack.stop()


async def test_failed_reload_changes_nothing(keys: Keys,
                                             tmp_path_factory: pytest.TempPathFactory) -> None:
    stack = await started(config(keys), Answering())
    try:
        broken = dataclasses.replace(config(keys), tls=dataclasses.replace(
            config(keys).tls, certificate=tmp_path_factory.mktemp("none") / "missing.crt"))
        with pytest.raises(OSError):
            stack.reload_tls(broken)
        assert stack.config.tls.certificate == keys.pem("gateway.crt")
        assert await tls_attempt(stack.bound("tls"), client_tls(keys)) == "answered"
    finally:
        await stack.stop()


async def test_connection_limit_counts_stalled_handshakes(keys: Keys) -> None:
    stack = await started(config(keys), Answering())
    stack.transports.max_connections = 2
    try:
        stalled = [await asyncio.open_connection(*stack.bound("tls")) for _ in range(2)]
        await asyncio.sleep(0.1)  # both are waiting for a ClientHello
        assert await tls_attempt(stack.bound("tls"), client_tls(keys)) != "answered"
        for _, w in stalled:
            w.close()
        await asyncio.sleep(0.1)
        assert await tls_attempt(stack.bound("tls"), client_tls(keys)) == "answered"
    finally:
        await stack.stop()


async def test_idle_tls_connection_closed_with_close_notify(keys: Keys) -> None:
    stack = await started(config(keys, tcp_idle_timeout=1.0), Answering())
    try:
        reader, writer = await asyncio.open_connection(*stack.bound("tls"), ssl=client_tls(keys))
        writer.write(options("TLS"))
        assert (await read_message(reader)).status == 200
        assert await asyncio.wait_for(reader.read(), 5) == b""  # clean TLS close, no SSL error
        writer.close()
    finally:
        await stack.stop()


async def test_wildcard_bind_advertises_a_usable_address(keys: Keys) -> None:
    """Tests never bind 0.0.0.0 (loopback only), so the bound address is set by hand here."""
    from gateway.sip.transport import SipTransports

    transports = SipTransports(config(keys), lambda data, source: None)
    transports._bound.update({"v4": ("0.0.0.0", 5060), "v6": ("::", 5061),
                              "lo": ("127.0.0.1", 5062)})
    assert transports.advertised("v4", "127.0.0.1") == ("127.0.0.1", 5060)
    assert transports.advertised("v6", "::1") == ("::1", 5061)
    assert transports.advertised("v4") == ("gateway.srtpgw.test", 5060)
    assert transports.advertised("v4", "carrier.example") == ("gateway.srtpgw.test", 5060)
    assert transports.advertised("lo", "127.0.0.5") == ("127.0.0.1", 5062)


async def test_pipelined_pair_split_at_every_byte_boundary_over_tcp(keys: Keys) -> None:
    """Two pipelined requests, cut at every octet: the first part goes out as its own segment
    (TCP_NODELAY, then a pause) and the server must still frame both exactly."""
    import socket

    stack = await started(config(keys), Answering())
    try:
        reader, writer = await asyncio.open_connection(*stack.bound("tcp"))
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        data = options("TCP", call_id="pa") + options("TCP", call_id="pb")
        for cut in range(1, len(data)):
            writer.write(data[:cut])
            await writer.drain()
            await asyncio.sleep(0.001)
            writer.write(data[cut:])
            got = [(await read_message(reader)).call_id for _ in range(2)]
            assert got == ["pa", "pb"], cut
        assert stack.transports.counters["framing_errors"] == 0
        writer.close()
    finally:
        await stack.stop()


def _homed(keys: Keys, address: str) -> Config:
    cfg = config(keys)
    return dataclasses.replace(cfg, listeners=tuple(
        dataclasses.replace(li, address=address) for li in cfg.listeners))


@pytest.mark.parametrize("transport", ["tcp", "tls"])
async def test_outbound_connection_leaves_from_the_listener_address(keys: Keys,
                                                                     transport: str) -> None:
    """Multi-homed: a trunk's connections come from its listener's IP, not the default route's."""
    sources: list[tuple[str, int]] = []

    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sources.append(writer.get_extra_info("peername")[:2])
        await reader.read(65536)
        writer.close()

    ctx = None
    if transport == "tls":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(keys.pem("gateway.crt"), keys.pem("gateway.key"))
    server = await asyncio.start_server(peer, "127.0.0.1", 0, ssl=ctx)
    port = server.sockets[0].getsockname()[1]
    client = await started(_homed(keys, "127.74.162.198"), Answering())
    try:
        client.client(request("OPTIONS", f"src-{transport}"), Target(
            transport, "127.0.0.1", port, listener=transport,  # type: ignore[arg-type]
            tls_identity=(GATEWAY_ID,)))
        for _ in range(100):
            if sources:
                break
            await asyncio.sleep(0.02)
        assert sources and sources[0][0] == "127.74.162.198"
        assert sources[0][1] != client.bound(transport)[1]  # port 0: an ephemeral port
    finally:
        await client.stop()
        server.close()


async def test_udp_request_leaves_from_the_listener_socket(keys: Keys) -> None:
    loop = asyncio.get_running_loop()
    got: asyncio.Future[tuple[str, int]] = loop.create_future()

    class Peer(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            if not got.done():
                got.set_result(addr)

    peer, _ = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.1", 0))
    client = await started(_homed(keys, "127.74.162.199"), Answering())
    try:
        client.client(request("OPTIONS", "src-udp"), Target(
            "udp", *peer.get_extra_info("sockname")[:2], listener="udp"))
        assert await asyncio.wait_for(got, 2) == client.bound("udp")
    finally:
        await client.stop()
        peer.close()
