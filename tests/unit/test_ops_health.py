"""Liveness/readiness verdicts and certificate reading (sans-IO: ``now`` passed in)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.ops.health import (
    CertificateError,
    CertInfo,
    ReadinessFacts,
    liveness,
    read_certificate,
    readiness,
)
from gateway.ops.keys import make_self_signed, write_cert, write_private_key

DAY = 86400.0
NOW = 1_800_000_000.0


def cert(name: str, days_left: float) -> CertInfo:
    return CertInfo(name, Path(f"/etc/srtpgw/{name}.crt"), NOW + days_left * DAY, "CN=x")


def test_liveness_names_unbound_listeners() -> None:
    assert liveness({"udp": True, "tls": True}).ok
    v = liveness({"udp": True, "tls": False, "admin": False})
    assert not v.ok
    assert v.reasons == ("listener admin not bound", "listener tls not bound")


def test_ready_when_nothing_is_wrong() -> None:
    facts = ReadinessFacts(False, 10, 1000, (cert("tls", 300),))
    assert readiness(facts, NOW, 14).ok


def test_draining_is_not_ready() -> None:
    v = readiness(ReadinessFacts(True, 0, 1000), NOW, 14)
    assert not v.ok and v.reasons == ("draining",)


def test_exhausted_port_pool_is_not_ready() -> None:
    assert not readiness(ReadinessFacts(False, 999, 1000), NOW, 14).ok
    assert readiness(ReadinessFacts(False, 998, 1000), NOW, 14).ok


def test_certificate_inside_warning_window_is_not_ready() -> None:
    v = readiness(ReadinessFacts(False, 0, 100, (cert("tls", 13.5), cert("dtls", 20))), NOW, 14)
    assert not v.ok
    assert len(v.reasons) == 1 and "tls" in v.reasons[0] and "13.5 days" in v.reasons[0]
    assert readiness(ReadinessFacts(False, 0, 100, (cert("tls", 13.5),)), NOW, 10).ok


def test_expired_certificate_is_not_ready() -> None:
    v = readiness(ReadinessFacts(False, 0, 100, (cert("ca", -1),)), NOW, 0)
    assert v.reasons == ("certificate ca (/etc/srtpgw/ca.crt) expired",)


def test_read_certificate_expiry(tmp_path: Path) -> None:
    _key, c = make_self_signed("health test", days=3)
    write_cert(tmp_path / "c.crt", c)
    info = read_certificate("dtls", tmp_path / "c.crt")
    assert info.not_after == c.not_valid_after_utc.timestamp()
    assert "health test" in info.subject


def test_read_certificate_errors_are_typed_and_keyless(tmp_path: Path) -> None:
    with pytest.raises(CertificateError, match="cannot read"):
        read_certificate("tls", tmp_path / "missing.crt")
    key, _ = make_self_signed("k")
    write_private_key(tmp_path / "k.key", key)
    with pytest.raises(CertificateError, match="not a PEM certificate") as info:
        read_certificate("tls", tmp_path / "k.key")
    assert "PRIVATE KEY" not in str(info.value)
