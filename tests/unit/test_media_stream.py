"""LegStream, the relay's sans-IO hot path: latching, replay, ROC, SSRC change, re-key, RTCP."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.media.api import InvalidParams, LegConfig, SrtpParams, generate_params
from gateway.media.control import leg_from_json, leg_to_json
from gateway.media.srtp import PacketBuffer, SrtpContext, stream_rocs
from gateway.media.stream import (
    MAX_EVICTED_SSRCS,
    MAX_TX_SSRCS,
    LegStream,
    looks_like_plain_rtcp,
)
from tests.unit.test_media_srtp import Reference

A = ("127.0.0.1", 4000)      # leg 0 peer (signalled)
B = ("127.0.0.1", 5000)      # leg 1 peer (signalled)
EVIL = ("127.0.0.66", 4000)  # somebody else
SUITE = "AES_CM_128_HMAC_SHA1_80"


def rtp(seq: int, ssrc: int = 0xABCD, payload: bytes = b"\x11" * 160) -> bytes:
    return struct.pack("!BBHII", 0x80, 8, seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, ssrc) + payload


def rtcp_rr(ssrc: int = 0xABCD) -> bytes:
    return struct.pack("!BBHI", 0x80, 201, 1, ssrc)


class Pair:
    """Two LegStreams wired as one stream, fed through a PacketBuffer like the edge does."""

    def __init__(self, cfg0: LegConfig, cfg1: LegConfig) -> None:
        self.legs = (LegStream(30000), LegStream(30002))
        self.legs[0].peer, self.legs[1].peer = self.legs[1], self.legs[0]
        self.legs[0].configure(cfg0)
        self.legs[1].configure(cfg1)
        self.buf = PacketBuffer()

    def feed(self, leg: int, packet: bytes, src: tuple[str, int], rtcp: bool = False
             ) -> bytes | None:
        self.buf.data[:len(packet)] = packet
        ep = self.legs[leg]
        n = (ep.rtcp_in if rtcp else ep.rtp_in)(self.buf, len(packet), src)
        return bytes(self.buf.view[:n]) if n else None


def srtp_pair() -> tuple[Pair, dict[str, SrtpParams]]:
    keys = {name: generate_params(SUITE) for name in ("a_tx", "a_rx", "b_tx", "b_rx")}
    pair = Pair(LegConfig(remote_rtp=A, rx=keys["a_tx"], tx=keys["a_rx"]),
                LegConfig(remote_rtp=B, rx=keys["b_tx"], tx=keys["b_rx"]))
    return pair, keys


def test_srtp_to_srtp_rekeys_with_independent_keys_per_leg() -> None:
    pair, keys = srtp_pair()
    a_tx = SrtpContext(keys["a_tx"], outbound=True)
    b_rx = SrtpContext(keys["b_rx"], outbound=False)
    a_tx_key_at_b = SrtpContext(keys["a_tx"], outbound=False)
    sent = a_tx.protect(rtp(1))
    out = pair.feed(0, sent, A)
    assert out is not None and out != sent
    with pytest.raises(Exception):  # noqa: B017 - A's key must not open what B receives
        a_tx_key_at_b.unprotect(out)
    assert b_rx.unprotect(out) == rtp(1)


def test_attacker_first_never_latches_srtp_leg() -> None:
    pair, keys = srtp_pair()
    a_tx = SrtpContext(keys["a_tx"], outbound=True)
    forged = SrtpContext(generate_params(SUITE), outbound=True).protect(rtp(1))
    assert pair.feed(0, forged, EVIL) is None
    assert pair.feed(0, rtp(2), EVIL) is None
    assert pair.legs[0].latched_rtp is None and pair.legs[0].dst_rtp == A
    genuine = a_tx.protect(rtp(3))
    assert pair.feed(0, genuine, ("127.0.0.1", 40404)) is not None  # NATed real peer
    assert pair.legs[0].latched_rtp == ("127.0.0.1", 40404)
    assert pair.feed(0, genuine, EVIL) is None  # replayed by the attacker
    assert pair.legs[0].latched_rtp == ("127.0.0.1", 40404)
    s = pair.legs[0].stats()
    assert (s.auth_failures, s.replays, s.packets_in, s.drops["auth"]) == (2, 1, 1, 2)


def test_plain_leg_admits_only_the_signalled_address_and_port() -> None:
    """RFC 7362 §4 (RTP bleed): another port of the signalled IP is as foreign as another IP,
    before the first genuine packet and after it; nothing refused moves the latch."""
    pair = Pair(LegConfig(remote_rtp=A), LegConfig(remote_rtp=B))
    same_ip = ("127.0.0.1", 4100)
    assert pair.feed(0, rtp(1), EVIL) is None
    assert pair.feed(0, rtp(2), same_ip) is None
    assert pair.legs[0].drop_source == 2 and pair.legs[0].latched_rtp is None
    assert pair.feed(0, rtp(3), A) == rtp(3)
    assert pair.feed(0, rtp(4), same_ip) is None
    assert pair.feed(0, rtp(5), EVIL) is None
    assert pair.legs[0].drop_source == 4 and pair.legs[0].dst_rtp == A
    assert pair.legs[1].packets_out == 1


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_nat_learning_latches_first_source_and_moves_only_after_silence() -> None:
    pair = Pair(LegConfig(nat_learning=True), LegConfig(remote_rtp=B))
    clock = pair.legs[0].clock = Clock()
    pair.legs[0].relatch_after = 1.5
    other = ("127.0.0.77", 9)
    assert pair.feed(0, rtp(1), EVIL) == rtp(1)
    for seq in range(2, 40):  # both talk: the latched source keeps the latch however long
        clock.now += 0.1
        assert pair.feed(0, rtp(seq), other) is None
        assert pair.feed(0, rtp(seq + 1000), EVIL) is not None
    assert pair.legs[0].dst_rtp == EVIL
    for _ in range(15):  # EVIL silent; silence counts from the first refused packet
        clock.now += 0.1
        assert pair.feed(0, rtp(50), other) is None
    clock.now += 0.11
    assert pair.feed(0, rtp(51), other) == rtp(51)  # 1.5 s without EVIL: NAT rebinding
    assert pair.legs[0].dst_rtp == other
    assert pair.feed(0, rtp(1100), EVIL) is None
    assert pair.legs[0].drop_source == 38 + 15 + 1


def test_nat_learning_gives_the_latch_back_to_the_signalled_address() -> None:
    pair = Pair(LegConfig(remote_rtp=A, nat_learning=True), LegConfig(remote_rtp=B))
    pair.legs[0].clock = Clock()
    assert pair.feed(0, rtp(1), EVIL) == rtp(1)  # first source, before the PBX spoke
    assert pair.feed(0, rtp(2), A) == rtp(2)
    assert pair.feed(0, rtp(3), EVIL) is None
    assert pair.legs[0].dst_rtp == A


def test_duplicate_plain_index_is_never_protected_twice() -> None:
    """RFC 3711 §9.1 / RFC 7714: same SSRC and sequence number, other payload -> dropped."""
    keys = {"tx": generate_params("AEAD_AES_256_GCM"), "rx": generate_params("AEAD_AES_256_GCM")}
    pair = Pair(LegConfig(remote_rtp=A), LegConfig(remote_rtp=B, rx=keys["rx"], tx=keys["tx"]))
    assert pair.feed(0, rtp(7, payload=b"\x01" * 160), A) is not None
    assert pair.feed(0, rtp(7, payload=b"\x02" * 160), A) is None
    assert pair.feed(0, rtp(6, payload=b"\x03" * 160), A) is not None  # reordered, unseen
    assert pair.feed(0, rtp(6, payload=b"\x04" * 160), A) is None
    s = pair.legs[0].stats()
    assert s.drops["repeat_index"] == 2 and pair.legs[1].packets_out == 2


def test_evicted_tx_ssrc_never_comes_back_at_a_used_index() -> None:
    keys = {"tx": generate_params(SUITE), "rx": generate_params(SUITE)}
    pair = Pair(LegConfig(remote_rtp=A), LegConfig(remote_rtp=B, rx=keys["rx"], tx=keys["tx"]))
    assert pair.feed(0, rtp(1, ssrc=1), A) is not None
    for ssrc in range(2, 2 + MAX_TX_SSRCS):  # evicts SSRC 1
        assert pair.feed(0, rtp(1, ssrc=ssrc), A) is not None
    assert pair.feed(0, rtp(1, ssrc=1, payload=b"\x09" * 160), A) is None
    assert pair.feed(0, rtp(2, ssrc=1), A) is None
    assert pair.feed(0, rtcp_rr(ssrc=1), A, rtcp=True) is None
    assert pair.legs[0].drop_repeat_index == 3


def test_plain_leg_without_address_drops_and_unconfigured_peer_counts_no_remote() -> None:
    pair = Pair(LegConfig(), LegConfig(remote_rtp=B))
    assert pair.feed(0, rtp(1), A) is None and pair.legs[0].drop_source == 1
    pair = Pair(LegConfig(remote_rtp=A), LegConfig())
    assert pair.feed(0, rtp(1), A) is None and pair.legs[0].drop_no_remote == 1


def test_dtls_leg_carries_nothing_until_keys_arrive() -> None:
    pair = Pair(LegConfig(remote_rtp=A), LegConfig(remote_rtp=B, dtls=True))
    assert pair.feed(0, rtp(1), A) is None
    assert pair.feed(1, rtp(1), B) is None
    assert pair.legs[0].drop_no_keys == 1 and pair.legs[1].drop_no_keys == 1
    rx, tx = generate_params(SUITE), generate_params(SUITE)
    pair.legs[1].configure(LegConfig(remote_rtp=B, rx=rx, tx=tx, dtls=True))
    out = pair.feed(0, rtp(2), A)
    assert out is not None and SrtpContext(tx, outbound=False).unprotect(out) == rtp(2)


def test_roc_survives_more_than_70000_packets_with_loss_and_reordering() -> None:
    pair, keys = srtp_pair()
    a_tx = SrtpContext(keys["a_tx"], outbound=True)
    b_rx = SrtpContext(keys["b_rx"], outbound=False)
    total, delivered, lost = 70_500, 0, 0
    held: bytes | None = None
    for seq in range(total):
        packet = a_tx.protect(rtp(seq, payload=seq.to_bytes(4, "big")))
        if seq % 997 == 0 or 65_530 <= seq < 65_545:  # loss, including a burst over the wrap
            lost += 1
            continue
        if seq % 1000 == 500:  # swap neighbours: reordering inside the replay window
            held = packet
            continue
        for p in (packet, held) if held is not None else (packet,):
            out = pair.feed(0, p, A)
            assert out is not None
            delivered += 1
        held = None
        if seq in (65_529, 65_545, 65_546, 70_499):
            assert b_rx.unprotect(out)[12:] == seq.to_bytes(4, "big")
    assert delivered == total - lost
    assert pair.legs[0].stats().replays == 0 and pair.legs[0].stats().auth_failures == 0


def test_plain_to_srtp_keeps_roc_across_wrap() -> None:
    tx_key = generate_params("AEAD_AES_128_GCM")
    pair = Pair(LegConfig(remote_rtp=A), LegConfig(remote_rtp=B, rx=generate_params(SUITE),
                                                   tx=tx_key))
    b_rx = SrtpContext(tx_key, outbound=False)
    for seq in range(65000, 67000):
        out = pair.feed(0, rtp(seq), A)
        assert out is not None and b_rx.unprotect(out) == rtp(seq)


def test_ssrc_change_mid_call_flows() -> None:
    pair, keys = srtp_pair()
    a_tx = SrtpContext(keys["a_tx"], outbound=True)
    b_rx = SrtpContext(keys["b_rx"], outbound=False)
    for seq in range(10):
        assert b_rx.unprotect(pair.feed(0, a_tx.protect(rtp(seq)), A) or b"") == rtp(seq)
    for seq in range(3000, 3010):
        out = pair.feed(0, a_tx.protect(rtp(seq, ssrc=0x5555)), A)
        assert out is not None and b_rx.unprotect(out) == rtp(seq, ssrc=0x5555)


def test_tampered_and_replayed_packets_are_dropped_and_counted() -> None:
    pair, keys = srtp_pair()
    a_tx = SrtpContext(keys["a_tx"], outbound=True)
    packet = a_tx.protect(rtp(1))
    assert pair.feed(0, packet, A) is not None
    assert pair.feed(0, packet, A) is None
    bad = bytearray(a_tx.protect(rtp(2)))
    bad[-1] ^= 0x01
    assert pair.feed(0, bytes(bad), A) is None
    too_old = a_tx.protect(rtp(3))
    for seq in range(4, 600):
        pair.feed(0, a_tx.protect(rtp(seq)), A)
    assert pair.feed(0, too_old, A) is None
    s = pair.legs[0].stats()
    assert s.replays == 2 and s.auth_failures == 1
    assert pair.legs[1].packets_out == 1 + 596


def test_rekey_offer_then_commit_has_no_gap() -> None:
    pair, keys = srtp_pair()
    old_tx = SrtpContext(keys["a_tx"], outbound=True)
    new_key = generate_params(SUITE)
    new_tx = SrtpContext(new_key, outbound=True)
    assert pair.feed(0, old_tx.protect(rtp(1)), A) is not None
    pair.legs[0].add_rx(new_key)              # re-INVITE offer carries A's new key
    assert pair.feed(0, old_tx.protect(rtp(2)), A) is not None
    assert pair.feed(0, new_tx.protect(rtp(3)), A) is not None
    assert pair.feed(0, old_tx.protect(rtp(4)), A) is not None
    pair.legs[0].configure(LegConfig(remote_rtp=A, rx=new_key, tx=keys["a_rx"]))  # answer
    assert pair.feed(0, old_tx.protect(rtp(5)), A) is not None  # in flight: still accepted
    assert pair.feed(0, new_tx.protect(rtp(6)), A) is not None  # new key proven
    assert pair.feed(0, old_tx.protect(rtp(7)), A) is None      # old context gone
    assert pair.legs[0].rx_alt is None


def test_rejected_rekey_offer_is_dropped() -> None:
    pair, keys = srtp_pair()
    new_key = generate_params(SUITE)
    pair.legs[0].add_rx(new_key)
    pair.legs[0].drop_rx()
    assert pair.feed(0, SrtpContext(new_key, outbound=True).protect(rtp(1)), A) is None
    assert pair.feed(0, SrtpContext(keys["a_tx"], outbound=True).protect(rtp(2)), A)


def test_reinvite_with_same_keys_keeps_contexts_and_roc() -> None:
    pair, keys = srtp_pair()
    a_tx = SrtpContext(keys["a_tx"], outbound=True)
    before = (pair.legs[0].rx, pair.legs[1].tx)
    for seq in range(65530, 65540):
        assert pair.feed(0, a_tx.protect(rtp(seq)), A)
    pair.legs[0].configure(LegConfig(remote_rtp=A, rx=keys["a_tx"], tx=keys["a_rx"]))
    pair.legs[1].configure(LegConfig(remote_rtp=B, rx=keys["b_tx"], tx=keys["b_rx"]))
    assert (pair.legs[0].rx, pair.legs[1].tx) == before
    b_rx = SrtpContext(keys["b_rx"], outbound=False)
    out = pair.feed(0, a_tx.protect(rtp(65541)), A)
    assert out is not None
    with pytest.raises(Exception):  # noqa: B017 - fresh receiver assumes ROC 0: wrong
        b_rx.unprotect(out)


@pytest.mark.parametrize("suite", ["AES_CM_128_HMAC_SHA1_80", "AES_256_CM_HMAC_SHA1_80"])
def test_rekey_after_wrap_keeps_roc_both_ways_against_rfc3711_reference(suite: str) -> None:
    """>70,000 packets each way (ROC 1), then a re-INVITE re-keys both directions of leg 0 (new
    inbound key at offer time, committed by the answer): the peer, an independent RFC 3711
    implementation, carries on with ROC 1 under the new keys, and so must we."""
    keys = {name: generate_params(suite) for name in ("a_send", "a_recv", "a_send2", "a_recv2")}
    pair = Pair(LegConfig(remote_rtp=A, rx=keys["a_send"], tx=keys["a_recv"]),
                LegConfig(remote_rtp=B))
    a_tx = SrtpContext(keys["a_send"], outbound=True)
    a_rx = SrtpContext(keys["a_recv"], outbound=False)
    a_ssrc, b_ssrc = 0xABCD, 0xB0B
    last = 70_200
    for seq in range(last):
        assert pair.feed(0, a_tx.protect(rtp(seq, a_ssrc)), A) == rtp(seq, a_ssrc)
        out = pair.feed(1, rtp(seq, b_ssrc), B)
        if seq >= last - 3:  # our sender's index, checked by the reference: ROC 1 now
            assert out == Reference(keys["a_recv"]).protect(rtp(seq, b_ssrc), 1)
        assert out is not None and a_rx.unprotect(out) == rtp(seq, b_ssrc)
    assert stream_rocs(pair.legs[0].rx) == {a_ssrc: 1}  # type: ignore[arg-type]
    assert stream_rocs(pair.legs[0].tx) == {b_ssrc: 1}  # type: ignore[arg-type]

    pair.legs[0].add_rx(keys["a_send2"])  # offer: A's new key, old one still in use
    assert pair.feed(0, a_tx.protect(rtp(last, a_ssrc)), A) == rtp(last, a_ssrc)
    pair.legs[0].configure(LegConfig(remote_rtp=A, rx=keys["a_send2"], tx=keys["a_recv2"]))
    assert pair.legs[0].rx_fresh is not None  # ROC-0 fallback for peers that restart it
    ref_in, ref_out = Reference(keys["a_send2"]), Reference(keys["a_recv2"])
    for seq in range(last + 1, last + 60):
        assert pair.feed(0, ref_in.protect(rtp(seq, a_ssrc), 1), A) == rtp(seq, a_ssrc)
        assert pair.feed(1, rtp(seq, b_ssrc), B) == ref_out.protect(rtp(seq, b_ssrc), 1)
    leg = pair.legs[0]
    assert leg.rx_alt is None and leg.rx_fresh is None and leg.drop_auth == 0
    assert stream_rocs(leg.rx) == {a_ssrc: 1}  # type: ignore[arg-type]


def test_peer_that_restarts_its_roc_on_rekey_is_followed() -> None:
    """Not RFC 3711, but what a stack that opens a new SRTP session per key does: after the
    wrap, the peer's new key starts at ROC 0 again. The carried context refuses that; the fresh
    fallback takes over on the first such packet, and the carried one is gone."""
    pair, keys = srtp_pair()
    a_tx = SrtpContext(keys["a_tx"], outbound=True)
    b_rx = SrtpContext(keys["b_rx"], outbound=False)
    for seq in range(65_530, 65_600):  # the peer's ROC reaches 1
        assert b_rx.unprotect(pair.feed(0, a_tx.protect(rtp(seq)), A) or b"") == rtp(seq)
    new_key = generate_params(SUITE)
    pair.legs[0].add_rx(new_key)
    pair.legs[0].configure(LegConfig(remote_rtp=A, rx=new_key, tx=keys["a_rx"]))
    restarted = SrtpContext(new_key, outbound=True)  # a new session: ROC 0, same sequence
    srtcp = restarted.protect(rtcp_rr(), rtcp=True)
    assert pair.feed(0, srtcp, A, rtcp=True) is not None  # RTCP does not settle the window
    assert pair.legs[0].rx_fresh is not None
    for seq in range(65_600, 65_700):
        out = pair.feed(0, restarted.protect(rtp(seq)), A)
        assert b_rx.unprotect(out or b"") == rtp(seq)
    leg = pair.legs[0]
    assert leg.rx_alt is None and leg.rx_fresh is None and leg.drop_auth == 0
    assert leg.rx is not None and leg.rx.params == new_key
    assert pair.feed(0, a_tx.protect(rtp(65_800)), A) is None  # old key gone


def test_rejected_offer_drops_the_fresh_fallback_too() -> None:
    pair, keys = srtp_pair()
    a_tx = SrtpContext(keys["a_tx"], outbound=True)
    for seq in range(65_530, 65_540):
        assert pair.feed(0, a_tx.protect(rtp(seq)), A)
    pair.legs[0].add_rx(generate_params(SUITE))
    assert pair.legs[0].rx_fresh is not None
    pair.legs[0].drop_rx()
    assert pair.legs[0].rx_alt is None and pair.legs[0].rx_fresh is None
    assert pair.feed(0, a_tx.protect(rtp(65_541)), A)


def test_rekey_before_any_wrap_needs_no_carry_and_new_ssrcs_start_at_zero() -> None:
    pair, keys = srtp_pair()
    a_tx = SrtpContext(keys["a_tx"], outbound=True)
    for seq in range(5):
        assert pair.feed(0, a_tx.protect(rtp(seq)), A)
    new_key = generate_params(SUITE)
    pair.legs[0].configure(LegConfig(remote_rtp=A, rx=new_key, tx=keys["a_rx"]))
    assert stream_rocs(pair.legs[0].rx) == {}  # type: ignore[arg-type]
    ref, b_rx = Reference(new_key), SrtpContext(keys["b_rx"], outbound=False)
    for packet in (rtp(5), rtp(9, ssrc=0x7777)):
        assert b_rx.unprotect(pair.feed(0, ref.protect(packet, 0), A) or b"") == packet


def test_srtcp_and_plain_rtcp_policy() -> None:
    pair, keys = srtp_pair()
    a_tx = SrtpContext(keys["a_tx"], outbound=True)
    out = pair.feed(0, a_tx.protect(rtcp_rr(), rtcp=True), A, rtcp=True)
    assert out is not None
    assert SrtpContext(keys["b_rx"], outbound=False).unprotect(out, rtcp=True) == rtcp_rr()
    assert pair.feed(0, rtcp_rr(), A, rtcp=True) is None
    assert pair.legs[0].drop_plain_rtcp == 1 and pair.legs[0].drop_auth == 0
    pair.legs[0].configure(LegConfig(remote_rtp=A, rx=keys["a_tx"], tx=keys["a_rx"],
                                     accept_plain_rtcp=True))
    out = pair.feed(0, rtcp_rr(), A, rtcp=True)
    assert out is not None
    assert SrtpContext(keys["b_rx"], outbound=False).unprotect(out, rtcp=True) == rtcp_rr()
    assert pair.feed(0, rtcp_rr(), EVIL, rtcp=True) is None


def test_looks_like_plain_rtcp() -> None:
    assert looks_like_plain_rtcp(rtcp_rr() + struct.pack("!BBHI", 0x81, 202, 1, 1))
    assert not looks_like_plain_rtcp(rtcp_rr() + b"\x80\x00\x00\x01" + bytes(10))
    assert not looks_like_plain_rtcp(b"\x00" * 8)
    assert not looks_like_plain_rtcp(b"")


def test_plain_peer_cannot_grow_outbound_srtp_streams_without_bound() -> None:
    tx_key = generate_params(SUITE)
    pair = Pair(LegConfig(remote_rtp=A), LegConfig(remote_rtp=B, rx=generate_params(SUITE),
                                                   tx=tx_key))
    b_rx = SrtpContext(tx_key, outbound=False)
    for ssrc in range(1, 101):
        out = pair.feed(0, rtp(ssrc, ssrc=ssrc), A)
        assert out is not None and b_rx.unprotect(out) == rtp(ssrc, ssrc=ssrc)
    tracked = pair.legs[1].tx_ssrcs
    assert len(tracked) == 16 and tracked[-1] == (100).to_bytes(4, "big")
    # an evicted SSRC coming back would restart at used indexes: refused, counted
    assert pair.feed(0, rtp(500, ssrc=1), A) is None
    assert pair.legs[0].drop_repeat_index == 1
    out = pair.feed(0, rtcp_rr(ssrc=7777), A, rtcp=True)
    assert out is not None and len(pair.legs[1].tx_ssrcs) == 16
    for ssrc in range(10_000, 10_000 + MAX_EVICTED_SSRCS):  # the evicted set is bounded too
        pair.feed(0, rtp(1, ssrc=ssrc), A)
    evicted = pair.legs[1].tx_evicted
    assert evicted is not None and len(evicted) == MAX_EVICTED_SSRCS
    assert pair.feed(0, rtp(1, ssrc=99_999), A) is None  # full: new SSRCs refused, none evicted
    assert len(evicted) == MAX_EVICTED_SSRCS and len(pair.legs[1].tx_ssrcs) == 16


@settings(max_examples=300, deadline=None)
@given(packet=st.binary(min_size=8, max_size=1500), rtcp=st.booleans(), secure=st.booleans())
def test_any_datagram_is_relayed_or_counted_never_raises(packet: bytes, rtcp: bool,
                                                        secure: bool) -> None:
    keys = [generate_params("AEAD_AES_128_GCM") for _ in range(2)]
    pair = Pair(LegConfig(remote_rtp=A, rx=keys[0], tx=keys[1]) if secure
                else LegConfig(remote_rtp=A, accept_plain_rtcp=True),
                LegConfig(remote_rtp=B, rx=keys[1], tx=keys[0]))
    out = pair.feed(0, packet, A, rtcp=rtcp)
    s = pair.legs[0].stats()
    if out is not None:
        assert s.packets_in == 1 and sum(s.drops.values()) == 0
    else:  # dropped exactly once, maybe after it was accepted (then it is also in packets_in)
        assert sum(s.drops.values()) == 1
    looks_like_plain_rtcp(packet)


def test_dtls_leg_without_mux_keys_srtcp_from_its_own_association() -> None:
    """RFC 5764 §4.1: without rtcp-mux, SRTCP waits for the RTCP port's keys and never uses the
    RTP association's; plain RTCP from the other leg leaves protected with them."""
    rtp_in, rtp_out, rtcp_in, rtcp_out = (generate_params(SUITE) for _ in range(4))
    base = LegConfig(remote_rtp=A, rtcp_mux=False, dtls=True, rx=rtp_in, tx=rtp_out)
    pair = Pair(base, LegConfig(remote_rtp=B, rtcp_mux=False))
    wrong = SrtpContext(rtp_in, outbound=True)
    with_rtp_keys = wrong.protect(rtcp_rr(), rtcp=True)
    assert pair.feed(0, with_rtp_keys, A, rtcp=True) is None
    b_rtcp = (B[0], B[1] + 1)
    assert pair.feed(1, rtcp_rr(0xB), b_rtcp, rtcp=True) is None
    assert pair.legs[0].drop_no_keys == 1 and pair.legs[1].drop_no_keys == 1
    pair.legs[0].configure(LegConfig(remote_rtp=A, rtcp_mux=False, dtls=True, rx=rtp_in,
                                     tx=rtp_out, rtcp_rx=rtcp_in, rtcp_tx=rtcp_out))
    kept = pair.legs[0].rtcp_rx
    peer_tx = SrtpContext(rtcp_in, outbound=True)
    assert pair.feed(0, peer_tx.protect(rtcp_rr(), rtcp=True), A, rtcp=True) == rtcp_rr()
    later = wrong.protect(rtcp_rr(), rtcp=True)  # SRTCP index 2: past the replay check
    assert pair.feed(0, later, A, rtcp=True) is None and pair.legs[0].drop_auth == 1
    out = pair.feed(1, rtcp_rr(0xB), b_rtcp, rtcp=True)
    assert SrtpContext(rtcp_out, outbound=False).unprotect(out or b"", rtcp=True) == rtcp_rr(0xB)
    packet = SrtpContext(rtp_in, outbound=True).protect(rtp(1))
    assert pair.feed(0, packet, A) == rtp(1)  # RTP keeps the RTP association's keys
    pair.legs[0].configure(LegConfig(remote_rtp=A, rtcp_mux=False, dtls=True, rx=rtp_in,
                                     tx=rtp_out, rtcp_rx=rtcp_in, rtcp_tx=rtcp_out))
    assert pair.legs[0].rtcp_rx is kept  # unchanged keys keep the context (index, window)
    pair.legs[0].close()
    assert pair.legs[0].rtcp_rx is None and pair.legs[0].rtcp_rx_handle is None


def test_separate_srtcp_keys_are_validated() -> None:
    k = generate_params(SUITE)
    with pytest.raises(InvalidParams):
        LegConfig(rtcp_mux=False, dtls=True, rtcp_rx=k)
    with pytest.raises(InvalidParams):  # with rtcp-mux there is one association
        LegConfig(dtls=True, rtcp_rx=k, rtcp_tx=k)
    with pytest.raises(InvalidParams):  # a plain leg has nothing to key
        LegConfig(rtcp_mux=False, rtcp_rx=k, rtcp_tx=k)
    cfg = LegConfig(remote_rtp=A, rtcp_mux=False, dtls=True, rtcp_rx=k, tx=None, rtcp_tx=k)
    assert leg_from_json(leg_to_json(cfg)) == cfg
    assert k.key.hex() not in repr(cfg)
