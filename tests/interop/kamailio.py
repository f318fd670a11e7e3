"""Kamailio 5.6 as a UDP <-> TLS relay with mutual TLS (templates in ``peers/``).

Note: Kamailio's tls module verifies the peer's chain but never its host name, so the
identity checks under test are the gateway's, not Kamailio's.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from string import Template

from tests.interop.procs import Proc, Procs, free_port, wait_tcp

PEERS = Path(__file__).with_name("peers")


def module_dir() -> str:
    found = glob.glob("/usr/lib/*/kamailio/modules/tls.so") + glob.glob(
        "/usr/lib/kamailio/modules/tls.so")
    if not found:
        raise FileNotFoundError("kamailio tls module (tls.so) not installed")
    return str(Path(found[0]).parent)


@dataclass
class Kamailio:
    """Listens UDP on ``udp_port`` and TLS on ``tls_port``, both on ``address``."""

    name: str
    workdir: Path
    address: str
    tls_target: str  # e.g. "sip:127.0.0.1:5061;transport=tls"
    udp_target: str  # e.g. "sip:127.0.0.3:5060"
    certificate: Path
    private_key: Path
    ca_file: Path

    def __post_init__(self) -> None:
        self.dir = self.workdir / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.udp_port = free_port(self.address, tcp=False)
        self.tls_port = free_port(self.address, udp=False)
        self.proc: Proc | None = None

    def write_config(self) -> Path:
        tls_cfg = self.dir / "tls.cfg"
        tls_cfg.write_text(Template((PEERS / "kamailio-tls.cfg.in").read_text()).substitute(
            certificate=self.certificate, private_key=self.private_key, ca_file=self.ca_file))
        cfg = self.dir / "kamailio.cfg"
        cfg.write_text(Template((PEERS / "kamailio.cfg.in").read_text()).substitute(
            address=self.address, udp_port=self.udp_port, tls_port=self.tls_port,
            module_dir=module_dir(), tls_cfg=tls_cfg, tls_target=self.tls_target,
            udp_target=self.udp_target))
        return cfg

    def start(self, procs: Procs) -> Proc:
        cfg = self.write_config()
        run = self.dir / "run"
        run.mkdir(exist_ok=True)
        argv = ["kamailio", "-f", str(cfg), "-DD", "-E", "-Y", str(run),
                "-P", str(run / "kamailio.pid"), "-m", "256", "-M", "16"]
        self.proc = procs.start(f"kamailio-{self.name}", argv, cwd=self.dir)
        wait_tcp(self.address, self.tls_port, 10, self.proc)
        return self.proc

    @property
    def udp_addr(self) -> str:
        return f"{self.address}:{self.udp_port}"

    @property
    def tls_uri(self) -> str:
        return f"sip:{self.address}:{self.tls_port};transport=tls"
