"""SRTP context wrapper: interop with stock pylibsrtp; AES-256-CM against an RFC 3711 reference."""

from __future__ import annotations

import hashlib
import hmac
import struct
from socket import htonl

import pylibsrtp
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from gateway.media.api import (
    SUITE_KEY_LENGTHS,
    InvalidParams,
    LegConfig,
    SrtpParams,
    generate_params,
)
from gateway.media.srtp import (
    AUTH_FAIL,
    REPLAY_FAIL,
    SrtpContext,
    SrtpError,
    carry_roc,
    remove_stream,
    stream_rocs,
)

STOCK_PROFILES = {
    "AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
    "AEAD_AES_128_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
    "AEAD_AES_256_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM,
}


def rtp(seq: int, ssrc: int = 0x11223344, payload: bytes = b"\x55" * 160) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, ssrc) + payload


def rtcp_sr(ssrc: int = 0x11223344) -> bytes:
    return struct.pack("!BBHI", 0x80, 200, 6, ssrc) + bytes(range(20))


def stock(params: SrtpParams, outbound: bool) -> pylibsrtp.Session:
    policy = pylibsrtp.Policy(key=params.key, srtp_profile=STOCK_PROFILES[params.suite],
                              ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound
                              else pylibsrtp.Policy.SSRC_ANY_INBOUND)
    return pylibsrtp.Session(policy)


@pytest.mark.parametrize("suite", sorted(STOCK_PROFILES))
def test_interoperates_with_stock_pylibsrtp(suite: str) -> None:
    params = generate_params(suite)
    ours_tx, ours_rx = SrtpContext(params, outbound=True), SrtpContext(params, outbound=False)
    stock_tx, stock_rx = stock(params, True), stock(params, False)
    for seq in range(5):
        assert stock_rx.unprotect(ours_tx.protect(rtp(seq))) == rtp(seq)
        assert ours_rx.unprotect(stock_tx.protect(rtp(seq, 7))) == rtp(seq, 7)
    assert stock_rx.unprotect_rtcp(ours_tx.protect(rtcp_sr(), rtcp=True)) == rtcp_sr()
    assert ours_rx.unprotect(stock_tx.protect_rtcp(rtcp_sr(9)), rtcp=True) == rtcp_sr(9)


@pytest.mark.parametrize("suite", sorted(SUITE_KEY_LENGTHS))
def test_replay_and_tamper_are_told_apart(suite: str) -> None:
    params = generate_params(suite)
    tx, rx = SrtpContext(params, outbound=True), SrtpContext(params, outbound=False)
    packet = tx.protect(rtp(1))
    assert rx.unprotect(packet) == rtp(1)
    with pytest.raises(SrtpError) as replay:
        rx.unprotect(packet)
    assert replay.value.status == REPLAY_FAIL
    tampered = bytearray(tx.protect(rtp(2)))
    tampered[20] ^= 1
    with pytest.raises(SrtpError) as auth:
        rx.unprotect(bytes(tampered))
    assert auth.value.status == AUTH_FAIL
    other = SrtpContext(generate_params(suite), outbound=False)
    with pytest.raises(SrtpError):
        other.unprotect(tx.protect(rtp(3)))


def test_params_validate_and_never_show_the_key() -> None:
    params = generate_params("AES_CM_128_HMAC_SHA1_80")
    assert len(params.key) == 30
    assert params.key.hex() not in repr(params) and repr(params.key) not in repr(params)
    assert params.key.hex() not in repr(SrtpContext(params, outbound=True))
    assert params.key.hex() not in repr(LegConfig(rx=params, tx=params))
    with pytest.raises(InvalidParams):
        SrtpParams("AES_CM_128_HMAC_SHA1_80", bytes(29))
    with pytest.raises(InvalidParams):
        SrtpParams("NULL_HMAC_SHA1_80", bytes(30))
    with pytest.raises(InvalidParams):
        generate_params("F8_128_HMAC_SHA1_80")
    with pytest.raises(InvalidParams):
        SrtpParams("AEAD_AES_128_GCM", bytes(28), unencrypted_srtp=True)
    with pytest.raises(InvalidParams):
        LegConfig(rx=params)
    assert generate_params("AEAD_AES_256_GCM").key != generate_params("AEAD_AES_256_GCM").key


