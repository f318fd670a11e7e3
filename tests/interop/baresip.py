"""baresip 1.0 as a scripted softphone: plays a tone file, records what it hears.

The config comes from ``peers/baresip.config.in``. The TLS listener of baresip is its
``sip_listen`` port + 1, and ``sip_certificate`` (cert and key in one PEM) is both its TLS server
certificate and the client certificate it presents.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from string import Template

from tests.interop.procs import Proc, Procs, free_port, private_port_range, wait_log
from tests.interop.tone import write_tone

TEMPLATE = Path(__file__).with_name("peers") / "baresip.config.in"
TONE_SECONDS = 30.0
RTP_SPAN = 16


@dataclass
class Softphone:
    """One baresip instance: ``user@address``, UDP/TCP on ``port``, TLS on ``port + 1``."""

    name: str
    workdir: Path
    tone_hz: float
    # baresip 1.0 sends RTP from a wildcard-bound socket: with any other address than
    # 127.0.0.1 its packets would not come from the address its SDP announces.
    address: str = "127.0.0.1"
    mediaenc: str | None = None  # None (plain RTP), "srtp-mand" (SDES) or "dtls_srtp"
    certificate: Path | None = None  # PEM with cert chain and key (TLS server + client)
    ca_file: Path | None = None
    port: int = 0

    def __post_init__(self) -> None:
        self.dir = self.workdir / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port(self.address, span=2)
        # baresip binds its RTP sockets to the wildcard address, so its media is told apart by
        # this private port range rather than by its SIP address.
        self.rtp_min = private_port_range(RTP_SPAN)
        self.control_port = free_port("127.0.0.1", udp=False)
        self.tone = write_tone(self.dir / "tone.wav", self.tone_hz, TONE_SECONDS)
        self.proc: Proc | None = None

    @property
    def tls_port(self) -> int:
        return self.port + 1

    def uri(self, transport: str = "udp") -> str:
        if transport == "tls":
            return f"sip:{self.name}@{self.address}:{self.tls_port};transport=tls"
        return f"sip:{self.name}@{self.address}:{self.port}"

    @property
    def capture_filter(self) -> str:
        """BPF for everything this phone sends or receives: its address and its own ports (the
        address alone would also catch other tests on 127.0.0.1, the ports alone other
        tests' traffic between other loopback addresses)."""
        return (f"(host {self.address} and (udp portrange {self.rtp_min}-"
                f"{self.rtp_min + RTP_SPAN - 1} or port {self.port} or port {self.tls_port}))")

    def write_config(self) -> None:
        text = Template(TEMPLATE.read_text()).substitute(
            address=self.address, port=self.port, tone=self.tone, record_dir=self.dir,
            rtp_min=self.rtp_min, rtp_max=self.rtp_min + RTP_SPAN - 1,
            control_port=self.control_port,
            certificate=self.certificate or "", ca_file=self.ca_file or "")
        # no TLS material: drop the lines rather than hand baresip empty paths
        text = "\n".join(ln for ln in text.splitlines() if ln.split() != ["sip_certificate"]
                         and ln.split() != ["sip_cafile"])
        (self.dir / "config").write_text(text + "\n")
        params = ["regint=0", "answermode=auto", "audio_codecs=PCMU"]
        if self.mediaenc:
            params.append(f"mediaenc={self.mediaenc}")
        (self.dir / "accounts").write_text(
            f"<sip:{self.name}@{self.address}>;{';'.join(params)}\n")

    def start(self, procs: Procs, seconds: float, dial: str | None = None) -> Proc:
        """Run for ``seconds`` (baresip quits itself), dialling ``dial`` once ready."""
        self.write_config()
        argv = ["baresip", "-f", str(self.dir), "-s", "-t", str(int(seconds))]
        if dial:
            argv += ["-e", f"/dial {dial}"]
        self.proc = procs.start(f"baresip-{self.name}", argv, cwd=self.dir)
        wait_log(self.proc, "baresip is ready", 10)
        return self.proc

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def command(self, command: str, params: str = "") -> dict[str, object]:
        """A command over baresip's ctrl_tcp module (JSON in netstrings), e.g. ``hold``."""
        body = json.dumps({"command": command, "params": params, "token": command}).encode()
        with socket.create_connection(("127.0.0.1", self.control_port), timeout=5) as s:
            s.sendall(b"%d:%s," % (len(body), body))
            data = b""
            while True:
                length, colon, rest = data.partition(b":")
                if colon and len(rest) > int(length):
                    reply = json.loads(rest[:int(length)])
                    if reply.get("response"):
                        return reply
                    data = rest[int(length) + 1:]
                    continue
                chunk = s.recv(65536)
                if not chunk:
                    raise ConnectionError(f"{self.name}: ctrl_tcp closed before answering")
                data += chunk

    def recording(self) -> Path:
        """The decoded audio this phone received (sndfile's ``*-dec.wav``)."""
        found = sorted(self.dir.glob("dump-*-dec.wav"))
        if not found:
            raise AssertionError(f"{self.name} recorded nothing (no call audio):\n"
                                 f"{self.proc.tail() if self.proc else ''}")
        return found[-1]

    def log(self) -> str:
        return self.proc.output() if self.proc else ""

    def established(self) -> bool:
        return "Call established" in self.log()


def wait_all(phones: list[Softphone], timeout: float) -> None:
    """Wait for every phone to quit by itself (they run with ``-t``)."""
    deadline = time.monotonic() + timeout
    for phone in phones:
        phone.wait(max(0.1, deadline - time.monotonic()))


def wait_call(caller: Softphone, callee: Softphone, timeout: float) -> None:
    """Wait for the caller to hang up and quit (``-t``), then for the callee to see the call
    end; the callee is stopped then rather than left idle until its own ``-t``."""
    deadline = time.monotonic() + timeout
    caller.wait(max(0.1, deadline - time.monotonic()))
    assert callee.proc is not None
    if callee.established():
        wait_log(callee.proc, "terminated", max(0.1, deadline - time.monotonic()))
    callee.proc.stop()
