"""One probe run: the check families in a fixed order, each bounded, flood last.

Order matters: a target that bans the probe during the flood burst would fail every check
after it, and the media calls need the target still friendly.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from gateway.media.api import SrtpParams
from gateway.sdp.model import parse_sdp
from gateway.sip.message import SipResponse
from gateway.tools.probe import bleed, exposure, flood, media, screening, tls, topology
from gateway.tools.probe.findings import Finding, info, judge, skip
from gateway.tools.probe.legacy import LegacySide, Received
from gateway.tools.probe.sipreq import (
    USER_AGENT,
    Exchange,
    ack_for,
    bye_for,
    exchange,
    finish_invite,
    new_request,
    on,
    token,
)
from gateway.tools.probe.target import Address, BudgetExceeded, Endpoint, Guard, ScopeError
from gateway.tools.probe.wire import Channel, ChannelError, MediaSocket

Profile = Literal["interconnect", "pbx"]
MAX_FLOOD = 1000


@dataclass(frozen=True)
class ProbeOptions:
    target: Endpoint
    profile: Profile = "interconnect"
    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None
    domain: str | None = None
    legacy_side: Address | None = None
    stranger_source: str | None = None
    plain_sip: Endpoint | None = None
    media_hosts: tuple[str, ...] = ()  # hosts the target's media lives on, named by the operator
    extension: str | None = None
    number: str = "probe"
    flood: int = 300
    max_packets: int = 4000
    max_time: float = 240.0
    timeout: float = 3.0
    call_timeout: float = 8.0

    def __post_init__(self) -> None:
        if not 0 < self.flood <= MAX_FLOOD:
            raise ScopeError(f"--flood must be 1..{MAX_FLOOD}")
        if (self.cert is None) != (self.key is None):
            raise ScopeError("--cert and --key go together")


@dataclass
class Run:
    opts: ProbeOptions
    guard: Guard
    findings: list[Finding] = field(default_factory=list)
    responses: list[SipResponse] = field(default_factory=list)
    local_ips: set[str] = field(default_factory=set)
    reachable: bool = True  # the probe's own OPTIONS was answered

    @property
    def target(self) -> Endpoint:
        return self.opts.target

    @property
    def domain(self) -> str:
        return self.opts.domain or self.target.name or self.target.host

    @property
    def sni(self) -> str | None:
        name = self.opts.domain or self.target.name
        return name if name and not _is_ip(name) else None

    def uri(self, user: str) -> str:
        return f"sip:{user}@{self.domain}"

    def record(self, ex: Exchange) -> Exchange:
        self.responses.extend(ex.responses)
        return ex

    def channel(self, endpoint: Endpoint | None = None, *, stranger: bool = False) -> Channel:
        ep = endpoint or self.target
        ctx = None
        if ep.transport == "tls":
            o = self.opts
            ctx = (tls.client_context(None, None, None) if stranger
                   else tls.client_context(o.ca, o.cert, o.key))
        local = self.opts.stranger_source if stranger else None
        ch = Channel(ep, self.guard, ssl_context=ctx, server_name=self.sni, local_ip=local,
                     timeout=self.opts.timeout)
        self.local_ips.add(ch.local[0])
        return ch

    def ask(self, method: str, user: str, *, stranger: bool = False,
            endpoint: Endpoint | None = None, timeout: float | None = None,
            **kw: object) -> tuple[Exchange, Channel | None]:
        """One request on a fresh flow; the flow is returned open for ACK/BYE."""
        try:
            ch = self.channel(endpoint, stranger=stranger)
        except ChannelError as exc:
            return Exchange(None, error=str(exc)), None
        to = self.uri(user) if method != "REGISTER" else None
        ruri = f"sip:{self.domain}" if method == "REGISTER" else self.uri(user)
        req = on(ch, method, ruri, to_uri=to or self.uri(user), **kw)
        return self.record(exchange(ch, req, timeout or self.opts.timeout)), ch


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _family(run: Run, name: str, fn: Callable[[Run], list[Finding]]) -> bool:
    """Run one check family; its failure to run becomes a finding, never a traceback."""
    try:
        run.findings.extend(fn(run))
    except BudgetExceeded as exc:
        run.findings.append(info(f"{name}.stopped", f"stopped: {exc}", "probe bounds"))
        return False
    except (ChannelError, ScopeError, OSError, ssl.SSLError) as exc:
        run.findings.append(skip(f"{name}.error", "SHOULD", f"could not run: {exc}",
                                 "probe bounds"))
    return True


# --------------------------------------------------------------------------- families


def check_tls(run: Run) -> list[Finding]:
    if run.target.transport != "tls":
        ok = run.opts.profile != "interconnect"
        return [judge(ok, "tls.transport", "MUST", f"target speaks {run.target.transport}, "
                      "not TLS", tls.REF_VERSIONS)]
    options = new_request("OPTIONS", run.uri(run.opts.number), ("192.0.2.1", 5061), "tls"
                          ).to_bytes()
    obs = tls.observe(run.target, run.guard, server_name=run.sni, ca=run.opts.ca,
                      cert=run.opts.cert, key=run.opts.key, options=options,
                      timeout=run.opts.timeout)
    level = "MUST" if run.opts.profile == "interconnect" else "SHOULD"
    domain = run.opts.domain or run.target.name
    return [judge(True, "tls.transport", "MUST", "SIP over TLS", tls.REF_VERSIONS),
            *tls.judge_all(obs, domain, level, datetime.datetime.now(datetime.UTC))]


def check_reachable(run: Run) -> list[Finding]:
    """Without an answer to its own OPTIONS, silence elsewhere would prove nothing."""
    ex, ch = run.ask("OPTIONS", run.opts.number)
    if ch is not None:
        ch.close()
    run.reachable = ex.answered
    return [judge(ex.answered, "sip.options", "MUST", f"OPTIONS with the probe's identity: "
                  f"{ex.describe()}" + ("" if ex.answered else "; SIP checks not run"),
                  "RFC 3261 §11")]


def check_exposure(run: Run) -> list[Finding]:
    o = run.opts
    if run.target.transport != "tls" and o.stranger_source is None:
        return [exposure.judge_unknown_source(None),
                *(exposure.judge_unauthenticated(m, None) for m in ("OPTIONS", "INVITE",
                                                                    "REGISTER")),
                exposure.judge_enumeration(None, [], None)]
    results: dict[str, Exchange] = {}
    for method in ("OPTIONS", "INVITE", "REGISTER"):
        kw: dict[str, object] = {}
        if method == "INVITE":
            kw = {"body": media.build_offer(_local_ip(run), 9, "RTP/AVP").body}
        ex, ch = run.ask(method, o.number, stranger=True, **kw)
        if ch is not None:
            if method == "INVITE" and ex.request is not None:
                finish_invite(ch, ex.request, ex)
            ch.close()
        results[method] = ex
    out = [exposure.judge_unknown_source(results["OPTIONS"]),
           *(exposure.judge_unauthenticated(m, results[m]) for m in ("OPTIONS", "INVITE",
                                                                     "REGISTER"))]
    existing = None
    absent: list[Exchange] = []
    if o.extension:
        existing, ch = run.ask("OPTIONS", o.extension, stranger=True)
        if ch is not None:
            ch.close()
        for _ in range(2):
            ex, ch = run.ask("OPTIONS", f"u{token(3)}", stranger=True)
            if ch is not None:
                ch.close()
            absent.append(ex)
    out.append(exposure.judge_enumeration(existing, absent, o.extension))
    return out


def _invite(run: Run, offer: media.Offer, *, endpoint: Endpoint | None = None,
            **kw: object) -> tuple[Exchange, Channel | None]:
    return run.ask("INVITE", run.opts.number, endpoint=endpoint, timeout=run.opts.call_timeout,
                   body=offer.body, **kw)


def _one_call(run: Run, offer: media.Offer, endpoint: Endpoint | None = None
              ) -> tuple[Exchange, media.Answer]:
    ex, ch = _invite(run, offer, endpoint=endpoint)
    if ch is not None:
        if ex.request is not None:
            finish_invite(ch, ex.request, ex)
        ch.close()
    return ex, media.read_answer(ex)


def check_media(run: Run, legacy: LegacySide | None) -> list[Finding]:
    o = run.opts
    out: list[Finding] = []
    local = _local_ip(run)
    if o.profile == "interconnect":
        ex, ans = _one_call(run, media.build_offer(local, 9, "RTP/AVP"))
        out.append(media.judge_plain_rtp(ex, ans))
    else:
        out.append(skip("media.plain_rtp_refused", "MUST", "pbx profile: plain RTP is allowed",
                        media.REF_PLAIN))
    ex, ans = _one_call(run, media.build_offer(local, 9, "RTP/SAVP", (
        "NULL_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_80")))
    out.append(media.judge_null_suite(ex, ans))
    plain = o.plain_sip or (run.target if run.target.transport != "tls" else None)
    if plain is not None:
        ex, ans = _one_call(run, media.build_offer(local, 9, "RTP/SAVP", media.STRONG),
                            endpoint=plain)
        out.append(media.judge_sdes_insecure(ex, ans, plain.transport))
    else:
        out.append(media.judge_sdes_insecure(None, None, ""))
    out.extend(_main_call(run, legacy, local))
    return out


def _local_ip(run: Run) -> str:
    if run.local_ips:
        return sorted(run.local_ips)[0]
    return "::1" if ":" in run.target.host else "127.0.0.1" if run.target.host.startswith(
        "127.") else "0.0.0.0"


def _main_call(run: Run, legacy: LegacySide | None, local: str) -> list[Finding]:
    """The SRTP call that the key, bleed and topology checks share."""
    mark = f"prb{token(4)}"
    secure = MediaSocket(run.guard, local)
    offer = media.build_offer(local, secure.local[1], "RTP/SAVP", media.STRONG, mark=mark)
    out: list[Finding] = []
    ch: Channel | None = None
    before = len(legacy.invites()) if legacy is not None else 0
    try:
        ex, ch = _invite(run, offer, call_id=f"{mark}-cid",
                         from_tag=f"{mark}ft", extra=[("X-Probe-Mark", mark),
                                                      ("Subject", mark)])
        answer = media.read_answer(ex)
        final = ex.final
        if ch is not None and ex.request is not None and final is not None:
            ch.send(ack_for(ex.request, final).to_bytes())
        out.extend(media.judge_key_reuse(ex, answer, offer, run.opts.profile))
        legacy_invite = None
        if legacy is not None:  # the first INVITE the target sent after ours: this call's leg
            arrived = legacy.invites()[before:]
            legacy_invite = arrived[0] if arrived else None
        out.append(_bleed(run, legacy, legacy_invite, answer, secure, offer, local))
        if legacy is not None:
            needles = {f"{legacy.address[0]}:{legacy.address[1]}",
                       f"{legacy.media.local[0]}:{legacy.media.local[1]}"}
            if legacy.address[0] not in (run.target.host, local):
                needles.add(legacy.address[0])
            out.extend(topology.judge_topology(
                mark, legacy.mark, legacy_invite.request if legacy_invite else None,
                answer.response, needles, [k for _, _, k in offer.keys]))
        else:
            out.append(skip("topology", "SHOULD", "needs --legacy-side", topology.REF))
        if ch is not None and ex.request is not None and final is not None and (
                200 <= final.status < 300):
            run.record(exchange(ch, bye_for(ex.request, final), run.opts.timeout))
        elif ch is not None and ex.request is not None and final is None:
            finish_invite(ch, ex.request, ex)
    finally:
        secure.close()
        if ch is not None:
            ch.close()
    return out


def _bleed(run: Run, legacy: LegacySide | None, legacy_invite: Received | None,
           answer: media.Answer, secure: MediaSocket, offer: media.Offer,
           local: str) -> Finding:
    if legacy is None:
        return bleed.judge_bleed(None)
    if not answer.accepted or legacy_invite is None:
        return bleed.judge_bleed(None, "the SRTP call was not set up through the target")
    secure_target = answer.where()
    invite = legacy_invite.request
    run.guard.media_hosts.add(legacy_invite.source[0])  # the target itself called us from there
    try:
        lsdp = parse_sdp(invite.body)
        laudio = next(m for m in lsdp.media if m.kind == "audio")
        lconn = lsdp.connection_for(laudio)
        legacy_target = (lconn.address, laudio.port) if lconn is not None else None
    except (ValueError, StopIteration):
        legacy_target = None
    if secure_target is None or legacy_target is None:
        return bleed.judge_bleed(None, "no media addresses in the SDP")
    for host in (secure_target[0], legacy_target[0]):
        if host not in run.guard.media_hosts:
            return bleed.judge_bleed(None, f"the SDP sends media to {host}, which was not "
                                     "named: not sending there")
    theirs = media.params_of(answer)
    our_key = next((SrtpParams(s, k) for _, s, k in offer.keys
                    if theirs is not None and s == theirs.suite), None)
    obs = bleed.run(run.guard, secure=secure, legacy=legacy.media, secure_target=secure_target,
                    legacy_target=legacy_target, our_key=our_key, local_ip=local)
    return bleed.judge_bleed(obs)


def check_screening(run: Run) -> list[Finding]:
    outcomes = []
    for case in screening.CASES:
        try:
            ch = run.channel()
        except ChannelError as exc:
            outcomes.append(screening.Outcome(case.name, None, f"no flow: {exc}", None))
            continue
        try:
            base = on(ch, "OPTIONS", run.uri(run.opts.number)).to_bytes()
            outcomes.append(_raw(ch, case.name, case.mutate(base), run.opts.timeout))
        finally:
            ch.close()
    ex, ch = run.ask("OPTIONS", run.opts.number)
    if ch is not None:
        ch.close()
    alive = ex.answered
    return screening.judge_screening(outcomes, alive, "after the malformed set a good OPTIONS "
                                     f"got {ex.describe()}")


def _raw(ch: Channel, name: str, data: bytes, timeout: float) -> screening.Outcome:
    start = time.monotonic()
    try:
        ch.send(data)
        deadline = start + timeout
        while (left := deadline - time.monotonic()) > 0:
            for raw in ch.receive(left):
                got = screening.first_status(raw)
                if got is not None:
                    return screening.Outcome(name, got[0], got[1], time.monotonic() - start)
            if ch.closed_by_peer:
                return screening.Outcome(name, None, "flow closed by the target", None)
    except ChannelError as exc:
        return screening.Outcome(name, None, f"dropped ({exc})", None)
    return screening.Outcome(name, None, "dropped", None)


def check_answers(run: Run) -> list[Finding]:
    allowed = {run.target.host, *run.local_ips}
    if run.opts.plain_sip is not None:
        allowed.add(run.opts.plain_sip.host)
    return [*exposure.judge_fingerprint(run.responses, USER_AGENT),
            exposure.judge_leaks(run.responses, allowed)]


def check_flood(run: Run) -> list[Finding]:
    ch = run.channel()
    try:
        def make(i: int):  # type: ignore[no-untyped-def]
            return on(ch, "OPTIONS", run.uri(run.opts.number), call_id=f"flood{i}-{token(6)}")
        obs = flood.burst(ch, make, run.opts.flood, seconds=5.0)
    finally:
        ch.close()
    time.sleep(1.0)
    after, ch2 = run.ask("OPTIONS", run.opts.number)
    if ch2 is not None:
        ch2.close()
    obs.after = after
    return [flood.judge_flood(obs)]


def run_probe(opts: ProbeOptions) -> tuple[list[Finding], dict[str, object]]:
    t = opts.target
    endpoints = {t.address}
    hosts = {t.host, *opts.media_hosts}
    if opts.plain_sip is not None:
        endpoints.add(opts.plain_sip.address)
        hosts.add(opts.plain_sip.host)
    guard = Guard(frozenset(endpoints), hosts, opts.max_packets, opts.max_time)
    run = Run(opts, guard)
    started = datetime.datetime.now(datetime.UTC)
    legacy = None
    if opts.legacy_side is not None:
        mark = f"lgc{token(4)}"
        legacy = LegacySide(opts.legacy_side, mark, MediaSocket(guard, opts.legacy_side[0]))
        legacy.start()
    try:
        steps: list[tuple[str, Callable[[Run], list[Finding]]]] = [
            ("tls", check_tls), ("sip", check_reachable), ("exposure", check_exposure),
            ("media", lambda r: check_media(r, legacy)), ("screening", check_screening),
            ("answers", check_answers), ("flood", check_flood)]
        for name, fn in steps:
            if not run.reachable:
                break
            if legacy is not None:
                guard.media_hosts.update(legacy.sources())
            if not _family(run, name, fn):
                run.findings.extend(check_answers(run) if name not in ("answers", "flood")
                                    else [])
                break
    finally:
        if legacy is not None:
            legacy.stop()
            legacy.media.close()
    meta: dict[str, object] = {
        "target": str(t), "profile": opts.profile, "domain": run.domain,
        "legacy_side": f"{opts.legacy_side[0]}:{opts.legacy_side[1]}" if opts.legacy_side
        else None, "started": started.isoformat(timespec="seconds"),
        "seconds": round((datetime.datetime.now(datetime.UTC) - started).total_seconds(), 1),
        "packets_sent": guard.sent}
    return run.findings, meta
