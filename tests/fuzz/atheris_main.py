"""Run one fuzz target under atheris (libFuzzer): ``python -m tests.fuzz.atheris_main NAME ARGS``.

ARGS are libFuzzer's (``-runs=N``, ``-timeout=S``, corpus directories; the first one is written
to). The gateway's modules are instrumented for coverage as the target imports them. Each input
is timed: one slower than ``FUZZ_SLOW_MS`` (default 100) in the best of three tries is written to
the artifact prefix as ``slow-<sha1>`` and counted in ``FUZZ_STATS`` (a JSON file, rewritten as
figures change), since libFuzzer's own ``-timeout`` only knows whole seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import atheris


def main() -> None:
    name, args = sys.argv[1], [sys.argv[0], *sys.argv[2:]]
    with atheris.instrument_imports(include=["gateway"]):
        from tests.fuzz.targets import build

        target = build(name)
    slow_s = float(os.environ.get("FUZZ_SLOW_MS", "100")) / 1000
    stats_path = os.environ.get("FUZZ_STATS")
    prefix = next((a.split("=", 1)[1] for a in args if a.startswith("-artifact_prefix=")), "./")
    stats = {"slow": 0, "max_ms": 0.0, "inputs": 0}
    run = target.run
    clock = time.perf_counter

    def write_stats() -> None:
        if stats_path:
            Path(stats_path).write_text(json.dumps(stats))

    def one(data: bytes) -> None:
        start = clock()
        run(data)
        spent = clock() - start
        stats["inputs"] += 1
        if spent > stats["max_ms"] / 1000:
            stats["max_ms"] = round(spent * 1000, 3)
            if stats["inputs"] > 1:  # the first input pays for warm-up
                write_stats()
        if spent > slow_s and stats["inputs"] > 1:
            # A shared machine stalls now and then: a hang is an input that stays slow.
            spent = min(spent, *(_timed(run, data, clock) for _ in range(2)))
        if spent > slow_s and stats["inputs"] > 1:
            stats["slow"] += 1
            Path(f"{prefix}slow-{hashlib.sha1(data).hexdigest()}").write_bytes(data)
            write_stats()

    write_stats()
    atheris.Setup(args, one)
    atheris.Fuzz()


def _timed(run, data: bytes, clock) -> float:
    start = clock()
    run(data)
    return clock() - start


if __name__ == "__main__":
    main()
