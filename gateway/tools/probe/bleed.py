"""RTP bleed: after a call is up, an unsignalled source sends media to the target's ports.

A target that latches onto the first source it hears (rtpengine's classic weakness) then sends
the call's media to the attacker, or forwards the attacker's packets into the call. The probe
plays all four parties on its own sockets: the signalled secure and legacy endpoints, and one
stranger per side that sends first. Every socket sends a bounded number of packets.
"""

from __future__ import annotations

import os
import struct
import time
from dataclasses import dataclass

from gateway.media.api import SrtpParams
from gateway.media.srtp import SrtpContext
from gateway.tools.probe.findings import Finding, judge, skip
from gateway.tools.probe.target import Address, Guard
from gateway.tools.probe.wire import MediaSocket

REF = "RTP bleed (rtpengine, 2017); RFC 3711 §3.3 (authenticate before use); RFC 4961"
STRANGER = b"PROBE-STRANGER"
LEGIT = b"PROBE-LEGIT"
PACKETS = 25
INTERVAL = 0.02


def rtp_packet(seq: int, ssrc: int, payload: bytes, pt: int = 0) -> bytes:
    return struct.pack("!BBHII", 0x80, pt, seq & 0xFFFF, seq * 160, ssrc) + payload


def _payload(marker: bytes) -> bytes:
    return (marker * 12)[:160]


@dataclass
class BleedObservation:
    secure_stranger_got: int = 0  # packets the target sent to the secure-side stranger
    legacy_stranger_got: int = 0
    stranger_forwarded: int = 0  # stranger payloads that reached a signalled endpoint
    legit_delivered: int = 0  # legacy -> secure packets that reached our signalled socket
    note: str = ""


def run(guard: Guard, *, secure: MediaSocket, legacy: MediaSocket, secure_target: Address,
        legacy_target: Address, our_key: SrtpParams | None, local_ip: str) -> BleedObservation:
    """Strangers first (plain RTP, and SRTP under a key nobody signalled), then the real
    endpoints talk; then count what reached whom."""
    obs = BleedObservation()
    s1, s2 = MediaSocket(guard, local_ip), MediaSocket(guard, local_ip)
    forged = SrtpContext(SrtpParams("AES_CM_128_HMAC_SHA1_80", os.urandom(30)), outbound=True)
    tx = SrtpContext(our_key, outbound=True) if our_key is not None else None
    try:
        for i in range(10):
            s1.send(rtp_packet(i, 0x5EC0DE, _payload(STRANGER)), secure_target)
            s1.send(forged.protect(rtp_packet(100 + i, 0x5EC0DF, _payload(STRANGER))),
                    secure_target)
            s2.send(rtp_packet(i, 0x1E6AC, _payload(STRANGER)), legacy_target)
            time.sleep(INTERVAL / 2)
        for i in range(PACKETS):
            legacy.send(rtp_packet(i, 0x1E6A1, _payload(LEGIT)), legacy_target)
            packet = rtp_packet(i, 0x5EC0A1, _payload(LEGIT))
            secure.send(tx.protect(packet) if tx is not None else packet, secure_target)
            time.sleep(INTERVAL)
        time.sleep(0.3)
        obs.secure_stranger_got = len(s1.drain(0.2))
        obs.legacy_stranger_got = len(s2.drain(0.2))
        for sock in (secure, legacy):
            for data, _ in sock.drain(0.2):
                if STRANGER in data:
                    obs.stranger_forwarded += 1
                elif sock is secure:
                    obs.legit_delivered += 1
    finally:
        s1.close()
        s2.close()
        forged.close()
        if tx is not None:
            tx.close()
    return obs


def judge_bleed(obs: BleedObservation | None, why_not: str = "") -> Finding:
    check = "media.rtp_bleed"
    if obs is None:
        return skip(check, "MUST", why_not or "needs a call through the target (--legacy-side)",
                    REF)
    bad = obs.secure_stranger_got + obs.legacy_stranger_got + obs.stranger_forwarded
    evidence = (f"strangers received {obs.secure_stranger_got} (secure side) and "
                f"{obs.legacy_stranger_got} (legacy side) packets; {obs.stranger_forwarded} "
                f"stranger packets forwarded into the call; {obs.legit_delivered} legitimate "
                "packets delivered")
    return judge(bad == 0, check, "MUST", evidence, REF,
                 secure_stranger=obs.secure_stranger_got, legacy_stranger=obs.legacy_stranger_got,
                 forwarded=obs.stranger_forwarded, delivered=obs.legit_delivered)
