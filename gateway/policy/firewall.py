"""The signalling firewall: admission before parsing, inspection after, one counter per rule.

``admit`` runs on every message before the SIP stack parses it and must stay cheap: ban list,
then source ACL (network and TLS identity). ``inspect`` runs on every parsed request: trunk
classification, pike counting, screening rules, then token buckets for requests that start
something. Every refusal is counted by rule name and reported as a security event, which the
event path writes at most once per source and rule per ``firewall.log_interval``. Acceptances
are counted apart from the rule hits, so ``counters()`` holds rule names only.

Pike counts and bans per listener and transport: a flood of spoofable UDP carrying a trunk
peer's address bans that address on the UDP listener only, never on the TLS listener where the
peer authenticates. A trunk with its own ``[trunk.pike]`` is counted with those limits (or not
at all when it sets ``enabled = false``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Literal

from gateway.config import Config, PikeSection, Trunk
from gateway.ops.log import get_logger, security_event
from gateway.policy.acl import Acl, Source
from gateway.policy.pike import Ban, Pike
from gateway.policy.ratelimit import RateLimiter
from gateway.policy.screening import Screening, parse_rule
from gateway.sip.message import SipRequest

log = get_logger("policy")

# Requests that only ever belong to an existing transaction or dialog never draw tokens.
_NO_TOKENS = frozenset({"ACK", "CANCEL"})
# Methods that create a dialog (RFC 3261 §12, RFC 6665 for SUBSCRIBE, RFC 3515 for REFER).
_DIALOG_CREATING = frozenset({"INVITE", "SUBSCRIBE", "REFER"})


@dataclass(frozen=True, slots=True)
class Verdict:
    """Accept (with the trunk), reject (answer ``status``), or drop silently."""

    action: Literal["accept", "reject", "drop"]
    trunk: Trunk | None = None
    rule: str | None = None
    status: int = 0
    reason: str = ""
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def accepted(self) -> bool:
        return self.action == "accept"


class Firewall:
    """All protections for one config; ``reload`` swaps rules and keeps bans and buckets."""

    def __init__(self, config: Config, max_sources: int = 65536) -> None:
        self._max_sources = max_sources
        self._pike = Pike(config.firewall.pike, max_sources=max_sources, max_bans=max_sources)
        self._limiter = RateLimiter(max_sources=max_sources)
        self._counts: Counter[str] = Counter()
        self.accepted = 0  # requests inspected and accepted
        self._apply(config)

    def _apply(self, config: Config) -> None:
        self.config = config
        self._acl = Acl(config)
        self._screening = Screening(config)
        self._unknown_drop = config.firewall.unknown_source == "drop"

    def reload(self, config: Config) -> None:
        self._apply(config)
        self._pike.reload(config.firewall.pike)
        self._limiter.reload(config.trunks)

    # ----------------------------------------------------------------- before parsing
    def admit(self, source: Source, now: float) -> bool:
        """May the stack spend a parse on this message? Banned or unknown sources: no."""
        if self._pike.banned(source.ip, now, _scope(source)):
            self._counts["pike.banned"] += 1
            return False
        if self._acl.classify(source) is not None:
            return True
        self._unknown(source, now)
        return not self._unknown_drop

    def admit_connection(self, source: Source, now: float) -> bool:
        """A new TCP/TLS connection, before any handshake: banned or no trunk's network, no.

        No identity exists yet, so only the network is checked; every message on the
        connection then passes ``admit`` with the peer certificate's identities.
        """
        if self._pike.banned(source.ip, now, _scope(source)):
            self._counts["pike.banned"] += 1
            return False
        if self._acl.network_allows(source.listener, source.ip):
            return True
        self._unknown(source, now)
        return False

    def _unknown(self, source: Source, now: float) -> None:
        self._counts["acl.unknown_source"] += 1
        self._report("acl.unknown_source", source, now, reason=self._acl.why_not(source))
        self._hit(source, now)

    # ----------------------------------------------------------------- after parsing
    def inspect(self, request: SipRequest, source: Source, in_dialog: bool,
                now: float) -> Verdict:
        """The verdict on one parsed request from ``source``."""
        trunk = self._acl.classify(source)
        if trunk is None:
            self._unknown(source, now)
            if self._unknown_drop:
                return Verdict("drop", rule="acl.unknown_source")
            return Verdict("reject", rule="acl.unknown_source", status=403, reason="Forbidden")
        if self._hit(source, now, trunk) or self._pike.banned(source.ip, now, _scope(source)):
            self._counts["pike.banned"] += 1
            return Verdict("drop", trunk, "pike.banned")
        rejection, denied = self._screening.screen(request, trunk)
        if denied is not None:
            self._counts["policy.deny_header"] += 1
            self._report("policy.deny_header", source, now, header=denied, trunk=trunk.name)
        if rejection is not None:
            self._counts[rejection.rule] += 1
            self._report(rejection.rule, source, now, status=rejection.status,
                         reason=rejection.detail, trunk=trunk.name, method=request.method[:32])
            return Verdict(rejection.action, trunk, rejection.rule, rejection.status,
                           rejection.reason, rejection.headers)
        if not in_dialog and request.method not in _NO_TOKENS:
            kind = "new_dialog" if request.method in _DIALOG_CREATING else "out_of_dialog"
            limited = self._limiter.check(trunk, source.ip, kind, now)
            if limited is not None:
                rule = f"ratelimit.{limited.scope}"
                self._counts[rule] += 1
                self._report(rule, source, now, limit=kind, trunk=trunk.name)
                retry = max(1, round(limited.retry_after + 0.5))
                return Verdict("reject", trunk, rule, 503, "Service Unavailable",
                               (("Retry-After", str(retry)),))
        self.accepted += 1
        return Verdict("accept", trunk)

    def unparseable(self, source: Source, status: int, reason: str, now: float) -> str:
        """Count a message the parser refused (SipParseError); returns the rule name.

        The stack still decides whether it can answer (it needs the Via to do so).
        """
        rule = parse_rule(status, reason)
        self._counts[rule] += 1
        self._report(rule, source, now, status=status, reason=reason[:120])
        self._hit(source, now, self._trunk_of(source))
        return rule

    def report_tls_failure(self, source: Source, reason: str, now: float) -> None:
        """A TLS handshake or client-certificate check failed on a listener."""
        self._counts["tls.failure"] += 1
        self._report("tls.failure", source, now, reason=reason[:200])
        self._hit(source, now, self._trunk_of(source))

    # ----------------------------------------------------------------- bans
    def _trunk_of(self, source: Source) -> Trunk | None:
        """The trunk a source belongs to, by identity, else by network alone (a failed TLS
        handshake has no identity yet)."""
        return self._acl.classify(source) or self._acl.network_trunk(source.listener,
                                                                     source.ip)

    def _hit(self, source: Source, now: float, trunk: Trunk | None = None) -> bool:
        settings: PikeSection = (trunk.pike if trunk is not None and trunk.pike is not None
                                 else self._pike.settings)
        ban = self._pike.hit(source.ip, now, _scope(source), settings)
        if ban is None:
            return False
        self._counts["pike.ban"] += 1
        security_event("pike.ban", now=now, source=source.ip, listener=source.listener,
                       transport=source.transport, trunk=trunk.name if trunk else None,
                       ban_time=round(ban.until - ban.since, 3), window=settings.window,
                       max_requests=settings.max_requests)
        return True

    def ban(self, ip: str, duration: float, now: float, reason: str = "operator") -> Ban:
        """An operator's ban: on every listener."""
        ban = self._pike.ban(ip, now, duration, reason)
        security_event("pike.ban", now=now, source=ip, ban_time=duration, reason=reason)
        return ban

    def unban(self, ip: str) -> bool:
        return self._pike.unban(ip)

    def bans(self, now: float) -> list[Ban]:
        return self._pike.bans(now)

    # ----------------------------------------------------------------- counters and logs
    def counters(self) -> dict[str, int]:
        """Hits by rule name only (a metric label set that never mixes in other counts)."""
        return dict(self._counts)

    def tables(self) -> dict[str, int]:
        """Sizes of the bounded per-source tables."""
        return {"tracked_sources": self._pike.tracked, "rate_limited_sources": len(self._limiter)}

    def _report(self, rule: str, source: Source, now: float, **fields: object) -> None:
        """A security event per refusal; the event path rate-limits it (once per source and
        rule per interval, with the suppressed count)."""
        security_event(f"firewall.{rule}", now=now, source=source.ip, port=source.port,
                       listener=source.listener, transport=source.transport, **fields)


def _scope(source: Source) -> str:
    """Where a ban applies: the listener and transport the flood came in on."""
    return f"{source.listener}/{source.transport}"
