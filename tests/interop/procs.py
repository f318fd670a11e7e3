"""Child processes and loopback ports for interop tests.

Every peer runs as a child with its output in a log file; ``Procs.close`` kills whatever is
still running, so a failing test never leaves a softphone or proxy behind.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path


class Proc:
    """One child process whose combined stdout/stderr goes to ``log``."""

    def __init__(self, name: str, argv: Sequence[str], log: Path, cwd: Path | None = None,
                 env: dict[str, str] | None = None, stdin: bool = False) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        self._fh = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(self.argv, stdout=self._fh, stderr=subprocess.STDOUT,
                                      stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                      cwd=cwd, env=env, start_new_session=True)

    def send(self, line: str) -> None:
        """One line on the child's stdin (started with ``stdin=True``): a peer's command."""
        assert self.popen.stdin is not None
        self.popen.stdin.write(line.encode() + b"\n")
        self.popen.stdin.flush()

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def wait(self, timeout: float) -> int:
        """Exit status; kills the child if it overruns ``timeout``."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise

    def signal(self, sig: int) -> None:
        if self.running:
            os.killpg(self.popen.pid, sig)

    def stop(self, grace: float = 3.0) -> int:
        """SIGTERM, then SIGKILL after ``grace`` seconds; returns the exit status."""
        if self.running:
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.popen.wait(5)
        if self.popen.stdin is not None:
            self.popen.stdin.close()
        self._fh.close()
        return self.popen.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self, lines: int = 40) -> str:
        return f"--- {self.name} ({self.log}) ---\n" + "\n".join(
            self.output().splitlines()[-lines:])


class Procs:
    """The children of one test, all stopped on ``close``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.children: list[Proc] = []

    def start(self, name: str, argv: Sequence[str], cwd: Path | None = None,
              env: dict[str, str] | None = None, stdin: bool = False) -> Proc:
        proc = Proc(name, argv, self.workdir / f"{name}.log", cwd=cwd, env=env, stdin=stdin)
        self.children.append(proc)
        return proc

    def tails(self) -> str:
        return "\n".join(p.tail() for p in self.children)

    def close(self) -> None:
        for proc in reversed(self.children):
            proc.stop()


def free_port(host: str = "127.0.0.1", *, udp: bool = True, tcp: bool = True,
              span: int = 1) -> int:
    """A port P such that P..P+span-1 are free on ``host`` for the asked protocols.

    Peers like baresip take a fixed port (and its TLS listener P+1), so port 0 cannot be passed
    to them; probing and releasing is the best available, and the range is random per call.
    """
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((host, 0))
            base = s.getsockname()[1]
        if base + span > 65535:
            continue
        if all(_is_free(host, base + i, udp, tcp) for i in range(span)):
            return base
    raise RuntimeError(f"no free port range of {span} on {host}")


def private_port_range(span: int, lo: int = 12000, hi: int = 29999) -> int:
    """Base of ``span`` free UDP ports below the kernel's ephemeral range.

    Ports other tests get by binding port 0 come from the ephemeral range (32768+), so a range
    picked here is not shared with them and a capture filter on it sees only our media.
    """
    for _ in range(200):
        base = random.randrange(lo, hi - span, 2)
        if all(_is_free("0.0.0.0", base + i, True, False) for i in range(span)):
            return base
    raise RuntimeError(f"no free private port range of {span}")


def _is_free(host: str, port: int, udp: bool, tcp: bool) -> bool:
    kinds = ([socket.SOCK_DGRAM] if udp else []) + ([socket.SOCK_STREAM] if tcp else [])
    for kind in kinds:
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def wait_tcp(host: str, port: int, timeout: float, proc: Proc | None = None) -> None:
    """Block until something accepts TCP connections on host:port (or fail with context)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.running:
            raise RuntimeError(f"{proc.name} exited early:\n{proc.tail()}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def wait_log(proc: Proc, needle: str, timeout: float) -> None:
    """Block until ``needle`` appears in the child's output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in proc.output():
            return
        if not proc.running:
            raise RuntimeError(f"{proc.name} exited before logging {needle!r}:\n{proc.tail()}")
        time.sleep(0.05)
    raise TimeoutError(f"{proc.name} did not log {needle!r} in {timeout}s:\n{proc.tail()}")
