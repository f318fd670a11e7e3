"""Differential tests: the native media loop against the Python path (the reference).

Each scenario is one packet sequence, made once (the SRTP packets protected in advance), sent
from the same source sockets through a running relay on the Python engine and then through one
on the native engine. What every peer socket receives must be byte-identical, in the same order,
and every counter of every leg (drops by cause, latches, the failing source) must be equal. The
sequences are the pitfalls of the relay: a sequence-number wrap with ROC, a re-key mid-stream,
replay, tampering, unsignalled sources (another IP, another port of the signalled IP), SSRC
change, reordering inside the replay window, a repeated transmit index, RTCP muxed and not.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from gateway.config import MediaSection
from gateway.media import native
from gateway.media.api import LegConfig, SrtpParams, generate_params
from gateway.media.relay import MediaRelay
from gateway.media.srtp import SrtpContext, carry_roc
from tests.conftest import require
from tests.support.net import free_port

require(native.UNAVAILABLE is None, native.UNAVAILABLE or "")  # a failure under CI=true

Addr = tuple[str, int]


def rtp(seq: int, ssrc: int = 0xA1, payload: bytes | None = None) -> bytes:
    body = payload if payload is not None else struct.pack("!I", seq) * 40
    return struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, ssrc) + body


def rtcp_sr(ssrc: int) -> bytes:
    return struct.pack("!BBHIQIII", 0x80, 200, 6, ssrc, 1 << 40, 1234, 10, 1600)


@dataclass
class Send:
    src: str          # source socket name
    leg: int          # relay leg it is sent to
    data: bytes
    rtcp: bool = False  # to the leg's RTCP address (differs without rtcp-mux)


@dataclass
class Update:
    leg: int
    cfg: Callable[[dict[str, Addr]], LegConfig]


@dataclass
class AddRx:
    leg: int
    params: SrtpParams


@dataclass
class Scenario:
    legs: tuple[Callable[[dict[str, Addr]], LegConfig], Callable[[dict[str, Addr]], LegConfig]]
    steps: list[Any] = field(default_factory=list)
    rtcp_mux: tuple[bool, bool] = (True, True)
    sources: dict[str, str] = field(default_factory=lambda: {
        "a": "127.0.0.1", "b": "127.0.0.1", "b2": "127.0.0.1", "evil": "127.0.0.2"})


class Sources:
    """The peers' sockets, shared by both runs so every address (and so every latch) is equal."""

    def __init__(self, spec: dict[str, str]) -> None:
        self.socks: dict[str, socket.socket] = {}
        for name, ip in spec.items():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((ip, 0))
            s.setblocking(False)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            self.socks[name] = s
        self.addr = {name: s.getsockname() for name, s in self.socks.items()}

    def drain(self) -> dict[str, list[bytes]]:
        got: dict[str, list[bytes]] = {}
        for name, s in self.socks.items():
            while True:
                try:
                    got.setdefault(name, []).append(s.recv(4096))
                except BlockingIOError:
                    break
        return got

    def close(self) -> None:
        for s in self.socks.values():
            s.close()


async def run(scenario: Scenario, sources: Sources, engine: str) -> tuple[Any, ...]:
    lo = 20000 + (free_port("udp") % 400) * 40
    relay = MediaRelay(MediaSection(port_min=lo, port_max=lo + 39, engine=engine))
    assert relay.engine == engine
    received: dict[str, list[bytes]] = {name: [] for name in sources.socks}
    try:
        info = await relay.create_session(rtcp_mux=scenario.rtcp_mux)
        sid = info.session_id
        for leg in (0, 1):
            await relay.update_leg(sid, leg, 0, scenario.legs[leg](sources.addr))
        sent = 0
        for step in scenario.steps:
            if isinstance(step, Send):
                local = info.local(step.leg)
                sources.socks[step.src].sendto(step.data, local.rtcp if step.rtcp else local.rtp)
                sent += 1
                if sent % 16 == 0:
                    await asyncio.sleep(0.002)
                continue
            await asyncio.sleep(0.05)  # everything sent so far is relayed before control acts
            if isinstance(step, Update):
                await relay.update_leg(sid, step.leg, 0, step.cfg(sources.addr))
            else:
                await relay.add_rx(sid, step.leg, 0, step.params)
            for name, got in sources.drain().items():
                received[name] += got
        await asyncio.sleep(0.2)
        for name, got in sources.drain().items():
            received[name] += got
        stats = await relay.stats(sid)
        legs = [replace(s, last_packet=None) for leg in stats.legs for s in leg]
        totals = relay.totals()
        return received, legs, totals.drops, totals.packets_in, totals.packets_out
    finally:
        await relay.close()


