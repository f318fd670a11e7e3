"""The running gateway: SIP stack, firewall, B2BUA and media relay wired from one Config.

``serve(config)`` runs until ``stop`` is set; ``run(config)`` is what ``srtpgw run`` calls: uvloop,
SIGHUP reloads, SIGINT/SIGTERM drain and stop it, exit status 0. The ``Gateway`` object holds
every component as an attribute so operations code (admin endpoint, CDRs, reload, drain) can
reach them.
"""

from __future__ import annotations

import asyncio
import gc
from collections import Counter
from collections.abc import Callable

import uvloop

from gateway.b2bua.b2bua import B2bua
from gateway.b2bua.call import Call
from gateway.b2bua.media import dtls_context
from gateway.config import Config
from gateway.media.api import UnknownSession
from gateway.media.relay import MediaRelay
from gateway.ops.gateway_view import attach_ops
from gateway.ops.log import configure_security_events, get_logger, log_loop_exceptions
from gateway.policy.acl import Source
from gateway.policy.events import SiemHandler, configure_siem, detach_siem
from gateway.policy.firewall import Firewall
from gateway.policy.media import SrtpWatch
from gateway.sip.errors import SipParseError
from gateway.sip.events import Tid
from gateway.sip.message import SipResponse
from gateway.sip.stack import IncomingRequest, SipStack
from gateway.sip.transport import MessageSource

log = get_logger("app")
SRTP_POLL = 2.0  # seconds between reads of live calls' SRTP failure counters
# Cyclic GC thresholds for the gateway process. Every call allocates thousands of short-lived
# containers (messages, SDP, dialogs); with Python's default gen-0 threshold of 700 the collector
# ran ~60 times a second at 300 calls/s and promoted call state it then rescanned in gen 1/2
# (8 % of the CPU, gen-2 pauses of ~80 ms). A larger gen 0 lets most of it die by refcount first.
GC_THRESHOLDS = (50_000, 20, 10)


def _source(src: MessageSource) -> Source:
    return Source(src.listener, src.transport, src.ip, src.port, src.tls_identities,
                  src.tls_fingerprint)


