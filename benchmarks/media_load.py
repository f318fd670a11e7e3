"""Media relay load test: the relay in its own process, a paced RTP/SRTP generator in this one.

N sessions (default 200), each with a plain RTP endpoint on leg 0 and an SRTP endpoint on leg 1,
both sending 20 ms packets to the relay; the offered rate is spread evenly over the 2N streams.
Every received packet is verified (the SRTP side decrypts it with the relay's outbound key, the
plain side checks the sender's SSRC). Reports delivered pps, loss, one-way latency through the
relay (p50/p99: the sender's CLOCK_REALTIME stamp in the payload, taken just before sendto, to the
kernel's SO_TIMESTAMPNS stamp when the packet reached the receiving socket, so the generator's
own scheduling delays do not count) and the same for a direct
generator-to-generator baseline, whose difference is the latency the relay adds; relay CPU µs/packet
(utime+stime from /proc/<pid>/stat over relayed packets), relay RSS per session and the
generator's own CPU. Progress line each second, then a table and one JSON line.

    .venv/bin/python benchmarks/media_load.py [--sessions 200] [--pps 20000] [--duration 10]
        [--engine native|python]

The generator (``LoadGenerator``) is reusable against any relay: make it, read
``endpoints(i)`` to tell the relay where session i's peers are, call ``set_target`` with the
relay's addresses and keys for session i, then ``run``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from gateway.media.api import Address, LegConfig, RelayTotals, SrtpParams, generate_params
from gateway.media.control import RelayClient
from gateway.media.srtp import PacketBuffer, SrtpContext, protect_rtp, unprotect_rtp

PAYLOAD = 160  # PCMU, 20 ms
_HDR = struct.Struct("!BBHII")
_STAMP = struct.Struct("!Q")
_TIMESPEC = struct.Struct("@qq")
_ANC = socket.CMSG_SPACE(_TIMESPEC.size)
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; Python < 3.13 lacks the name
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class _Target:
    plain_to: Address        # relay's address for the plain endpoint (leg 0)
    srtp_to: Address         # relay's address for the SRTP endpoint (leg 1)
    tx: SrtpContext | None   # what the SRTP endpoint encrypts with (the relay's rx key)
    rx: SrtpContext | None   # what the relay encrypts with towards the SRTP endpoint


@dataclass
class LoadResult:
    offered_pps: float
    duration: float
    sent: int
    received: int
    bad: int
    latencies_us: list[float] = field(repr=False)
    generator_cpu_s: float = 0.0

    @property
    def loss_pct(self) -> float:
        return 100.0 * (self.sent - self.received) / self.sent if self.sent else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies_us:
            return float("nan")
        ordered = sorted(self.latencies_us)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class LoadGenerator:
    """2 UDP endpoints per session (plain, SRTP) on ``host``; paced sending, verified receiving."""

    def __init__(self, sessions: int, host: str = "127.0.0.1") -> None:
        self.socks: list[socket.socket] = []
        for _ in range(2 * sessions):
            s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                              socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            s.bind((host, 0))
            s.setblocking(False)
            self.socks.append(s)
        self.targets: list[_Target | None] = [None] * sessions

    def endpoints(self, i: int) -> tuple[Address, Address]:
        """Session i's (plain endpoint, SRTP endpoint) addresses, to signal to the relay."""
        return self.socks[2 * i].getsockname()[:2], self.socks[2 * i + 1].getsockname()[:2]

    def set_target(self, i: int, plain_to: Address, srtp_to: Address,
                   srtp_tx: SrtpParams | None, srtp_rx: SrtpParams | None) -> None:
        """Where session i sends, and the SRTP endpoint's keys (None = plain on both legs)."""
        self.targets[i] = _Target(
            plain_to, srtp_to,
            SrtpContext(srtp_tx, outbound=True) if srtp_tx else None,
            SrtpContext(srtp_rx, outbound=False) if srtp_rx else None)

    def close(self) -> None:
        for s in self.socks:
            s.close()

    def run(self, pps: float, duration: float, progress: Any = None, drain: float = 0.5
            ) -> LoadResult:
        """Send ``pps`` packets/s in total for ``duration`` s, round-robin over all streams."""
        targets = [t for t in self.targets if t is not None]
        if len(targets) != len(self.targets):
            raise ValueError("set_target() every session before run()")
        nstreams = len(self.socks)
        # stream k sends from socks[k] to its relay address; SSRC k identifies it
        dests = []
        txs = []
        for t in targets:
            dests += [t.plain_to, t.srtp_to]
            txs += [None, t.tx]
        # a packet arriving on socks[k] was sent by stream k ^ 1 (the other leg of the session)
        rxs: list[SrtpContext | None] = []
        for t in targets:
            rxs += [None, t.rx]
        fd_index = {s.fileno(): k for k, s in enumerate(self.socks)}
        ep = select.epoll()
        for s in self.socks:
            ep.register(s.fileno(), select.EPOLLIN)
        buf = PacketBuffer()
        out = PacketBuffer()
        data, view, cdata, lenp = buf.data, buf.view, buf.cdata, buf.length
        odata, oview, ocdata, olenp = out.data, out.view, out.cdata, out.length
        latencies: list[float] = []
        sent = received = bad = 0
        seqs = [0] * nstreams
        clock = time.monotonic_ns
        wall = time.time_ns  # same clock as the kernel's SO_TIMESTAMPNS receive stamps
        bufs = [data]
        cpu0 = time.process_time()
        t0 = clock()
        end = t0 + int(duration * 1e9)
        stop_rx = end + int(drain * 1e9)
        next_progress = t0 + 1_000_000_000
        interval = 1e9 / pps
        odata[12:12 + PAYLOAD] = bytes(PAYLOAD)
        while True:
            now = clock()
            if now < end:
                due = int((now - t0) / interval) + 1
                while sent < due:
                    k = sent % nstreams
                    seq = seqs[k]
                    seqs[k] = seq + 1
                    _HDR.pack_into(odata, 0, 0x80, 0, seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, k)
                    _STAMP.pack_into(odata, 12, wall())
                    n = 12 + PAYLOAD
                    tx = txs[k]
                    if tx is not None:
                        olenp[0] = n
                        protect_rtp(tx.handle, ocdata, olenp)
                        n = olenp[0]
                    try:  # noqa: SIM105 - a context manager per packet costs more
                        self.socks[k].sendto(oview[:n], dests[k])
                    except BlockingIOError:
                        pass  # the packet counts as lost
                    sent += 1
                timeout = max(0.0, (t0 + due * interval - clock()) / 1e9)
            elif now < stop_rx:
                timeout = (stop_rx - now) / 1e9
            else:
                break
            for fd, _ in ep.poll(min(timeout, 0.01), 256):
                k = fd_index[fd]
                sock = self.socks[k]
                rx = rxs[k]
                while True:
                    try:
                        n, anc, _flags, _addr = sock.recvmsg_into(bufs, _ANC)
                    except BlockingIOError:
                        break
                    arrived = _TIMESPEC.unpack(anc[0][2]) if anc else (0, wall())
                    arrived_ns = arrived[0] * 1_000_000_000 + arrived[1]
                    if rx is not None:
                        lenp[0] = n
                        if unprotect_rtp(rx.handle, cdata, lenp):
                            bad += 1
                            continue
                        n = lenp[0]
                    if n != 12 + PAYLOAD or _HDR.unpack_from(data, 0)[4] != k ^ 1:
                        bad += 1
                        continue
                    received += 1
                    latencies.append((arrived_ns - _STAMP.unpack_from(data, 12)[0]) / 1000)
            if progress is not None and now >= next_progress:
                next_progress += 1_000_000_000
                progress(min(now, end) - t0, sent, received, bad)
        ep.close()
        del view
        return LoadResult(pps, duration, sent, received, bad, latencies,
                          time.process_time() - cpu0)


