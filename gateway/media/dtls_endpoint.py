"""The asyncio edge of a DTLS-SRTP session: moves datagrams, arms one timer, reports outcomes.

It owns no socket: ``send`` is whatever delivers a datagram to the peer (a relay leg's
``send_raw``, or a plain UDP transport in tests), and the owner feeds received DTLS datagrams to
``datagram_received``. Failures become ``security_event("dtls.failed", reason=...)``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gateway.media.dtls import DtlsSession
from gateway.media.dtls_events import DtlsClosed, DtlsFailed, HandshakeCompleted
from gateway.ops.log import get_logger, security_event

log = get_logger("media")


class DtlsEndpoint:
    """Drives one ``DtlsSession`` on the running loop."""

    def __init__(self, session: DtlsSession, send: Callable[[bytes], None], *,
                 on_connected: Callable[[HandshakeCompleted], None],
                 on_failed: Callable[[str], None],
                 context: Mapping[str, Any] | None = None) -> None:
        self.session = session
        self._send = send
        self._on_connected = on_connected
        self._on_failed = on_failed
        self._context = dict(context or {})
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._abandoned = False

    def start(self) -> None:
        self.session.start(self._loop.time())
        self._pump()

    def datagram_received(self, data: bytes) -> None:
        if self._abandoned:
            return
        self.session.receive_datagram(data, self._loop.time())
        self._pump()

    def set_remote_fingerprints(self, fingerprints: Sequence[tuple[str, str]]) -> None:
        self.session.set_remote_fingerprints(fingerprints, self._loop.time())
        self._pump()

    def close(self) -> None:
        self.session.close(self._loop.time())
        self._pump()
        self._cancel_timer()

    def abandon(self) -> None:
        """Stop silently: the socket is gone (relay session closed), nothing can be sent."""
        self._cancel_timer()
        self._abandoned = True

    def _on_timer(self) -> None:
        self._timer = None
        if self._abandoned:
            return
        self.session.handle_timer(self._loop.time())
        self._pump()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _pump(self) -> None:
        if self._abandoned:
            return
        for datagram in self.session.datagrams_to_send():
            self._send(datagram)
            if self._abandoned:
                return
        while (event := self.session.next_event()) is not None:
            if isinstance(event, HandshakeCompleted):
                log.info("dtls.connected", role=self.session.role, suite=event.keys.suite,
                         cipher=event.cipher, version=event.version,
                         peer_fingerprint=event.peer_fingerprint, **self._context)
                self._on_connected(event)
            elif isinstance(event, DtlsFailed):
                security_event("dtls.failed", reason=event.reason, role=self.session.role,
                               **self._context)
                self._on_failed(event.reason)
            elif isinstance(event, DtlsClosed):
                log.info("dtls.closed", by_peer=event.by_peer, **self._context)
        when = self.session.get_timer()
        if when is None:
            self._cancel_timer()
        elif self._timer is None or self._timer.when() != when:
            self._cancel_timer()
            self._timer = self._loop.call_at(when, self._on_timer)
