"""Call detail records: one JSON line per finished call, written with size-based rotation.

A call's correlation id is the B2BUA's own call id (``Call.id``, not a SIP Call-ID): both legs
log with it as ``call=...`` and its CDR carries it as ``"call"``, so one grep finds every line of
one call across both dialogs.
A CDR holds what happened to each leg (trunk, codec, suite, packet counts, auth failures) and
never key material: ``LegRecord`` has no field that could hold a key.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gateway.config import CdrSection
from gateway.ops.log import get_logger, redact_text

log = get_logger("cdr")


@dataclass(slots=True)
class LegRecord:
    """What one leg of a call did. Counters are copied from the relay at call end."""

    trunk: str
    side: str  # "legacy" / "secure"
    transport: str  # udp / tcp / tls
    media: str  # rtp / srtp / dtls-srtp
    codec: str | None = None
    suite: str | None = None
    packets_in: int = 0
    packets_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    auth_failures: int = 0
    replays: int = 0


@dataclass(slots=True)
class CallRecord:
    call: str
    from_trunk: str
    to_trunk: str | None
    start: float  # unix time the INVITE arrived
    answer: float | None = None
    end: float | None = None
    end_cause: str = "unknown"  # caller_bye, callee_bye, cancel, rejected, media_timeout, drain
    final_status: int | None = None  # SIP status of the INVITE, when one was sent
    caller: str | None = None  # user part of From
    callee: str | None = None  # user part of the Request-URI
    legs: list[LegRecord] = field(default_factory=list)

    def to_json(self) -> str:
        doc: dict[str, Any] = asdict(self)
        for name in ("start", "answer", "end"):
            doc[name] = _iso(doc[name])
        doc["duration"] = (round(self.end - self.answer, 3)
                           if self.end is not None and self.answer is not None else 0.0)
        # Last line of defence: a caller must never pass keys, but scrub anyway.
        return redact_text(json.dumps(doc, separators=(",", ":"), ensure_ascii=False))


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


class CdrWriter:
    """Appends CDR lines to ``path``; rotates to path.1 .. path.N before exceeding max_bytes.

    A failing disk must never fail a call: a record that cannot be written is dropped (nothing
    queues up in memory) and counted; the first failure of a run of them is logged, and so is the
    first success after it, so a full disk gives two log lines, not one per call.
    """

    def __init__(self, section: CdrSection) -> None:
        self.section = section
        self.written = 0
        self.errors = 0
        self._failing_since = 0  # self.errors when the current run of failures began; 0 = none

    def configure(self, section: CdrSection) -> None:
        self.section = section

    def write(self, record: CallRecord) -> None:
        path = self.section.path
        if path is None:
            return
        line = (record.to_json() + "\n").encode("utf-8")
        try:
            if _size(path) + len(line) > self.section.max_bytes:
                self._rotate(path)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        except OSError as exc:
            self.errors += 1
            if not self._failing_since:
                self._failing_since = self.errors
                log.error("cdr.write_failed", path=str(path), error=exc.strerror or str(exc),
                          call=record.call, note="further failures are only counted")
            return
        self.written += 1
        if self._failing_since:
            log.warning("cdr.write_recovered", path=str(path),
                        lost=self.errors - self._failing_since + 1)
            self._failing_since = 0

    def _rotate(self, path: Path) -> None:
        n = self.section.backups
        if n == 0:
            path.unlink(missing_ok=True)
            return
        for i in range(n - 1, 0, -1):
            older = path.with_name(f"{path.name}.{i}")
            if older.exists():
                older.replace(path.with_name(f"{path.name}.{i + 1}"))
        if path.exists():
            path.replace(path.with_name(f"{path.name}.1"))
        log.info("cdr.rotated", path=str(path), backups=n)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
