"""TLS material and contexts for the test peers.

``make_test_pki(dir)`` writes the dev key set (CA, gateway, peer, DTLS) with the lead's
``gateway.ops.keys.init_keys``; the context helpers turn it into ``ssl.SSLContext`` objects for a
test UA acting as TLS server or client, with or without a client certificate.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from gateway.ops.keys import KeySet, init_keys

GATEWAY_NAME = "gateway.srtpgw.test"
PEER_NAME = "peer.srtpgw.test"


def make_test_pki(directory: Path) -> KeySet:
    """CA + gateway.crt/key + peer.crt/key + dtls.crt/key in ``directory`` (created if absent)."""
    return init_keys(directory)


def server_context(directory: Path, name: str = "peer", *, require_client_cert: bool = False
                   ) -> ssl.SSLContext:
    """A TLS server context presenting ``<name>.crt``; optionally demanding a client cert
    signed by the directory's CA."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(directory / f"{name}.crt", directory / f"{name}.key")
    ctx.load_verify_locations(directory / "ca.crt")
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return ctx


def client_context(directory: Path, name: str | None = "peer", *, verify: bool = True
                   ) -> ssl.SSLContext:
    """A TLS client context trusting the directory's CA, presenting ``<name>.crt`` if a name is
    given (mutual TLS). ``verify=False`` is for tests that probe a server with a bad cert."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(directory / "ca.crt")
    if name is not None:
        ctx.load_cert_chain(directory / f"{name}.crt", directory / f"{name}.key")
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
