"""Coverage-guided fuzzing of every target for a bounded count: crashes, hangs, coverage, RSS.

Each target (``tests/fuzz/targets.py``: sip, sdp, media, dtls, control) runs under atheris in its
own process for ``--runs`` inputs (default: 1,000,000 split evenly, so the total is at least one
million), seeded from the tests' messages, ``tests/corpus/<target>/`` and, for SIP, the RFC 4475
vectors read in place. A hang is an input slower than ``--slow-ms`` (default 100 ms, measured per
input in the fuzzed process) or one libFuzzer's ``-timeout`` stopped; found inputs are kept under
the work directory, to be turned into regression inputs in ``tests/corpus/``.

    .venv/bin/python benchmarks/fuzz.py [--total 1000000] [--targets sip,sdp,...]
        [--slow-ms 100] [--workdir DIR] [--seed-dir DIR ...]

``--seed-dir`` adds read-only seed directories for SIP (e.g. ``../shared/rfc4475`` when the work
tree is not beside ``shared/``). Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fuzz.runner import FuzzResult, run_target  # noqa: E402
from tests.fuzz.targets import NAMES, build  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--total", type=int, default=1_000_000)
    ap.add_argument("--targets", default=",".join(NAMES))
    ap.add_argument("--slow-ms", type=float, default=100.0)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--seed-dir", type=Path, action="append", default=[])
    args = ap.parse_args()
    names = [n for n in args.targets.split(",") if n]
    per = -(-args.total // len(names))
    work = args.workdir or Path(tempfile.mkdtemp(prefix="srtpgw-fuzz-"))
    results: list[FuzzResult] = []
    for name in names:
        target = build(name)
        if name == "sip":
            extra = [d.resolve() for d in args.seed_dir if d.resolve() not in target.seed_dirs]
            target = dataclasses.replace(target, seed_dirs=target.seed_dirs + extra)
        try:
            r = run_target(target, per, work / name, slow_ms=args.slow_ms, wall_limit=7200)
        finally:
            target.close()
        results.append(r)
        print(f"{name}: {r.inputs} inputs, {r.crashes} crashes, {r.hangs} hangs", file=sys.stderr,
              flush=True)
    head = f"{'target':8} {'inputs':>9} {'s':>7} {'exec/s':>7} {'cov':>5} {'ft':>6} " \
        f"{'rss MiB':>7} {'crash':>5} {'hang':>4} {'max ms':>7}"
    print(head)
    print("-" * len(head))
    for r in results:
        rate = r.inputs / r.seconds if r.seconds else 0
        print(f"{r.target:8} {r.inputs:9} {r.seconds:7.1f} {rate:7.0f} {r.coverage:5} "
              f"{r.features:6} {r.peak_rss_mb:7} {r.crashes:5} {r.hangs:4} {r.max_input_ms:7.1f}")
    total = sum(r.inputs for r in results)
    crashes, hangs = sum(r.crashes for r in results), sum(r.hangs for r in results)
    print(f"{'total':8} {total:9} {'':7} {'':7} {'':5} {'':6} "
          f"{max(r.peak_rss_mb for r in results):7} {crashes:5} {hangs:4}")
    print(f"work directory (corpus, artifacts): {work}")
    print(json.dumps({"benchmark": "fuzz", "total_inputs": total, "crashes": crashes,
                      "hangs": hangs, "slow_ms": args.slow_ms,
                      "targets": [r.to_json() for r in results]}))
    return 1 if crashes or hangs or any(r.returncode for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
