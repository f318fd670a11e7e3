"""Stray output goes through the structured log: asyncio's exception handler, warnings,
exceptions in threads and uncaught ones end up as one JSON object per line (issue 13 item 2),
and the suite-wide check (tests/support/logcheck.py) recognises what is not a log line."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support.logcheck import bad_lines

PROBE = r"""
import asyncio, threading, warnings
from gateway.ops.log import capture_stray_output, log_loop_exceptions, setup_logging

setup_logging("info", "json")
capture_stray_output()
warnings.warn("a stray warning")
t = threading.Thread(target=lambda: 1 / 0, name="worker")
t.start(); t.join()

async def main():
    loop = asyncio.get_running_loop()
    log_loop_exceptions(loop)
    loop.call_soon(lambda: {}["missing"])
    await asyncio.sleep(0.05)

asyncio.run(main())
raise RuntimeError("uncaught at the end")
"""


def test_every_stray_output_is_one_json_line() -> None:
    r = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stdout == ""
    assert bad_lines(r.stderr, "json") == [], r.stderr
    docs = [json.loads(line) for line in r.stderr.splitlines()]
    events = {d["event"] for d in docs}
    assert {"loop.exception", "process.thread_exception",
            "process.uncaught_exception"} <= events, events
    assert any("a stray warning" in d["event"] for d in docs if d["logger"] == "py.warnings")
    loop_doc = next(d for d in docs if d["event"] == "loop.exception")
    assert "KeyError" in loop_doc["error"] and "Traceback" in loop_doc["exc"]


def test_logcheck_sees_plain_text() -> None:
    text = ('{"ts": "x", "level": "info", "logger": "srtpgw.sip", "event": "a"}\n'
            "Traceback (most recent call last):\n  File \"x.py\", line 1\n")
    assert len(bad_lines(text, "json")) == 2
    assert bad_lines('ts=1 level=info logger=srtpgw.sip event=a x=1\n', "kv") == []
    assert bad_lines("Unhandled exception in client_connected_cb\n", "kv")
