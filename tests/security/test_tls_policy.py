"""TLS on the secure listener: old versions, missing or foreign client certificates and wrong
identities are refused, each leaving a security event; the right peer gets through."""

from __future__ import annotations

import ssl
import time
import warnings
from pathlib import Path

import pytest

from gateway.ops.keys import init_keys
from tests.security.harness import (
    Gateway,
    client_context,
    final_status,
    request,
    stream_exchange,
)


def attempt(gw: Gateway, ctx: ssl.SSLContext) -> int | None:
    try:
        return final_status(stream_exchange(request("OPTIONS", transport="TLS"),
                                            gw.ports["tls"], 2.0, ctx))
    except (ssl.SSLError, ConnectionError):
        return None


def tls_failed(e: dict) -> bool:
    return e["kind"] == "tls.handshake_failed" and bool(e.get("reason")) and str(
        e.get("peer", "")).startswith("127.0.0.1:")


def wait_event(gw: Gateway, pred, timeout: float = 3.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for e in gw.events():
            if pred(e):
                return e
        time.sleep(0.1)
    raise AssertionError(f"no matching security event; got {gw.events()}")


def test_good_peer_gets_through(gateway: Gateway) -> None:
    assert attempt(gateway, client_context(gateway.keys)) == 200


@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"])
def test_old_tls_refused(gateway: Gateway, version: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        v = getattr(ssl.TLSVersion, version)
        ctx = client_context(gateway.keys, version=v)
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with pytest.raises(ssl.SSLError, match=r"(?i)protocol.version"):
        stream_exchange(request("OPTIONS", transport="TLS"), gateway.ports["tls"], 2.0, ctx)
    wait_event(gateway, tls_failed)


def test_missing_client_certificate_refused(gateway: Gateway) -> None:
    assert attempt(gateway, client_context(gateway.keys, cert=None)) is None
    wait_event(gateway, tls_failed)


def test_foreign_ca_certificate_refused(gateway: Gateway, tmp_path: Path) -> None:
    other = init_keys(tmp_path / "other").dir
    ctx = client_context(gateway.keys, cert=None)
    ctx.load_cert_chain(Path(other) / "peer.crt", Path(other) / "peer.key")
    assert attempt(gateway, ctx) is None
    wait_event(gateway, tls_failed)


def test_wrong_identity_refused(gateway: Gateway) -> None:
    # signed by the right CA, but it is the gateway's own certificate: sip:gateway.srtpgw.test
    assert attempt(gateway, client_context(gateway.keys, cert="gateway")) is None
    e = wait_event(gateway, lambda e: e["kind"] == "firewall.acl.unknown_source")
    assert e["reason"] == "identity-mismatch" and e["transport"] == "tls"
