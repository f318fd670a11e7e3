"""A stop while a TLS connection is still being accepted ends quietly: the accept task is
cancelled mid-handshake, and asyncio must not report its callback's CancelledError as an
error (an error-level record for a normal shutdown)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from tests.integration.test_sip_helpers import Answering, capture, config, make_keys, started


async def test_stop_with_a_connection_mid_accept_logs_no_error(tmp_path: Path) -> None:
    stack = await started(config(make_keys(tmp_path)), Answering())
    # TCP only, no ClientHello: the handshake (timeout 10 s) outlives stop()'s 1 s grace
    _, writer = await asyncio.open_connection(*stack.bound("tls"))
    try:
        for _ in range(100):
            if stack.transports._handshaking:
                break
            await asyncio.sleep(0.01)
        assert stack.transports._handshaking == 1
        with capture("asyncio") as loop_log, capture() as gw_log:
            await stack.stop()
            await asyncio.sleep(0.1)  # the accept task's done callbacks run after it ends
        errors = [r for r in loop_log.records + gw_log.records if r.levelno >= logging.ERROR]
        assert not errors, [r.getMessage() for r in errors]
    finally:
        writer.close()
