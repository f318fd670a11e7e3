"""The same media load through srtpgw's relay and through rtpengine, side by side.

Reuses benchmarks/media_load.py's generator: N sessions, each a plain RTP endpoint and an SDES
SRTP endpoint (AES_CM_128_HMAC_SHA1_80), paced 20 ms packets at the same total offered rate,
every received packet verified (decrypted with the relay's outbound key). Run 1: srtpgw's relay
process (``python -m gateway.media``) set up over its control socket. Run 2: rtpengine in
userspace (``--table=-1``), set up per session with an NG ``offer`` (plain side, RTP/AVP, asking
for RTP/SAVP towards the other side with the NULL suites disabled and DTLS off) and ``answer``
(the SRTP side picks AES_CM_128_HMAC_SHA1_80 and sends its own key). Plain <-> SRTP means
rtpengine decrypts and encrypts every packet, as srtpgw does; there is no key passthrough to
disable. Prints relay CPU µs/packet (utime+stime of the relay process over delivered packets),
their ratio, loss and one-way latency p50/p99 for each, then one JSON line.

    .venv/bin/python benchmarks/compare_rtpengine.py [--sessions 100] [--pps 10000]
        [--duration 8] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import media_load
from media_load import LoadGenerator, LoadResult, proc_cpu_s, proc_rss_kib

from gateway.media.api import SrtpParams

SUITE = "AES_CM_128_HMAC_SHA1_80"

# --------------------------------------------------------------------------- bencode (NG)

Bencodable = int | bytes | str | list[Any] | dict[str, Any]


def bencode(value: Bencodable) -> bytes:
    """BitTorrent bencoding, the NG protocol's body format."""
    if isinstance(value, bool):
        raise TypeError("bencode has no booleans")
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, list):
        return b"l" + b"".join(bencode(v) for v in value) + b"e"
    if isinstance(value, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in value.items())
        return b"d" + b"".join(bencode(k) + bencode(v) for k, v in items) + b"e"
    raise TypeError(f"cannot bencode {type(value).__name__}")


def bdecode(data: bytes) -> Any:
    """Decode one bencoded value (byte strings come back as str when they are UTF-8)."""
    value, end = _bdecode(data, 0)
    if end != len(data):
        raise ValueError("trailing bytes after bencoded value")
    return value


def _bdecode(data: bytes, i: int) -> tuple[Any, int]:
    c = data[i:i + 1]
    if c == b"i":
        end = data.index(b"e", i)
        return int(data[i + 1:end]), end + 1
    if c == b"l":
        out, i = [], i + 1
        while data[i:i + 1] != b"e":
            v, i = _bdecode(data, i)
            out.append(v)
        return out, i + 1
    if c == b"d":
        d, i = {}, i + 1
        while data[i:i + 1] != b"e":
            k, i = _bdecode(data, i)
            d[k], i = _bdecode(data, i)
        return d, i + 1
    if c.isdigit():
        colon = data.index(b":", i)
        n = int(data[i:colon])
        raw = data[colon + 1:colon + 1 + n]
        if len(raw) != n:
            raise ValueError("truncated bencoded string")
        try:
            return raw.decode(), colon + 1 + n
        except UnicodeDecodeError:
            return raw, colon + 1 + n
    raise ValueError(f"bad bencode at offset {i}")


class NgClient:
    """rtpengine's NG control protocol: ``<cookie> <bencoded dict>`` per UDP datagram."""

    def __init__(self, addr: tuple[str, int], timeout: float = 5.0) -> None:
        self.addr = addr
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(timeout)

    def command(self, command: str, **args: Bencodable) -> dict[str, Any]:
        cookie = secrets.token_hex(8).encode()
        self.sock.sendto(cookie + b" " + bencode({"command": command, **args}), self.addr)
        while True:
            data = self.sock.recv(65535)
            got, _, body = data.partition(b" ")
            if got == cookie:
                break
        reply = bdecode(body)
        if reply.get("result") not in ("ok", "pong"):
            raise RuntimeError(f"rtpengine {command}: {reply.get('error-reason', reply)}")
        return reply

    def close(self) -> None:
        self.sock.close()


# --------------------------------------------------------------------------- rtpengine run


def _sdp(port: int, proto: str, crypto: str = "") -> str:
    lines = ["v=0", f"o=- {port} 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
             f"m=audio {port} {proto} 0", "a=rtpmap:0 PCMU/8000", "a=sendrecv"]
    if crypto:
        lines.append(crypto)
    return "\r\n".join(lines) + "\r\n"


