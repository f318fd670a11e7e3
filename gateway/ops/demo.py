"""``srtpgw demo``: one call through a real gateway on loopback, legacy phone to secure phone.

It makes dev keys, writes a config, starts ``srtpgw run`` as a child process, and places a call
from a built-in legacy phone (SIP/UDP, plain RTP) through the gateway to a built-in secure phone
(SIP/TLS, SDES-SRTP). Then it prints each leg's SIP flow, the negotiated suite, packet counts and
whether the legacy phone's audio ever crossed the secure side in clear; stops the gateway with
SIGTERM (a graceful drain) and shows the call's CDR.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from gateway.config import HostPort
from gateway.ops.demo_phone import DemoError, DemoPhone, server_context
from gateway.ops.keys import init_keys
from gateway.ops.status import AdminUnreachable, request

LEGACY_MARKER = b"LEGACY-PLAINTEXT-AUDIO."
SECURE_MARKER = b"SECURE-SIDE-AUDIO."
START_TIMEOUT = 20.0

CONFIG = """\
# Written by `srtpgw demo`: everything on loopback, dev keys in ./keys.
[gateway]
name = "srtpgw-demo"

[logging]
level = "info"
file = "{dir}/gateway.log"

[tls]
certificate = "{dir}/keys/gateway.crt"
private_key = "{dir}/keys/gateway.key"
ca_file = "{dir}/keys/ca.crt"

[dtls]
certificate = "{dir}/keys/dtls.crt"
private_key = "{dir}/keys/dtls.key"

[media]
address = "127.0.0.1"
port_min = {media_min}
port_max = {media_max}

[admin]
listen = "127.0.0.1:{admin}"
drain_timeout = 5

[cdr]
path = "{dir}/cdr.jsonl"

[[listener]]
name = "legacy-udp"
transport = "udp"
address = "127.0.0.1"
port = {udp}

[[listener]]
name = "secure-tls"
transport = "tls"
address = "127.0.0.1"
port = {tls}
tls_client_auth = "optional"

[[trunk]]
name = "pbx"
side = "legacy"
listener = "legacy-udp"
transport = "udp"
peer = "127.0.0.1:{legacy_phone}"
allowed_sources = ["127.0.0.1/32"]
media = "rtp"
route_to = "carrier"

