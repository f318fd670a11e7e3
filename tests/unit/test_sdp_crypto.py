"""RFC 4568 a=crypto: parsing, per-suite key lengths, formatting, and no key in any repr."""

from __future__ import annotations

import base64
import os

import pytest

from gateway.config import SRTP_SUITES
from gateway.sdp import SdpError, format_crypto, parse_crypto
from gateway.sdp.crypto import KEY_LENGTHS, key_length

KEY30 = "uCRNAomB1pOve0Vq+O+kytY9KC4Z/xSULCRuUNk1"


def test_every_configurable_suite_has_a_known_key_length() -> None:
    assert set(SRTP_SUITES) <= set(KEY_LENGTHS)
    assert [key_length(s) for s in SRTP_SUITES] == [30, 30, 28, 44, 46]


@pytest.mark.parametrize("suite", SRTP_SUITES)
def test_format_then_parse_round_trips_each_suite(suite: str) -> None:
    material = os.urandom(key_length(suite))
    value = format_crypto(7, suite, material)
    crypto = parse_crypto(value)
    assert (crypto.tag, crypto.suite, crypto.material) == (7, suite, material)
    assert crypto.to_text() == value
    assert not crypto.has_mki and crypto.session_params == ()


@pytest.mark.parametrize("suite", ["AEAD_AES_128_GCM", "AEAD_AES_256_GCM"])
def test_base64_with_or_without_padding(suite: str) -> None:
    material = os.urandom(key_length(suite))
    padded = base64.b64encode(material).decode()
    assert padded.endswith("=")
    for text in (padded, padded.rstrip("=")):
        assert parse_crypto(f"1 {suite} inline:{text}").material == material


def test_lifetime_mki_and_session_params() -> None:
    value = f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}|2^20|1:4 KDR=0 UNENCRYPTED_SRTCP"
    c = parse_crypto(value)
    (key,) = c.keys
    assert (key.lifetime, key.mki, key.mki_length) == (2**20, 1, 4)
    assert c.has_mki and c.kdr == 0 and c.unencrypted_srtcp
    assert not c.unencrypted_srtp and not c.unauthenticated_srtp
    assert c.session_params == ("KDR=0", "UNENCRYPTED_SRTCP")
    assert c.to_text() == value
    assert parse_crypto(f"2 AES_CM_128_HMAC_SHA1_32 inline:{KEY30}|1000").keys[0].lifetime == 1000


def test_several_key_params() -> None:
    c = parse_crypto(f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}|2^20|1:4;inline:{KEY30}|2^20|2:4")
    assert [k.mki for k in c.keys] == [1, 2]


def test_unknown_suite_parses_without_length_check() -> None:
    c = parse_crypto("3 SOME_FUTURE_SUITE inline:AAAA")
    assert not c.known_suite and c.material == b"\0\0\0"


@pytest.mark.parametrize("value", [
    "",
    "x AES_CM_128_HMAC_SHA1_80 inline:" + KEY30,
    "1234567890 AES_CM_128_HMAC_SHA1_80 inline:" + KEY30,
    "1 AES_CM_128_HMAC_SHA1_80",
    "1 AES_CM_128_HMAC_SHA1_80 uri:http://example.com/key",
    "1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY30[:-4],
    "1 AEAD_AES_256_GCM inline:" + KEY30,
    "1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY30[:-1] + "!",
    "1 AES_CM_128_HMAC_SHA1_80 inline:A",
    "1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY30 + "|2^99",
    "1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY30 + "|2^20|1:0",
    "1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY30 + "|2^20|1:129",
    "1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY30 + "|2^20|256:1",
])
def test_malformed_crypto_is_a_400(value: str) -> None:
    with pytest.raises(SdpError) as info:
        parse_crypto(value)
    assert info.value.status == 400
    assert KEY30 not in str(info.value)


def test_format_refuses_wrong_lengths_and_null_suites() -> None:
    with pytest.raises(ValueError):
        format_crypto(1, "AES_CM_128_HMAC_SHA1_80", os.urandom(29))
    with pytest.raises(ValueError):
        format_crypto(1, "NULL_HMAC_SHA1_80", os.urandom(30))
    with pytest.raises(ValueError):
        format_crypto(1, "NOT_A_SUITE", os.urandom(30))


def test_reprs_show_no_key_material() -> None:
    c = parse_crypto(f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}|2^31|1:1")
    text = repr(c) + repr(c.keys) + str(c.keys[0].__repr__())
    assert KEY30 not in text
    assert base64.b64decode(KEY30).hex() not in text
    assert "30 bytes" in text
