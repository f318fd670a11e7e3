"""The SIEM sink: JSON lines from every layer's security events, counted, with no key material."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

from gateway.ops.log import security_event
from gateway.policy.events import attach_siem, detach_siem


def test_json_lines_and_counts() -> None:
    buf = io.StringIO()
    h = attach_siem(stream=buf)
    try:
        security_event("pike.ban", source="127.0.0.2", until=12.5)
        security_event("tls.handshake_failed", peer="127.0.0.1:5061", reason="unknown ca")
        security_event("pike.ban", source="127.0.0.3", until=13.0)
    finally:
        detach_siem(h)
    docs = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert [d["kind"] for d in docs] == ["pike.ban", "tls.handshake_failed", "pike.ban"]
    assert docs[0]["source"] == "127.0.0.2" and docs[0]["severity"] == "warning"
    assert docs[1]["reason"] == "unknown ca" and docs[1]["ts"].endswith("Z")
    assert h.counts == {"pike.ban": 2, "tls.handshake_failed": 1}


def test_no_key_material(tmp_path: Path) -> None:
    path = tmp_path / "siem.jsonl"
    h = attach_siem(path=path)
    try:
        security_event("sdp.rejected", sdp="a=crypto:1 AES_CM_128_HMAC_SHA1_80 "
                       "inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4",
                       master_key=b"\x01" * 16, srtp_key="abc")
    finally:
        detach_siem(h)
    text = path.read_text()
    doc = json.loads(text)
    assert "WVNfX19" not in text and '"abc"' not in text
    assert doc["master_key"] == "<redacted>" and doc["srtp_key"] == "<redacted>"


def test_events_reach_sink_even_when_log_level_is_error() -> None:
    root = logging.getLogger("srtpgw")
    old = root.level
    root.setLevel(logging.ERROR)
    buf = io.StringIO()
    h = attach_siem(stream=buf)
    try:
        security_event("acl.denied", source="192.0.2.1")
    finally:
        detach_siem(h)
        root.setLevel(old)
        logging.getLogger("srtpgw.security").setLevel(logging.NOTSET)
    assert json.loads(buf.getvalue())["kind"] == "acl.denied"


def test_configure_siem_follows_config(tmp_path: Path) -> None:
    from gateway.policy.events import configure_siem
    from tests.security.policy_configs import make_config

    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    h = configure_siem(make_config(logging={"security_file": str(first)}))
    assert h is not None
    security_event("pike.ban", source="127.0.0.2")
    assert configure_siem(make_config(logging={"security_file": str(first)}), h) is h
    h2 = configure_siem(make_config(logging={"security_file": str(second)}), h)
    security_event("pike.ban", source="127.0.0.3")
    assert configure_siem(make_config(), h2) is None
    security_event("pike.ban", source="127.0.0.4")
    assert json.loads(first.read_text())["source"] == "127.0.0.2"
    assert json.loads(second.read_text())["source"] == "127.0.0.3"


def test_refused_reload_keeps_the_old_sink(tmp_path: Path) -> None:
    import pytest

    from gateway.policy.events import SECURITY_LOGGER, configure_siem
    from tests.security.policy_configs import make_config

    old = tmp_path / "old.jsonl"
    h = configure_siem(make_config(logging={"security_file": str(old)}))
    assert h is not None
    try:
        bad = make_config(logging={"security_file": str(tmp_path / "no-such-dir" / "x.jsonl")})
        with pytest.raises(OSError):
            configure_siem(bad, h)
        assert logging.getLogger(SECURITY_LOGGER).handlers.count(h) == 1
        security_event("pike.ban", source="127.0.0.5")
        assert json.loads(old.read_text())["source"] == "127.0.0.5"
    finally:
        detach_siem(h)
