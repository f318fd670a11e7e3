"""tshark on the loopback interface: capture one peer's traffic, then list its payloads.

Filters name a peer's own ports (or its private 127.x.y.z address from ``loopback_address``), so
a capture sees that peer's traffic and nobody else's, even with other tests running.
"""

from __future__ import annotations

import random
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.interop.procs import Proc, Procs, wait_log


def loopback_address() -> str:
    """A random loopback address, unlikely to be shared with a concurrent test."""
    return f"127.{random.randint(64, 127)}.{random.randint(0, 255)}.{random.randint(2, 254)}"


@dataclass(frozen=True)
class Datagram:
    src: str
    sport: int
    dst: str
    dport: int
    payload: bytes


class Capture:
    """``tshark -i lo -f FILTER`` into a pcap, stopped with SIGINT like an operator would."""

    def __init__(self, procs: Procs, workdir: Path, name: str, bpf: str) -> None:
        self.file = workdir / f"{name}.pcapng"
        self.bpf = bpf
        self.proc: Proc = procs.start(f"tshark-{name}",
                                      ["tshark", "-i", "lo", "-f", bpf, "-w", str(self.file)])
        wait_log(self.proc, "Capturing on", 15)

    def stop(self) -> None:
        self.proc.signal(signal.SIGINT)
        self.proc.wait(10)

    def _fields(self, display_filter: str, payload_field: str) -> list[Datagram]:
        out = subprocess.run(
            ["tshark", "-r", str(self.file), "-Y", display_filter, "-T", "fields",
             "-e", "ip.src", "-e", f"{payload_field.split('.')[0]}.srcport", "-e", "ip.dst",
             "-e", f"{payload_field.split('.')[0]}.dstport", "-e", payload_field],
            capture_output=True, text=True, timeout=60, check=True).stdout
        rows = []
        for line in out.splitlines():
            parts = line.split("\t")
            if len(parts) == 5 and parts[4]:
                rows.append(Datagram(parts[0], int(parts[1]), parts[2], int(parts[3]),
                                     bytes.fromhex(parts[4].replace(":", ""))))
        return rows

    def udp(self) -> list[Datagram]:
        return self._fields("udp", "udp.payload")

    def tcp(self) -> list[Datagram]:
        return self._fields("tcp.len > 0", "tcp.payload")
