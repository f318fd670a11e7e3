"""Where the gateway's memory goes under a call rate: tracemalloc snapshots of the real process.

The gateway runs as ``benchmarks/memory.py --serve CONFIG DIR`` (tracemalloc on, then the usual
``srtpgw run``); SIGUSR1 makes it dump a snapshot into DIR. The driver loads it with SIPp as
``soak.py`` does (UDP path, no media: signalling is what grows) at ``--cps`` for ``--duration``
seconds and takes snapshots before the load, at its end (calls up), just after the last call
ended (transactions of finished calls still linger for timers D/J/K) and after ``--idle`` s.
It prints the top allocation sites that grew between them, and per-call and per-transaction
figures from the traced totals and /status (calls, transactions).

    .venv/bin/python benchmarks/memory.py [--cps 100] [--duration 40] [--hold-ms 2000]
        [--idle 40] [--top 12]

Tracemalloc slows the gateway (2-3x); the figures are sizes, not speeds. Table, then JSON.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def serve(config: str, snapdir: str) -> int:
    tracemalloc.start(8)
    count = [0]

    def dump(_sig: int, _frame: object) -> None:
        # Collect first, so that sizes do not depend on when the (tuned, rare) cyclic GC last
        # ran; what the collection freed is itself a figure: garbage waiting for it.
        count[0] += 1
        held = tracemalloc.get_traced_memory()[0]
        found = gc.collect()
        freed = held - tracemalloc.get_traced_memory()[0]
        tracemalloc.take_snapshot().dump(os.path.join(snapdir, f"{count[0]}.snap"))
        Path(snapdir, f"{count[0]}.done").write_text(json.dumps(
            {"garbage_objects": found, "garbage_kib": round(freed / 1024)}))

    signal.signal(signal.SIGUSR1, dump)
    from gateway.cli import main as cli

    return cli(["run", "-c", config])


def drive(args: argparse.Namespace) -> int:
    from gateway.config import HostPort
    from gateway.ops.keys import init_keys
    from gateway.ops.status import AdminUnreachable, request
    from tests.interop.capture import loopback_address
    from tests.interop.gateway import Gateway
    from tests.interop.procs import Procs, free_port
    from tests.interop.sipp import PLAIN, Sipp, sdes

    work = args.workdir or Path(tempfile.mkdtemp(prefix="srtpgw-memory-"))
    snaps = work / "snapshots"
    snaps.mkdir(parents=True, exist_ok=True)
    keys = init_keys(work / "keys", force=True)
    procs = Procs(work)
    calls = int(args.cps * args.duration)
    points: list[dict[str, object]] = []
    try:
        uas_addr, uac_addr = loopback_address(), loopback_address()
        uas_port = free_port(uas_addr, tcp=False)
        concurrent = args.cps * (args.hold_ms / 1000 + 1)
        gw = Gateway(work, keys.dir, legacy_peer="127.0.0.9:9",
                     secure_peer=f"{uas_addr}:{uas_port}", legacy_sources=[f"{uac_addr}/32"],
                     secure_sources=[f"{uas_addr}/32"], secure_transport="udp",
                     rate=args.cps * 4, log_level="warning",
                     media_ports=max(400, int(concurrent * 4.5)))
        config = gw.write_config()
        admin = HostPort(gw.address, gw.admin_port)
        proc = procs.start("srtpgw", [sys.executable, __file__, "--serve", str(config),
                                      str(snaps)], cwd=ROOT)
        for _ in range(300):
            try:
                if request(admin, "GET", "/healthz")[0] == 200:
                    break
            except AdminUnreachable:
                pass
            time.sleep(0.1)

        def snapshot(name: str) -> None:
            n = len(points) + 1
            doc = request(admin, "GET", "/status")[1]
            proc.signal(signal.SIGUSR1)
            for _ in range(600):
                if (snaps / f"{n}.done").exists():
                    break
                time.sleep(0.1)
            with open(f"/proc/{proc.popen.pid}/status") as fh:
                rss = next(int(x.split()[1]) for x in fh if x.startswith("VmRSS:")) / 1024
            runtime = doc.get("runtime", {})
            garbage = json.loads((snaps / f"{n}.done").read_text())
            points.append({"point": name, "file": str(snaps / f"{n}.snap"), **garbage,
                           "rss_mib": round(rss, 1), "calls": doc["calls"]["active"],
                           "transactions": runtime.get("transactions"),
                           "dialogs": runtime.get("dialogs")})
            print(json.dumps({k: v for k, v in points[-1].items() if k != "file"}),
                  file=sys.stderr, flush=True)

        snapshot("before")
        uas = Sipp("uas", "uas_basic.xml", work, uas_addr, keys=sdes(), port=uas_port)
        uas.start(procs, calls=calls, limit=calls, hold_ms=args.hold_ms,
                  timeout=args.duration + 90, extra=())
        uac = Sipp("uac", "uac_basic.xml", work, uac_addr, keys=dict(PLAIN))
        uac.start(procs, f"{gw.address}:{gw.udp_port}", calls=calls, rate=args.cps,
                  limit=int(concurrent * 2), hold_ms=args.hold_ms,
                  timeout=args.duration + 60, extra=())
        time.sleep(args.duration)
        snapshot("load")
        uac.wait(args.duration + 90)
        time.sleep(1.0)
        snapshot("ended")
        time.sleep(args.idle)
        snapshot("idle")
    finally:
        procs.close()
    snaps_loaded = [tracemalloc.Snapshot.load(str(p["file"])) for p in points]
    totals = [sum(s.size for s in snap.statistics("filename")) for snap in snaps_loaded]
    for p, total in zip(points, totals, strict=True):
        p["traced_mib"] = round(total / 2**20, 2)
        del p["file"]
    print(f"{'point':8} {'rss MiB':>8} {'traced MiB':>10} {'calls':>6} {'txns':>7} "
          f"{'dialogs':>7} {'garbage KiB':>11}")
    for p in points:
        print(f"{p['point']:8} {p['rss_mib']:8} {p['traced_mib']:10} {p['calls']!s:>6} "
              f"{p['transactions']!s:>7} {p['dialogs']!s:>7} {p['garbage_kib']!s:>11}")
    growth = {}
    for (a, b) in ((0, 1), (1, 2), (0, 3)):
        stats = snaps_loaded[b].compare_to(snaps_loaded[a], "lineno")[:args.top]
        label = f"{points[a]['point']}->{points[b]['point']}"
        growth[label] = [{"site": str(s.traceback[0]), "size_diff_kib": round(s.size_diff / 1024),
                          "count_diff": s.count_diff} for s in stats]
        print(f"\ntop growth {label}:")
        for row in growth[label]:
            print(f"  {row['size_diff_kib']:>8} KiB {row['count_diff']:>8}  {row['site']}")
    # traced - traced(before) = calls * C + transactions * T at load, ended and idle: least
    # squares for C (one call, both legs, its dialogs) and T (one transaction) in bytes.
    rows = [(float(p["calls"]), float(p["transactions"]), float(t - totals[0]))
            for p, t in zip(points[1:], totals[1:], strict=True)]
    scc = sum(c * c for c, _, _ in rows)
    stt = sum(t * t for _, t, _ in rows)
    sct = sum(c * t for c, t, _ in rows)
    scy = sum(c * y for c, _, y in rows)
    sty = sum(t * y for _, t, y in rows)
    det = scc * stt - sct * sct
    per_call = (scy * stt - sty * sct) / det if det else None
    per_txn = (sty * scc - scy * sct) / det if det else None
    if per_call is not None and per_call < 0:
        per_call = None  # calls and transactions moved together in this run: not separable
    print(f"\nper call (both legs, dialogs, media session): "
          f"{per_call and per_call / 1024:.1f} KiB; per transaction (kept for timers D/J/K after"
          f" the call): {per_txn and per_txn / 1024:.1f} KiB")
    print(json.dumps({"benchmark": "memory", "cps": args.cps, "duration": args.duration,
                      "hold_ms": args.hold_ms, "points": points,
                      "per_transaction_kib": per_txn and round(per_txn / 1024, 2),
                      "per_call_kib": per_call and round(per_call / 1024, 2),
                      "growth": growth}))
    return 0


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        return serve(sys.argv[2], sys.argv[3])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cps", type=float, default=100.0)
    ap.add_argument("--duration", type=float, default=40.0)
    ap.add_argument("--hold-ms", type=int, default=2000)
    ap.add_argument("--idle", type=float, default=40.0)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--workdir", type=Path)
    return drive(ap.parse_args())


if __name__ == "__main__":
    sys.exit(main())