# --------------------------------------------------------------------------- RFC 3711 reference


def _aes_cm(key: bytes, iv: int, length: int) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.CTR(iv.to_bytes(16, "big"))).encryptor()
    return enc.update(bytes(length)) + enc.finalize()


def _kdf(master_key: bytes, master_salt: bytes, label: int, length: int) -> bytes:
    """RFC 3711 §4.3.1 with key_derivation_rate 0: AES-CM PRF over (label << 48) XOR salt."""
    x = int.from_bytes(master_salt, "big") ^ (label << 48)
    return _aes_cm(master_key, x << 16, length)


class Reference:
    """AES-CM + HMAC-SHA1-80 SRTP/SRTCP sender per RFC 3711 (§3.3, §3.4, §4.1.1, §4.2.1)."""

    def __init__(self, params: SrtpParams) -> None:
        klen, slen = SUITE_KEY_LENGTHS[params.suite]
        mk, ms = params.key[:klen], params.key[klen:]
        self.enc = [_kdf(mk, ms, base, klen) for base in (0, 3)]
        self.auth = [_kdf(mk, ms, base + 1, 20) for base in (0, 3)]
        self.salt = [int.from_bytes(_kdf(mk, ms, base + 2, slen), "big") for base in (0, 3)]
        self.clear_rtp = params.unencrypted_srtp

    def _iv(self, which: int, ssrc: int, index: int) -> int:
        return (self.salt[which] << 16) ^ (ssrc << 64) ^ (index << 16)

    def protect(self, packet: bytes, roc: int) -> bytes:
        seq, ssrc = struct.unpack_from("!H", packet, 2)[0], struct.unpack_from("!I", packet, 8)[0]
        header, payload = packet[:12], packet[12:]
        if not self.clear_rtp:
            stream = _aes_cm(self.enc[0], self._iv(0, ssrc, (roc << 16) | seq), len(payload))
            payload = bytes(a ^ b for a, b in zip(payload, stream, strict=True))
        body = header + payload
        tag = hmac.new(self.auth[0], body + struct.pack("!I", roc), hashlib.sha1).digest()
        return body + tag[:10]

    def protect_rtcp(self, packet: bytes, index: int) -> bytes:
        ssrc = struct.unpack_from("!I", packet, 4)[0]
        stream = _aes_cm(self.enc[1], self._iv(1, ssrc, index), len(packet) - 8)
        body = packet[:8] + bytes(a ^ b for a, b in zip(packet[8:], stream, strict=True))
        body += struct.pack("!I", 0x80000000 | index)
        return body + hmac.new(self.auth[1], body, hashlib.sha1).digest()[:10]


@pytest.mark.parametrize("suite", ["AES_CM_128_HMAC_SHA1_80", "AES_256_CM_HMAC_SHA1_80"])
def test_aes_cm_matches_the_rfc3711_reference(suite: str) -> None:
    """The 128-bit run proves the reference against libsrtp's own profile; the 256-bit run then
    proves the field-by-field AES_256_CM_HMAC_SHA1_80 policy (RFC 6188) against the reference."""
    params = generate_params(suite)
    ref = Reference(params)
    tx, rx = SrtpContext(params, outbound=True), SrtpContext(params, outbound=False)
    seqs = [*range(65530, 65536), *range(0, 6)]  # across the wrap: ROC 0 then 1
    for i, seq in enumerate(seqs):
        roc = 0 if i < 6 else 1
        assert tx.protect(rtp(seq)) == ref.protect(rtp(seq), roc)
        assert rx.unprotect(ref.protect(rtp(seq, 5), roc)) == rtp(seq, 5)
    srtcp = tx.protect(rtcp_sr(), rtcp=True)
    index = struct.unpack_from("!I", srtcp, len(srtcp) - 14)[0] & 0x7FFFFFFF
    assert srtcp == ref.protect_rtcp(rtcp_sr(), index)
    assert rx.unprotect(ref.protect_rtcp(rtcp_sr(3), 1), rtcp=True) == rtcp_sr(3)


