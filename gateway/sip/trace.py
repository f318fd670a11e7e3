"""A SIP message trace for diagnosis: one debug-level ``sip.message`` event per message sent or
received, with direction, transport, peer, connection id, first line and Call-ID, and with
``[logging] sip_message_text`` the whole message.

Secrets are removed here, at the source, whatever handler later renders the record: SDES
``inline:`` keys (RFC 4568) and ``Authorization``/``Proxy-Authorization`` credentials. The
event costs one level check when debug logging is off.
"""

from __future__ import annotations

import logging
import re

from gateway.ops.log import REDACTED, get_logger, redact_text

log = get_logger("sip")
_CALL_ID = re.compile(rb"^(?:Call-ID|i)[ \t]*:[ \t]*([^\r\n]{1,256})", re.I | re.M)
# the header with its folded continuation lines (RFC 3261 §7.3.1)
_CREDENTIALS = re.compile(r"(?im)^((?:Proxy-)?Authorization[ \t]*:)[^\r\n]*"
                          r"(?:\r?\n[ \t]+[^\r\n]*)*")
MAX_TEXT = 8192   # a trace line never grows past this


def enabled() -> bool:
    return log.isEnabledFor(logging.DEBUG)


def redact_message(text: str) -> str:
    """The message as it may be logged: no credentials, no SDES keys."""
    return redact_text(_CREDENTIALS.sub(r"\1 " + REDACTED, text))


def trace(direction: str, transport: str, peer: tuple[str, int], connection: int | None,
          data: bytes, text: bool = False) -> None:
    """Log one message (call only when ``enabled()``: the caller skips the work otherwise)."""
    head = data.split(b"\r\n", 1)[0][:512].decode("utf-8", "replace")
    m = _CALL_ID.search(data)
    fields: dict[str, object] = {
        "direction": direction, "transport": transport, "peer": f"{peer[0]}:{peer[1]}",
        "connection": connection, "first_line": redact_message(head),
        "call_id": m.group(1).decode("utf-8", "replace").strip() if m else None}
    if text:
        fields["text"] = redact_message(data[:MAX_TEXT].decode("utf-8", "replace"))
    log.debug("sip.message", **fields)
