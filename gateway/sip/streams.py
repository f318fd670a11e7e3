"""Byte streams under the SIP stream transports: plain TCP and TLS over memory BIOs.

``ByteStream`` is the whole contract a connection-oriented transport must meet to carry SIP
(read, write, close, and the peer certificate if it has one): a later transport (e.g. a QUIC
stream) plugs in by implementing it and handing it to ``SipTransports.attach``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Protocol


class ByteStream(Protocol):
    async def read(self, n: int) -> bytes: ...

    def write(self, data: bytes) -> None: ...

    def pending_output(self) -> int: ...

    def is_closing(self) -> bool: ...

    def close(self) -> None: ...

    def peer_certificate(self) -> bytes | None: ...


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

    def close(self) -> None:
        """Send close_notify (without waiting for the peer's), then close the socket."""
        if not self.writer.is_closing():
            with contextlib.suppress(ssl.SSLError, OSError, ValueError):
                self.obj.unwrap()
            self._flush()
        super().close()

    def peer_certificate(self) -> bytes | None:
        return self.obj.getpeercert(binary_form=True)