[[trunk]]
name = "carrier"
side = "secure"
listener = "secure-tls"
transport = "tls"
peer = "127.0.0.1:{secure_phone}"
tls_server_name = "peer.srtpgw.test"
tls_identity = ["sip:peer.srtpgw.test"]
allowed_sources = ["127.0.0.1/32"]
media = "srtp"
suites = ["AEAD_AES_256_GCM", "AES_CM_128_HMAC_SHA1_80"]
route_to = "pbx"
"""


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_range(size: int = 40) -> tuple[int, int]:
    """An even-based run of UDP ports nobody holds right now (the relay allocates from it)."""
    for _ in range(50):
        base = 40000 + 2 * secrets.randbelow(9000)
        socks = []
        try:
            for port in range(base, base + size):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base, base + size - 1
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise DemoError("no free UDP port range on 127.0.0.1")


@dataclass(slots=True)
class Outcome:
    checks: list[tuple[bool, str]] = field(default_factory=list)

    def check(self, ok: bool, what: str) -> None:
        self.checks.append((ok, what))

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(ok for ok, _ in self.checks)


class Demo:
    def __init__(self, workdir: Path, out: TextIO) -> None:
        self.dir = workdir
        self.out = out
        self.outcome = Outcome()
        self.proc: subprocess.Popen[bytes] | None = None

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    async def run(self) -> int:
        keys = init_keys(self.dir / "keys", force=True).dir
        legacy = DemoPhone("pbx-phone", LEGACY_MARKER, transport="udp", media="rtp")
        secure = DemoPhone("carrier-phone", SECURE_MARKER, transport="tls", media="srtp",
                           server_tls=server_context(str(keys / "peer.crt"),
                                                    str(keys / "peer.key"),
                                                    str(keys / "ca.crt")))
        legacy.expect_peer_marker(SECURE_MARKER)
        secure.expect_peer_marker(LEGACY_MARKER)
        await legacy.start()
        await secure.start()
        try:
            return await self._run(legacy, secure)
        finally:
            await legacy.close()
            await secure.close()
            self._stop_gateway()

    async def _run(self, legacy: DemoPhone, secure: DemoPhone) -> int:
        media_min, media_max = free_range()
        ports = {"udp": free_port(), "tls": free_port(socket.SOCK_STREAM),
                 "admin": free_port(socket.SOCK_STREAM)}
        config = self.dir / "srtpgw.toml"
        config.write_text(CONFIG.format(dir=self.dir, media_min=media_min, media_max=media_max,
                                        legacy_phone=legacy.sip_port,
                                        secure_phone=secure.sip_port, **ports))
        admin = HostPort("127.0.0.1", ports["admin"])
        self.say(f"srtpgw demo  (files in {self.dir})")
        self.say(f"  gateway   legacy side SIP/UDP 127.0.0.1:{ports['udp']}, secure side SIP/TLS "
                 f"127.0.0.1:{ports['tls']}, admin http://{admin}/")
        self.say(f"  legacy    phone SIP/UDP 127.0.0.1:{legacy.sip_port}, RTP "
                 f"127.0.0.1:{legacy.rtp_port}")
        self.say(f"  secure    phone SIP/TLS 127.0.0.1:{secure.sip_port}, SRTP "
                 f"127.0.0.1:{secure.rtp_port}")
        if not await self._start_gateway(config, admin):
            return 1
        status = await legacy.call(("127.0.0.1", ports["udp"]),
                                   f"sip:4930123@127.0.0.1:{ports['udp']}", timeout=10)
        self.outcome.check(status == 200, f"call answered through the gateway (got {status})")
        if status == 200:
            await asyncio.wait_for(secure.answered.wait(), 5)
            await asyncio.sleep(1.2)  # 50 packets each way at 20 ms
            bye = await legacy.hangup()
            self.outcome.check(bye == 200, f"BYE from the legacy phone answered ({bye})")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(secure.ended.wait(), 5)
            self.outcome.check(secure.ended.is_set(), "the BYE reached the secure phone")
        counters = await self._counters(admin)
        exit_code = await self._drain()
        self._report(legacy, secure, counters, exit_code)
        return 0 if self.outcome.ok else 1

    async def _start_gateway(self, config: Path, admin: HostPort) -> bool:
        log = open(self.dir / "gateway.stderr", "wb")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", "-c",
                                      str(config)], cwd=self.dir, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                code, _ = await asyncio.to_thread(request, admin, "GET", "/healthz")
                if code == 200:
                    return True
            except AdminUnreachable:
                pass
            await asyncio.sleep(0.2)
        err = (self.dir / "gateway.stderr").read_text(errors="replace")[-2000:]
        self.say(f"\nthe gateway did not come up (exit {self.proc.poll()}):\n{err}")
        self.outcome.check(False, "gateway started")
        return False

    async def _counters(self, admin: HostPort) -> dict[str, object]:
        try:
            _, doc = await asyncio.to_thread(request, admin, "GET", "/status")
        except AdminUnreachable:
            return {}
        counters = doc.get("counters")
        return counters if isinstance(counters, dict) else {}

    async def _drain(self) -> int | None:
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.to_thread(self.proc.wait, 15)
        except subprocess.TimeoutExpired:
            code = None
        self.outcome.check(code == 0, f"gateway drained and exited 0 on SIGTERM (exit {code})")
        return code

    def _stop_gateway(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def _report(self, legacy: DemoPhone, secure: DemoPhone, counters: dict[str, object],
                exit_code: int | None) -> None:
        lr, sr = legacy.report, secure.report
        self.say("\nlegacy leg  (PBX side: SIP over UDP, plain RTP)")
        for line in legacy.trace:
            self.say(f"    {line}")
        self.say(f"    media: sent {lr.sent} RTP packets, received {lr.received}; "
                 f"{lr.peer_audio_ok} carried the secure phone's audio, decrypted by the gateway")
        self.say("\nsecure leg  (carrier side: SIP over TLS, SRTP with SDES keys)")
        for line in secure.trace:
            self.say(f"    {line}")
        self.say(f"    suite: {sr.suite}")
        self.say(f"    media: sent {sr.sent} SRTP packets, received {sr.received}; "
                 f"{sr.received - sr.auth_failures} authenticated, {sr.peer_audio_ok} decrypted "
                 "to the legacy phone's audio")
        self.say(f"    legacy audio seen in clear on the secure wire: {sr.peer_marker_in_clear} "
                 "packets")
        if sr.first_raw:
            self.say(f"    first SRTP packet on the wire: {sr.first_raw[:28].hex(' ')} ...")
        if counters:
            self.say("\ngateway counters (/status)")
            for k in ("sip_received", "sip_sent", "media_packets_in", "media_packets_out",
                      "srtp_auth_failures", "drops", "calls_ended"):
                if k in counters:
                    self.say(f"    {k:<20} {counters[k]}")
        cdr = self.dir / "cdr.jsonl"
        if cdr.exists():
            lines = cdr.read_text().splitlines()
            self.say("\nCDR (cdr.jsonl)")
            for line in lines[-1:]:
                self.say("    " + json.dumps(json.loads(line), separators=(", ", ": ")))
        self.outcome.check(sr.suite is not None, f"SRTP negotiated on the secure leg ({sr.suite})")
        self.outcome.check(sr.received >= 20 and sr.auth_failures == 0,
                           f"secure phone received authenticated SRTP ({sr.received} packets)")
        self.outcome.check(sr.peer_audio_ok >= 20, "legacy audio arrived, re-encrypted")
        self.outcome.check(lr.peer_audio_ok >= 20, "secure audio arrived at the legacy phone, "
                           "decrypted")
        self.outcome.check(sr.received > 0 and sr.peer_marker_in_clear == 0,
                           "no legacy plaintext on the secure side")
        self.say("\nchecks")
        for ok, what in self.outcome.checks:
            self.say(f"    [{'ok' if ok else 'FAILED'}] {what}")
        self.say(f"\nlogs: {self.dir / 'gateway.log'}")


def main(workdir: Path | None = None, out: TextIO | None = None) -> int:
    """Run the demo; exit 0 when every check passed."""
    out = out or sys.stdout
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="srtpgw-demo-"))
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        return asyncio.run(Demo(workdir, out).run())
    except (DemoError, TimeoutError, OSError) as exc:
        print(f"srtpgw demo: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
