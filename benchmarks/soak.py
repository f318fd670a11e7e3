"""Soak: constant calls/s with media through the whole gateway, for a bounded time; is it flat?

SIPp UAC (``benchmarks/sipp/uac_media.xml``: each call plays SIPp's G.711 pcap as RTP while it is
held) -UDP-> srtpgw legacy trunk (plain RTP) -> secure trunk over UDP (SDES-SRTP, the relay
encrypts every packet) -UDP-> SIPp UAS. The gateway runs as its own process (``srtpgw run``).
Every ``--sample`` seconds: its RSS and open fds (/proc), and from /status the active calls,
asyncio tasks, SIP transactions, dialogs and relay sessions. After the load, ``--idle`` seconds
without calls (SIP timers J/K run out), then a last sample.

Pass: after the warm-up (``--warmup`` s: longer than timers D/J, 32 s at T1 = 0.5 s, since the
transactions of finished calls linger that long and grow until then) RSS stays within
``--rss-tolerance`` (5 %) of its post-warm-up level, fds and tasks stay within a small band, no
call fails, and after the idle period calls, transactions, dialogs and relay sessions are 0.

    .venv/bin/python benchmarks/soak.py [--cps 200] [--duration 120] [--hold-ms 2000]
        [--warmup 45] [--idle 40] [--sample 5]

The 10-minute soak of issue 24 is ``--duration 600``. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.config import HostPort  # noqa: E402
from gateway.ops.keys import init_keys  # noqa: E402
from gateway.ops.status import AdminUnreachable, request  # noqa: E402
from tests.interop.capture import loopback_address  # noqa: E402
from tests.interop.gateway import Gateway  # noqa: E402
from tests.interop.procs import Procs, free_port  # noqa: E402
from tests.interop.sipp import PLAIN, Sipp, sdes  # noqa: E402

FD_BAND = 16  # fds may move this much with calls in flight (sockets of calls being set up)
TASK_BAND = 16


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def sample(pid: int, admin: HostPort, t0: float, phase: str) -> dict[str, object]:
    row: dict[str, object] = {"t": round(time.monotonic() - t0, 1), "phase": phase,
                              "rss_mib": round(rss_mib(pid), 1), "fds": fds(pid)}
    try:
        doc = request(admin, "GET", "/status")[1]
    except AdminUnreachable:
        return row
    runtime = doc.get("runtime", {})
    row.update(calls=doc["calls"]["active"], tasks=runtime.get("tasks"),
               transactions=runtime.get("transactions"), dialogs=runtime.get("dialogs"),
               relay_sessions=runtime.get("relay_sessions"),
               media_in=doc["counters"]["media_packets_in"])
    return row


def counts(sipp: Sipp) -> tuple[int, int]:
    with open(sipp.dir / "stats.csv") as fh:
        rows = list(csv.reader(fh, delimiter=";"))
    head, last = rows[0], rows[-1]
    return int(last[head.index("SuccessfulCall(C)")]), int(last[head.index("FailedCall(C)")])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cps", type=float, default=200.0)
    ap.add_argument("--duration", type=float, default=120.0)
    ap.add_argument("--hold-ms", type=int, default=2000)
    ap.add_argument("--warmup", type=float, default=45.0)
    ap.add_argument("--idle", type=float, default=40.0)
    ap.add_argument("--sample", type=float, default=5.0)
    ap.add_argument("--rss-tolerance", type=float, default=0.05)
    ap.add_argument("--workdir", type=Path)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="srtpgw-soak-"))
    keys = init_keys(work / "keys", force=True)
    procs = Procs(work)
    calls = int(args.cps * args.duration)
    rows: list[dict[str, object]] = []
    try:
        uas_addr, uac_addr = loopback_address(), loopback_address()
        uas_port = free_port(uas_addr, tcp=False)
        concurrent = args.cps * (args.hold_ms / 1000 + 1)
        gw = Gateway(work, keys.dir, legacy_peer="127.0.0.9:9",
                     secure_peer=f"{uas_addr}:{uas_port}", legacy_sources=[f"{uac_addr}/32"],
                     secure_sources=[f"{uas_addr}/32"], secure_transport="udp",
                     rate=args.cps * 4, log_level="warning",
                     media_ports=max(400, int(concurrent * 4.5)))
        gw.start(procs)
        assert gw.proc is not None
        pid = gw.proc.popen.pid
        admin = HostPort(gw.address, gw.admin_port)
        t0 = time.monotonic()
        rows.append(sample(pid, admin, t0, "before"))
        uas = Sipp("uas", "uas_basic.xml", work, uas_addr, keys=sdes(), port=uas_port)
        uas.start(procs, calls=calls, limit=calls, hold_ms=args.hold_ms,
                  timeout=args.duration + 60, extra=())
        uac = Sipp("uac", "uac_media.xml", work, uac_addr, keys=dict(PLAIN))
        uac.start(procs, f"{gw.address}:{gw.udp_port}", calls=calls, rate=args.cps,
                  limit=int(concurrent * 2), hold_ms=args.hold_ms,
                  timeout=args.duration + 40, extra=())
        stop = threading.Event()

        def sampler() -> None:
            while not stop.wait(args.sample):
                t = time.monotonic() - t0
                phase = "warmup" if t < args.warmup else "load" if t <= args.duration \
                    else "ramp-down"
                rows.append(sample(pid, admin, t0, phase))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)

        thread = threading.Thread(target=sampler, daemon=True)
        thread.start()
        uac_status = uac.wait(args.duration + 60)
        stop.set()
        thread.join()
        ok, failed = counts(uac)
        rows.append(sample(pid, admin, t0, "end"))
        time.sleep(args.idle)
        rows.append(sample(pid, admin, t0, "idle"))
    finally:
        procs.close()
    load = [r for r in rows if r["phase"] == "load"]
    base = load[0] if load else rows[-1]
    rss_growth = (max(float(r["rss_mib"]) for r in load) / float(base["rss_mib"]) - 1) \
        if load else 0.0
    fd_spread = max(int(r["fds"]) for r in load) - min(int(r["fds"]) for r in load) if load else 0
    tasks = [int(r["tasks"]) for r in load if r.get("tasks") is not None]
    task_spread = max(tasks) - min(tasks) if tasks else 0
    idle = rows[-1]
    clean = all(idle.get(k) == 0 for k in ("calls", "transactions", "dialogs", "relay_sessions"))
    verdict = {
        "rss_flat": rss_growth <= args.rss_tolerance, "fds_flat": fd_spread <= FD_BAND,
        "tasks_flat": task_spread <= TASK_BAND, "no_failed_calls": failed == 0 and ok == calls,
        "idle_clean": clean,
    }
    cols = ("t", "phase", "rss_mib", "fds", "calls", "tasks", "transactions", "dialogs",
            "relay_sessions", "media_in")
    print(" ".join(f"{c:>14}" for c in cols))
    for r in rows:
        print(" ".join(f"{r.get(c, '')!s:>14}" for c in cols))
    before = float(rows[0]["rss_mib"])
    print(f"calls ok {ok}/{calls}, failed {failed} (sipp exit {uac_status}); RSS growth after "
          f"warm-up {rss_growth * 100:.1f} %; fd spread {fd_spread}; task spread {task_spread};"
          f" RSS before {before} MiB, after idle {idle['rss_mib']} MiB; "
          f"{'PASS' if all(verdict.values()) else 'FAIL'} {verdict}")
    print(json.dumps({"benchmark": "soak", "cps": args.cps, "duration": args.duration,
                      "hold_ms": args.hold_ms, "calls": calls, "ok": ok, "failed": failed,
                      "rss_growth_after_warmup": round(rss_growth, 4),
                      "fd_spread": fd_spread, "task_spread": task_spread,
                      "verdict": verdict, "pass": all(verdict.values()), "samples": rows}))
    return 0 if all(verdict.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