def _media(sdp: str) -> tuple[str, int]:
    host = re.search(r"^c=IN IP4 (\S+)", sdp, re.M)
    port = re.search(r"^m=audio (\d+) ", sdp, re.M)
    if not host or not port:
        raise RuntimeError(f"rtpengine SDP without address:\n{sdp}")
    return host.group(1), int(port.group(1))


def start_rtpengine(ng_port: int, port_min: int, port_max: int, log: Path
                    ) -> subprocess.Popen[bytes]:
    exe = shutil.which("rtpengine")
    if exe is None:
        raise SystemExit("rtpengine is not installed")
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [exe, "--config-file=none", "--table=-1", "--interface=127.0.0.1",
             f"--listen-ng=127.0.0.1:{ng_port}", "--foreground", "--log-stderr",
             "--log-level=5", f"--port-min={port_min}", f"--port-max={port_max}"],
            stdout=fh, stderr=subprocess.STDOUT)
    ng = NgClient(("127.0.0.1", ng_port), timeout=0.5)
    try:
        for _ in range(40):
            if proc.poll() is not None:
                raise SystemExit(f"rtpengine exited:\n{log.read_text()[-2000:]}")
            try:
                ng.command("ping")
                return proc
            except (TimeoutError, ConnectionRefusedError):
                time.sleep(0.25)
    finally:
        ng.close()
    proc.kill()
    raise SystemExit("rtpengine did not answer ping")


def setup_rtpengine(ng: NgClient, gen: LoadGenerator, sessions: int) -> None:
    """One call per session: the plain endpoint offers, the SRTP endpoint answers."""
    for i in range(sessions):
        (_, plain_port), (_, srtp_port) = gen.endpoints(i)
        call_id, from_tag, to_tag = f"load-{i}-{secrets.token_hex(4)}", f"a{i}", f"b{i}"
        offer = ng.command("offer", **{
            "call-id": call_id, "from-tag": from_tag, "sdp": _sdp(plain_port, "RTP/AVP"),
            "transport-protocol": "RTP/SAVP", "ICE": "remove", "DTLS": "off",
            "SDES": ["no-NULL_HMAC_SHA1_80", "no-NULL_HMAC_SHA1_32"],
            "replace": ["origin", "session-connection"]})
        to_srtp = offer["sdp"]
        m = re.search(rf"^a=crypto:(\d+) {SUITE} inline:([A-Za-z0-9+/=]+)", to_srtp, re.M)
        if m is None:
            raise RuntimeError(f"rtpengine offered no {SUITE}:\n{to_srtp}")
        if "NULL_" in to_srtp:
            raise RuntimeError("rtpengine offered a NULL suite despite the SDES flags")
        engine_key = SrtpParams(SUITE, base64.b64decode(m.group(2)))
        peer_key = media_load.generate_params(SUITE)
        inline = base64.b64encode(peer_key.key).decode()
        answer = ng.command("answer", **{
            "call-id": call_id, "from-tag": from_tag, "to-tag": to_tag,
            "sdp": _sdp(srtp_port, "RTP/SAVP", f"a=crypto:{m.group(1)} {SUITE} inline:{inline}"),
            "ICE": "remove", "replace": ["origin", "session-connection"]})
        gen.set_target(i, _media(answer["sdp"]), _media(to_srtp), peer_key, engine_key)


# --------------------------------------------------------------------------- both runs


def _measure(pid: int, gen: LoadGenerator, pps: float, duration: float
             ) -> tuple[LoadResult, float, int]:
    cpu0 = proc_cpu_s(pid)
    result = gen.run(pps, duration)
    return result, proc_cpu_s(pid) - cpu0, proc_rss_kib(pid)


def _row(name: str, result: LoadResult, cpu: float, rss: int) -> dict[str, Any]:
    return {"relay": name, "sent": result.sent, "received": result.received, "bad": result.bad,
            "loss_pct": round(result.loss_pct, 4),
            "cpu_us_per_packet": round(cpu / result.received * 1e6, 2)
            if result.received else None,
            "cpu_pct": round(100 * cpu / result.duration, 1),
            "latency_p50_us": round(result.percentile(0.50), 1),
            "latency_p99_us": round(result.percentile(0.99), 1), "rss_kib": rss}


