"""``python -m gateway.media``: one relay worker process driven over its control socket.

Prints one JSON line ``{"ready": true, "control": PATH, "pid": N, "engine": E}`` on stdout once it
serves (E: the per-packet loop in use, "native" or "python" after a fallback), and
exits cleanly on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import json
import os
import signal
import sys

import uvloop

from gateway.config import ConfigError, MediaSection, load_config
from gateway.media.control import ControlServer
from gateway.media.relay import MediaRelay
from gateway.ops.log import capture_stray_output, get_logger, log_loop_exceptions, setup_logging


def _name_process(name: bytes) -> None:
    """Show as ``srtpgw-media`` in top/ps -o comm/perf (Linux prctl PR_SET_NAME)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(15, ctypes.c_char_p(name), 0, 0, 0)


def _media_section(args: argparse.Namespace) -> MediaSection:
    base = load_config(args.config, check_files=False).media if args.config else MediaSection()
    return MediaSection(
        address=args.address or base.address,
        advertise_address=base.advertise_address,
        port_min=args.port_min or base.port_min,
        port_max=args.port_max or base.port_max,
        inactivity_timeout=args.timeout or base.inactivity_timeout,
        nat_relatch_after=base.nat_relatch_after,
        engine=args.engine or base.engine,
    )


async def serve(media: MediaSection, control: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    log_loop_exceptions(loop)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server: ControlServer | None = None

    def on_timeout(session_id: str, stream: int) -> None:
        if server is not None:
            server.notify_timeout(session_id, stream)

    relay = MediaRelay(media, on_timeout=on_timeout)
    server = ControlServer(relay, control)
    await server.start()
    gc.freeze()  # start-up objects never need scanning again: shorter collector pauses
    print(json.dumps({"ready": True, "control": control, "pid": os.getpid(),
                      "engine": relay.engine}), flush=True)
    await stop.wait()
    await server.close()
    await relay.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gateway.media",
                                 description="srtpgw media relay worker")
    ap.add_argument("--control", required=True, help="Unix socket path for the control protocol")
    ap.add_argument("--config", help="srtpgw TOML config; its [media] section is used")
    ap.add_argument("--address", help="IP to bind media sockets on (overrides config)")
    ap.add_argument("--port-min", type=int)
    ap.add_argument("--port-max", type=int)
    ap.add_argument("--timeout", type=float, help="inactivity timeout in seconds")
    ap.add_argument("--engine", choices=("native", "python"), help="per-packet loop (overrides "
                    "config; native falls back to python when not built)")
    ap.add_argument("--log-level", default="warning")
    args = ap.parse_args(argv)
    setup_logging(args.log_level)
    capture_stray_output()  # stderr carries the structured log only
    log = get_logger("media")
    _name_process(b"srtpgw-media")
    try:
        media = _media_section(args)
        uvloop.run(serve(media, args.control))
    except ConfigError as exc:
        log.error("media.config_error", error=str(exc))
        return 2
    except (ValueError, OSError) as exc:
        log.error("media.failed", error=f"{type(exc).__name__}: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