def flows(received: dict[str, list[bytes]]) -> dict[tuple[str, bool], list[bytes]]:
    return {(name, rtcp): [d for d in got if (191 < d[1] < 224) == rtcp]
            for name, got in received.items() for rtcp in (False, True)}


async def differential(scenario: Scenario) -> tuple[Any, ...]:
    sources = Sources(scenario.sources)
    try:
        python = await run(scenario, sources, "python")
        fast = await run(scenario, sources, "native")
    finally:
        sources.close()
    # per destination and flow: RTP and RTCP arriving on two relay sockets (no rtcp-mux) and
    # leaving from one may interleave differently, which neither path promises
    assert flows(fast[0]) == flows(python[0]), "native output differs from the Python path"
    assert fast[1:] == python[1:], "native counters differ from the Python path"
    return python


SUITE = "AES_CM_128_HMAC_SHA1_80"


def srtp_plain(suite: str = SUITE, nat_learning: bool = False) -> tuple[Scenario, dict[str, Any]]:
    """Leg 0: SRTP peer ``a``; leg 1: plain peer ``b``."""
    k = {"a_tx": generate_params(suite), "relay_a": generate_params(suite)}
    scenario = Scenario((
        lambda ad: LegConfig(remote_rtp=ad["a"], rx=k["a_tx"], tx=k["relay_a"]),
        lambda ad: LegConfig(remote_rtp=ad["b"], nat_learning=nat_learning)))
    k["a"] = SrtpContext(k["a_tx"], outbound=True)
    return scenario, k


async def test_wrap_reorder_replay_tamper_and_strangers() -> None:
    scenario, k = srtp_plain()
    a, steps = k["a"], scenario.steps
    packets = [a.protect(rtp(seq)) for seq in range(65_500, 65_620)]  # wraps: ROC 0 -> 1
    for i in range(0, len(packets) - 1, 2):
        if 20 <= i < 60:  # reordered inside the replay window
            steps += [Send("a", 0, packets[i + 1]), Send("a", 0, packets[i])]
        else:
            steps += [Send("a", 0, packets[i]), Send("a", 0, packets[i + 1])]
        steps.append(Send("b", 1, rtp(65_500 + i, ssrc=0xB0)))  # plain side wraps as well
        steps.append(Send("b", 1, rtp(65_501 + i, ssrc=0xB0)))
    steps += [Send("a", 0, p) for p in packets[100:110]]  # replayed
    for p in packets[:5]:  # tampered
        bad = bytearray(a.protect(rtp(70_000 + p[3])))
        bad[-3] ^= 1
        steps.append(Send("a", 0, bytes(bad)))
    forged = SrtpContext(generate_params(SUITE), outbound=True)
    for seq in range(5):
        steps += [Send("evil", 0, forged.protect(rtp(80_000 + seq))),  # unsignalled, wrong key
                  Send("evil", 1, rtp(900 + seq, ssrc=0xB0)),  # unsignalled IP, plain
                  Send("b2", 1, rtp(950 + seq, ssrc=0xB0)),  # signalled IP, other port
                  Send("evil", 0, packets[-1])]  # a replay from elsewhere
    received, legs, drops, *_ = await differential(scenario)
    assert len(received["b"]) == 120 and len(received["a"]) == 120
    assert drops["replay"] == 15 and drops["auth"] == 10 and drops["source"] == 10
    assert legs[0].failed_source is not None and legs[0].failed_source[0] == "127.0.0.2"


async def test_rekey_mid_stream_carries_roc_and_ssrc_change() -> None:
    scenario, k = srtp_plain("AEAD_AES_128_GCM")
    a, steps = k["a"], scenario.steps
    steps += [Send("a", 0, a.protect(rtp(seq))) for seq in range(65_530, 65_560)]
    new_key = generate_params("AEAD_AES_128_GCM")
    a2 = SrtpContext(new_key, outbound=True)
    carry_roc(a, a2)
    steps.append(AddRx(0, new_key))  # offer time: both keys accepted
    steps += [Send("a", 0, a.protect(rtp(seq))) for seq in range(65_560, 65_570)]
    steps += [Send("a", 0, a2.protect(rtp(seq))) for seq in range(65_570, 65_600)]
    relay_a = k["relay_a"]
    steps.append(Update(0, lambda ad: LegConfig(remote_rtp=ad["a"], rx=new_key, tx=relay_a)))
    steps += [Send("a", 0, a2.protect(rtp(seq))) for seq in range(65_600, 65_640)]
    steps += [Send("a", 0, a2.protect(rtp(seq, ssrc=0xC2))) for seq in range(10, 40)]  # new SSRC
    steps += [Send("a", 0, a.protect(rtp(seq))) for seq in range(65_640, 65_645)]  # old key: gone
    for ssrc in (0xB0, 0xB1, 0xB0):  # plain SSRC change and back (repeating its indexes)
        steps += [Send("b", 1, rtp(seq, ssrc=ssrc)) for seq in range(ssrc * 100, ssrc * 100 + 20)]
    received, _legs, drops, *_ = await differential(scenario)
    assert len(received["b"]) == 30 + 10 + 30 + 40 + 30 and drops["auth"] == 5
    assert len(received["a"]) == 40 and drops["repeat_index"] == 20


