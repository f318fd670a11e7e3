"""Prometheus metrics read from the components' plain-int counters at scrape time.

The media hot path only bumps ints; nothing here runs per packet. A scrape calls one snapshot
function (``StatsSource``) that copies the counters into a ``Stats`` value, and a custom collector
turns it into metric families. Only event-loop lag is measured here, by a small watchdog task.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import (
    CollectorRegistry,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway import __version__

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "srtpgw"


@dataclass(slots=True)
class Stats:
    """One copy of every counter the gateway exposes; components fill what they have.

    Keys are label values; tuples follow the label order named in the comment.
    """

    calls_active: dict[str, int] = field(default_factory=dict)  # trunk
    calls_total: dict[tuple[str, str], int] = field(default_factory=dict)  # trunk, outcome
    sip_requests: dict[tuple[str, str], int] = field(default_factory=dict)  # method, transport
    sip_messages: dict[str, int] = field(default_factory=dict)  # received/sent/dropped/invalid
    sip_connections: dict[str, int] = field(default_factory=dict)  # accepted/refused/...
    # direction (sent/received), method, status class (1xx..6xx), transport
    sip_responses: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    tls_handshakes: dict[str, int] = field(default_factory=dict)  # result: ok / failed
    tls_failures: dict[str, int] = field(default_factory=dict)  # reason
    call_events: dict[str, int] = field(default_factory=dict)  # B2BUA: started, failed.486, ...
    security_events: dict[str, int] = field(default_factory=dict)  # kind
    media_packets: dict[tuple[str, str], int] = field(default_factory=dict)  # leg_kind, direction
    media_bytes: dict[tuple[str, str], int] = field(default_factory=dict)  # leg_kind, direction
    srtp_auth_failures: dict[str, int] = field(default_factory=dict)  # leg_kind
    srtp_replays: dict[str, int] = field(default_factory=dict)  # leg_kind
    drops: dict[str, int] = field(default_factory=dict)  # cause
    firewall_hits: dict[str, int] = field(default_factory=dict)  # rule
    firewall_accepted: int = 0
    firewall_suppressed_reports: int = 0
    bans_active: int = 0
    bans_total: int = 0
    ports_used: int = 0
    ports_total: int = 0
    draining: bool = False
    reloads: dict[str, int] = field(default_factory=dict)  # result ("ok"/"refused")
    cert_expiry: dict[str, float] = field(default_factory=dict)  # cert name -> unix time
    cdr_write_errors: int = 0
    siem_write_errors: int = 0  # since the security_file sink was (re)opened


StatsSource = Callable[[], Stats]

# name, help, Stats attribute, label names
_COUNTERS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("calls", "Calls ended, by the trunk they arrived on and outcome", "calls_total",
     ("trunk", "outcome")),
    ("sip_requests", "SIP requests received past the firewall, by method and transport",
     "sip_requests", ("method", "transport")),
    ("sip_messages", "SIP messages through the stack: received, sent, dropped, invalid",
     "sip_messages", ("event",)),
    ("sip_connections", "SIP stream connections: accepted, refused, tls_failures, timeouts, ...",
     "sip_connections", ("event",)),
    ("sip_responses", "SIP responses sent and received, by method, status class and transport",
     "sip_responses", ("direction", "method", "status_class", "transport")),
    ("tls_handshakes", "TLS handshakes (inbound and outbound) by result: ok, failed",
     "tls_handshakes", ("result",)),
    ("call_events", "Call layer events: calls.started, calls.answered, failed.<code>, ...",
     "call_events", ("event",)),
    ("security_events", "Security events by kind, every occurrence (the log holds at most "
     "one per source and kind per interval)",
     "security_events", ("kind",)),
    ("tls_handshake_failures", "TLS handshakes that failed, by reason", "tls_failures",
     ("reason",)),
    ("media_packets", "Media packets relayed, by leg kind and direction", "media_packets",
     ("leg_kind", "direction")),
    ("media_bytes", "Media bytes relayed, by leg kind and direction", "media_bytes",
     ("leg_kind", "direction")),
    ("srtp_auth_failures", "SRTP/SRTCP packets that failed authentication", "srtp_auth_failures",
     ("leg_kind",)),
    ("srtp_replays", "SRTP/SRTCP packets rejected as replays", "srtp_replays", ("leg_kind",)),
    ("drops", "Packets or messages dropped, by cause", "drops", ("cause",)),
    ("firewall_rule_hits", "Signalling firewall rule hits, by rule", "firewall_hits", ("rule",)),
    ("config_reloads", "Config reload attempts, by result", "reloads", ("result",)),
)


class StatsCollector(Collector):
    """Builds metric families from one ``Stats`` snapshot per scrape."""

    def __init__(self, source: StatsSource) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        s = self._source()
        active = GaugeMetricFamily(f"{PREFIX}_calls_active", "Calls in progress, by trunk",
                                   labels=("trunk",))
        for trunk, n in sorted(s.calls_active.items()):
            active.add_metric((trunk,), n)
        yield active
        for name, doc, attr, labels in _COUNTERS:
            fam = CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=labels)
            for key, n in sorted(getattr(s, attr).items()):
                fam.add_metric(key if isinstance(key, tuple) else (key,), n)
            yield fam
        yield CounterMetricFamily(f"{PREFIX}_firewall_bans", "Sources banned since start",
                                  value=s.bans_total)
        yield CounterMetricFamily(f"{PREFIX}_firewall_accepted", "Requests the firewall "
                                  "accepted", value=s.firewall_accepted)
        yield CounterMetricFamily(f"{PREFIX}_firewall_suppressed_reports", "Security events "
                                  "held back by the rate limit (one per source and kind per "
                                  "firewall.log_interval, 100 per kind)",
                                  value=s.firewall_suppressed_reports)
        yield CounterMetricFamily(f"{PREFIX}_cdr_write_errors", "CDR lines that could not be "
                                  "written", value=s.cdr_write_errors)
        yield CounterMetricFamily(f"{PREFIX}_siem_write_errors", "Security events that could "
                                  "not be written to the security_file", value=s.siem_write_errors)
        yield GaugeMetricFamily(f"{PREFIX}_firewall_bans_active", "Sources banned right now",
                                value=s.bans_active)
        yield GaugeMetricFamily(f"{PREFIX}_media_ports_used", "Relay ports allocated",
                                value=s.ports_used)
        yield GaugeMetricFamily(f"{PREFIX}_media_ports_total", "Relay ports in the pool",
                                value=s.ports_total)
        yield GaugeMetricFamily(f"{PREFIX}_draining", "1 while draining (no new calls)",
                                value=int(s.draining))
        expiry = GaugeMetricFamily(f"{PREFIX}_certificate_expiry_timestamp_seconds",
                                   "When each configured certificate expires (unix time)",
                                   labels=("certificate",))
        for name, when in sorted(s.cert_expiry.items()):
            expiry.add_metric((name,), when)
        yield expiry


class LoopLagMonitor:
    """Measures how late the event loop wakes a sleeper: the lag every callback suffers."""

    def __init__(self, registry: CollectorRegistry, interval: float = 0.25) -> None:
        self.interval = interval
        self.last = 0.0
        self.histogram = Histogram(
            f"{PREFIX}_event_loop_lag_seconds", "How late the event loop ran a timer",
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(self.interval)
            self.last = max(0.0, loop.time() - start - self.interval)
            self.histogram.observe(self.last)


class Metrics:
    """The gateway's registry: component counters, loop lag, process and build info."""

    def __init__(self, source: StatsSource, lag_interval: float = 0.25) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(StatsCollector(source))
        self.registry.register(_BuildInfo())
        ProcessCollector(namespace=PREFIX, registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.lag = LoopLagMonitor(self.registry, lag_interval)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _BuildInfo(Collector):
    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(f"{PREFIX}_build_info", "Version of the running gateway",
                                 labels=("version",))
        info.add_metric((__version__,), 1)
        yield info
        yield GaugeMetricFamily(f"{PREFIX}_start_time_seconds", "Process start (unix time)",
                                value=_STARTED)


_STARTED = time.time()
