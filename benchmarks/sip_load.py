"""SIP call-rate ramp through srtpgw with SIPp: calls/s sustained with zero failures.

Each call is a full INVITE (SDP offer) / 200 (SDP answer) / ACK / BYE, so every call makes the
gateway rewrite SDP, mint SDES keys and allocate relay ports on both legs. Paths:

  udp     SIPp UAC -UDP-> srtpgw legacy trunk (plain RTP) -> secure trunk over UDP (SDES-SRTP,
          keys in clear: a signalling baseline without TLS) -UDP-> SIPp UAS
  tls     SIPp UAC -UDP-> srtpgw legacy trunk -> secure trunk over mutual TLS -> Kamailio (tls
          module) -UDP-> SIPp UAS
  tls-in  SIPp UAC (SDES offer) -UDP-> Kamailio -> mutual TLS -> srtpgw secure trunk -> legacy
          trunk -UDP-> SIPp UAS

The rate steps up until a step has a failed or missing call (or the time budget is spent). Per
step: achieved calls/s, failures, INVITE->200 response time p50/p99 (SIPp -trace_rtt), gateway
CPU (% of one core, utime+stime of its process tree) and peak RSS. Table, then one JSON line.

    .venv/bin/python benchmarks/sip_load.py [--path udp|tls|tls-in|all] [--rates 50,100,200,300,400]
        [--step-seconds 8] [--hold-ms 500] [--max-seconds 300] [--profile]

``--profile``: py-spy (a dev tool: ``.venv/bin/pip install py-spy``) samples the gateway during
each step into ``<workdir>/<path>/profile-<rate>.txt`` (collapsed stacks, flamegraph input).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.ops.keys import init_keys  # noqa: E402
from tests.interop.capture import loopback_address  # noqa: E402
from tests.interop.gateway import Gateway  # noqa: E402
from tests.interop.kamailio import Kamailio  # noqa: E402
from tests.interop.procs import Procs, free_port  # noqa: E402
from tests.interop.sipp import PLAIN, Sipp, sdes  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
PORTS_PER_CALL = 4     # 2 legs x the relay's even/odd (RTP, RTCP) port pair
SETUP_SLACK_S = 5.0    # calls still ringing or awaiting teardown under load (p99 setup reached s)


def media_ports(top_cps: float, hold_ms: int) -> int:
    """A relay port range large enough for the calls live at the top rate: each lives its hold
    time plus set-up and tear-down, which stretch to seconds once the gateway saturates (4000
    ports ran out at 400 calls/s)."""
    live = top_cps * (hold_ms / 1000 + SETUP_SLACK_S)
    return max(4000, int(live * PORTS_PER_CALL))


@dataclass
class Step:
    path: str
    target_cps: float
    calls: int
    ok: int
    failed: int
    achieved_cps: float
    rt_p50_ms: float | None
    rt_p99_ms: float | None
    gw_cpu_pct: float
    gw_cpu_ms_per_call: float
    gw_rss_mib: float


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (relay workers, if the gateway runs any)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += parents.get(p, [])
    return out


def _cpu_seconds(pids: list[int]) -> float:
    total = 0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def _rss_mib(pids: list[int]) -> float:
    total = 0
    for p in pids:
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * PAGE
        except OSError:
            continue
    return total / 2**20


class RssSampler(threading.Thread):
    """Peak RSS of a process tree, sampled every 0.25 s while a step runs."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop_flag = pid, 0.0, threading.Event()

    def run(self) -> None:
        while not self.stop_flag.wait(0.25):
            self.peak = max(self.peak, _rss_mib(_tree(self.pid)))


def _rtts(uac: Sipp) -> list[float]:
    """INVITE->200 times (ms) of every successful call, from SIPp's -trace_rtt file."""
    out = []
    for f in uac.dir.glob("*_rtt.csv"):
        with open(f) as fh:
            for row in csv.reader(fh, delimiter=";"):
                if len(row) >= 3 and row[2].strip() == "1":
                    try:
                        out.append(float(row[1]))
                    except ValueError:
                        continue
    return out