class Gateway:
    """All components of one running gateway; ``start``/``stop`` bracket its life."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.loop = asyncio.get_running_loop()
        self.firewall = Firewall(config)
        self.srtp_watch = SrtpWatch(config.firewall.srtp_auth_failure_threshold)
        self.siem: SiemHandler | None = None
        self.relay = MediaRelay(config.media, on_timeout=self._media_timeout)
        self.stack = SipStack(config, self._on_request, admit=self._admit,
                              on_invalid=self._on_invalid,
                              on_stray_response=self._on_stray,
                              on_ack_timeout=self._on_ack_timeout,
                              on_tls_failure=self._on_tls_failure)
        self.b2bua = B2bua(config, self.stack, self.relay, clock=self.loop.time,
                           on_call_end=self._call_ended, dtls=dtls_context(config))
        self.stack.closed_hooks.append(self.b2bua.flow_closed)
        self._sweeper: asyncio.TimerHandle | None = None
        self._sweep_task: asyncio.Task[list[str]] | None = None
        self._srtp_poller: asyncio.TimerHandle | None = None
        self.requests: Counter[tuple[str, str]] = Counter()  # (method, transport), for metrics
        self.call_end_hooks: list[Callable[[Call], None]] = [self._srtp_call_ended]

    @property
    def calls(self) -> dict[str, Call]:
        """The live calls, by call id."""
        return self.b2bua.calls

    async def start(self) -> None:
        configure_security_events(self.config.firewall.log_interval)
        self.siem = configure_siem(self.config)
        await self.stack.start()
        self._arm_sweep()
        self._arm_srtp_poll()

    def announce_ready(self) -> None:
        """The one ``gateway.ready`` line: logged once signals and ops are in place too, so a
        supervisor that acts on it (SIGTERM, probes) finds every handler installed."""
        log.info("gateway.ready", listeners=self.listeners(), name=self.config.gateway.name,
                 trunks=",".join(t.name for t in self.config.trunks),
                 media=f"{self.config.media.address}:{self.config.media.port_min}-"
                       f"{self.config.media.port_max}")

    async def stop(self) -> None:
        for timer in (self._sweeper, self._srtp_poller):
            if timer is not None:
                timer.cancel()
        await self.b2bua.close()
        await self.stack.stop()
        await self.relay.close()
        log.info("gateway.stopped")
        if self.siem is not None:
            detach_siem(self.siem)
            self.siem = None

    def reload_security(self, config: Config) -> None:
        """Firewall rules, SRTP alert threshold and SIEM sink from a reloaded config."""
        self.siem = configure_siem(config, self.siem)  # can fail (path): before the rest
        configure_security_events(config.firewall.log_interval)
        self.firewall.reload(config)
        self.srtp_watch.threshold = config.firewall.srtp_auth_failure_threshold

    def listeners(self) -> str:
        """``udp:127.0.0.1:5060,tls:127.0.0.1:5061``: every listener as actually bound."""
        out = []
        for li in self.config.listeners:
            host, port = self.stack.bound(li.name)
            out.append(f"{li.transport}:{host}:{port}")
        return ",".join(out)

    # ------------------------------------------------------------------ stack callbacks
    def _admit(self, src: MessageSource) -> bool:
        if src.transport == "tls" and src.connection_id is None:
            # Before the handshake there is no certificate to check yet: bans and networks
            # here; every message on the connection is admitted again with its identity.
            return self.firewall.admit_connection(_source(src), self.loop.time())
        return self.firewall.admit(_source(src), self.loop.time())

    def _on_tls_failure(self, src: MessageSource, reason: str) -> None:
        # Listener-side failures only: the transports never report connections we opened.
        self.firewall.report_tls_failure(_source(src), reason, self.loop.time())

    def _on_invalid(self, src: MessageSource, exc: SipParseError) -> None:
        self.firewall.unparseable(_source(src), exc.status, exc.reason, self.loop.time())

    def _on_request(self, incoming: IncomingRequest) -> None:
        req = incoming.request
        if incoming.cancels:
            self.b2bua.handle(incoming)
            return
        # In dialog only when the B2BUA knows the dialog: an invented To-tag draws tokens too.
        tag = req.to.tag
        in_dialog = tag is not None and self.b2bua.has_dialog(req.call_id, tag, req.from_.tag)
        verdict = self.firewall.inspect(req, _source(incoming.source), in_dialog,
                                        self.loop.time())
        if verdict.action == "drop":
            incoming.drop()
            return
        if verdict.action == "reject":
            # one stateless answer (RFC 3261 §8.2.7): the source may be spoofed, and an
            # INVITE's refusal kept in a transaction would be retransmitted ~10 times to it
            resp = req.create_response(verdict.status, verdict.reason or None,
                                       to_tag=self.stack.stateless_tag(req))
            for name, value in verdict.headers:
                resp.headers.add(name, value)
            incoming.reject(resp)
            return
        self.requests[(req.method, incoming.source.transport)] += 1
        self.b2bua.handle(incoming, verdict.trunk)

    def _on_stray(self, response: SipResponse, source: MessageSource) -> None:
        self.b2bua.handle_stray_response(response, source)

    def _on_ack_timeout(self, tid: Tid) -> None:
        self.b2bua.handle_ack_timeout(tid)

    def _media_timeout(self, session_id: str, stream: int) -> None:
        self.b2bua.on_media_timeout(session_id, stream)

    def _call_ended(self, call: Call) -> None:
        for hook in self.call_end_hooks:
            hook(call)

    def _srtp_call_ended(self, call: Call) -> None:
        # Runs before the relay session closes: count the last interval's failures, then forget.
        self._srtp_report(call)
        self.srtp_watch.forget(call.id)

    # ------------------------------------------------------------------ housekeeping
    def _arm_sweep(self) -> None:
        interval = max(1.0, min(60.0, self.config.sip.session_expires / 10))
        self._sweeper = self.loop.call_later(interval, self._sweep)

    def _sweep(self) -> None:
        self._sweep_task = self.loop.create_task(self.b2bua.sweep())
        self._arm_sweep()

    def _arm_srtp_poll(self) -> None:
        self._srtp_poller = self.loop.call_later(SRTP_POLL, self._srtp_poll)

    def _srtp_poll(self) -> None:
        """Feed live calls' SRTP auth-failure and replay counters to the watch."""
        for call in list(self.calls.values()):
            self._srtp_report(call)
        self._arm_srtp_poll()

    def _srtp_report(self, call: Call) -> None:
        if call.media_session is None:
            return
        try:
            stats = self.relay.stats_now(call.media_session)
        except UnknownSession:
            return
        self.srtp_watch.report_session(call.id, (call.a.trunk.name, call.b.trunk.name), stats)


def tune_gc() -> None:
    """For a process that is the gateway: larger GC thresholds, and everything loaded at start
    (modules, config, certificates) moved out of the collector's sight for good."""
    gc.set_threshold(*GC_THRESHOLDS)
    gc.freeze()


async def serve(config: Config, *, stop: asyncio.Event | None = None,
                handle_signals: bool = False, own_process: bool = False) -> int:
    """Run the gateway until ``stop`` is set or a drain (SIGTERM) finishes; 0 on a clean stop.

    Operations (admin endpoint, metrics, CDRs, reload on SIGHUP, drain on SIGTERM) run beside it.
    ``own_process``: the process is the gateway's alone, so tune its GC once it is up (not in
    a test process, where frozen objects would outlive the test).
    """
    stop = stop or asyncio.Event()
    log_loop_exceptions(asyncio.get_running_loop())
    gw = Gateway(config)
    ops = attach_ops(gw, on_drained=stop.set)
    try:
        await gw.start()
        await ops.start(handle_signals=handle_signals)
        gw.announce_ready()
        if own_process:
            tune_gc()
        await stop.wait()
    finally:
        await ops.stop()
        await gw.stop()
    return 0


def run(config: Config) -> int:
    """``srtpgw run``: uvloop; SIGHUP reloads, SIGINT/SIGTERM drain then stop, exit status 0."""

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(serve(config, handle_signals=True, own_process=True))
