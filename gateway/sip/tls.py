"""SSL contexts for SIP over TLS (RFC 3261 §26.2, RFC 9325 recommendations).

TLS 1.2 is the floor (1.3 preferred, and the floor can be raised to 1.3); the cipher list applies
to 1.2. Listeners verify client certificates against the configured CA when the listener asks for
them; outbound connections present the gateway certificate and always verify the server chain.
Host names are checked against RFC 5922 identities by the transport, not by OpenSSL's HTTPS rules.
"""

from __future__ import annotations

import ssl

from gateway.config import ClientAuth, TlsSection

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
_VERIFY = {"require": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "off": ssl.CERT_NONE}


def _common(ctx: ssl.SSLContext, tls: TlsSection) -> ssl.SSLContext:
    ctx.minimum_version = _VERSIONS[tls.min_version]
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_ciphers(tls.ciphers)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    ctx.load_cert_chain(tls.certificate, tls.private_key)
    return ctx


def server_context(tls: TlsSection, client_auth: ClientAuth) -> ssl.SSLContext:
    ctx = _common(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), tls)
    ctx.verify_mode = _VERIFY[client_auth]
    if client_auth != "off":
        ctx.load_verify_locations(cafile=str(tls.ca_file))
    return ctx


def client_context(tls: TlsSection) -> ssl.SSLContext:
    ctx = _common(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), tls)
    ctx.check_hostname = False  # RFC 5922 identity is checked after the handshake
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=str(tls.ca_file))
    return ctx

