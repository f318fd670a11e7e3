"""Config rules for dtls-srtp trunks, and that they agree with the DTLS engine's profiles."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config import DTLS_SRTP_SUITES, ConfigError, config_from_dict
from gateway.media.dtls import PROFILES


def raw(suites: list[str]) -> dict[str, Any]:
    return {
        "listener": [{"name": "secure", "transport": "tls", "address": "127.0.0.1",
                      "port": 5061}],
        "trunk": [{"name": "carrier", "side": "secure", "listener": "secure",
                   "transport": "tls", "peer": "127.0.0.1", "media": "dtls-srtp",
                   "tls_identity": ["sip:carrier.example.test"], "suites": suites}],
    }


def test_config_and_engine_agree_on_dtls_suites() -> None:
    assert set(DTLS_SRTP_SUITES) == set(PROFILES)


def test_dtls_trunk_without_a_dtls_profile_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw(["AES_256_CM_HMAC_SHA1_80"]), file="gw.toml", check_files=False)
    assert info.value.key == "trunk[0].suites" and "DTLS-SRTP" in info.value.reason


def test_dtls_trunk_with_one_dtls_profile_loads() -> None:
    cfg = config_from_dict(raw(["AES_256_CM_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_80"]),
                           file="gw.toml", check_files=False)
    assert cfg.trunk("carrier").media == "dtls-srtp"
