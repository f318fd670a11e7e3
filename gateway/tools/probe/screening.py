"""Screening: a small fixed set of malformed requests (in the spirit of RFC 4475, written here),
what comes back for each, and whether the target still answers a good request afterwards.

A good screen answers 4xx/5xx or drops silently; a 2xx means the malformed request was served.
Each message gets a fresh flow, since a stream target rightly closes after a framing error.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from gateway.tools.probe.findings import Finding, info, judge

REF = "RFC 3261 §8.2, §16.3, §18.3; RFC 4475"
_STATUS = re.compile(rb"^SIP/2\.0 (\d{3}) ([^\r\n]*)", re.M)


def _replace(pattern: bytes, repl: bytes) -> Callable[[bytes], bytes]:
    rx = re.compile(pattern, re.M | re.I)
    return lambda msg: rx.sub(repl, msg, count=1)


def _insert(line: bytes) -> Callable[[bytes], bytes]:
    return lambda msg: msg.replace(b"\r\n", b"\r\n" + line + b"\r\n", 1)


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    mutate: Callable[[bytes], bytes]
    what: str


CASES: tuple[Case, ...] = (
    Case("no-call-id", _replace(rb"^Call-ID:[^\r\n]*\r\n", b""), "Call-ID missing"),
    Case("cseq-method-mismatch", _replace(rb"^CSeq: (\d+) \w+", rb"CSeq: \1 INVITE"),
         "CSeq method differs from the request method"),
    Case("negative-content-length", _replace(rb"^Content-Length: \d+", b"Content-Length: -5"),
         "Content-Length -5"),
    Case("huge-max-forwards", _replace(rb"^Max-Forwards: \d+", b"Max-Forwards: 99999999999"),
         "Max-Forwards out of range"),
    Case("sip-version-7", _replace(rb" SIP/2\.0\r\n", b" SIP/7.0\r\n"), "SIP/7.0 request line"),
    Case("header-without-colon", _insert(b"This header has no colon"), "a header line with "
         "no colon"),
    Case("oversized-header", _insert(b"Subject: " + b"A" * 9000), "one 9000-octet header"),
    Case("bad-via-port", _replace(rb"^(Via: SIP/2\.0/\w+ [^:;]+):\d+",
                                  rb"\1:99999"), "Via port 99999"),
    Case("nul-in-call-id", _replace(rb"^Call-ID: ", b"Call-ID: a\x00b"),
         "a NUL octet in the Call-ID"),
    Case("unknown-uri-scheme", _replace(rb"^(\w+) \S+ SIP/2\.0", rb"\1 nope:xyz SIP/2.0"),
         "Request-URI of an unknown scheme"),
)


@dataclass(frozen=True, slots=True)
class Outcome:
    case: str
    status: int | None  # None: silence (or the flow closed)
    reason: str
    elapsed: float | None

    def describe(self) -> str:
        return f"{self.status} {self.reason}".strip() if self.status is not None else (
            self.reason or "dropped")


def first_status(raw: bytes) -> tuple[int, str] | None:
    m = _STATUS.search(raw)
    return (int(m.group(1)), m.group(2).decode("utf-8", "replace")) if m else None


def judge_screening(outcomes: list[Outcome], alive: bool, alive_evidence: str) -> list[Finding]:
    served = [o for o in outcomes if o.status is not None and 200 <= o.status < 300]
    tally: dict[str, int] = {}
    for o in outcomes:
        key = str(o.status) if o.status is not None else "dropped"
        tally[key] = tally.get(key, 0) + 1
    summary = ", ".join(f"{k} x{v}" for k, v in sorted(tally.items()))
    details = {o.case: o.describe() for o in outcomes}
    out = [judge(not served, "screening.malformed", "SHOULD",
                 f"{len(outcomes)} malformed requests: {summary}"
                 + (f"; served: {', '.join(o.case for o in served)}" if served else ""),
                 REF, outcomes=details),
           judge(alive, "screening.liveness", "MUST", alive_evidence, REF)]
    times = [o.elapsed for o in outcomes if o.elapsed is not None]
    if times:
        out.append(info("screening.response_time",
                        f"answers in {min(times) * 1000:.0f}-{max(times) * 1000:.0f} ms", REF))
    return out
