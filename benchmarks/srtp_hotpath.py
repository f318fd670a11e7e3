"""SRTP relay hot path, in process: stock pylibsrtp vs the relay's per-packet function.

Per suite, one relayed packet is "unprotect with the inbound key, protect with the outbound key":
 (a) stock ``pylibsrtp.Session.unprotect`` + ``Session.protect`` (bytes in, bytes out);
 (b) ``LegStream.rtp_in`` of the relay on an SRTP<->SRTP stream, the packet copied into the shared
     buffer first as ``recvfrom_into`` would.
Prints a table (packets/s, µs/packet, ratio b/a) and a JSON line. No sockets.

    .venv/bin/python benchmarks/srtp_hotpath.py [--packets 20000] [--rounds 5] [--json-only]
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import time

import pylibsrtp

from gateway.media.api import SUITE_KEY_LENGTHS, LegConfig, SrtpParams, generate_params
from gateway.media.srtp import PacketBuffer, SrtpContext
from gateway.media.stream import LegStream

PROFILES = {
    "AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
    "AEAD_AES_128_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
    "AEAD_AES_256_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM,
}
PEER = ("127.0.0.1", 40000)


def rtp(seq: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, seq * 160 & 0xFFFFFFFF, 0x5EED) + bytes(160)


def stock_session(params: SrtpParams, outbound: bool) -> pylibsrtp.Session:
    policy = pylibsrtp.Policy(key=params.key, srtp_profile=PROFILES[params.suite],
                              ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound
                              else pylibsrtp.Policy.SSRC_ANY_INBOUND)
    policy.allow_repeat_tx = outbound
    return pylibsrtp.Session(policy)


def run_stock(rx_key: SrtpParams, tx_key: SrtpParams, packets: list[bytes]) -> float:
    rx, tx = stock_session(rx_key, False), stock_session(tx_key, True)
    unprotect, protect = rx.unprotect, tx.protect
    start = time.perf_counter()
    for p in packets:
        protect(unprotect(p))
    return time.perf_counter() - start


def run_relay(rx_key: SrtpParams, tx_key: SrtpParams, packets: list[bytes]) -> float:
    a, b = LegStream(1), LegStream(2)
    a.peer, b.peer = b, a
    a.configure(LegConfig(remote_rtp=PEER, rx=rx_key, tx=generate_params(rx_key.suite)))
    b.configure(LegConfig(remote_rtp=PEER, rx=generate_params(tx_key.suite), tx=tx_key))
    buf = PacketBuffer()
    data, rtp_in = buf.data, a.rtp_in
    start = time.perf_counter()
    for p in packets:
        n = len(p)
        data[:n] = p
        rtp_in(buf, n, PEER)
    elapsed = time.perf_counter() - start
    if a.packets_in != len(packets) or b.packets_out != len(packets):
        raise SystemExit(f"relay dropped packets: {a.stats()}")
    return elapsed


def measure(suite: str, count: int, rounds: int) -> dict[str, object]:
    rx_key, tx_key = generate_params(suite), generate_params(suite)
    sender = SrtpContext(rx_key, outbound=True)
    packets = [sender.protect(rtp(i)) for i in range(count)]
    check = SrtpContext(tx_key, outbound=False)
    row: dict[str, object] = {"suite": suite, "packets": count}
    runs_a: list[float] = []
    runs_b: list[float] = []
    for _ in range(rounds):  # interleaved, so both see the same background load
        if suite in PROFILES:
            runs_a.append(run_stock(rx_key, tx_key, packets))
        runs_b.append(run_relay(rx_key, tx_key, packets))
    best_a, best_b = (min(runs_a) if runs_a else None), min(runs_b)
    out = PacketBuffer()
    out.data[:len(packets[0])] = packets[0]
    a, b = LegStream(1), LegStream(2)
    a.peer, b.peer = b, a
    a.configure(LegConfig(remote_rtp=PEER, rx=rx_key, tx=tx_key))
    b.configure(LegConfig(remote_rtp=PEER, rx=tx_key, tx=tx_key))
    n = a.rtp_in(out, len(packets[0]), PEER)
    if check.unprotect(bytes(out.view[:n])) != rtp(0):
        raise SystemExit("relay output does not decrypt")
    for name, best in (("stock", best_a), ("relay", best_b)):
        if best is not None:
            row[f"{name}_pps"] = round(count / best)
            row[f"{name}_us_per_packet"] = round(best / count * 1e6, 3)
    if best_a is not None:
        row["ratio"] = round(best_a / best_b, 2)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=20000, help="packets per run (default 20000)")
    ap.add_argument("--rounds", type=int, default=5, help="runs per suite, best kept (default 5)")
    ap.add_argument("--json-only", action="store_true")
    args = ap.parse_args(argv)
    if not 1 <= args.packets <= 1_000_000 or not 1 <= args.rounds <= 20:
        ap.error("--packets must be 1..1000000 and --rounds 1..20")
    rows = [measure(suite, args.packets, args.rounds) for suite in SUITE_KEY_LENGTHS]
    if not args.json_only:
        print(f"{'suite':26} {'stock pps':>10} {'µs/pkt':>7} {'relay pps':>10} {'µs/pkt':>7} "
              f"{'b/a':>5}")
        for r in rows:
            print(f"{r['suite']:26} {r.get('stock_pps', 'n/a'):>10} "
                  f"{r.get('stock_us_per_packet', 'n/a'):>7} {r['relay_pps']:>10} "
                  f"{r['relay_us_per_packet']:>7} {r.get('ratio', 'n/a'):>5}")
    print(json.dumps({"benchmark": "srtp_hotpath", "results": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