def test_unencrypted_srtp_is_authenticated_but_clear() -> None:
    params = generate_params("AES_CM_128_HMAC_SHA1_80", unencrypted_srtp=True)
    tx, rx = SrtpContext(params, outbound=True), SrtpContext(params, outbound=False)
    packet = tx.protect(rtp(1))
    assert packet[:-10] == rtp(1)
    assert packet == Reference(params).protect(rtp(1), 0)
    assert rx.unprotect(packet) == rtp(1)
    tampered = bytearray(packet)
    tampered[30] ^= 0xFF
    with pytest.raises(SrtpError):
        rx.unprotect(bytes(tampered))


def test_unencrypted_srtcp_sends_clear_with_e_bit_off() -> None:
    params = generate_params("AES_CM_128_HMAC_SHA1_80", unencrypted_srtcp=True)
    tx, rx = SrtpContext(params, outbound=True), SrtpContext(params, outbound=False)
    packet = tx.protect(rtcp_sr(), rtcp=True)
    assert packet.startswith(rtcp_sr())
    assert packet[len(rtcp_sr())] & 0x80 == 0
    assert rx.unprotect(packet, rtcp=True) == rtcp_sr()
    assert rx.unprotect(SrtpContext(params, outbound=True).protect(rtcp_sr(8), rtcp=True),
                        rtcp=True) == rtcp_sr(8)


def test_remove_stream_takes_the_ssrc_in_network_order() -> None:
    tx = SrtpContext(generate_params("AES_CM_128_HMAC_SHA1_80"), outbound=True)
    tx.protect(rtp(1, ssrc=0x01020304))
    assert remove_stream(tx.handle, htonl(0x04030201)) != 0
    assert remove_stream(tx.handle, htonl(0x01020304)) == 0
    assert remove_stream(tx.handle, htonl(0x01020304)) != 0


@pytest.mark.parametrize("suite", sorted(SUITE_KEY_LENGTHS))
def test_carry_roc_per_ssrc_into_new_contexts(suite: str) -> None:
    """Two SSRCs, one past the wrap (ROC 1) and one not: after carry_roc into contexts with new
    keys both keep flowing, and a receiver that was not told the ROC refuses the wrapped one."""
    old_tx = SrtpContext(generate_params(suite), outbound=True)
    old_rx = SrtpContext(old_tx.params, outbound=False)
    for seq in range(65_530, 65_540):
        old_rx.unprotect(old_tx.protect(rtp(seq & 0xFFFF, ssrc=1)))
    old_rx.unprotect(old_tx.protect(rtp(7, ssrc=2)))
    assert stream_rocs(old_tx) == stream_rocs(old_rx) == {1: 1, 2: 0}
    params = generate_params(suite)
    new_tx, new_rx = SrtpContext(params, outbound=True), SrtpContext(params, outbound=False)
    assert carry_roc(old_tx, new_tx) == 1 and carry_roc(old_rx, new_rx) == 1
    untold = SrtpContext(params, outbound=False)
    for seq in range(5, 10):
        for ssrc in (1, 2):
            packet = new_tx.protect(rtp(seq, ssrc=ssrc))
            assert new_rx.unprotect(packet) == rtp(seq, ssrc=ssrc)
    with pytest.raises(SrtpError):
        untold.unprotect(new_tx.protect(rtp(10, ssrc=1)))
    assert stream_rocs(new_tx) == {1: 1, 2: 0}
    assert carry_roc(old_rx, new_rx) == 0  # new context is there already: nothing to do
    old_tx.close()
    assert stream_rocs(old_tx) == {}
