"""Targets for the probe's own tests: srtpgw on its hardened example config, and a Kamailio
with a deliberately weak config (``weak-kamailio.cfg.in``) in front of rtpengine.

Both run as real children on loopback; only ports, addresses and key paths of the shipped
configs are changed.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from string import Template

from gateway.config import HostPort, load_config
from gateway.ops.keys import KeySet, init_keys
from gateway.ops.status import AdminUnreachable, request
from tests.interop.kamailio import Kamailio, module_dir
from tests.interop.procs import Proc, Procs, free_port, private_port_range

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "examples" / "one-pbx-bridge.toml"
HERE = Path(__file__).parent
GATEWAY_DOMAIN = "gw.example.net"  # as in the example
CARRIER = "sbc.carrier.example"  # the identity the example's carrier trunk demands


@dataclass
class HardenedGateway:
    """srtpgw on deploy/examples/one-pbx-bridge.toml; the probe plays carrier and PBX."""

    workdir: Path
    legacy_port: int  # where the probe's legacy side listens (the example's PBX)
    address: str = "127.0.0.1"

    def __post_init__(self) -> None:
        self.keys: KeySet = init_keys(self.workdir / "keys", domain=GATEWAY_DOMAIN,
                                      peer_domain=CARRIER)
        self.udp_port = free_port(self.address, tcp=False)
        self.tls_port = free_port(self.address, udp=False)
        self.admin_port = free_port(self.address, udp=False)
        self.media_min = private_port_range(200)
        self.proc: Proc | None = None

    def config_text(self) -> str:
        text = EXAMPLE.read_text()
        subs = [("/etc/srtpgw/keys", str(self.keys.dir)),
                ('"10.1.0.5"', f'"{self.address}"'), ('"203.0.113.5"', f'"{self.address}"'),
                ("port_min = 30000", f"port_min = {self.media_min}"),
                ("port_max = 31999", f"port_max = {self.media_min + 199}"),
                ('"127.0.0.1:9060"', f'"{self.address}:{self.admin_port}"'),
                ("/var/log/srtpgw/cdr.jsonl", str(self.workdir / "cdr.jsonl")),
                ("port = 5060", f"port = {self.udp_port}"),
                ("port = 5061", f"port = {self.tls_port}"),
                ('"10.1.0.20:5060"', f'"{self.address}:{self.legacy_port}"'),
                ('["10.1.0.20/32"]', f'["{self.address}/32"]'),
                ('"198.51.100.20:5061"', f'"{self.address}:{free_port(self.address)}"'),
                ('["198.51.100.16/28"]', f'["{self.address}/32"]')]
        for old, new in subs:
            assert old in text, f"the example no longer has {old!r}"
            text = text.replace(old, new)
        return text

    def start(self, procs: Procs, timeout: float = 30.0) -> Proc:
        path = self.workdir / "srtpgw.toml"
        path.write_text(self.config_text())
        load_config(path)
        self.proc = procs.start("srtpgw", [sys.executable, "-m", "gateway.cli", "run", "-c",
                                           str(path)], cwd=ROOT)
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

    @property
    def tls_target(self) -> str:
        return f"tls:{self.address}:{self.tls_port}"

    @property
    def udp_target(self) -> str:
        return f"udp:{self.address}:{self.udp_port}"


def probe_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "gateway.cli", "probe", *args]


def run_probe(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(probe_argv(*args), capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)


def _load_rtpengine_harness():  # type: ignore[no-untyped-def]
    """benchmarks/compare_rtpengine.py holds the project's rtpengine starter and NG client."""
    path = ROOT / "benchmarks" / "compare_rtpengine.py"
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location("compare_rtpengine", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(path.parent))


@dataclass
class WeakKamailio(Kamailio):
    """tests/interop's Kamailio, written from the weak templates here, with rtpengine."""

    legacy: str = ""  # where INVITEs for ``user`` go: the probe's legacy side
    user: str = "100"
    ng_port: int = 0

    def write_config(self) -> Path:
        tls_cfg = self.dir / "tls.cfg"
        tls_cfg.write_text(Template((HERE / "weak-kamailio-tls.cfg.in").read_text()).substitute(
            certificate=self.certificate, private_key=self.private_key))
        cfg = self.dir / "kamailio.cfg"
        cfg.write_text(Template((HERE / "weak-kamailio.cfg.in").read_text()).substitute(
            address=self.address, udp_port=self.udp_port, tls_port=self.tls_port,
            module_dir=module_dir(), tls_cfg=tls_cfg, ng_port=self.ng_port, user=self.user,
            legacy=self.legacy))
        return cfg


def start_rtpengine(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """rtpengine in userspace (``--config-file=none --table=-1``) and its NG port; the caller
    terminates it."""
    harness = _load_rtpengine_harness()
    ng_port = free_port("127.0.0.1", tcp=False)
    lo = private_port_range(200)
    return harness.start_rtpengine(ng_port, lo, lo + 199, workdir / "rtpengine.log"), ng_port


def kamailio_identity(workdir: Path, domain: str) -> tuple[Path, Path]:
    """A server certificate for the weak Kamailio, from a dev CA of its own."""
    keys = init_keys(workdir / "kamailio-keys", domain=domain)
    return keys.gateway_cert, keys.gateway_key
