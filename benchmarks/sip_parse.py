"""Parse + serialize a typical INVITE with SDP: messages per second on one core.

A second row runs the sans-IO server transaction path a request takes inside the stack: parse an
INVITE, open its server transaction (100 Trying goes out), answer 200 OK, serialize.

With ``--stack N``, N OPTIONS transactions also run between two SipStacks over loopback UDP, TCP
and mutual TLS (uvloop, 20 in flight); CPU per transaction counts both ends (one process).

Usage: python benchmarks/sip_parse.py [--seconds 3] [--stack 2000]
Prints a table, then one JSON line (goal: >= 20,000 messages/s for parse+serialize).
``msgs/cpu-s`` counts process CPU time only, so it stays meaningful on a shared machine where
wall-clock rates are noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import uvloop

from gateway.config import Config, Listener, SipSection, TlsSection
from gateway.ops.keys import init_keys
from gateway.sip.events import RequestReceived
from gateway.sip.headers import Headers
from gateway.sip.message import SipRequest, parse_message
from gateway.sip.stack import IncomingRequest, SipStack
from gateway.sip.transaction import TransactionLayer
from gateway.sip.transport import Target
from gateway.sip.uri import SipUri

SDP = (b"v=0\r\no=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\ns=-\r\n"
       b"c=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 49170 RTP/SAVP 0 8 101\r\n"
       b"a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
       b"a=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
       b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n")
INVITE = (
    b"INVITE sip:+15551234567@gateway.srtpgw.test:5061;transport=tls SIP/2.0\r\n"
    b"Via: SIP/2.0/TLS 192.0.2.10:5061;branch=z9hG4bK74bf9a1c2d;rport\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK4a1c2d;received=10.0.0.5\r\n"
    b"Max-Forwards: 69\r\n"
    b"From: \"Alice\" <sip:+15557654321@pbx.example.com>;tag=9fxced76sl\r\n"
    b"To: <sip:+15551234567@gateway.srtpgw.test>\r\n"
    b"Call-ID: 3848276298220188511@pbx.example.com\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:alice@192.0.2.10:5061;transport=tls>\r\n"
    b"Record-Route: <sip:192.0.2.1;lr>\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, PRACK\r\n"
    b"Supported: timer, 100rel\r\n"
    b"User-Agent: PBX/1.0\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n\r\n" + SDP)


def parse_serialize(_: int) -> None:
    parse_message(INVITE).to_bytes()


def server_transaction(layer: TransactionLayer) -> Callable[[int], None]:
    def one(i: int) -> None:
        data = INVITE.replace(b"z9hG4bK74bf9a1c2d", b"z9hG4bK%d" % i, 1).replace(
            b"Call-ID: 3848", b"Call-ID: %d-3848" % i, 1)  # distinct calls, not merged copies
        layer.receive(parse_message(data), ("192.0.2.10", 5061), True, float(i))
        event = layer.next_event()
        assert isinstance(event, RequestReceived) and event.tid is not None
        req: SipRequest = event.request
        layer.send_response(event.tid, req.create_response(200, to_tag="gw"), float(i))
        layer.handle_timer(float(i))  # timer L of older transactions
        layer.messages_to_send()
        while layer.next_event() is not None:
            pass
    return one


def run(seconds: float, step: Callable[[int], None]) -> dict[str, float]:
    n = 0
    start = time.perf_counter()
    cpu0 = time.process_time()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for i in range(n, n + 500):
            step(i)
        n += 500
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    return {"messages": n, "seconds": round(wall, 3), "msgs_per_s": round(n / wall),
            "msgs_per_cpu_s": round(n / cpu), "us_per_msg": round(cpu / n * 1e6, 2),
            "message_bytes": len(INVITE)}


def _answer(incoming: IncomingRequest) -> None:
    incoming.respond(incoming.request.create_response(200, to_tag="b"))


def _options(i: int) -> SipRequest:
    h = Headers([("From", "<sip:bench@example.com>;tag=a"), ("To", "<sip:gw@example.com>"),
                 ("Call-ID", f"bench-{i}"), ("CSeq", f"{i + 1} OPTIONS")])
    return SipRequest("OPTIONS", SipUri("sip", "gateway.srtpgw.test", "gw"), h)


async def _stack_rows(count: int) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        init_keys(tmp)
        d = Path(tmp)
        cfg = Config(path=d / "bench.toml", sip=SipSection(keepalive_interval=0.0),
                     tls=TlsSection(certificate=d / "gateway.crt", private_key=d / "gateway.key",
                                    ca_file=d / "ca.crt"),
                     listeners=(Listener("udp", "udp", "127.0.0.1", 0),
                                Listener("tcp", "tcp", "127.0.0.1", 0),
                                Listener("tls", "tls", "127.0.0.1", 0, "require")))
        server, client = SipStack(cfg, _answer), SipStack(cfg, _answer)
        await server.start()
        await client.start()
        rows = {}
        try:
            for transport in ("udp", "tcp", "tls"):
                host, port = server.bound(transport)
                target = Target(transport, host, port, transport,  # type: ignore[arg-type]
                                tls_identity=("sip:gateway.srtpgw.test",))
                await client.request(_options(-1), target)  # connect outside the clock
                window = asyncio.Semaphore(20)

                async def one(i: int, target: Target = target,
                              window: asyncio.Semaphore = window) -> None:
                    async with window:
                        resp = await client.request(_options(i), target)
                        assert resp.status == 200

                start, cpu0 = time.perf_counter(), time.process_time()
                await asyncio.gather(*(one(i) for i in range(count)))
                wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
                rows[f"OPTIONS txn, {transport.upper()} loopback"] = {
                    "messages": count, "seconds": round(wall, 3),
                    "msgs_per_s": round(count / wall), "msgs_per_cpu_s": round(count / cpu),
                    "us_per_msg": round(cpu / count * 1e6, 2),
                    "message_bytes": len(_options(0).to_bytes())}
        finally:
            await client.stop()
            await server.stop()
        return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--stack", type=int, default=0, help="OPTIONS transactions per transport")
    args = ap.parse_args()
    seconds = min(args.seconds, 30.0)
    rows = {"parse+serialize INVITE+SDP": run(seconds, parse_serialize),
            "INVITE server transaction": run(seconds, server_transaction(TransactionLayer()))}
    if args.stack > 0:
        rows.update(uvloop.run(_stack_rows(min(args.stack, 20000))))
    print(f"{'benchmark':<30}{'msgs/s':>10}{'msgs/cpu-s':>12}{'us/msg':>10}{'bytes':>8}")
    for name, r in rows.items():
        print(f"{name:<30}{r['msgs_per_s']:>10}{r['msgs_per_cpu_s']:>12}{r['us_per_msg']:>10}"
              f"{r['message_bytes']:>8}")
    parse = rows.pop("parse+serialize INVITE+SDP")
    print(json.dumps({"benchmark": "sip_parse", "goal_msgs_per_s": 20000, **parse,
                      "others": rows}))


if __name__ == "__main__":
    main()
