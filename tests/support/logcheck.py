"""The suite-wide check that nothing a gateway under test writes falls outside its structured log.

Two halves, both driven by the autouse fixture in tests/conftest.py:
- gateways run as subprocesses: their harness calls ``watch(path, fmt)`` for every file the
  process writes (log file, stderr); after the test every line must parse in the configured
  format (a JSON object per line for ``json``, ``ts=... level=... logger=... event=...`` for
  ``kv``). A plain-text traceback is a line that does not parse.
- gateways run in the test process: every record of the ``srtpgw`` loggers must render as one
  line in both formats, and the event loop must not have reported an exception through
  asyncio's own (plain-text) handler: the gateway installs ``log_loop_exceptions``.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from gateway.ops.log import JsonFormatter, KeyValueFormatter, RedactingFilter

_KV = re.compile(r"^ts=\S+ level=[a-z]+ logger=\S+ event=\S")
_watched: list[tuple[Path, str]] = []


def bad_lines(text: str, fmt: str) -> list[str]:
    """Lines of ``text`` that are not structured log lines of format ``fmt`` ("json"/"kv")."""
    bad = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if fmt == "json":
            try:
                doc = json.loads(line)
            except ValueError:
                bad.append(line)
                continue
            if not (isinstance(doc, dict) and {"ts", "level", "event"} <= doc.keys()):
                bad.append(line)
        elif not _KV.match(line):
            bad.append(line)
    return bad


def assert_structured(text: str, fmt: str, what: str) -> None:
    bad = bad_lines(text, fmt)
    assert not bad, f"{what}: {len(bad)} line(s) outside the {fmt} log format:\n" + \
        "\n".join(b[:300] for b in bad[:20])


def watch(path: Path, fmt: str) -> None:
    """Check ``path`` (written by a gateway process) when the current test ends."""
    _watched.append((Path(path), fmt))


def unwatch(path: Path) -> None:
    """A process that never started (a refused config) reports on stderr as a CLI does."""
    _watched[:] = [(p, f) for p, f in _watched if p != Path(path)]


def check_watched() -> list[str]:
    """Problems in the files watched since the last call (which forgets them)."""
    problems = []
    for path, fmt in _watched:
        if not path.exists():
            continue
        bad = bad_lines(path.read_text(errors="replace"), fmt)
        if bad:
            problems.append(f"{path}: {len(bad)} line(s) outside the {fmt} log format:\n"
                            + "\n".join(b[:300] for b in bad[:20]))
    _watched.clear()
    return problems


class RecordCheck(logging.Handler):
    """Collects in-process records that would not be structured log lines."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.problems: list[str] = []
        self._seen: set[int] = set()
        self._formats = (JsonFormatter(), KeyValueFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        if id(record) in self._seen:
            return
        self._seen.add(id(record))
        if record.name == "asyncio" and record.levelno >= logging.ERROR:
            self.problems.append(f"asyncio's own handler reported: {record.getMessage()[:300]}")
            return
        if not record.name.startswith("srtpgw"):
            return
        copy = logging.makeLogRecord(record.__dict__)
        RedactingFilter().filter(copy)
        for fmt in self._formats:
            line = fmt.format(copy)
            if "\n" in line or "\r" in line:
                self.problems.append(f"{record.name} {record.msg!r} renders on several lines")
                return

    def attach(self) -> None:
        for name in ("", "srtpgw"):
            logging.getLogger(name).addHandler(self)

    def detach(self) -> None:
        for name in ("", "srtpgw"):
            logging.getLogger(name).removeHandler(self)
