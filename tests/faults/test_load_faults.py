"""Faults under load, with SIPp: SIGHUP (reload) every second while 200 calls/s run, and a drain
(SIGTERM) in the middle of a load.

Path (as benchmarks/sip_load.py ``udp``): SIPp UAC -UDP-> legacy trunk (plain RTP) -> secure
trunk over UDP (SDES in clear, a baseline without TLS) -> SIPp UAS. What must hold: with reloads,
zero failed calls and every reload applied; with a drain, zero failed established calls (every
call the UAS answered ends with its BYE), the gateway exits 0, and no traceback either way.
"""

from __future__ import annotations

import csv
import signal
import threading
import time
from pathlib import Path

import pytest

from gateway.config import HostPort
from gateway.ops.status import request
from tests.conftest import require_tool
from tests.interop.capture import loopback_address
from tests.interop.gateway import Gateway
from tests.interop.procs import Procs, free_port
from tests.interop.sipp import PLAIN, Sipp, sdes

pytestmark = [pytest.mark.interop, pytest.mark.slow]


def counts(sipp: Sipp) -> tuple[int, int]:
    """(successful, failed) calls from SIPp's last statistics line."""
    with open(sipp.dir / "stats.csv") as fh:
        rows = list(csv.reader(fh, delimiter=";"))
    head, last = rows[0], rows[-1]
    return int(last[head.index("SuccessfulCall(C)")]), int(last[head.index("FailedCall(C)")])


def load_rig(tmp_path: Path, procs: Procs, rate: float, calls: int, hold_ms: int
             ) -> tuple[Gateway, Sipp, Sipp, str]:
    from gateway.ops.keys import init_keys

    keys = init_keys(tmp_path / "keys")
    uas_addr, uac_addr = loopback_address(), loopback_address()
    uas_port = free_port(uas_addr, tcp=False)
    gw = Gateway(tmp_path, keys.dir, legacy_peer="127.0.0.9:9",
                 secure_peer=f"{uas_addr}:{uas_port}", legacy_sources=[f"{uac_addr}/32"],
                 secure_sources=[f"{uas_addr}/32"], secure_transport="udp", rate=rate * 4,
                 log_level="info", media_ports=max(200, int(rate * hold_ms / 1000 * 8)))
    gw.start(procs)
    uas = Sipp("uas", "uas_basic.xml", tmp_path, uas_addr, keys=sdes(), port=uas_port)
    uas.start(procs, calls=calls, limit=calls * 2, hold_ms=hold_ms, timeout=60, extra=())
    uac = Sipp("uac", "uac_basic.xml", tmp_path, uac_addr, keys=dict(PLAIN))
    return gw, uas, uac, f"{gw.address}:{gw.udp_port}"


def no_traceback(gw: Gateway) -> None:
    assert gw.proc is not None
    text = gw.proc.output()
    assert "Traceback" not in text, text[text.find("Traceback") - 1500:][:4000]


def test_sighup_every_second_at_200_cps_fails_no_call(tmp_path: Path, procs: Procs) -> None:
    require_tool("sipp")
    rate, seconds, hold_ms = 200.0, 6, 300
    calls = int(rate * seconds)
    gw, uas, uac, target = load_rig(tmp_path, procs, rate, calls, hold_ms)
    assert gw.proc is not None
    stop = threading.Event()
    sent = []

    def hup() -> None:
        while not stop.wait(1.0):
            gw.proc.signal(signal.SIGHUP)  # type: ignore[union-attr]
            sent.append(time.monotonic())

    uac.start(procs, target, calls=calls, rate=rate, limit=int(rate * 4), hold_ms=hold_ms,
              timeout=seconds + 30, extra=())
    thread = threading.Thread(target=hup, daemon=True)
    thread.start()
    try:
        status = uac.wait(seconds + 40)
    finally:
        stop.set()
        thread.join()
    assert status == 0, uac.report() + procs.tails()
    assert counts(uac) == (calls, 0), uac.report()
    assert uas.wait(20) == 0, uas.report()
    assert len(sent) >= seconds - 1
    time.sleep(0.5)
    reloads = gw.proc.output().count("event=config.reloaded")
    assert reloads >= len(sent) - 1, gw.proc.tail(40)  # HUPs may coalesce, never fail
    assert "event=config.reload_refused" not in gw.proc.output()
    no_traceback(gw)


def test_drain_during_load_fails_no_established_call(tmp_path: Path, procs: Procs) -> None:
    require_tool("sipp")
    rate, seconds, hold_ms = 100.0, 6, 1000
    calls = int(rate * seconds)
    gw, uas, uac, target = load_rig(tmp_path, procs, rate, calls, hold_ms)
    assert gw.proc is not None
    uac.start(procs, target, calls=calls, rate=rate, limit=int(rate * 4), hold_ms=hold_ms,
              timeout=seconds + 20, extra=())
    time.sleep(seconds / 2)
    admin = HostPort(gw.address, gw.admin_port)
    active = request(admin, "GET", "/status")[1]
    gw.proc.signal(signal.SIGTERM)  # drain: no new calls, the ones up run to their BYE
    assert gw.proc.wait(30) == 0, gw.proc.tail(40)
    uac.wait(seconds + 30)
    with_bye, failed = counts(uas)
    assert with_bye > 0 and failed == 0, uas.report()
    ok, _ = counts(uac)
    assert ok == with_bye, (ok, with_bye, uac.report())  # every answered call ended cleanly
    assert ok < calls, "the drain came too late to test anything"
    assert active, active
    done = [line for line in gw.proc.output().splitlines() if "event=drain.done" in line]
    assert len(done) == 1 and "ended_by_us=0" in done[0], gw.proc.tail(40)
    no_traceback(gw)
