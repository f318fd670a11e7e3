"""srtpgw as a child process (``python -m gateway.cli run -c FILE``) with a per-test config.

Legacy trunk ``pbx`` (UDP, plain RTP) and secure trunk ``carrier`` (mutual TLS, SDES-SRTP) on a
private loopback address; ready when its admin endpoint answers /healthz with 200.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

from gateway.config import HostPort, load_config
from gateway.ops.status import AdminUnreachable, request
from tests.interop.capture import loopback_address
from tests.interop.procs import Proc, Procs, free_port, private_port_range
from tests.support.logcheck import watch

TEMPLATE = Path(__file__).with_name("peers") / "gateway.toml.in"
ROOT = Path(__file__).resolve().parents[2]
MEDIA_PORTS = 400


@dataclass
class Gateway:
    """One srtpgw instance; ``legacy_peer``/``secure_peer`` are where it sends calls."""

    workdir: Path
    keys: Path
    legacy_peer: str
    secure_peer: str
    legacy_sources: Sequence[str] = ("127.0.0.1/32",)
    secure_sources: Sequence[str] = ("127.0.0.1/32",)
    suites: Sequence[str] = ("AES_CM_128_HMAC_SHA1_80",)
    rate: float = 20.0  # new dialogs per second per source and per trunk
    log_level: str = "info"
    secure_transport: str = "tls"  # "udp" only for load baselines (SDES keys in clear)
    secure_media: str = "srtp"  # or "dtls-srtp"
    legacy_secure: bool = False  # make "pbx" a second secure trunk (TLS, SDES): SRTP <-> SRTP
    pbx_identity: str = "peer.srtpgw.test"  # its peer's certificate identity, when secure
    media_ports: int = MEDIA_PORTS
    secure_extra: Sequence[str] = ()  # more TOML lines for the carrier trunk (registrar...)
    address: str = field(default_factory=loopback_address)

    def __post_init__(self) -> None:
        self.dir = self.workdir / "gateway"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.udp_port = free_port(self.address, udp=not self.legacy_secure,
                                  tcp=self.legacy_secure)
        self.tls_port = free_port(self.address, udp=self.secure_transport == "udp",
                                  tcp=self.secure_transport != "udp")
        self.admin_port = free_port(self.address, udp=False)
        self.media_min = private_port_range(self.media_ports)
        self.proc: Proc | None = None

    def write_config(self) -> Path:
        burst = max(40, int(self.rate * 2))
        text = Template(TEMPLATE.read_text()).substitute(
            log_level=self.log_level, keys=self.keys, address=self.address,
            media_min=self.media_min, media_max=self.media_min + self.media_ports - 1,
            admin_port=self.admin_port, udp_port=self.udp_port, tls_port=self.tls_port,
            legacy_peer=self.legacy_peer, secure_peer=self.secure_peer,
            legacy_sources=json.dumps(list(self.legacy_sources)),
            secure_sources=json.dumps(list(self.secure_sources)),
            suites=json.dumps(list(self.suites)), rate=f"{self.rate:.1f}", burst=burst,
            secure_transport=self.secure_transport, secure_media=self.secure_media,
            secure_extra="\n".join(self.secure_extra),
            secure_identity=_identity("peer.srtpgw.test") if self.secure_transport == "tls"
            else "allow_sdes_over_insecure = true",
            pike_max=max(200, int(self.rate * 4)),
            legacy_side="secure" if self.legacy_secure else "legacy",
            legacy_transport="tls" if self.legacy_secure else "udp",
            legacy_media="srtp" if self.legacy_secure else "rtp",
            legacy_identity=f"{_identity(self.pbx_identity)}\n"
            f"suites = {json.dumps(list(self.suites))}" if self.legacy_secure else "")
        path = self.dir / "srtpgw.toml"
        path.write_text(text)
        load_config(path)  # a harness typo should fail here, with the gateway's own message
        return path

    def start(self, procs: Procs, timeout: float = 20.0) -> Proc:
        config = self.write_config()
        self.proc = procs.start("srtpgw", [sys.executable, "-m", "gateway.cli", "run", "-c",
                                           str(config)], cwd=ROOT)
        watch(self.proc.log, "kv")  # its stdout and stderr: the kv log and nothing else
        admin = HostPort(self.address, self.admin_port)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.proc.running:
                raise RuntimeError(f"srtpgw exited at start:\n{self.proc.tail(60)}")
            try:
                if request(admin, "GET", "/healthz")[0] == 200:
                    return self.proc
            except AdminUnreachable:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"srtpgw not healthy after {timeout}s:\n{self.proc.tail(60)}")

    def status(self) -> dict[str, object]:
        return request(HostPort(self.address, self.admin_port), "GET", "/status")[1]

    @property
    def udp_uri_host(self) -> str:
        """The "pbx" trunk's listener (a TLS one when ``legacy_secure``)."""
        if self.legacy_secure:
            return f"{self.address}:{self.udp_port};transport=tls"
        return f"{self.address}:{self.udp_port}"

    @property
    def tls_uri_host(self) -> str:
        return f"{self.address}:{self.tls_port};transport=tls"


def _identity(domain: str) -> str:
    return f'tls_server_name = "{domain}"\ntls_identity = ["sip:{domain}"]'
