"""Signalled remote addresses as the relay's control path reads them (cached canonical text)."""

from __future__ import annotations

import ipaddress

import pytest

from gateway.media.api import InvalidParams
from gateway.media.relay import _remote

HOSTS = ["192.0.2.7", "0.0.0.0", "::", "::0", "0:0:0:0:0:0:0:0", "2001:DB8::1",
         "2001:db8:0:0:0:0:0:1", "::ffff:0.0.0.0", "::ffff:192.0.2.7", "127.0.0.1", "::1"]


@pytest.mark.parametrize("host", HOSTS)
def test_remote_is_canonical_and_unspecified_means_hold(host: str) -> None:
    ip = ipaddress.ip_address(host)
    for _ in range(2):  # the second read comes from the cache and must agree
        got = _remote((host, 4000))
        assert got == (None if ip.is_unspecified else (str(ip), 4000))
    assert _remote((host, 0)) is None


@pytest.mark.parametrize("addr", [("example.com", 4000), ("192.0.2.300", 4000), (["::1"], 4000),
                                  ("192.0.2.1", 70000), ("192.0.2.1", -1), ("192.0.2.1", "5"),
                                  ("192.0.2.1",), "192.0.2.1:4000"])
def test_bad_remotes_are_typed_errors_every_time(addr: object) -> None:
    for _ in range(2):
        with pytest.raises(InvalidParams):
            _remote(addr)  # type: ignore[arg-type]


def test_no_remote_is_no_remote() -> None:
    assert _remote(None) is None