async def test_duplicate_tx_index_and_evicted_ssrc_never_resent() -> None:
    scenario, _k = srtp_plain("AEAD_AES_256_GCM")
    steps = scenario.steps
    for seq in range(100, 140):
        steps.append(Send("b", 1, rtp(seq, ssrc=0xB0, payload=b"\x01" * 160)))
        if seq % 4 == 0:  # the same index again, other payload, from the PBX's own address
            steps.append(Send("b", 1, rtp(seq, ssrc=0xB0, payload=b"\x02" * 160)))
    for ssrc in range(1, 20):  # evicts 0xB0 and more from the 16 outbound streams
        steps.append(Send("b", 1, rtp(5, ssrc=ssrc)))
    steps += [Send("b", 1, rtp(seq, ssrc=0xB0)) for seq in range(140, 150)]
    received, _legs, drops, *_ = await differential(scenario)
    assert drops["repeat_index"] == 10 + 10 and len(received["a"]) == 40 + 19


async def test_srtp_to_srtp_with_rtcp_muxed_and_separate() -> None:
    keys = {n: generate_params(SUITE) for n in ("a_tx", "relay_a", "b_tx", "relay_b")}
    scenario = Scenario((
        lambda ad: LegConfig(remote_rtp=ad["a"], rx=keys["a_tx"], tx=keys["relay_a"]),
        lambda ad: LegConfig(remote_rtp=ad["b"], rtcp_mux=False, remote_rtcp=ad["b2"],
                             rx=keys["b_tx"], tx=keys["relay_b"])),
        rtcp_mux=(True, False))
    a, b = SrtpContext(keys["a_tx"], outbound=True), SrtpContext(keys["b_tx"], outbound=True)
    for seq in range(60):
        scenario.steps += [Send("a", 0, a.protect(rtp(seq))),
                           Send("b", 1, b.protect(rtp(seq, ssrc=0xB0)))]
        if seq % 10 == 0:
            scenario.steps += [Send("a", 0, a.protect(rtcp_sr(0xA1), rtcp=True)),
                               Send("b2", 1, b.protect(rtcp_sr(0xB0), rtcp=True), rtcp=True)]
    received, *_ = await differential(scenario)
    assert len(received["b"]) == 60 and len(received["a"]) == 60 + 6
    assert len(received["b2"]) == 6


async def test_secure_leg_without_keys_and_no_remote() -> None:
    scenario = Scenario((lambda ad: LegConfig(remote_rtp=ad["a"], dtls=True),
                         lambda ad: LegConfig(remote_rtp=ad["b"])))
    scenario.steps += [Send("b", 1, rtp(seq)) for seq in range(20)]
    scenario.steps += [Send("a", 0, rtp(seq)) for seq in range(20)]
    scenario.steps.append(Update(1, lambda ad: LegConfig()))
    scenario.steps += [Send("b", 1, rtp(seq)) for seq in range(20, 30)]
    scenario.steps += [Send("b", 1, b"\x00" * 40), Send("b", 1, b"\x80" * 9),
                       Send("b", 1, b"\x16\xfe\xfd" + b"\x00" * 40)]
    _received, _legs, drops, *_ = await differential(scenario)
    assert drops["no_keys"] == 40 and drops["malformed"] >= 2


async def test_native_engine_absent_falls_back_with_a_logged_reason(
        monkeypatch: Any, caplog: Any) -> None:
    monkeypatch.setattr(native, "UNAVAILABLE", "native media loop not built: test")
    relay = MediaRelay(MediaSection(port_min=21000, port_max=21009, engine="native"))
    try:
        assert relay.engine == "python"
        assert any("media.engine_fallback" in r.getMessage() for r in caplog.records)
    finally:
        await relay.close()
