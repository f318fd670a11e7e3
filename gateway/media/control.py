"""The relay's control protocol: JSON lines over a Unix stream socket (mode 0600).

It is the door for relay workers in other processes: ``ControlServer`` exposes a ``MediaRelay``,
``RelayClient`` implements ``MediaRelayApi`` on the other side. One request per line,
``{"id": 1, "op": "create_session", ...}``, answered by ``{"id": 1, "ok": true, "result": ...}``
or ``{"id": 1, "ok": false, "error": "PortsExhausted", "message": "..."}``. The server also pushes
``{"event": "timeout", "session_id": ..., "stream": ...}`` and, every second, ``{"event":
"totals", ...}``. SRTP keys travel base64 in requests (hence the Unix socket and its mode) and are
never logged or echoed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import os
from dataclasses import asdict
from typing import Any

from gateway.media.api import (
    Address,
    InvalidParams,
    LegConfig,
    LocalStream,
    MediaError,
    PortsExhausted,
    RelayTotals,
    SessionInfo,
    SessionStats,
    SrtpParams,
    StreamStats,
    TimeoutHandler,
    UnknownSession,
)
from gateway.media.relay import MediaRelay
from gateway.ops.log import get_logger

log = get_logger("media")

MAX_LINE = 64 * 1024
_ERRORS: dict[str, type[MediaError]] = {
    "PortsExhausted": PortsExhausted, "UnknownSession": UnknownSession,
    "InvalidParams": InvalidParams, "MediaError": MediaError,
}


class ControlError(MediaError):
    """The control connection failed or the relay process answered nonsense."""


# --------------------------------------------------------------------------- encoding


def _addr_out(addr: Address | None) -> list[Any] | None:
    return None if addr is None else [addr[0], addr[1]]


def _addr_in(value: Any) -> Address | None:
    if value is None:
        return None
    if (not isinstance(value, list) or len(value) != 2 or not isinstance(value[0], str)
            or not isinstance(value[1], int)):
        raise InvalidParams("an address is [host, port]")
    return (value[0], value[1])


def params_to_json(p: SrtpParams | None) -> dict[str, Any] | None:
    if p is None:
        return None
    return {"suite": p.suite, "key": base64.b64encode(p.key).decode(),
            "unencrypted_srtp": p.unencrypted_srtp, "unencrypted_srtcp": p.unencrypted_srtcp}


def params_from_json(d: Any) -> SrtpParams | None:
    if d is None:
        return None
    if not isinstance(d, dict):
        raise InvalidParams("SRTP params must be an object")
    try:
        key = base64.b64decode(d["key"], validate=True)
        return SrtpParams(str(d["suite"]), key, bool(d.get("unencrypted_srtp", False)),
                          bool(d.get("unencrypted_srtcp", False)))
    except (KeyError, TypeError, binascii.Error):
        raise InvalidParams("SRTP params need suite and base64 key") from None


def leg_to_json(cfg: LegConfig) -> dict[str, Any]:
    return {"remote_rtp": _addr_out(cfg.remote_rtp), "remote_rtcp": _addr_out(cfg.remote_rtcp),
            "rtcp_mux": cfg.rtcp_mux, "rx": params_to_json(cfg.rx), "tx": params_to_json(cfg.tx),
            "nat_learning": cfg.nat_learning, "accept_plain_rtcp": cfg.accept_plain_rtcp,
            "dtls": cfg.dtls, "rtcp_rx": params_to_json(cfg.rtcp_rx),
            "rtcp_tx": params_to_json(cfg.rtcp_tx)}


def leg_from_json(d: Any) -> LegConfig:
    if not isinstance(d, dict):
        raise InvalidParams("leg config must be an object")
    return LegConfig(remote_rtp=_addr_in(d.get("remote_rtp")),
                     remote_rtcp=_addr_in(d.get("remote_rtcp")),
                     rtcp_mux=bool(d.get("rtcp_mux", True)), rx=params_from_json(d.get("rx")),
                     tx=params_from_json(d.get("tx")),
                     nat_learning=bool(d.get("nat_learning", False)),
                     accept_plain_rtcp=bool(d.get("accept_plain_rtcp", False)),
                     dtls=bool(d.get("dtls", False)),
                     rtcp_rx=params_from_json(d.get("rtcp_rx")),
                     rtcp_tx=params_from_json(d.get("rtcp_tx")))


def _info_from_json(d: dict[str, Any]) -> SessionInfo:
    legs = tuple(tuple(LocalStream((s["rtp"][0], s["rtp"][1]), (s["rtcp"][0], s["rtcp"][1]))
                       for s in leg) for leg in d["legs"])
    return SessionInfo(d["session_id"], (legs[0], legs[1]))


def _stream_from_json(d: dict[str, Any]) -> StreamStats:
    d = dict(d)
    for k in ("latched_rtp", "latched_rtcp", "failed_source"):
        d[k] = tuple(d[k]) if d[k] is not None else None
    return StreamStats(**d)


# --------------------------------------------------------------------------- server


class ControlServer:
    """Serves one MediaRelay on a Unix socket; every connection gets timeout/totals events."""

    def __init__(self, relay: MediaRelay, path: str) -> None:
        self.relay = relay
        self.path = path
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._ticker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._serve, self.path,
                                                           limit=MAX_LINE)
        finally:
            os.umask(old)
        self._ticker = asyncio.get_running_loop().create_task(self._push_totals())

    def notify_timeout(self, session_id: str, stream: int) -> None:
        self._broadcast({"event": "timeout", "session_id": session_id, "stream": stream})

    def _broadcast(self, msg: dict[str, Any]) -> None:
        line = (json.dumps(msg) + "\n").encode()
        for w in list(self._writers):
            if w.is_closing():
                self._writers.discard(w)
            else:
                w.write(line)

    async def _push_totals(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self._writers:
                self._broadcast({"event": "totals", **asdict(self.relay.totals())})

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    writer.write(b'{"ok": false, "error": "InvalidParams", '
                                 b'"message": "line too long"}\n')
                    break
                if not line:
                    break
                writer.write((json.dumps(await self.handle(line)) + "\n").encode())
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def handle(self, line: bytes) -> dict[str, Any]:
        """One request line in, one response object out; bad input is an error reply."""
        req_id = None
        try:
            req = json.loads(line)
            if not isinstance(req, dict):
                raise InvalidParams("a request is a JSON object")
            req_id = req.get("id")
            result = await self._dispatch(req)
        except MediaError as exc:
            return {"id": req_id, "ok": False, "error": _error_name(exc),
                    "message": str(exc)}
        except (ValueError, TypeError, LookupError) as exc:
            return {"id": req_id, "ok": False, "error": "InvalidParams",
                    "message": f"bad request: {type(exc).__name__}"}
        return {"id": req_id, "ok": True, "result": result}

    async def _dispatch(self, req: dict[str, Any]) -> Any:
        r, op = self.relay, req.get("op")
        if op == "ping":
            return "pong"
        if op == "create_session":
            mux = req.get("rtcp_mux", [True, True])
            timeout = req.get("timeout")
            info = await r.create_session(int(req.get("streams", 1)),
                                          (bool(mux[0]), bool(mux[1])),
                                          float(timeout) if timeout is not None else None)
            return asdict(info)
        if op == "create_sessions":  # bulk, for load tests: one round trip for many sessions
            count = int(req["count"])
            if not 1 <= count <= 10_000:
                raise InvalidParams("count must be 1..10000")
            made: list[SessionInfo] = []
            try:
                for _ in range(count):
                    made.append(r.create_session_now())
            except MediaError:
                for info in made:  # all or nothing: no session the caller never heard of
                    r.close_session_now(info.session_id)
                raise
            return [asdict(info) for info in made]
        if op == "totals":
            return asdict(r.totals())
        sid = str(req.get("session_id"))
        if op == "stats":
            return asdict(await r.stats(sid))
        if op == "close_session":
            await r.close_session(sid)
            return None
        leg, stream = int(req.get("leg", 0)), int(req.get("stream", 0))
        if op == "update_leg":
            await r.update_leg(sid, leg, stream, leg_from_json(req.get("config")))
            return None
        if op == "add_rx":
            params = params_from_json(req.get("params"))
            if params is None:
                raise InvalidParams("add_rx needs params")
            await r.add_rx(sid, leg, stream, params)
            return None
        if op == "drop_rx":
            await r.drop_rx(sid, leg, stream)
            return None
        raise InvalidParams(f"unknown op {op!r}")

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        if self._server is not None:
            self._server.close()
            for w in list(self._writers):
                w.close()
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def _error_name(exc: MediaError) -> str:
    for name, cls in _ERRORS.items():
        if type(exc) is cls:
            return name
    return "MediaError"


# --------------------------------------------------------------------------- client


class RelayClient:
    """``MediaRelayApi`` over the control socket of a relay in another process."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 on_timeout: TimeoutHandler | None = None, reply_timeout: float = 5.0) -> None:
        self._reader, self._writer = reader, writer
        self._on_timeout = on_timeout
        self._reply_timeout = reply_timeout
        self._ids = 0
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._totals: RelayTotals | None = None
        self._task = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def connect(cls, path: str, on_timeout: TimeoutHandler | None = None,
                      reply_timeout: float = 5.0) -> RelayClient:
        """Connect to a relay worker; a request unanswered for ``reply_timeout`` s fails."""
        try:
            reader, writer = await asyncio.open_unix_connection(path, limit=16 * MAX_LINE)
        except OSError as exc:
            raise ControlError(f"cannot reach the relay at {path}: {exc.strerror}") from None
        return cls(reader, writer, on_timeout, reply_timeout)

    async def _read(self) -> None:
        try:
            while line := await self._reader.readline():
                msg = json.loads(line)
                if not isinstance(msg, dict):
                    raise ValueError("a control message is a JSON object")
                event = msg.get("event")
                if event == "timeout" and self._on_timeout is not None:
                    self._on_timeout(msg["session_id"], msg["stream"])
                elif event == "totals":
                    del msg["event"]
                    self._totals = RelayTotals(**msg)
                elif (fut := self._pending.pop(msg.get("id"), None)) is not None:
                    fut.set_result(msg)
        except (ConnectionError, ValueError, TypeError, KeyError) as exc:
            # TypeError/KeyError: an event without the fields it needs (a relay speaking nonsense)
            log.warning("media.control_lost", error=type(exc).__name__)
        finally:
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ControlError("relay control connection closed"))
            self._pending.clear()

    async def call(self, op: str, **fields: Any) -> Any:
        if self._task.done():
            raise ControlError("relay control connection closed")
        self._ids += 1
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[self._ids] = fut
        self._writer.write((json.dumps({"id": self._ids, "op": op, **fields}) + "\n").encode())
        try:
            await self._writer.drain()
            reply = await asyncio.wait_for(fut, self._reply_timeout)
        except (ConnectionError, TimeoutError):
            self._pending.pop(self._ids, None)
            raise ControlError(f"relay did not answer {op}") from None
        if not reply.get("ok"):
            raise _ERRORS.get(reply.get("error"), MediaError)(reply.get("message", ""))
        return reply.get("result")

    async def create_session(self, streams: int = 1,
                             rtcp_mux: tuple[bool, bool] = (True, True),
                             timeout: float | None = None) -> SessionInfo:
        return _info_from_json(await self.call("create_session", streams=streams,
                                               rtcp_mux=list(rtcp_mux), timeout=timeout))

    async def create_sessions(self, count: int) -> list[SessionInfo]:
        return [_info_from_json(d) for d in await self.call("create_sessions", count=count)]

    async def update_leg(self, session_id: str, leg: int, stream: int, cfg: LegConfig) -> None:
        await self.call("update_leg", session_id=session_id, leg=leg, stream=stream,
                        config=leg_to_json(cfg))

    async def add_rx(self, session_id: str, leg: int, stream: int, params: SrtpParams) -> None:
        await self.call("add_rx", session_id=session_id, leg=leg, stream=stream,
                        params=params_to_json(params))

    async def drop_rx(self, session_id: str, leg: int, stream: int) -> None:
        await self.call("drop_rx", session_id=session_id, leg=leg, stream=stream)

    async def stats(self, session_id: str) -> SessionStats:
        d = await self.call("stats", session_id=session_id)
        legs = tuple(tuple(_stream_from_json(s) for s in leg) for leg in d["legs"])
        return SessionStats(d["session_id"], (legs[0], legs[1]))

    async def close_session(self, session_id: str) -> None:
        await self.call("close_session", session_id=session_id)

    async def fetch_totals(self) -> RelayTotals:
        self._totals = RelayTotals(**await self.call("totals"))
        return self._totals

    def totals(self) -> RelayTotals:
        """The totals last pushed by the relay (every second) or fetched."""
        if self._totals is None:
            raise ControlError("no totals received yet (call fetch_totals)")
        return self._totals

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

