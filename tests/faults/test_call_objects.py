"""Nothing is retained after calls end: objects per call return to baseline.

The gateway runs in this process (the same config as the fault rig) so that the collector can
count its objects: after a batch of calls has ended and the transactions' linger timers (J/K)
have run out, every gateway class has as many live instances as before the batch, and the
process's tracked objects are back within a few of the baseline. Per-call memory is measured
with tracemalloc on the way and printed (figures for the notes, not a timed assertion).
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections import Counter
from pathlib import Path

import pytest

from gateway.app import Gateway
from gateway.config import config_from_dict
from tests.faults.harness import DOMAIN, gateway_raw, media_both_ways
from tests.support.certs import GATEWAY_NAME, client_context, make_test_pki, server_context
from tests.support.phone import answerer, apply_answer, plain_offer
from tests.support.rtp import RtpEndpoint
from tests.support.sip_ua import SipTestUA

pytestmark = pytest.mark.slow
BATCH = 12


def gateway_objects() -> Counter[str]:
    gc.collect()
    found: Counter[str] = Counter()
    for o in gc.get_objects():
        module = getattr(type(o), "__module__", None)
        if isinstance(module, str) and module.startswith("gateway."):
            found[f"{module}.{type(o).__qualname__}"] += 1
    return found


async def call_batch(pbx: SipTestUA, carrier: SipTestUA, at: tuple[str, int], n: int,
                     measure: list[int]) -> None:
    pairs = [(await RtpEndpoint.open(), await RtpEndpoint.open()) for _ in range(n)]
    dialogs = []
    for i, (a, b) in enumerate(pairs):
        carrier.uas.answer = answerer(b)
        call = await pbx.invite(f"sip:5{i:03d}@{DOMAIN}", at, plain_offer(a))
        final = await call.wait_final(10)
        assert final.status == 200, final
        apply_answer(a, final.body)
        incoming = await carrier.wait_call(5)
        await incoming.wait_ack(5)
        dialogs.append((call, incoming))
    await asyncio.gather(*(media_both_ways(a, b, 5) for a, b in pairs))
    measure.append(tracemalloc.get_traced_memory()[0])
    for call, incoming in dialogs:
        assert (await call.bye(5)).status == 200
        await incoming.wait_state("terminated", 5)
    for a, b in pairs:
        a.close()
        b.close()


def forget(uas: dict[str, SipTestUA]) -> None:
    """The test phones keep every message and dialog; drop them so that counts see the gateway."""
    for ua in uas.values():
        for kept in (ua.received, ua.sent, ua.dialogs, ua._server_cache, ua._client_tx,
                     ua.parse_errors):
            kept.clear()


async def wait_idle(gw: Gateway, timeout: float = 20.0) -> None:
    """Until no call, dialog, transaction or media session is left (timers J/K run out)."""
    for _ in range(int(timeout / 0.1)):
        if (not gw.calls and not gw.stack.layer._txns and not gw.b2bua._tasks
                and gw.relay.totals().sessions_active == 0):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not idle: {len(gw.calls)} calls, {len(gw.stack.layer._txns)} txns")


async def test_objects_per_call_return_to_baseline(tmp_path: Path) -> None:
    keys = make_test_pki(tmp_path / "keys").dir
    uas = {"pbx": await SipTestUA.start("udp", user="pbx", domain="pbx.internal"),
           "far": await SipTestUA.start("udp", user="far", domain="far.internal"),
           "carrier": await SipTestUA.start("tls", user="carrier", domain="carrier.internal",
                                            tls_server=server_context(keys, "peer"),
                                            tls_client=client_context(keys, "peer"),
                                            server_name=GATEWAY_NAME)}
    raw = gateway_raw(tmp_path, keys, uas, far_transport="udp", cdr_path=tmp_path / "cdr.jsonl",
                      media_ports=4 * BATCH + 8, admin={"enabled": False})
    gw = Gateway(config_from_dict(raw, file=str(tmp_path / "gw.toml")))
    await gw.start()
    at = gw.stack.bound("udp")
    tracemalloc.start()
    try:
        await call_batch(uas["pbx"], uas["carrier"], at, 2, [])  # warm-up: caches, connection
        await wait_idle(gw)
        forget(uas)
        before, total_before = gateway_objects(), len(gc.get_objects())
        idle = tracemalloc.get_traced_memory()[0]
        peak: list[int] = []
        await call_batch(uas["pbx"], uas["carrier"], at, BATCH, peak)
        await wait_idle(gw)
        forget(uas)
        after, total_after = gateway_objects(), len(gc.get_objects())
        grown = {k: after[k] - before[k] for k in after if after[k] > before[k]}
        assert grown == {}, grown
        assert total_after - total_before < BATCH, (total_before, total_after)
        print(f"per call (both legs, media up): {(peak[0] - idle) / BATCH / 1024:.1f} KiB "
              f"traced; after the batch: {(tracemalloc.get_traced_memory()[0] - idle) / 1024:.1f}"
              " KiB over idle")
    finally:
        tracemalloc.stop()
        await gw.stop()
        for ua in uas.values():
            await ua.close()
