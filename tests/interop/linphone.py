"""linphonec 5.1 (Debian ``linphone-cli``) as a scripted softphone that is a TLS client only.

belle-sip, its SIP stack, has no TLS server: it closes inbound TLS connections, and its Via and
Contact name the ephemeral port of the connection it opened, so the gateway can reach it only
over that connection. Facts this driver works with (DESIGN.md):
- the core never starts, silently, without a writable ``$HOME/.local/share/linphone``: every
  run gets its own ``HOME``;
- commands come on stdin (``soundcard use files``, ``play``/``record WAV``, ``call``);
- mbedtls does not match IP SANs: it dials a DNS name the gateway's certificate carries;
- on a dual-stack host it offers ``c=IN IP6`` while sending from IPv4 (``ipv6`` switches that);
- the WAV it records claims 44 bytes more data than it holds (``read_recording``).
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from pathlib import Path

from tests.interop.procs import Proc, Procs, private_port_range, wait_log
from tests.interop.tone import RATE, write_tone

TONE_SECONDS = 30.0
RTP_SPAN = 4


@dataclass
class Linphone:
    """One linphonec: TLS client with ``certificate``/``key``, trusting ``ca_file``."""

    name: str
    workdir: Path
    tone_hz: float
    certificate: Path
    key: Path
    ca_file: Path
    media_encryption: str = "srtp"  # or "dtls"; "none" with ``best_effort``
    best_effort: bool = False  # RFC 5939: offer RTP/AVP, SRTP only as a potential configuration
    ipv6: bool = False
    register_at: str | None = None  # a proxy URI to REGISTER with, e.g. <sip:host:port;...>

    def __post_init__(self) -> None:
        self.dir = self.workdir / self.name
        self.home = self.dir / "home"
        (self.home / ".local" / "share" / "linphone").mkdir(parents=True, exist_ok=True)
        self.rtp_min = private_port_range(RTP_SPAN)
        self.tone = write_tone(self.dir / "tone.wav", self.tone_hz, TONE_SECONDS)
        self.record = self.dir / "heard.wav"
        self.proc: Proc | None = None

    def write_config(self) -> Path:
        rc = self.dir / "linphonerc"
        rc.write_text("\n".join([
            "[sip]",
            "sip_port=0", "sip_tcp_port=0", "sip_tls_port=-1",  # TLS only, random port
            # without the migration flag the core turns IPv6 on at start, whatever use_ipv6 says
            f"use_ipv6={int(self.ipv6)}", "ipv6_migration_done=1",
            f"root_ca={self.ca_file}", "verify_server_certs=1", "verify_server_cn=1",
            f"client_cert_chain={self.certificate}", f"client_cert_key={self.key}",
            f"media_encryption={self.media_encryption}",
            f"media_encryption_mandatory={int(not self.best_effort)}",
            *(["support_capability_negotiations=1",
               "supported_encryptions=LinphoneMediaEncryptionSRTP"] if self.best_effort else []),
            *(["default_proxy=0"] if self.register_at else []),
            "[rtp]",
            # else its SDP names the host's interface address (a route lookup): keep the
            # test's media on loopback
            *([] if self.ipv6 else ["bind_address=127.0.0.1"]),
            f"audio_rtp_port={self.rtp_min}-{self.rtp_min + RTP_SPAN - 1}",
            "[sound]", "echocancellation=0",
            *self._proxy(),
            "[audio_codec_0]", "mime=PCMU", "rate=8000", "enabled=1",
            "",
        ]))
        return rc

    def _proxy(self) -> list[str]:
        if self.register_at is None:
            return []
        return ["[proxy_0]", f"reg_proxy={self.register_at}",
                f"reg_identity=sip:{self.name}@localhost", "reg_expires=600",
                "reg_sendregister=1", "publish=0", "quality_reporting_enabled=0"]

    def start(self, procs: Procs, auto_answer: bool = False) -> Proc:
        rc = self.write_config()
        argv = ["linphonec", "-c", str(rc), "-d", "6", *(["-a"] if auto_answer else [])]
        self.proc = procs.start(f"linphonec-{self.name}", argv,
                                cwd=self.dir, env={"HOME": str(self.home), "PATH": "/usr/bin:/bin"},
                                stdin=True)
        self.command("soundcard use files")
        self.command(f"play {self.tone}")
        self.command(f"record {self.record}")
        return self.proc

    def command(self, line: str) -> None:
        assert self.proc is not None
        self.proc.send(line)

    def log(self) -> str:
        return self.proc.output() if self.proc else ""

    def wait_log(self, needle: str, timeout: float) -> None:
        assert self.proc is not None
        wait_log(self.proc, needle, timeout)

    def quit(self, timeout: float = 10.0) -> None:
        if self.proc is None or not self.proc.running:
            return
        self.command("quit")
        deadline = time.monotonic() + timeout
        while self.proc.running and time.monotonic() < deadline:
            time.sleep(0.1)
        self.proc.stop()


def read_recording(path: Path) -> list[int]:
    """16-bit mono samples of linphone's WAV (its header's data length overstates the data,
    so the data chunk is read to the end of the file, never by the header's count)."""
    raw = path.read_bytes()
    if raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        raise ValueError(f"{path}: not a WAV file")
    pos, rate, data = 12, None, b""
    while pos + 8 <= len(raw):
        cid, size = raw[pos:pos + 4], struct.unpack("<I", raw[pos + 4:pos + 8])[0]
        body = raw[pos + 8:pos + 8 + size]
        if cid == b"fmt ":
            channels, rate, bits = (struct.unpack("<H", body[2:4])[0],
                                    struct.unpack("<I", body[4:8])[0],
                                    struct.unpack("<H", body[14:16])[0])
            if channels != 1 or bits != 16:
                raise ValueError(f"{path}: expected mono 16-bit audio")
        elif cid == b"data":
            data = raw[pos + 8:]
            break
        pos += 8 + size + (size & 1)
    if rate != RATE:
        raise ValueError(f"{path}: expected {RATE} Hz, got {rate}")
    return list(struct.unpack(f"<{len(data) // 2}h", data[: len(data) // 2 * 2]))
