"""SIPp (UDP only in this build) driven with the scenarios in benchmarks/sipp/.

Scenarios take SDP bits as keys: ``proto`` (RTP/AVP or RTP/SAVP) and ``crypto`` (a whole SDP
attribute line, e.g. an ``a=crypto:`` line, or ``a=ptime:20`` when there is nothing to add).
Each run copies its scenario into the test's directory so SIPp's trace files land there.
"""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.interop.procs import Proc, Procs, free_port

SCENARIOS = Path(__file__).resolve().parents[2] / "benchmarks" / "sipp"
PLAIN = {"proto": "RTP/AVP", "crypto": "a=ptime:20"}


def sdes(suite: str = "AES_CM_128_HMAC_SHA1_80") -> dict[str, str]:
    """SDP keys for an SDES offer/answer with a fresh random key (RFC 4568 inline)."""
    size = {"AEAD_AES_256_GCM": 44, "AEAD_AES_128_GCM": 28}.get(suite, 30)
    inline = base64.b64encode(os.urandom(size)).decode()
    return {"proto": "RTP/SAVP", "crypto": f"a=crypto:1 {suite} inline:{inline}"}


@dataclass
class Sipp:
    """One SIPp process: ``scenario`` (file name in benchmarks/sipp) bound on address:port."""

    name: str
    scenario: str
    workdir: Path
    address: str
    keys: dict[str, str] = field(default_factory=lambda: dict(PLAIN))
    port: int = 0

    def __post_init__(self) -> None:
        self.dir = self.workdir / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port(self.address, tcp=False)
        self.media_port = free_port(self.address, tcp=False, span=4)
        self.proc: Proc | None = None

    def argv(self, remote: str | None, calls: int, rate: float, limit: int, hold_ms: int,
             timeout: float, service: str, extra: Sequence[str]) -> list[str]:
        src = SCENARIOS / self.scenario
        shutil.copy(src, self.dir / src.name)
        argv = ["sipp", "-sf", src.name, "-i", self.address, "-p", str(self.port),
                "-mi", self.address, "-mp", str(self.media_port), "-m", str(calls),
                "-l", str(limit), "-d", str(hold_ms), "-s", service, "-nostdin",
                "-timeout", f"{timeout}s", "-timeout_error", "-trace_err",
                "-trace_stat", "-stf", "stats.csv", "-fd", "1", "-trace_screen", *extra]
        if remote:
            argv[1:1] = [remote]
            argv += ["-r", f"{rate:g}"]
        for k, v in self.keys.items():
            argv += ["-key", k, v]
        return argv

    def start(self, procs: Procs, remote: str | None = None, *, calls: int = 1,
              rate: float = 1.0, limit: int = 100, hold_ms: int = 500, timeout: float = 30,
              service: str = "callee", extra: Sequence[str] = ("-trace_msg",)) -> Proc:
        """UAS when ``remote`` is None, else a UAC placing ``calls`` calls to ``remote``.

        ``extra`` SIPp options default to a full message trace (``messages()``); load runs pass
        ``-trace_rtt`` instead.
        """
        argv = self.argv(remote, calls, rate, limit, hold_ms, timeout, service, extra)
        self.proc = procs.start(f"sipp-{self.name}", argv, cwd=self.dir)
        return self.proc

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def messages(self) -> str:
        """Every message SIPp sent and received (its -trace_msg log)."""
        return "".join(p.read_text(errors="replace")
                       for p in sorted(self.dir.glob("*_messages.log")))

    def report(self) -> str:
        errors = "".join(p.read_text(errors="replace") for p in self.dir.glob("*_errors.log"))
        screens = "".join(p.read_text(errors="replace")[-3000:]
                          for p in self.dir.glob("*_screen.log"))
        return f"--- sipp {self.name} ---\n{errors[-3000:]}\n{screens}"

    @property
    def addr(self) -> str:
        return f"{self.address}:{self.port}"
