"""Structured logging: ``log.info("event.name", key=value, ...)``, rendered as key=value or JSON.

Every record passes a redaction filter before it is rendered, so SDES ``inline:`` values, PEM
private keys and raw key bytes cannot reach a log line even if a caller passes them by mistake.
Security events go to the ``srtpgw.security`` logger so that a SIEM sink can be attached there;
they are rate-limited on the way (``gateway.ops.event_limit``), every occurrence still counted.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.ops.event_limit import EventLimiter, source_of

ROOT = "srtpgw"
_RESERVED = {"exc_info", "stack_info", "stacklevel", "extra"}

# Names of fields whose values are secrets whatever they contain.
_SECRET_FIELD = re.compile(r"(?i)(^|_)(key|keys|secret|salt|inline|password|passwd|private)($|_)")
# SDES key parameters (RFC 4568 §9.2 inline:<key||salt>|lifetime|MKI), in any text.
_INLINE = re.compile(r"(?i)(inline:)[A-Za-z0-9+/=]+(\|[^\s;|\"']*)?(\|[^\s;\"']*)?")
_PEM_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)",
                      re.S)
REDACTED = "<redacted>"


def redact_text(text: str) -> str:
    """Remove SDES inline keys and PEM private keys from free text."""
    text = _INLINE.sub(r"\1" + REDACTED, text)
    return _PEM_KEY.sub("<redacted private key>", text)


def redact_value(name: str, value: Any) -> Any:
    if _SECRET_FIELD.search(name) and not name.endswith(("_count", "_id", "_tag", "_len")):
        return REDACTED
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    if isinstance(value, str):
        return redact_text(value)
    return value


class RedactingFilter(logging.Filter):
    """Applied on every handler: scrubs the message, its args and the structured fields."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            try:
                record.msg = record.getMessage()
            except (TypeError, ValueError):
                record.msg = str(record.msg)
            record.args = None
        if not isinstance(record.msg, str):
            record.msg = str(record.msg)
        record.msg = redact_text(record.msg)
        fields = getattr(record, "fields", None)
        if fields:
            record.fields = {k: redact_value(k, v) for k, v in fields.items()}
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def _kv_value(value: Any) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' "=\n\t'):
        return json.dumps(text)
    return text


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        parts = [f"ts={ts}.{int(record.msecs):03d}Z", f"level={record.levelname.lower()}",
                 f"logger={record.name}", f"event={_kv_value(record.msg)}"]
        for k, v in (getattr(record, "fields", None) or {}).items():
            parts.append(f"{k}={_kv_value(v)}")
        if record.exc_text:
            parts.append(f"exc={_kv_value(record.exc_text)}")
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        doc: dict[str, Any] = {"ts": f"{ts}.{int(record.msecs):03d}Z",
                               "level": record.levelname.lower(), "logger": record.name,
                               "event": record.msg}
        for k, v in (getattr(record, "fields", None) or {}).items():
            doc.setdefault(k, v)
        if record.exc_text:
            doc["exc"] = record.exc_text
        return json.dumps(doc, default=str, ensure_ascii=False)


class StructLogger:
    """A thin front over ``logging.Logger`` that takes fields as keyword arguments."""

    __slots__ = ("_logger",)

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    @property
    def name(self) -> str:
        return self._logger.name

    def isEnabledFor(self, level: int) -> bool:
        return self._logger.isEnabledFor(level)

    def _log(self, level: int, event: str, fields: dict[str, Any]) -> None:
        if not self._logger.isEnabledFor(level):
            return
        exc_info = fields.pop("exc_info", None)
        clean = {k: v for k, v in fields.items() if k not in _RESERVED}
        self._logger.log(level, event, extra={"fields": clean}, exc_info=exc_info,
                         stacklevel=3)

    def debug(self, event: str, **fields: Any) -> None:
        self._log(logging.DEBUG, event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._log(logging.INFO, event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log(logging.WARNING, event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._log(logging.ERROR, event, fields)


def get_logger(layer: str) -> StructLogger:
    """One logger per layer: ``get_logger("sip")`` logs as ``srtpgw.sip``."""
    return StructLogger(logging.getLogger(f"{ROOT}.{layer}"))


_security = get_logger("security")
_limiter = EventLimiter()
SecurityTap = Callable[[str, dict[str, Any]], None]
_taps: list[SecurityTap] = []


def security_event(kind: str, *, now: float | None = None, **fields: Any) -> bool:
    """A security-relevant happening (ban, rule hit, TLS or SRTP failure) for SIEM ingestion.

    Any layer may call this, once per occurrence: at most one event per source (the ``source``
    or ``peer`` field's address) and kind is written per interval (``firewall.log_interval``),
    carrying ``suppressed``, the number held back since the previous one, so a flood cannot
    flood the logs. Taps (``add_security_tap``, for counters) see every occurrence; sinks (log
    file, SIEM stream) subscribe to the ``srtpgw.security`` logger and see what is written.
    ``now`` is the caller's monotonic clock when it has one. Returns whether it was written.
    """
    for tap in _taps:
        tap(kind, fields)
    held = _limiter.admit(kind, source_of(fields), time.monotonic() if now is None else now)
    if held is None:
        return False
    _security.warning(kind, suppressed=held, **fields)
    return True


def add_security_tap(tap: SecurityTap) -> None:
    if tap not in _taps:
        _taps.append(tap)


def remove_security_tap(tap: SecurityTap) -> None:
    if tap in _taps:
        _taps.remove(tap)


def configure_security_events(interval: float) -> None:
    """The rate-limit interval (``firewall.log_interval``); at start and on reload."""
    _limiter.configure(interval)


def security_events_suppressed() -> Counter[str]:
    """Security events held back by the rate limit since start, by kind."""
    return Counter(_limiter.suppressed)


def reset_security_events(interval: float | None = None) -> None:
    """Forget what was written (a fresh process's state; tests start from it)."""
    global _limiter
    _limiter = EventLimiter(interval if interval is not None else _limiter.interval)


def setup_logging(level: str = "info", fmt: str = "kv", file: Path | None = None) -> None:
    """Configure the ``srtpgw`` logger tree once at start-up (and again on reload)."""
    install_log_handler(log_handler(fmt, file), level)


def log_handler(fmt: str = "kv", file: Path | None = None) -> logging.Handler:
    """The handler for a [logging] section; opening the file is the step that can fail
    (OSError), so a reload makes it before it changes anything."""
    handler: logging.Handler = (logging.FileHandler(file, encoding="utf-8") if file
                                else logging.StreamHandler(sys.stderr))
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    handler.addFilter(RedactingFilter())
    handler._srtpgw = True  # type: ignore[attr-defined]
    return handler


def install_log_handler(handler: logging.Handler, level: str = "info") -> None:
    """Replace our previous handler with ``handler``."""
    root = logging.getLogger(ROOT)
    for h in list(root.handlers):
        if getattr(h, "_srtpgw", False):
            root.removeHandler(h)
            h.close()
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False
