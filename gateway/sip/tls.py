"""SSL contexts for SIP over TLS (RFC 3261 §26.2, RFC 9325 recommendations).

TLS 1.2 is the floor (1.3 preferred, and the floor can be raised to 1.3); the cipher list applies
to 1.2. Listeners verify client certificates against the configured CA when the listener asks for
them; outbound connections present the gateway certificate and always verify the server chain.
Host names are checked against RFC 5922 identities by the transport, not by OpenSSL's HTTPS rules.
"""

from __future__ import annotations

import asyncio
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


class PlainStream:
    """A TCP connection as the transport reads and writes it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def read(self, n: int) -> bytes:
        return await self.reader.read(n)

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    def pending_output(self) -> int:
        return self.writer.transport.get_write_buffer_size()

    def is_closing(self) -> bool:
        return self.writer.is_closing()

    def close(self) -> None:
        self.writer.close()

    def peer_certificate(self) -> bytes | None:
        return None


class TlsStream(PlainStream):
    """TLS through memory BIOs over a plain TCP stream.

    Doing the record layer ourselves (instead of the loop's start_tls, which uvloop cannot do on
    a stream) works on any event loop and gives the exact handshake failure to log.
    """

    def __init__(self, ctx: ssl.SSLContext, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, *, server_side: bool,
                 server_hostname: str | None = None) -> None:
        super().__init__(reader, writer)
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self._in, self._out, server_side=server_side,
                                server_hostname=server_hostname)

    def _flush(self) -> None:
        data = self._out.read()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    async def _fill(self) -> bool:
        self._flush()
        data = await self.reader.read(65536)
        if not data:
            self._in.write_eof()
            return False
        self._in.write(data)
        return True

    async def handshake(self, timeout: float) -> None:
        """Raises ssl.SSLError, OSError or TimeoutError; alerts reach the peer first."""
        async with asyncio.timeout(timeout):
            while True:
                try:
                    self.obj.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    if not await self._fill():
                        raise ConnectionResetError("peer closed during the handshake") from None
                except ssl.SSLError:
                    self._flush()
                    raise
        self._flush()

    async def read(self, n: int) -> bytes:
        while True:
            try:
                data = self.obj.read(n)
            except ssl.SSLWantReadError:
                if not await self._fill():
                    return b""
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""
            self._flush()
            return data

    def write(self, data: bytes) -> None:
        self.obj.write(data)
        self._flush()

    def peer_certificate(self) -> bytes | None:
        return self.obj.getpeercert(binary_form=True)
