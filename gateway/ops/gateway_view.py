"""The operations view of a running ``gateway.app.Gateway``: counters, calls, reload, drain, CDRs.

Everything here reads the components' own counters and tables when asked (a scrape, a status
request, a call's end); nothing sits on the SIP or media paths.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gateway.b2bua.call import Call, EndReason
from gateway.b2bua.media import dtls_context
from gateway.config import Config
from gateway.media.api import SessionStats, UnknownSession
from gateway.ops.cdr import CallRecord, LegRecord
from gateway.ops.log import get_logger, security_events_suppressed
from gateway.ops.metrics import Stats
from gateway.ops.service import OpsService
from gateway.sip.errors import SipParseError
from gateway.sip.headers import parse_name_addr

if TYPE_CHECKING:
    from gateway.app import Gateway

log = get_logger("ops")


def port_pairs(port_min: int, port_max: int) -> int:
    """How many RTP/RTCP port pairs the relay can hand out from the range."""
    first = port_min + (port_min & 1)
    return len(range(first, port_max, 2))


def _user(name_addr: str) -> str | None:
    try:
        return getattr(parse_name_addr(name_addr, "From").uri, "user", None)
    except SipParseError:
        return None


_DIRS = ("in", "out")
_MEDIA_COUNTERS = ("packets_in", "packets_out", "bytes_in", "bytes_out", "auth_failures",
                   "replays")


def _add_media(into: Counter[tuple[str, str]], call: Call, stats: SessionStats) -> None:
    for i, leg in enumerate((call.a, call.b)):
        for s in stats.legs[i]:
            for name in _MEDIA_COUNTERS:
                into[(leg.trunk.media, name)] += getattr(s, name)


class GatewayOps:
    """Implements ``gateway.ops.service.GatewayView`` over the app's ``Gateway``."""

    def __init__(self, gw: Gateway, wall: Callable[[], float] = time.time) -> None:
        self.gw = gw
        self._wall = wall
        # What was bound at start stays bound until a restart, whatever a reload says.
        self._listeners = tuple(li.name for li in gw.config.listeners)
        self._pairs = port_pairs(gw.config.media.port_min, gw.config.media.port_max)
        self.ended: Counter[tuple[str, str]] = Counter()  # (trunk, outcome)
        self._closed_media: Counter[tuple[str, str]] = Counter()  # (leg kind, counter) of ended
        self.on_record: Callable[[CallRecord], None] | None = None

    # ------------------------------------------------------------------ GatewayView

    def stats(self) -> Stats:
        gw = self.gw
        active: Counter[str] = Counter(c.a.trunk.name for c in gw.calls.values())
        totals = gw.relay.totals()
        fw = gw.firewall.counters()
        kinds = self._media_by_kind()
        names = sorted({t.media for t in gw.config.trunks} | {k for k, _ in kinds})
        return Stats(
            calls_active={t.name: active.get(t.name, 0) for t in gw.config.trunks},
            calls_total=dict(self.ended),
            sip_requests=dict(gw.requests),
            sip_messages=dict(gw.stack.counters),
            sip_connections=dict(gw.stack.transports.counters),
            sip_responses=dict(gw.stack.responses.counts),
            tls_handshakes={"ok": gw.stack.transports.counters.get("tls_handshakes", 0),
                            "failed": gw.stack.transports.counters.get("tls_failures", 0)},
            media_packets={(k, d): kinds[(k, f"packets_{d}")] for k in names for d in _DIRS},
            media_bytes={(k, d): kinds[(k, f"bytes_{d}")] for k in names for d in _DIRS},
            srtp_auth_failures={k: kinds[(k, "auth_failures")] for k in names if k != "rtp"},
            srtp_replays={k: kinds[(k, "replays")] for k in names if k != "rtp"},
            drops=dict(totals.drops),
            firewall_hits=fw,
            firewall_accepted=gw.firewall.accepted,
            firewall_suppressed_reports=sum(security_events_suppressed().values()),
            bans_active=len(gw.firewall.bans(gw.loop.time())),
            bans_total=fw.get("pike.ban", 0),
            ports_used=self._pairs - totals.ports_free,
            ports_total=self._pairs,
            call_events=dict(gw.b2bua.counters),
            siem_write_errors=gw.siem.write_errors if gw.siem is not None else 0,
        )

    def listeners_bound(self) -> dict[str, bool]:
        out = {}
        for name in self._listeners:
            try:
                self.gw.stack.bound(name)
                out[name] = True
            except KeyError:
                out[name] = False
        return out

    def active_calls(self) -> int:
        return len(self.gw.calls)

    def runtime(self) -> dict[str, int | None]:
        """What a process holds that should come back down when calls end (a soak watches it).
        ``timers`` is None on uvloop, whose loop does not expose its timer heap."""
        gw = self.gw
        scheduled = getattr(gw.loop, "_scheduled", None)
        return {"tasks": len(asyncio.all_tasks(gw.loop)),
                "timers": None if scheduled is None else len(scheduled),
                "transactions": len(gw.stack.layer._txns),
                "dialogs": len(gw.b2bua._dialogs),
                "relay_sessions": gw.relay.totals().sessions_active}

    def calls(self) -> list[dict[str, Any]]:
        now = self.gw.loop.time()
        return [{"call": c.id, "from_trunk": c.a.trunk.name, "to_trunk": c.b.trunk.name,
                 "state": c.state.value,
                 "duration": round(now - c.answered_at, 1) if c.answered_at else 0.0,
                 "media": f"{c.a.trunk.media}/{c.b.trunk.media}",
                 "codec": [c.a.media.codec, c.b.media.codec],
                 "suite": [c.a.media.suite, c.b.media.suite]}
                for c in list(self.gw.calls.values())]

    def bindings(self) -> list[dict[str, Any]]:
        """Registered phones and PBXs (trunks with ``registrar``), without Contact hosts."""
        return self.gw.b2bua.registrar.listing(self.gw.loop.time())

    def apply_config(self, cfg: Config) -> None:
        """The steps that can fail run first: the DTLS certificate is loaded (nothing swapped
        yet), the security sink is opened (before the firewall changes), the TLS contexts are
        built and swapped in one step (``check_tls_material`` already loaded those files); the
        B2BUA then takes the DTLS context loaded above and cannot fail."""
        gw = self.gw
        dtls = dtls_context(cfg)
        gw.reload_security(cfg)
        gw.stack.reload_tls(cfg)
        gw.b2bua.reload(cfg, dtls)
        gw.config = cfg

    def stop_accepting(self) -> None:
        """New INVITEs get 503 with Retry-After: the seconds left until the drain ends."""
        b2bua = self.gw.b2bua
        b2bua.accepting = False
        b2bua.drain_until = self.gw.loop.time() + self.gw.config.admin.drain_timeout

    async def end_calls(self, cause: str) -> None:
        log.info("ops.end_calls", cause=cause, calls=len(self.gw.calls))
        self.gw.b2bua.hangup_all(EndReason.SHUTDOWN)

    # ------------------------------------------------------------------ call end -> CDR

    def call_ended(self, call: Call) -> None:
        """The B2BUA's end-of-call hook: count the outcome, keep its media counts, write the CDR.

        It runs before the relay session is closed, so the session's counters are still there.
        """
        answered = call.answered_at is not None
        reason = call.end_reason.value if call.end_reason else "unknown"
        self.ended[(call.a.trunk.name, "answered" if answered else reason)] += 1
        stats = self._session_stats(call)
        if stats is not None:
            _add_media(self._closed_media, call, stats)
        if self.on_record is not None:
            self.on_record(self.record(call, stats))

    def _media_by_kind(self) -> Counter[tuple[str, str]]:
        """Per leg kind (the trunk's media policy): ended calls plus the live ones."""
        out = Counter(self._closed_media)
        for call in list(self.gw.calls.values()):
            stats = self._session_stats(call)
            if stats is not None:
                _add_media(out, call, stats)
        return out

    def record(self, call: Call, stats: SessionStats | None) -> CallRecord:
        loop_now, wall_now = self.gw.loop.time(), self._wall()

        def wall(t: float | None) -> float | None:
            return None if t is None else wall_now - (loop_now - t)

        legs = []
        for i, leg in enumerate((call.a, call.b)):
            t = leg.trunk
            rec = LegRecord(t.name, t.side, t.transport, t.media, leg.media.codec,
                            leg.media.suite)
            if stats is not None:
                for s in stats.legs[i]:
                    rec.packets_in += s.packets_in
                    rec.packets_out += s.packets_out
                    rec.bytes_in += s.bytes_in
                    rec.bytes_out += s.bytes_out
                    rec.auth_failures += s.auth_failures
                    rec.replays += s.replays
            legs.append(rec)
        return CallRecord(
            call=call.id, from_trunk=call.a.trunk.name, to_trunk=call.b.trunk.name,
            start=wall(call.created) or wall_now, answer=wall(call.answered_at),
            end=wall(call.ended_at) or wall_now,
            end_cause=call.end_reason.value if call.end_reason else "unknown",
            final_status=call.final_status, caller=_user(call.a.remote_uri),
            callee=_user(call.a.local_uri),
            legs=legs)

    def _session_stats(self, call: Call) -> SessionStats | None:
        if call.media_session is None:
            return None
        try:
            return self.gw.relay.stats_now(call.media_session)
        except UnknownSession:
            return None


def attach_ops(gw: Gateway, on_drained: Callable[[], None] | None = None) -> OpsService:
    """Operations for a gateway: its view, CDRs on every call end; start it after ``gw``."""
    view = GatewayOps(gw)
    ops = OpsService(gw.config, view, on_drained=on_drained)
    view.on_record = ops.write_cdr
    gw.call_end_hooks.append(view.call_ended)
    return ops
