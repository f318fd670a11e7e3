"""The operations side of a running gateway: admin endpoint, metrics, CDRs, reload, drain, signals.

The app hands in a ``GatewayView`` (a few methods over its components) and gets back one object
it starts, consults (``draining``, ``write_cdr``) and waits on.
SIGHUP reloads; SIGTERM (and SIGINT) drain and then stop.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from typing import Any, Protocol

from gateway import __version__
from gateway.config import AdminSection, Config, read_admin_token
from gateway.ops.admin import AdminServer, Guard
from gateway.ops.cdr import CallRecord, CdrWriter
from gateway.ops.drain import Drainer, DrainResult
from gateway.ops.health import (
    CertificateError,
    CertInfo,
    ReadinessFacts,
    Verdict,
    configured_certificates,
    liveness,
    read_certificate,
    readiness,
)
from gateway.ops.log import get_logger, install_log_handler, log_handler
from gateway.ops.metrics import Metrics, Stats
from gateway.ops.reload import Reloader
from gateway.ops.security_count import SecurityEventCounter

log = get_logger("ops")

MAX_LISTED_CALLS = 200  # /status stays small on a busy gateway; metrics carry the totals


class GatewayView(Protocol):
    """What operations needs from the app; each method is cheap and never raises for data."""

    def stats(self) -> Stats: ...
    def listeners_bound(self) -> dict[str, bool]: ...
    def calls(self) -> list[dict[str, Any]]: ...
    def runtime(self) -> dict[str, int | None]: ...
    def bindings(self) -> list[dict[str, Any]]: ...
    def active_calls(self) -> int: ...
    def apply_config(self, cfg: Config) -> None: ...
    def stop_accepting(self) -> None: ...
    async def end_calls(self, cause: str) -> None: ...


def admin_guard(cfg: Config) -> Guard:
    """The admin endpoint's Host allow-list and token for a config (the bound address stays
    until a restart; the token and host names follow reloads)."""
    a: AdminSection = cfg.admin
    token = read_admin_token(str(cfg.path), a.token_file) if a.token_file is not None else None
    return Guard.for_listen(a.listen, token, a.allowed_hosts)


class OpsService:
    def __init__(self, config: Config, view: GatewayView,
                 clock: Callable[[], float] = time.time,
                 on_drained: Callable[[], None] | None = None) -> None:
        self.config = config
        self.view = view
        self._on_drained = on_drained
        self.security = SecurityEventCounter()
        self._clock = clock
        self.started = clock()
        self.prom = Metrics(self._stats)
        self.cdr = CdrWriter(config.cdr)
        self.reloader = Reloader(config.path, config, self._apply)
        self.drainer = Drainer(view.active_calls, view.end_calls, config.admin.drain_timeout)
        self.admin = (AdminServer(self, config.admin.listen, admin_guard(config))
                      if config.admin.enabled else None)
        self.certs: tuple[CertInfo, ...] = ()
        self.cert_errors: tuple[str, ...] = ()
        self.drain_result: DrainResult | None = None
        self._stopped = asyncio.Event()
        self._drain_requested = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._signals: list[signal.Signals] = []
        self._read_certs(config)

    # ------------------------------------------------------------------ what the app consults

    @property
    def draining(self) -> bool:
        return self.drainer.draining

    def write_cdr(self, record: CallRecord) -> None:
        self.cdr.write(record)

    # ------------------------------------------------------------------ lifecycle

    async def start(self, handle_signals: bool = True) -> None:
        self.security.attach()
        self.prom.lag.start()
        if self.admin is not None:
            await self.admin.start()
        if handle_signals:
            loop = asyncio.get_running_loop()
            for sig, action in ((signal.SIGHUP, self._on_sighup),
                                (signal.SIGTERM, self.request_drain),
                                (signal.SIGINT, self.request_drain)):
                loop.add_signal_handler(sig, action)
                self._signals.append(sig)

    async def stop(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._signals:
            loop.remove_signal_handler(sig)
        self._signals.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.prom.lag.stop()
        self.security.detach()
        if self.admin is not None:
            await self.admin.stop()

    async def wait_stopped(self) -> None:
        """Returns once a drain has finished: the app then closes its listeners and exits 0."""
        await self._stopped.wait()

    def request_drain(self) -> None:
        """Start the drain; a second request while draining ends the remaining calls now."""
        if self._drain_requested:
            log.warning("drain.hurried", active_calls=self.view.active_calls())
            self.drainer.hurry()
            return
        self._drain_requested = True
        self.drainer.draining = True  # refuse new calls from this instant, not from the task's
        self.view.stop_accepting()
        self._spawn(self._drain_then_stop())

    async def _drain_then_stop(self) -> None:
        self.drain_result = await self.drainer.drain()
        self._stopped.set()
        if self._on_drained is not None:
            self._on_drained()

    def _on_sighup(self) -> None:
        self._spawn(self.reload())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ reload

    def _apply(self, new: Config) -> None:
        """Steps that can fail (a log file that cannot be opened, the gateway's own) first."""
        guard = admin_guard(new) if self.admin is not None else None  # a token file can fail
        handler = None
        if new.logging != self.config.logging:
            handler = log_handler(new.logging.format, new.logging.file)
        try:
            self.view.apply_config(new)
        except BaseException:
            if handler is not None:
                handler.close()
            raise
        if handler is not None:
            install_log_handler(handler, new.logging.level)
        if self.admin is not None and guard is not None:
            self.admin.guard = guard
        self.cdr.configure(new.cdr)
        self.drainer.timeout = new.admin.drain_timeout
        self.config = new
        self._read_certs(new)

    def _read_certs(self, cfg: Config) -> None:
        certs, errors = [], []
        for name, path in configured_certificates(cfg).items():
            try:
                certs.append(read_certificate(name, path))
            except CertificateError as exc:
                errors.append(str(exc))
        self.certs, self.cert_errors = tuple(certs), tuple(errors)

    # ------------------------------------------------------------------ AdminBackend

    def _stats(self) -> Stats:
        s = self.view.stats()
        s.draining = self.drainer.draining
        s.reloads = dict(self.reloader.counts)
        s.cert_expiry = {c.name: c.not_after for c in self.certs}
        s.cdr_write_errors = self.cdr.errors
        s.security_events = dict(self.security.kinds)
        s.tls_failures = dict(self.security.tls_reasons)
        return s

    def metrics(self) -> bytes:
        return self.prom.render()

    def liveness(self) -> Verdict:
        bound = dict(self.view.listeners_bound())
        if self.admin is not None:
            bound["admin"] = self.admin.bound
        return liveness(bound)

    def readiness(self) -> Verdict:
        s = self.view.stats()
        facts = ReadinessFacts(self.drainer.draining, s.ports_used, s.ports_total, self.certs,
                               self.cert_errors)
        return readiness(facts, self._clock(), self.config.admin.cert_warning_days)

    def status(self) -> dict[str, Any]:
        s = self._stats()
        calls = self.view.calls()
        return {
            "name": self.config.gateway.name,
            "version": __version__,
            "uptime": round(self._clock() - self.started, 1),
            "config": str(self.config.path),
            "draining": s.draining,
            "ready": self.readiness().as_dict(),
            "calls": {"active": sum(s.calls_active.values()),
                      "by_trunk": dict(sorted(s.calls_active.items())),
                      "list": calls[:MAX_LISTED_CALLS],
                      "listed": min(len(calls), MAX_LISTED_CALLS)},
            "bindings": self.view.bindings()[:MAX_LISTED_CALLS],
            "counters": {
                "calls_ended": sum(s.calls_total.values()),
                "sip_requests": sum(s.sip_requests.values()),
                "sip_received": s.sip_messages.get("received", 0),
                "sip_sent": s.sip_messages.get("sent", 0),
                "sip_invalid": s.sip_messages.get("invalid", 0),
                "tls_failures": sum(s.tls_failures.values()),
                "media_packets_in": sum(n for k, n in s.media_packets.items() if k[1] == "in"),
                "media_packets_out": sum(n for k, n in s.media_packets.items() if k[1] == "out"),
                "srtp_auth_failures": sum(s.srtp_auth_failures.values()),
                "srtp_replays": sum(s.srtp_replays.values()),
                "drops": sum(s.drops.values()),
                "firewall_hits": sum(s.firewall_hits.values()),
                "bans_active": s.bans_active,
                "ports_used": s.ports_used,
                "ports_total": s.ports_total,
                "event_loop_lag_ms": round(self.prom.lag.last * 1000, 2),
                "reloads_ok": s.reloads.get("ok", 0),
                "reloads_refused": s.reloads.get("refused", 0),
            },
            "runtime": self.view.runtime(),
            "certificates": [{"name": c.name, "path": str(c.path), "subject": c.subject,
                              "days_left": round((c.not_after - self._clock()) / 86400, 1)}
                             for c in self.certs],
        }

    async def reload(self) -> dict[str, Any]:
        return self.reloader.reload().as_dict()
