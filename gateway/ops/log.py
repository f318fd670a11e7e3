"""Structured logging: ``log.info("event.name", key=value, ...)``, rendered as key=value or JSON.

Every record passes a redaction filter before it is rendered, so SDES ``inline:`` values, PEM
private keys and raw key bytes cannot reach a log line even if a caller passes them by mistake.
Security events go to the ``srtpgw.security`` logger so that a SIEM sink can be attached there;
they are rate-limited on the way (``gateway.ops.event_limit``), every occurrence still counted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import threading
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

    def info_limited(self, event: str, **fields: Any) -> bool:
        """``info`` for a per-attempt line about what a source sent (a malformed message): a
        spoofed source could flood the log, so it goes through the same per-source, per-kind
        limit as security events, with ``suppressed``. Counters must count every attempt."""
        held = _noise.admit(event, source_of(fields), time.monotonic())
        if held is None:
            return False
        self._log(logging.INFO, event, {**fields, "suppressed": held})
        return True

    def warning(self, event: str, **fields: Any) -> None:
        self._log(logging.WARNING, event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._log(logging.ERROR, event, fields)


def get_logger(layer: str) -> StructLogger:
    """One logger per layer: ``get_logger("sip")`` logs as ``srtpgw.sip``."""
    return StructLogger(logging.getLogger(f"{ROOT}.{layer}"))


_security = get_logger("security")
_limiter = EventLimiter()
_noise = EventLimiter()  # StructLogger.info_limited: kept apart from the security events' counts
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
    _noise.configure(interval)


def security_events_suppressed() -> Counter[str]:
    """Security events held back by the rate limit since start, by kind."""
    return Counter(_limiter.suppressed)


def reset_security_events(interval: float | None = None) -> None:
    """Forget what was written (a fresh process's state; tests start from it)."""
    global _limiter, _noise
    _limiter = EventLimiter(interval if interval is not None else _limiter.interval)
    _noise = EventLimiter(_limiter.interval)


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
    """Replace our previous handler with ``handler`` (on the Python root logger too, once
    ``capture_stray_output`` has put one there)."""
    root = logging.getLogger(ROOT)
    stray = logging.getLogger()
    captured = any(getattr(h, "_srtpgw", False) for h in stray.handlers)
    for logger in (root, stray):
        for h in list(logger.handlers):
            if getattr(h, "_srtpgw", False):
                logger.removeHandler(h)
                if logger is root:
                    h.close()
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False
    if captured:
        stray.addHandler(handler)


_process = get_logger("process")


def capture_stray_output() -> None:
    """For a process that is the gateway: nothing may reach stderr outside the structured log.

    Records of other loggers (asyncio's "Exception in callback", libraries), ``warnings``,
    uncaught exceptions in the main thread, in threads and in ``__del__`` (unraisable) all go
    through our handler, so a JSON log stays one JSON object per line.
    """
    stray = logging.getLogger()
    ours = next((h for h in logging.getLogger(ROOT).handlers if getattr(h, "_srtpgw", False)),
                None)
    if ours is not None and ours not in stray.handlers:
        for h in list(stray.handlers):
            stray.removeHandler(h)
        stray.addHandler(ours)
    logging.captureWarnings(True)
    sys.excepthook = _uncaught
    threading.excepthook = _uncaught_in_thread
    sys.unraisablehook = _unraisable


def _uncaught(kind: type[BaseException], exc: BaseException, tb: Any) -> None:
    if issubclass(kind, KeyboardInterrupt):
        return
    _process.error("process.uncaught_exception", error=repr(exc), exc_info=(kind, exc, tb))


def _uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    _process.error("process.thread_exception", thread=getattr(args.thread, "name", None),
                   error=repr(args.exc_value),
                   exc_info=(args.exc_type, args.exc_value, args.exc_traceback))


def _unraisable(args: Any) -> None:
    exc = args.exc_value
    _process.error("process.unraisable", error=repr(exc), where=repr(args.object)[:200],
                   message=args.err_msg,
                   exc_info=(args.exc_type, exc, args.exc_traceback) if exc else None)


def log_loop_exceptions(loop: asyncio.AbstractEventLoop) -> None:
    """Exceptions the event loop catches (callbacks, tasks nobody awaited, protocol
    callbacks) become one structured ``loop.exception`` record instead of asyncio's plain
    text traceback."""
    loop.set_exception_handler(_loop_exception)


_loop_log = get_logger("loop")


def _loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    exc = context.get("exception")
    fields: dict[str, Any] = {"message": str(context.get("message", ""))[:300]}
    for key in ("task", "future", "handle", "protocol", "transport"):
        if key in context:
            fields[key] = repr(context[key])[:200]
    if isinstance(exc, BaseException):
        fields["error"] = repr(exc)[:300]
        fields["exc_info"] = (type(exc), exc, exc.__traceback__)
    _loop_log.error("loop.exception", **fields)
