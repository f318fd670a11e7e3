"""The security event stream: JSON lines for SIEM ingestion, plus counters by kind.

Every layer reports through ``gateway.ops.log.security_event``; this module only subscribes to
the ``srtpgw.security`` logger, so a sink sees bans, rule hits, TLS failures and SRTP failures
alike. Records pass the same redaction filter as the logs: no key material can leave.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any

from gateway.config import Config
from gateway.ops.log import ROOT, RedactingFilter, get_logger

SECURITY_LOGGER = f"{ROOT}.security"
log = get_logger("policy")


class SiemHandler(logging.Handler):
    """Writes one JSON object per security event and counts events by kind."""

    def __init__(self, stream: IO[str] | None = None, path: Path | None = None) -> None:
        super().__init__(logging.INFO)
        if (stream is None) == (path is None):
            raise ValueError("give exactly one of stream or path")
        self._own = path is not None
        self.path = path
        self._stream: IO[str] = (open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
                                 if path is not None else stream)  # type: ignore[assignment]
        self.counts: Counter[str] = Counter()
        self.write_errors = 0
        self._failing = False
        self._count_lock = threading.Lock()
        self.addFilter(RedactingFilter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = json.dumps(event_document(record), default=str, ensure_ascii=False)
            with self._count_lock:
                self.counts[str(record.msg)] += 1
            self._stream.write(line + "\n")
            self._stream.flush()
        except OSError as exc:
            self._write_failed(exc)
        except Exception:  # logging must never take the gateway down
            self.handleError(record)
        else:
            if self._failing:
                self._failing = False
                log.warning("siem.write_recovered", path=str(self.path),
                            lost=self.write_errors)

    def _write_failed(self, exc: OSError) -> None:
        """A full or read-only disk: drop the event (the stream keeps at most its own bounded
        buffer), count it, and say so once per run of failures, not per event with a traceback."""
        self.write_errors += 1
        if not self._failing:
            self._failing = True
            log.error("siem.write_failed", path=str(self.path), error=exc.strerror or str(exc),
                      note="further failures are only counted")

    def close(self) -> None:
        try:
            if self._own:
                self._stream.close()
        finally:
            super().close()


def event_document(record: logging.LogRecord) -> dict[str, Any]:
    """The SIEM shape: timestamp, kind, severity, then the event's own fields."""
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    doc: dict[str, Any] = {"ts": f"{ts}.{int(record.msecs):03d}Z", "kind": str(record.msg),
                           "severity": record.levelname.lower()}
    for k, v in (getattr(record, "fields", None) or {}).items():
        doc.setdefault(k, v)
    return doc


def attach_siem(stream: IO[str] | None = None, path: Path | None = None) -> SiemHandler:
    """Subscribe a JSON-lines sink to the security logger; detach it with ``detach_siem``."""
    handler = SiemHandler(stream=stream, path=path)
    logger = logging.getLogger(SECURITY_LOGGER)
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.WARNING:
        logger.setLevel(logging.WARNING)  # security events pass whatever the log level
    return handler


def detach_siem(handler: SiemHandler) -> None:
    logging.getLogger(SECURITY_LOGGER).removeHandler(handler)
    handler.close()


def configure_siem(config: Config, current: SiemHandler | None = None) -> SiemHandler | None:
    """(Re)attach the sink that ``[logging] security_file`` names; call at start and on reload.

    Returns the handler now attached (None when no file is configured). The new file is opened
    before the previous sink is detached, so a reload refused for an unopenable path (OSError)
    leaves the old sink in place and no security event is lost.
    """
    path = config.logging.security_file
    if current is not None and path is not None and current.path == path:
        return current
    new = attach_siem(path=path) if path is not None else None
    if current is not None:
        detach_siem(current)
    return new