# --------------------------------------------------------------------------- relay process


def proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def proc_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def start_relay(control: str, port_min: int, port_max: int, engine: str = "native"
                ) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "gateway.media", "--control", control,
                             "--port-min", str(port_min), "--port-max", str(port_max),
                             "--engine", engine], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line or not json.loads(line).get("ready"):
        proc.kill()
        raise SystemExit("relay did not start")
    return proc


async def setup(client: RelayClient, gen: LoadGenerator, sessions: int, suite: str,
                worker: int = 0, workers: int = 1) -> None:
    """Sessions worker, worker + workers, ... of the generator, on this relay."""
    mine = list(range(worker, sessions, workers))
    infos = await client.create_sessions(len(mine))
    for i, info in zip(mine, infos, strict=True):
        plain_peer, srtp_peer = gen.endpoints(i)
        peer_key, relay_key = generate_params(suite), generate_params(suite)
        await client.update_leg(info.session_id, 0, 0, LegConfig(remote_rtp=plain_peer))
        await client.update_leg(info.session_id, 1, 0, LegConfig(remote_rtp=srtp_peer,
                                                                  rx=peer_key, tx=relay_key))
        gen.set_target(i, info.local(0).rtp, info.local(1).rtp, peer_key, relay_key)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="srtpgw media relay load test")
    ap.add_argument("--sessions", type=int, default=200)
    ap.add_argument("--pps", type=float, default=20000.0, help="total offered packets/s")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of traffic (<= 120)")
    ap.add_argument("--suite", default="AES_CM_128_HMAC_SHA1_80")
    ap.add_argument("--port-min", type=int, default=46000)
    ap.add_argument("--port-max", type=int, default=47999)
    ap.add_argument("--baseline", type=float, default=3.0,
                    help="seconds of direct generator-to-generator traffic first, to subtract "
                         "the generator's own latency (0 = skip)")
    ap.add_argument("--quiet", action="store_true", help="no progress lines")
    ap.add_argument("--engine", choices=("native", "python"), default="native",
                    help="the relay's per-packet loop (native falls back to python if not built)")
    ap.add_argument("--workers", type=int, default=1,
                    help="relay processes, each with its slice of the port range; sessions are "
                         "spread evenly over them")
    ap.add_argument("--kernel-floor", action="store_true",
                    help="relay through benchmarks/kernel_floor.c instead (built with cc): the "
                         "same recvmmsg/sendmmsg syscalls, no SRTP, plain on both legs")
    args = ap.parse_args(argv)
    if not 1 <= args.sessions <= 2000 or not 0 < args.pps <= 200_000 or not (
            0 < args.duration <= 120) or not 0 <= args.baseline <= 60:
        ap.error("--sessions 1..2000, --pps up to 200000, --duration up to 120 s, "
                 "--baseline up to 60 s")
    if not 1 <= args.workers <= 16 or (args.port_max - args.port_min + 1) // args.workers < (
            4 * args.sessions // args.workers + 4):
        ap.error("--workers 1..16, each with room for its sessions in the port range")

    with tempfile.TemporaryDirectory(prefix="srtpgw-load-") as tmp:
        gen = LoadGenerator(args.sessions)
        relays: list[subprocess.Popen[bytes]] = []
        try:
            if args.kernel_floor:
                relays.append(start_floor(tmp, args.port_min, gen, args.sessions))
                return _run(args, relays, [], gen)
            span = (args.port_max - args.port_min + 1) // args.workers // 2 * 2
            controls = [os.path.join(tmp, f"relay{w}.sock") for w in range(args.workers)]
            for w, control in enumerate(controls):
                lo = args.port_min + w * span
                relays.append(start_relay(control, lo, lo + span - 1, args.engine))
            return _run(args, relays, controls, gen)
        finally:
            gen.close()
            for relay in relays:
                relay.terminate()
                relay.wait(10)