def run_srtpgw(gen: LoadGenerator, args: argparse.Namespace, tmp: str) -> dict[str, Any]:
    control = os.path.join(tmp, "relay.sock")
    relay = media_load.start_relay(control, args.port_min, args.port_min + 3999, args.engine)
    try:
        async def prepare() -> None:
            client = await media_load.RelayClient.connect(control)
            await media_load.setup(client, gen, args.sessions, SUITE)
            await client.close()
        asyncio.run(prepare())
        return _row("srtpgw", *_measure(relay.pid, gen, args.pps, args.duration))
    finally:
        relay.terminate()
        relay.wait(10)


def run_rtpengine(gen: LoadGenerator, args: argparse.Namespace, tmp: str) -> dict[str, Any]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        ng_port = s.getsockname()[1]
    lo = args.port_min + 4000
    proc = start_rtpengine(ng_port, lo, lo + 3999, Path(tmp) / "rtpengine.log")
    ng = NgClient(("127.0.0.1", ng_port))
    try:
        setup_rtpengine(ng, gen, args.sessions)
        return _row("rtpengine", *_measure(proc.pid, gen, args.pps, args.duration))
    finally:
        ng.close()
        proc.terminate()
        proc.wait(10)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="srtpgw relay vs rtpengine, same media load")
    ap.add_argument("--sessions", type=int, default=100)
    ap.add_argument("--pps", type=float, default=10000.0, help="total offered packets/s")
    ap.add_argument("--duration", type=float, default=8.0, help="seconds per relay (<= 60)")
    ap.add_argument("--rounds", type=int, default=2,
                    help="alternating srtpgw/rtpengine rounds (the order flips each round); "
                         "the ratio uses each relay's median, which tames a shared machine")
    ap.add_argument("--port-min", type=int, default=48000,
                    help="srtpgw uses port-min..+3999, rtpengine the next 4000")
    ap.add_argument("--engine", choices=("native", "python"), default="native",
                    help="srtpgw's per-packet loop")
    args = ap.parse_args(argv)
    if not 1 <= args.sessions <= 1000 or not 0 < args.pps <= 100_000 or not (
            0 < args.duration <= 60) or not 1 <= args.rounds <= 5:
        ap.error("--sessions 1..1000, --pps up to 100000, --duration up to 60 s, --rounds 1..5")
    rows = []
    with tempfile.TemporaryDirectory(prefix="compare-rtpengine-") as tmp:
        for i in range(args.rounds):
            order = (run_srtpgw, run_rtpengine) if i % 2 == 0 else (run_rtpengine, run_srtpgw)
            for run in order:
                gen = LoadGenerator(args.sessions)
                try:
                    rows.append(run(gen, args, tmp))
                finally:
                    gen.close()
    print(f"\n{'relay':10} {'sent':>8} {'recv':>8} {'bad':>5} {'loss %':>7} {'cpu µs/pkt':>10} "
          f"{'cpu %':>6} {'p50 µs':>8} {'p99 µs':>8} {'RSS KiB':>8}")
    for r in rows:
        print(f"{r['relay']:10} {r['sent']:8d} {r['received']:8d} {r['bad']:5d} "
              f"{r['loss_pct']:7.3f} {r['cpu_us_per_packet']!s:>10} {r['cpu_pct']:6.1f} "
              f"{r['latency_p50_us']:8.1f} {r['latency_p99_us']:8.1f} {r['rss_kib']:8d}")
    def median_cpu(relay: str) -> float | None:
        values = [r["cpu_us_per_packet"] for r in rows
                  if r["relay"] == relay and r["cpu_us_per_packet"] is not None]
        return statistics.median(values) if values else None

    ours, theirs = median_cpu("srtpgw"), median_cpu("rtpengine")
    ratio = round(ours / theirs, 2) if ours and theirs else None
    print(f"median CPU µs/packet: srtpgw {ours}, rtpengine {theirs}; ratio {ratio}")
    print(json.dumps({"benchmark": "compare_rtpengine", "engine": args.engine,
                      "sessions": args.sessions,
                      "offered_pps": args.pps, "duration_s": args.duration, "suite": SUITE,
                      "median_cpu_us_per_packet": {"srtpgw": ours, "rtpengine": theirs},
                      "cpu_ratio_srtpgw_over_rtpengine": ratio, "runs": rows}))
    return 0 if all(r["bad"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
