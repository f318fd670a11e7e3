"""The admin HTTP endpoint: /metrics, /healthz, /readyz, /status, POST /reload.

Deliberately tiny and strict HTTP/1.1: one request per connection, a bounded request head, a
bounded time to send it, no request bodies beyond a few bytes, a cap on concurrent connections.
It serves operators and probes on a loopback or management address, never the SIP edge.

A connection that has not sent its request within REQUEST_TIMEOUT (1 s) is closed, so idle
connections cannot hold the slots; over the cap, liveness and readiness probes are still
answered (a starved /healthz would make an orchestrator restart a healthy gateway).
Browsers are kept out: the Host header must name this endpoint (DNS rebinding), requests with
an Origin (or a cross-site Sec-Fetch-Site) are refused, every POST needs ``Authorization: Bearer``
with the token of ``admin.token_file`` (without one, POSTs are refused: reload with SIGHUP), and
so does every request but the probes on a non-loopback bind.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import re
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.config import HostPort
from gateway.ops.health import Verdict
from gateway.ops.log import get_logger
from gateway.ops.metrics import CONTENT_TYPE

log = get_logger("admin")

MAX_HEAD = 8192
MAX_BODY = 1024
REQUEST_TIMEOUT = 1.0  # the whole request must arrive within this: idle connections are cut
MAX_CONNECTIONS = 32
MAX_OVERFLOW = 256  # connections over the cap that still get a (probe or 503) answer
LINGER = 0.5
PROBES = frozenset({"/healthz", "/readyz"})

_REQUEST_LINE = re.compile(rb"^([A-Z]{1,16}) (/[\x21-\x7e]{0,1023}) HTTP/1\.[01]$")
_HEADER = re.compile(rb"^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([\x20-\x7e\t]*?)[ \t]*$")

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
            404: "Not Found", 421: "Misdirected Request",
            405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict",
            411: "Length Required",
            413: "Content Too Large", 431: "Request Header Fields Too Large",
            500: "Internal Server Error", 503: "Service Unavailable"}


class AdminBackend(Protocol):
    """What the admin endpoint asks of the running gateway."""

    def metrics(self) -> bytes: ...
    def liveness(self) -> Verdict: ...
    def readiness(self) -> Verdict: ...
    def status(self) -> dict[str, Any]: ...
    def reload(self) -> Awaitable[dict[str, Any]]: ...


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    extra: tuple[tuple[str, str], ...] = ()

    def encode(self) -> bytes:
        head = [f"HTTP/1.1 {self.status} {_REASONS.get(self.status, 'Unknown')}",
                f"Content-Type: {self.content_type}", f"Content-Length: {len(self.body)}",
                "Cache-Control: no-store", "Connection: close"]
        head.extend(f"{k}: {v}" for k, v in self.extra)
        return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + self.body


class HttpError(Exception):
    def __init__(self, status: int, reason: str, extra: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.extra = extra


def _json(status: int, doc: Any) -> Response:
    return Response(status, (json.dumps(doc, indent=1, default=str) + "\n").encode())


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    content_length: int


def parse_head(head: bytes) -> Request:
    """Parse a request head (without the final blank line); HttpError on anything odd."""
    lines = head.split(b"\r\n")
    m = _REQUEST_LINE.match(lines[0])
    if not m:
        raise HttpError(400, "malformed request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        h = _HEADER.match(line)
        if not h:
            raise HttpError(400, "malformed header line")
        name = h.group(1).decode("ascii").lower()
        if name in headers and name in ("content-length", "host", "transfer-encoding"):
            raise HttpError(400, f"duplicate {name}")
        headers[name] = h.group(2).decode("ascii")
    if "transfer-encoding" in headers:
        raise HttpError(411, "chunked bodies are not accepted")
    length_text = headers.get("content-length", "0")
    if not length_text.isdigit() or len(length_text) > 6:
        raise HttpError(400, "bad Content-Length")
    length = int(length_text)
    if length > MAX_BODY:
        raise HttpError(413, f"body over {MAX_BODY} bytes")
    path = m.group(2).decode("ascii").split("?", 1)[0]
    return Request(m.group(1).decode("ascii"), path, headers, length)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def host_of(header: str) -> str:
    """The host part of a Host header value, lower case, without port or brackets."""
    value = header.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


@dataclass(frozen=True, slots=True)
class Guard:
    """Who may ask what: allowed Host names, the token, whether the bind is loopback."""

    hosts: frozenset[str]
    token: str | None = None
    loopback: bool = True

    @classmethod
    def for_listen(cls, listen: HostPort, token: str | None = None,
                   allowed_hosts: tuple[str, ...] = ()) -> Guard:
        hosts = {"localhost", "127.0.0.1", "::1", listen.host.lower(), *allowed_hosts}
        return cls(frozenset(hosts), token, _is_loopback(listen.host))

    def check(self, request: Request, local_ip: str | None) -> None:
        """HttpError unless the request may be served (before any routing)."""
        host = request.headers.get("host")
        if host is None:
            raise HttpError(400, "Host header required")
        name = host_of(host)
        if name not in self.hosts and name != (local_ip or "").lower():
            raise HttpError(421, f"Host {name!r} is not this admin endpoint")
        if "origin" in request.headers or request.headers.get(
                "sec-fetch-site", "none") not in ("none", "same-origin"):
            raise HttpError(403, "cross-origin requests are refused")

    def authorize(self, request: Request) -> None:
        """Token rules: every POST, and on a non-loopback bind every non-probe request."""
        needs = request.method == "POST" or (not self.loopback and request.path not in PROBES)
        if not needs:
            return
        if self.token is None:
            if request.method == "POST":
                raise HttpError(403, "POST needs a bearer token: set [admin] token_file "
                                     "(`srtpgw keys init` writes one), or reload with SIGHUP")
            return
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
                value.strip().encode(), self.token.encode()):
            raise HttpError(401, "a valid bearer token is required",
                            (("WWW-Authenticate", 'Bearer realm="srtpgw-admin"'),))


async def _discard(reader: asyncio.StreamReader, limit: int = 1 << 16) -> None:
    while limit > 0:
        chunk = await reader.read(min(limit, 4096))
        if not chunk:
            return
        limit -= len(chunk)


_ROUTES = {"/metrics": "GET", "/healthz": "GET", "/readyz": "GET", "/status": "GET",
           "/reload": "POST"}


class AdminServer:
    """asyncio server in front of an ``AdminBackend``."""

    def __init__(self, backend: AdminBackend, listen: HostPort,
                 guard: Guard | None = None) -> None:
        self.backend = backend
        self.listen = listen
        self.guard = guard or Guard.for_listen(listen)
        self._server: asyncio.Server | None = None
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)
        self._overflow = 0
        self._reload_lock = asyncio.Lock()
        self._conns: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> HostPort:
        if self._server is None:
            raise RuntimeError("admin server not started")
        host, port = self._server.sockets[0].getsockname()[:2]
        return HostPort(host, port)

    @property
    def bound(self) -> bool:
        return self._server is not None and self._server.is_serving()

    async def start(self) -> None:
        if not _is_loopback(self.listen.host):
            log.warning("admin.non_loopback", listen=str(self.listen),
                        token=self.guard.token is not None,
                        note="restrict access to this address with a firewall"
                        + ("" if self.guard.token else "; set admin.token_file"))
        self._server = await asyncio.start_server(self._serve, self.listen.host, self.listen.port,
                                                  limit=MAX_HEAD, reuse_address=True)
        log.info("admin.listening", listen=str(self.address))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._conns):
                task.cancel()
            await asyncio.gather(*self._conns, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        local = writer.get_extra_info("sockname")
        local_ip = local[0] if local else None
        try:
            if self._slots.locked():
                await self._over_cap(reader, writer, local_ip)
                return
            async with self._slots:
                response = await self._respond(reader, local_ip)
                if response is not None:
                    await self._write(reader, writer, response)
                else:
                    writer.close()
        except asyncio.CancelledError:
            writer.close()  # server shutting down: drop the connection, end the task quietly
        finally:
            self._conns.discard(task)

    async def _over_cap(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        local_ip: str | None) -> None:
        """Over the cap: answer probes (cheap, and an orchestrator acts on them), 503 else."""
        if self._overflow >= MAX_OVERFLOW:
            writer.close()
            return
        self._overflow += 1
        try:
            response = _json(503, {"error": "too many connections"})
            with contextlib.suppress(TimeoutError, OSError, asyncio.LimitOverrunError,
                                     asyncio.IncompleteReadError, HttpError):
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
                request = parse_head(head[:-4])
                if request.method == "GET" and request.path in PROBES:
                    self.guard.check(request, local_ip)
                    response = await self._dispatch(request)
            await self._write(reader, writer, response)
        finally:
            self._overflow -= 1

    async def _respond(self, reader: asyncio.StreamReader,
                       local_ip: str | None = None) -> Response | None:
        try:
            return await asyncio.wait_for(self._read_and_route(reader, local_ip),
                                          REQUEST_TIMEOUT)
        except TimeoutError:
            return _json(408, {"error": "request not received in time"})
        except HttpError as exc:
            return Response(exc.status, _json(exc.status, {"error": exc.reason}).body,
                            extra=exc.extra)
        except (OSError, asyncio.IncompleteReadError):
            return None

    async def _write(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     response: Response) -> None:
        with contextlib.suppress(OSError):  # ConnectionError, ENOTCONN after a reset
            writer.write(response.encode())
            await writer.drain()
            # Lingering close: read what the client still sends for a moment, so that closing
            # with unread bytes does not reset the connection before it reads our answer.
            if writer.can_write_eof():
                writer.write_eof()
            with contextlib.suppress(TimeoutError, OSError):
                await asyncio.wait_for(_discard(reader), LINGER)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    async def _read_and_route(self, reader: asyncio.StreamReader,
                              local_ip: str | None) -> Response:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise HttpError(431, f"request head over {MAX_HEAD} bytes") from None
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                raise
            raise HttpError(400, "incomplete request head") from None
        request = parse_head(head[:-4])
        if request.content_length:
            await reader.readexactly(request.content_length)
        return await self._route(request, local_ip)

    async def _route(self, request: Request, local_ip: str | None = None) -> Response:
        self.guard.check(request, local_ip)
        method = _ROUTES.get(request.path)
        if method is None:
            raise HttpError(404, f"no such endpoint {request.path}")
        if request.method != method:
            raise HttpError(405, f"use {method}", (("Allow", method),))
        self.guard.authorize(request)
        try:
            return await self._dispatch(request)
        except HttpError:
            raise
        except Exception as exc:  # the endpoint must answer, and must not die with the backend
            log.error("admin.handler_failed", path=request.path, error=repr(exc))
            return _json(500, {"error": type(exc).__name__})

    async def _dispatch(self, request: Request) -> Response:
        b = self.backend
        if request.path == "/metrics":
            return Response(200, b.metrics(), CONTENT_TYPE)
        if request.path in ("/healthz", "/readyz"):
            verdict = b.liveness() if request.path == "/healthz" else b.readiness()
            return _json(200 if verdict.ok else 503, verdict.as_dict())
        if request.path == "/status":
            return _json(200, b.status())
        async with self._reload_lock:
            result = await b.reload()
        return _json(200 if result.get("ok") else 409, result)