def start_floor(tmp: str, port_min: int, gen: LoadGenerator, sessions: int
                ) -> subprocess.Popen[bytes]:
    """Build and start the kernel floor; session i is plain on both legs."""
    exe = os.path.join(tmp, "kernel_floor")
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernel_floor.c")
    subprocess.run(["cc", "-O2", "-o", exe, src], check=True)
    proc = subprocess.Popen([exe, str(port_min), str(sessions)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("".join(f"{gen.endpoints(i)[0][1]} {gen.endpoints(i)[1][1]}\n"
                             for i in range(sessions)).encode())
    proc.stdin.close()
    if proc.stdout.readline().strip() != b"ready":
        proc.kill()
        raise SystemExit("kernel floor did not start (its ports must be free: use a --port-min "
                         "below the ephemeral range)")
    return proc


def floor_targets(gen: LoadGenerator, port_min: int, sessions: int) -> None:
    for i in range(sessions):
        base = port_min + 4 * i
        gen.set_target(i, ("127.0.0.1", base), ("127.0.0.1", base + 2), None, None)


async def _prepare(controls: list[str], gen: LoadGenerator, args: argparse.Namespace
                   ) -> list[RelayTotals]:
    """Session i goes to worker i mod N: the least loaded, as all sessions carry equal load."""
    out = []
    for w, control in enumerate(controls):
        client = await RelayClient.connect(control)
        await setup(client, gen, args.sessions, args.suite, w, len(controls))
        out.append(await client.fetch_totals())
        await client.close()
    return out


async def _fetch_totals(controls: list[str]) -> list[RelayTotals]:
    out = []
    for control in controls:
        client = await RelayClient.connect(control)
        out.append(await client.fetch_totals())
        await client.close()
    return out


def _run(args: argparse.Namespace, relays: list[subprocess.Popen[bytes]], controls: list[str],
         gen: LoadGenerator) -> int:
    """Baseline (generator to itself), then the relayed run; the generator runs in this
    process's main thread, so no other thread competes with it for the GIL."""
    baseline: LoadResult | None = None
    if args.baseline > 0:
        for i in range(args.sessions):
            plain_peer, srtp_peer = gen.endpoints(i)
            gen.set_target(i, srtp_peer, plain_peer, None, None)
        baseline = gen.run(args.pps, args.baseline)
    pids = [r.pid for r in relays]
    rss_empty = sum(proc_rss_kib(pid) for pid in pids)
    before = asyncio.run(_prepare(controls, gen, args))
    if not controls:  # the kernel floor: after the baseline, which set direct targets
        floor_targets(gen, args.port_min, args.sessions)

    def cpu() -> float:
        return sum(proc_cpu_s(pid) for pid in pids)

    cpu_before = cpu()
    last = [time.monotonic(), cpu_before]

    def progress(elapsed_ns: int, sent: int, received: int, bad: int) -> None:
        if args.quiet:
            return
        now, used = time.monotonic(), cpu()
        load = 100 * (used - last[1]) / max(1e-9, now - last[0])
        last[:] = [now, used]
        print(f"  t={elapsed_ns / 1e9:5.1f}s sent={sent} received={received} bad={bad} "
              f"relay_cpu={load:5.1f}%", file=sys.stderr, flush=True)

    result = gen.run(args.pps, args.duration, progress)
    cpu_used = cpu() - cpu_before
    rss_loaded = sum(proc_rss_kib(pid) for pid in pids)
    after = asyncio.run(_fetch_totals(controls))
    # the floor keeps no counters: what the generator received is what it relayed
    relayed = (sum(a.packets_out - b.packets_out for a, b in zip(after, before, strict=True))
               if controls else result.received)
    drops: dict[str, int] = {}
    for a, b in zip(after, before, strict=True):
        for k, v in a.drops.items():
            if v - b.drops.get(k, 0):
                drops[k] = drops.get(k, 0) + v - b.drops.get(k, 0)
    report = {
        "benchmark": "media_load",
        "engine": "kernel_floor" if args.kernel_floor else args.engine,
        "workers": len(relays), "sessions": args.sessions,
        "suite": None if args.kernel_floor else args.suite,
        "offered_pps": args.pps, "duration_s": args.duration,
        "sent": result.sent, "received": result.received, "bad": result.bad,
        "delivered_pps": round(result.received / args.duration),
        "loss_pct": round(result.loss_pct, 4),
        "latency_p50_us": round(result.percentile(0.50), 1),
        "latency_p99_us": round(result.percentile(0.99), 1),
        "latency_max_us": round(max(result.latencies_us, default=float("nan")), 1),
        "latency_over_2ms_pct": round(100 * sum(x > 2000 for x in result.latencies_us)
                                      / max(1, len(result.latencies_us)), 3),
        "baseline_p50_us": round(baseline.percentile(0.50), 1) if baseline else None,
        "baseline_p99_us": round(baseline.percentile(0.99), 1) if baseline else None,
        "added_p50_us": round(result.percentile(0.50) - baseline.percentile(0.50), 1)
        if baseline else None,
        "added_p99_us": round(result.percentile(0.99) - baseline.percentile(0.99), 1)
        if baseline else None,
        "relay_packets": relayed,
        "relay_cpu_us_per_packet": round(cpu_used / relayed * 1e6, 2) if relayed else None,
        "relay_cpu_pct": round(100 * cpu_used / args.duration, 1),
        "relay_rss_kib_per_session": round((rss_loaded - rss_empty) / args.sessions, 2),
        "relay_rss_kib": rss_loaded,
        "relay_drops": drops,
        "generator_cpu_us_per_packet": round(
            result.generator_cpu_s / max(1, result.sent + result.received) * 1e6, 2),
    }
    rows = [("engine / workers", f"{report['engine']} / {report['workers']}"),
            ("sessions", report["sessions"]), ("offered pps", args.pps),
            ("delivered pps", report["delivered_pps"]), ("loss %", report["loss_pct"]),
            ("bad packets", report["bad"]),
            ("latency p50 / p99 µs", f"{report['latency_p50_us']} / {report['latency_p99_us']}"),
            ("direct p50 / p99 µs", f"{report['baseline_p50_us']} / {report['baseline_p99_us']}"),
            ("added p50 / p99 µs", f"{report['added_p50_us']} / {report['added_p99_us']}"),
            ("relay CPU µs/packet", report["relay_cpu_us_per_packet"]),
            ("relay CPU %", report["relay_cpu_pct"]),
            ("relay RSS KiB/session", report["relay_rss_kib_per_session"]),
            ("generator CPU µs/packet", report["generator_cpu_us_per_packet"])]
    for name, value in rows:
        print(f"{name:26} {value}")
    print(json.dumps(report))
    return 0 if result.bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