def _counts(uac: Sipp) -> tuple[int, int]:
    """(successful, failed) calls from SIPp's final statistics line."""
    with open(uac.dir / "stats.csv") as fh:
        rows = list(csv.reader(fh, delimiter=";"))
    head, last = rows[0], rows[-1]
    return (int(last[head.index("SuccessfulCall(C)")]), int(last[head.index("FailedCall(C)")]))


def _answer_rate(uac: Sipp) -> float:
    """Calls answered per second: the spread of the 200-received stamps in the rtt file."""
    stamps = []
    for f in uac.dir.glob("*_rtt.csv"):
        with open(f) as fh:
            for row in csv.reader(fh, delimiter=";"):
                if len(row) >= 3 and row[2].strip() == "1":
                    try:
                        stamps.append(float(row[0]))
                    except ValueError:
                        continue
    if len(stamps) < 2:
        return 0.0
    return (len(stamps) - 1) * 1000.0 / (max(stamps) - min(stamps))


def _pctl(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def _py_spy() -> str | None:
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


def _profiler(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """py-spy sampling ``pid`` for ``seconds`` into ``out`` (None without py-spy)."""
    exe = _py_spy()
    if exe is None:
        print("py-spy not found: no profile", file=sys.stderr)
        return None
    return subprocess.Popen([exe, "record", "--pid", str(pid), "--rate", "250", "--duration",
                             str(max(1, int(seconds))), "--format", "raw", "--nonblocking",
                             "-o", str(out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def run_path(path: str, rates: list[float], step_seconds: float, hold_ms: int,
             deadline: float, work: Path, profile: bool = False) -> list[Step]:
    keys = init_keys(work / "keys", force=True)
    procs = Procs(work)
    steps: list[Step] = []
    try:
        uas_addr, uac_addr = loopback_address(), loopback_address()
        uas_port = free_port(uas_addr, tcp=False)  # one port for all steps: peers point at it
        uas_at = f"{uas_addr}:{uas_port}"
        kam = None
        if path != "udp":
            kam = Kamailio("kamailio", work, loopback_address(), tls_target="sip:127.0.0.9:9",
                           udp_target=f"sip:{uas_at}" if path == "tls" else "sip:127.0.0.9:9",
                           certificate=keys.peer_cert, private_key=keys.peer_key,
                           ca_file=keys.ca_cert)
            secure_peer = f"{kam.address}:{kam.tls_port}"
            # Kamailio's outgoing TLS connections leave from 127.0.0.1
            secure_sources = [f"{kam.address}/32", "127.0.0.1/32"]
        else:
            secure_peer, secure_sources = uas_at, [f"{uas_addr}/32"]
        inbound = path == "tls-in"  # calls enter on the secure side, leave on the legacy side
        gw = Gateway(work, keys.dir, legacy_peer=uas_at if inbound else "127.0.0.9:9",
                     secure_peer=secure_peer,
                     legacy_sources=[f"{uas_addr if inbound else uac_addr}/32"],
                     secure_sources=secure_sources,
                     secure_transport="udp" if path == "udp" else "tls",
                     rate=max(rates) * 4, log_level="warning",
                     media_ports=media_ports(max(rates), hold_ms))
        if kam is not None and inbound:
            kam.tls_target = f"sip:{gw.address}:{gw.tls_port};transport=tls"
        gw.start(procs)
        if kam is not None:
            kam.start(procs)
        assert gw.proc is not None
        target = kam.udp_addr if kam is not None and inbound else f"{gw.address}:{gw.udp_port}"
        for i, rate in enumerate(rates):
            if time.monotonic() + step_seconds + 20 > deadline:
                print(f"[{path}] time budget spent before {rate:g} calls/s", file=sys.stderr)
                break
            calls = max(1, int(rate * step_seconds))
            step_dir = work / f"step-{i}"
            step_dir.mkdir()
            uas = Sipp("uas", "uas_basic.xml", step_dir, uas_addr,
                       keys=dict(PLAIN) if inbound else sdes(), port=uas_port)
            uas_proc = uas.start(procs, calls=calls, limit=calls * 2, hold_ms=hold_ms,
                                 timeout=step_seconds + 20, extra=())
            uac = Sipp("uac", "uac_basic.xml", step_dir, uac_addr,
                       keys=sdes() if inbound else dict(PLAIN))
            pids = _tree(gw.proc.popen.pid)
            cpu0, t0 = _cpu_seconds(pids), time.monotonic()
            sampler = RssSampler(gw.proc.popen.pid)
            sampler.start()
            spy = (_profiler(gw.proc.popen.pid, step_seconds, work / f"profile-{rate:g}.txt")
                   if profile else None)
            uac.start(procs, target, calls=calls, rate=rate,
                      limit=max(100, int(rate * 4)), hold_ms=hold_ms,
                      timeout=step_seconds + 15, extra=("-trace_rtt", "-rtt_freq", "1"))
            uac_status = uac.wait(step_seconds + 25)
            wall = time.monotonic() - t0
            cpu = _cpu_seconds(pids) - cpu0
            sampler.stop_flag.set()
            if spy is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    spy.wait(10)
            # let the UAS finish the last BYEs (a late one would hit the next step's UAS);
            # wait() stops it if it overruns
            with contextlib.suppress(subprocess.TimeoutExpired):
                uas_proc.wait(5)
            ok, failed = _counts(uac)
            rtts = _rtts(uac)
            step = Step(path, rate, calls, ok, failed + (calls - ok - failed),
                        _answer_rate(uac), _pctl(rtts, 50), _pctl(rtts, 99),
                        100.0 * cpu / wall if wall else 0.0,
                        1000.0 * cpu / ok if ok else 0.0, sampler.peak)
            steps.append(step)
            print(f"[{path}] {rate:g} calls/s: ok {ok}/{calls}, failed {step.failed}, "
                  f"gw cpu {step.gw_cpu_pct:.0f}% ({step.gw_cpu_ms_per_call:.2f} ms/call), "
                  f"sipp exit {uac_status}", file=sys.stderr)
            if step.failed:
                break
    finally:
        procs.close()
    return steps


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--path", choices=("udp", "tls", "tls-in", "all"), default="all")
    ap.add_argument("--rates", default="50,100,200,300,400")
    ap.add_argument("--step-seconds", type=float, default=8.0)
    ap.add_argument("--hold-ms", type=int, default=500)
    ap.add_argument("--max-seconds", type=float, default=300.0)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--profile", action="store_true",
                    help="sample the gateway with py-spy during each step")
    args = ap.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",")]
    deadline = time.monotonic() + args.max_seconds
    work = args.workdir or Path(tempfile.mkdtemp(prefix="sip_load-"))
    steps: list[Step] = []
    for path in (("udp", "tls", "tls-in") if args.path == "all" else (args.path,)):
        (work / path).mkdir(parents=True, exist_ok=True)
        steps += run_path(path, rates, args.step_seconds, args.hold_ms, deadline, work / path,
                          args.profile)
    print(f"\n{'path':6} {'target':>7} {'calls':>6} {'ok':>6} {'failed':>6} {'cps':>7} "
          f"{'p50 ms':>7} {'p99 ms':>7} {'gw cpu%':>7} {'ms/call':>7} {'gw MiB':>7}")
    for s in steps:
        def ms(v: float | None) -> str:
            return "-" if v is None else f"{v:.1f}"
        print(f"{s.path:6} {s.target_cps:7g} {s.calls:6d} {s.ok:6d} {s.failed:6d} "
              f"{s.achieved_cps:7.1f} {ms(s.rt_p50_ms):>7} {ms(s.rt_p99_ms):>7} "
              f"{s.gw_cpu_pct:7.0f} {s.gw_cpu_ms_per_call:7.2f} {s.gw_rss_mib:7.1f}")
    sustained = {p: max((s.achieved_cps for s in steps if s.path == p and not s.failed),
                        default=0.0) for p in {s.path for s in steps}}
    print(json.dumps({"benchmark": "sip_load", "hold_ms": args.hold_ms,
                      "step_seconds": args.step_seconds, "workdir": str(work),
                      "sustained_cps_zero_failures": sustained,
                      "steps": [asdict(s) for s in steps]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
