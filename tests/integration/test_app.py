"""``gateway.app.serve``: binds every listener, logs one ``gateway.ready`` line naming them, and
on stop releases its ports and returns 0."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import pytest

from gateway.app import serve
from gateway.config import config_from_dict
from tests.integration.test_calls import media_range
from tests.support.certs import make_test_pki
from tests.support.net import free_port


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_serve_ready_line_and_clean_stop(tmp_path: Path) -> None:
    keys = make_test_pki(tmp_path / "keys").dir
    udp, tls = free_port("udp"), free_port("tcp")
    start = media_range()
    cfg = config_from_dict({
        "tls": {"certificate": str(keys / "gateway.crt"), "private_key": str(keys / "gateway.key"),
                "ca_file": str(keys / "ca.crt")},
        "media": {"port_min": start, "port_max": start + 9},
        "admin": {"enabled": False},
        "listener": [{"name": "u", "transport": "udp", "address": "127.0.0.1", "port": udp},
                     {"name": "t", "transport": "tls", "address": "127.0.0.1", "port": tls}],
        "trunk": [{"name": "pbx", "side": "legacy", "listener": "u", "transport": "udp",
                   "peer": "127.0.0.1:5070", "media": "rtp", "route_to": "c"},
                  {"name": "c", "side": "secure", "listener": "t", "transport": "tls",
                   "peer": "127.0.0.1:5081", "media": "srtp", "route_to": "pbx"}],
    }, file=str(tmp_path / "gw.toml"))
    handler = _Collect()
    logger = logging.getLogger("srtpgw.app")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    stop = asyncio.Event()
    task = asyncio.create_task(serve(cfg, stop=stop))
    try:
        async with asyncio.timeout(5):
            while not any(r.msg == "gateway.ready" for r in handler.records):
                await asyncio.sleep(0.01)
        ready = [r for r in handler.records if r.msg == "gateway.ready"]
        assert len(ready) == 1
        assert ready[0].fields["listeners"] == f"udp:127.0.0.1:{udp},tls:127.0.0.1:{tls}"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, \
                pytest.raises(OSError):
            s.bind(("127.0.0.1", udp))
        stop.set()
        assert await asyncio.wait_for(task, 5) == 0
    finally:
        logger.removeHandler(handler)
        stop.set()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", udp))      # released
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", tls))
