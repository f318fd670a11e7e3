"""Structured logging and redaction: key material cannot reach a log line."""

from __future__ import annotations

import base64
import io
import json
import logging
import secrets

import pytest

from gateway.ops.log import (
    JsonFormatter,
    KeyValueFormatter,
    RedactingFilter,
    get_logger,
    security_event,
    setup_logging,
)

KEY = base64.b64encode(secrets.token_bytes(30)).decode()
CRYPTO_LINE = f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^20|1:4"


@pytest.fixture
def captured() -> io.StringIO:
    buf = io.StringIO()
    setup_logging("debug", "kv")
    root = logging.getLogger("srtpgw")
    handler = next(h for h in root.handlers if getattr(h, "_srtpgw", False))
    handler.setStream(buf)  # type: ignore[attr-defined]
    return buf


def test_sdes_inline_values_are_redacted_everywhere(captured: io.StringIO) -> None:
    log = get_logger("sdp")
    log.info(f"offer {CRYPTO_LINE}", sdp=CRYPTO_LINE)
    logging.getLogger("srtpgw.sdp").warning("bad line %s", CRYPTO_LINE)
    out = captured.getvalue()
    assert KEY not in out and KEY[:20] not in out
    assert out.count("inline:<redacted>") == 3


def test_secret_named_fields_and_bytes_are_redacted(captured: io.StringIO) -> None:
    raw = secrets.token_bytes(30)
    get_logger("media").info("rekey", master_key="c2VjcmV0", salt="abc", tx_key=raw, data=raw,
                             key_count=2)
    out = captured.getvalue()
    assert "c2VjcmV0" not in out and "salt=abc" not in out and raw.hex() not in out
    assert "master_key=<redacted>" in out and "data=\"<30 bytes>\"" in out
    assert "key_count=2" in out


def test_exceptions_are_redacted(captured: io.StringIO) -> None:
    try:
        raise ValueError(f"cannot use {CRYPTO_LINE}")
    except ValueError:
        get_logger("sdp").error("failed", exc_info=True)
    assert KEY not in captured.getvalue()
    assert "ValueError" in captured.getvalue()


def test_pem_private_keys_are_redacted() -> None:
    pem = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMG\n-----END PRIVATE KEY-----"
    record = logging.LogRecord("srtpgw.x", logging.INFO, __file__, 1, pem, None, None)
    RedactingFilter().filter(record)
    assert "MIGHAgEAMBMG" not in record.msg


def test_json_format_and_security_events(captured: io.StringIO) -> None:
    setup_logging("info", "json")
    root = logging.getLogger("srtpgw")
    handler = next(h for h in root.handlers if getattr(h, "_srtpgw", False))
    assert isinstance(handler.formatter, JsonFormatter)
    buf = io.StringIO()
    handler.setStream(buf)  # type: ignore[attr-defined]
    security_event("tls.handshake_failed", peer="127.0.0.1:5061", reason="unknown ca")
    doc = json.loads(buf.getvalue().strip())
    assert doc["logger"] == "srtpgw.security" and doc["event"] == "tls.handshake_failed"
    assert doc["reason"] == "unknown ca"


def test_kv_quotes_values_with_spaces() -> None:
    record = logging.LogRecord("srtpgw.sip", logging.INFO, __file__, 1, "ev", None, None)
    record.fields = {"reason": "no route", "n": 3}
    line = KeyValueFormatter().format(record)
    assert 'reason="no route"' in line and "n=3" in line


def test_levels_filter(captured: io.StringIO) -> None:
    setup_logging("warning", "kv")
    root = logging.getLogger("srtpgw")
    handler = next(h for h in root.handlers if getattr(h, "_srtpgw", False))
    buf = io.StringIO()
    handler.setStream(buf)  # type: ignore[attr-defined]
    log = get_logger("b2bua")
    log.info("quiet")
    log.warning("loud")
    assert "quiet" not in buf.getvalue() and "loud" in buf.getvalue()
