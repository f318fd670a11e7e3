"""Flood protection: one bounded burst of OPTIONS from one source. Is it limited, and when?

The burst is at most ``count`` requests (the CLI caps it at 1000) sent within ``seconds``;
the probe then waits a moment and asks once more, to tell a rate limit (answers again) from a
ban (still silent). This runs last: a target that bans the probe ends the other checks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.sip.errors import SipParseError
from gateway.sip.message import SipRequest, SipResponse, parse_message
from gateway.tools.probe.findings import Finding, judge
from gateway.tools.probe.sipreq import Exchange
from gateway.tools.probe.wire import Channel, ChannelError

REF = "good practice (Kamailio pike, RFC 7339 overload control); 3GPP TS 33.210 §5"
LIMITED = (429, 503)


@dataclass
class FloodObservation:
    sent: int = 0
    seconds: float = 0.0
    statuses: dict[int, list[int]] = field(default_factory=dict)  # index -> statuses
    error: str | None = None
    after: Exchange | None = None

    def first_unserved(self) -> int | None:
        """Index of the first request that got no 2xx (silence, 429 or 503)."""
        for i in range(self.sent):
            got = self.statuses.get(i, [])
            if not any(200 <= s < 300 for s in got):
                return i
        return None


def burst(channel: Channel, make: Callable[[int], SipRequest], count: int, seconds: float,
          quiet: float = 1.0, drain: float = 5.0) -> FloodObservation:
    """Send the burst, then read until every request is answered, the target has been quiet
    for ``quiet`` seconds, or ``drain`` seconds passed: a slow target is not a limiting one."""
    obs = FloodObservation()
    index: dict[str, int] = {}
    start = time.monotonic()
    try:
        for i in range(count):
            if time.monotonic() - start > seconds:
                break
            req = make(i)
            index[req.call_id] = i
            channel.send(req.to_bytes())
            obs.sent += 1
            if i % 20 == 19:
                _read(channel, index, obs, 0.001)
        obs.seconds = time.monotonic() - start
        end = time.monotonic() + drain
        last, seen = time.monotonic(), len(obs.statuses)
        while (now := time.monotonic()) < end and now - last < quiet and len(
                obs.statuses) < obs.sent and not channel.closed_by_peer:
            _read(channel, index, obs, 0.1)
            if len(obs.statuses) != seen:
                last, seen = time.monotonic(), len(obs.statuses)
    except ChannelError as exc:
        obs.error = str(exc)
        obs.seconds = obs.seconds or time.monotonic() - start
    return obs


def _read(channel: Channel, index: dict[str, int], obs: FloodObservation, timeout: float
          ) -> None:
    for raw in channel.receive(timeout):
        try:
            msg = parse_message(raw)
        except SipParseError:
            continue
        if isinstance(msg, SipResponse) and msg.status >= 200:
            i = index.get(msg.call_id)
            if i is not None:
                obs.statuses.setdefault(i, []).append(msg.status)


def judge_flood(obs: FloodObservation) -> Finding:
    first = obs.first_unserved()
    served = sum(1 for s in obs.statuses.values() if any(200 <= x < 300 for x in s))
    limited = sum(1 for s in obs.statuses.values() if any(x in LIMITED for x in s))
    rate = obs.sent / obs.seconds if obs.seconds > 0 else float(obs.sent)
    evidence = f"{obs.sent} OPTIONS in {obs.seconds:.2f} s ({rate:.0f}/s): {served} served"
    if limited:
        evidence += f", {limited} answered 429/503"
    silent = obs.sent - len(obs.statuses)
    if silent:
        evidence += f", {silent} unanswered"
    if first is not None:
        evidence += f"; limited from request #{first + 1}"
    if obs.error:
        evidence += f"; {obs.error}"
    if obs.after is not None:
        evidence += ("; afterwards still blocked (banned)" if not obs.after.answered
                     else f"; afterwards answered {obs.after.describe()}")
    return judge(first is not None, "flood.burst", "SHOULD", evidence, REF,
                 sent=obs.sent, served=served, limited=limited, first_limited=first)
