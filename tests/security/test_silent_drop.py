"""`srtpgw run` as an attacker sees it: a firewall drop sends nothing back (not even 100 Trying),
and with ``[logging] security_file`` set every rule hit lands there as one JSON line."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.security.corpus import SDP
from tests.security.harness import (
    Gateway,
    UdpClient,
    assert_clean_log,
    needs_app,
    request,
    start_gateway,
    status_of,
)


def test_drop_sends_no_byte(gateway: Gateway) -> None:
    port = gateway.ports["udp"]
    scanner, stranger = UdpClient("127.0.0.1"), UdpClient("127.0.0.3")
    try:
        scanner.send(request("INVITE", port=scanner.port, body=SDP,
                             extra="User-Agent: friendly-scanner\r\n"), port)
        stranger.send(request("INVITE", host="127.0.0.3", port=stranger.port, body=SDP), port)
        assert scanner.collect(1.0, until_final=False) == []
        assert stranger.collect(0.2, until_final=False) == []
        # the same source without the scanner's User-Agent is answered: the silence is the rule's
        scanner.send(request("OPTIONS", port=scanner.port), port)
        assert [status_of(r) for r in scanner.collect(2.0)] == [200]
    finally:
        scanner.close()
        stranger.close()


def test_security_file_gets_json_lines(tmp_path: Path) -> None:
    needs_app()
    sink = tmp_path / "security.jsonl"
    gw = start_gateway(tmp_path, security_file=sink)
    scanner = UdpClient("127.0.0.1")
    try:
        scanner.send(request("OPTIONS", port=scanner.port, extra="User-Agent: sipvicious\r\n"),
                     gw.ports["udp"])
        deadline = time.monotonic() + 3
        docs: list[dict[str, object]] = []
        while time.monotonic() < deadline and not docs:
            time.sleep(0.1)
            lines = sink.read_text().splitlines() if sink.exists() else []
            docs = [d for d in map(json.loads, lines) if d["kind"] == "firewall.policy.user_agent"]
        assert docs, sink.read_text() if sink.exists() else "no security file"
        doc = docs[0]
        assert doc["source"] == "127.0.0.1" and doc["port"] == scanner.port
        assert doc["listener"] == "udp" and doc["trunk"] == "pbx"
        assert doc["severity"] == "warning" and str(doc["ts"]).endswith("Z")
    finally:
        scanner.close()
        assert gw.stop() == 0
    assert_clean_log(gw)
