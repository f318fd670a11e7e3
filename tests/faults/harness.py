"""The fault rig: srtpgw as a real child process, with test phones on loopback around it.

Trunks: ``pbx`` (legacy, UDP, plain RTP) routes to ``carrier`` (secure, mutual TLS, SDES-SRTP);
R-URI users starting with 9 go to ``far`` (legacy, plain RTP, UDP or TCP as the test asks) with
the 9 stripped. The gateway writes CDRs (``cdr_path``) and logs to a file that the rig checks for
tracebacks at the end; ``metric()`` reads the Prometheus text of the admin endpoint.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.config import HostPort, load_config
from gateway.ops.status import AdminUnreachable, request
from tests.support.certs import GATEWAY_NAME, client_context, make_test_pki, server_context
from tests.support.net import free_port
from tests.support.phone import answerer, apply_answer, plain_offer, sdes_offer
from tests.support.rtp import RtpEndpoint, pattern_payload
from tests.support.sip_ua import Dialog, SipTestUA

ROOT = Path(__file__).resolve().parents[2]
DOMAIN = "gateway.srtpgw.test"


def to_toml(raw: Mapping[str, Any]) -> str:
    """Just enough TOML for a gateway config: tables, arrays of tables, inline values."""
    out: list[str] = []
    for key, value in raw.items():
        if isinstance(value, Mapping):
            out.append(f"[{key}]")
            out += [f"{k} = {_value(v)}" for k, v in value.items()]
        elif isinstance(value, list) and value and isinstance(value[0], Mapping):
            for item in value:
                out.append(f"[[{key}]]")
                out += [f"{k} = {_value(v)}" for k, v in item.items()]
        else:
            out.insert(0, f"{key} = {_value(value)}")
        out.append("")
    return "\n".join(out)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{k} = {_value(x)}" for k, x in v.items()) + " }"
    return "[" + ", ".join(_value(x) for x in v) + "]"


def media_block(size: int) -> int:
    """The even start of ``size`` free consecutive UDP ports (searched from a per-pid offset)."""
    import socket

    base = 40000 + (os.getpid() % 100) * 100
    for offset in range(0, 20000, size):
        start = 40000 + (base - 40000 + offset) % 20000
        socks = []
        try:
            for port in range(start, start + size):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return start
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise OSError(f"no {size} free consecutive UDP ports")


@dataclass
class GatewayProcess:
    """``python -m gateway.cli run -c FILE`` with a config built from ``raw``."""

    workdir: Path
    raw: dict[str, Any]
    nofile: int | None = None  # RLIMIT_NOFILE of the child (fd exhaustion faults)
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.config = self.workdir / "srtpgw.toml"
        self.log = self.workdir / "srtpgw.log"
        admin = self.raw["admin"]["listen"]
        host, port = admin.rsplit(":", 1)
        self.admin = HostPort(host, int(port))
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        self.config.write_text(to_toml(self.raw))
        load_config(self.config)  # a harness mistake fails here with the gateway's own words
        nofile = self.nofile

        def limits() -> None:
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        with self.log.open("ab") as fh:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "run", "-c", str(self.config)], cwd=ROOT,
                stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=limits, start_new_session=True, env={**os.environ, **self.env})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"srtpgw exited at start:\n{self.output()[-3000:]}")
            try:
                if request(self.admin, "GET", "/healthz")[0] == 200:
                    return
            except AdminUnreachable:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"srtpgw not healthy after {timeout}s:\n{self.output()[-3000:]}")

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def signal(self, sig: int) -> None:
        assert self.popen is not None
        if self.popen.poll() is None:
            os.kill(self.popen.pid, sig)

    def stop(self, grace: float = 40.0) -> int:
        if self.popen is None:
            return 0
        if self.popen.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        return self.popen.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def lines(self, event: str) -> list[str]:
        return [line for line in self.output().splitlines() if f"event={event}" in line]

    def metrics_text(self) -> str:
        import http.client

        conn = http.client.HTTPConnection(self.admin.host, self.admin.port, timeout=5)
        try:
            conn.request("GET", "/metrics")
            return conn.getresponse().read().decode()
        finally:
            conn.close()

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        total = 0.0
        for line in self.metrics_text().splitlines():
            m = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)", line)
            if not m or m.group(1) != name:
                continue
            have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
            if all(have.get(k) == v for k, v in labels.items()):
                total += float(m.group(3))
        return total

    def status(self) -> dict[str, Any]:
        return request(self.admin, "GET", "/status")[1]


@dataclass
class FaultRig:
    gw: GatewayProcess
    pbx: SipTestUA
    carrier: SipTestUA
    far: SipTestUA
    cdr_path: Path
    endpoints: list[RtpEndpoint] = field(default_factory=list)

    @property
    def udp(self) -> tuple[str, int]:
        return ("127.0.0.1", self.gw.raw["listener"][0]["port"])

    @property
    def tls(self) -> tuple[str, int]:
        return ("127.0.0.1", self.gw.raw["listener"][1]["port"])

    async def endpoint(self) -> RtpEndpoint:
        ep = await RtpEndpoint.open()
        self.endpoints.append(ep)
        return ep

    def cdrs(self) -> list[dict[str, Any]]:
        if not self.cdr_path.exists():
            return []
        return [json.loads(line) for line in self.cdr_path.read_text().splitlines() if line]

    async def wait_cdrs(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            records = self.cdrs()
            if len(records) >= count:
                return records
            await asyncio.sleep(0.05)
        raise AssertionError(f"expected {count} CDRs, have {self.cdrs()}")

    async def call(self, callee: SipTestUA, user: str = "100", *, secure: bool | None = None
                   ) -> tuple[Dialog, Dialog, RtpEndpoint, RtpEndpoint]:
        """pbx -> gateway -> callee, answered, media checked both ways; both dialogs and
        endpoints (caller's first)."""
        a, b = await self.endpoint(), await self.endpoint()
        callee.uas.answer = answerer(b)
        callee.uas.invite_statuses = (180, 200)
        call = await self.pbx.invite(f"sip:{user}@{DOMAIN}", self.udp, plain_offer(a))
        final = await call.wait_final(10)
        assert final.status == 200, final
        apply_answer(a, final.body)
        incoming = await callee.wait_call(5)
        await incoming.wait_ack(5)
        await media_both_ways(a, b)
        return call, incoming, a, b

    async def carrier_calls(self) -> tuple[Dialog, Dialog, RtpEndpoint, RtpEndpoint]:
        """carrier (TLS, SDES) -> gateway -> pbx, answered, media checked both ways."""
        a, b = await self.endpoint(), await self.endpoint()
        self.pbx.uas.answer = answerer(b)
        offer, keys = sdes_offer(a)
        call = await self.carrier.invite(f"sip:200@{DOMAIN}", self.tls, offer)
        final = await call.wait_final(10)
        assert final.status == 200, final
        apply_answer(a, final.body, keys)
        incoming = await self.pbx.wait_call(5)
        await incoming.wait_ack(5)
        await media_both_ways(a, b)
        return call, incoming, a, b

    def assert_no_traceback(self) -> None:
        text = self.gw.output()
        assert "Traceback" not in text, text[text.find("Traceback") - 2000:][:5000]


async def media_both_ways(a: RtpEndpoint, b: RtpEndpoint, count: int = 10) -> None:
    a.clear()
    b.clear()
    await asyncio.gather(a.send_stream(count, 0.002, payload=pattern_payload),
                         b.send_stream(count, 0.002, payload=pattern_payload))
    await asyncio.gather(a.wait_for_packets(count), b.wait_for_packets(count))
    assert a.auth_failures == b.auth_failures == 0


def gateway_raw(tmp: Path, keys: Path, uas: Mapping[str, SipTestUA], *, far_transport: str,
                cdr_path: Path, media_ports: int = 40, **sections: Any) -> dict[str, Any]:
    start = media_block(media_ports)
    listeners = [
        {"name": "udp", "transport": "udp", "address": "127.0.0.1", "port": free_port("udp")},
        {"name": "tls", "transport": "tls", "address": "127.0.0.1", "port": free_port("tcp"),
         "tls_client_auth": "require"},
        {"name": "far", "transport": far_transport, "address": "127.0.0.1",
         "port": free_port("udp" if far_transport == "udp" else "tcp")},
    ]
    trunk_extra = sections.pop("trunk_extra", {})
    trunks = [
        {"name": "pbx", "side": "legacy", "listener": "udp", "transport": "udp",
         "peer": f"127.0.0.1:{uas['pbx'].port}", "allowed_sources": ["127.0.0.1/32"],
         "media": "rtp", "route_to": "carrier", "route": [{"prefix": "9", "strip": 1,
                                                           "to": "far"}]},
        {"name": "carrier", "side": "secure", "listener": "tls", "transport": "tls",
         "peer": f"127.0.0.1:{uas['carrier'].port}", "allowed_sources": ["127.0.0.1/32"],
         "tls_identity": ["sip:peer.srtpgw.test"], "media": "srtp",
         "suites": ["AES_CM_128_HMAC_SHA1_80"], "route_to": "pbx"},
        {"name": "far", "side": "legacy", "listener": "far", "transport": far_transport,
         "peer": f"127.0.0.1:{uas['far'].port}", "allowed_sources": ["127.0.0.1/32"],
         "media": "rtp", "route_to": "pbx"},
    ]
    for trunk in trunks:
        trunk.update(trunk_extra.get(trunk["name"], {}))
    raw: dict[str, Any] = {
        "gateway": {"user_agent": "srtpgw-faults"},
        "logging": {"level": "info"},
        "tls": {"certificate": str(keys / "gateway.crt"), "private_key": str(keys / "gateway.key"),
                "ca_file": str(keys / "ca.crt")},
        "dtls": {"certificate": str(keys / "dtls.crt"), "private_key": str(keys / "dtls.key")},
        "media": {"address": "127.0.0.1", "port_min": start, "port_max": start + media_ports - 1},
        "sip": {"t1": 0.1, "t2": 0.4, "t4": 0.5},
        "admin": {"listen": f"127.0.0.1:{free_port('tcp')}", "drain_timeout": 5.0},
        "cdr": {"path": str(cdr_path)},
        "listener": listeners,
        "trunk": trunks,
    }
    for section, values in sections.items():
        raw[section] = {**raw.get(section, {}), **values}
    return raw


async def start_rig(tmp: Path, *, far_transport: str = "udp", nofile: int | None = None,
                    cdr_path: Path | None = None, **sections: Any) -> FaultRig:
    keys = make_test_pki(tmp / "keys").dir
    uas = {
        "pbx": await SipTestUA.start("udp", user="pbx", domain="pbx.internal"),
        "far": await SipTestUA.start(far_transport, user="far", domain="far.internal"),
        "carrier": await SipTestUA.start("tls", user="carrier", domain="carrier.internal",
                                         tls_server=server_context(keys, "peer"),
                                         tls_client=client_context(keys, "peer"),
                                         server_name=GATEWAY_NAME),
    }
    cdr = cdr_path or tmp / "cdr.jsonl"
    raw = gateway_raw(tmp, keys, uas, far_transport=far_transport, cdr_path=cdr, **sections)
    gw = GatewayProcess(tmp, raw, nofile=nofile)
    try:
        await asyncio.to_thread(gw.start)
    except BaseException:
        for ua in uas.values():
            await ua.close()
        raise
    return FaultRig(gw, uas["pbx"], uas["carrier"], uas["far"], cdr)


async def stop_rig(rig: FaultRig) -> None:
    await asyncio.to_thread(rig.gw.stop)
    for ua in (rig.pbx, rig.carrier, rig.far):
        await ua.close()
    for ep in rig.endpoints:
        ep.close()
