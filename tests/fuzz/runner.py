"""Run a fuzz target under atheris in a subprocess and read back what libFuzzer reports.

Used by the short runs in the test suite and by ``benchmarks/fuzz.py``. The corpus is a fresh
work directory (libFuzzer writes new inputs into the first directory it is given) seeded with the
target's own seeds; the regression inputs in ``tests/corpus/<target>/`` and any read-in-place
seed directories (RFC 4475) follow it and are only read.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tests.fuzz.targets import Target

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "corpus"
_STAT = re.compile(r"^stat::(\w+):\s+(\d+)", re.M)
_DONE = re.compile(r"#(\d+)\s+DONE\s+cov: (\d+) ft: (\d+)")
_LAST_COV = re.compile(r"cov: (\d+) ft: (\d+)")


@dataclass
class FuzzResult:
    target: str
    inputs: int
    seconds: float
    coverage: int  # atheris edges of the gateway's instrumented Python code
    features: int
    peak_rss_mb: int
    crashes: int
    hangs: int  # inputs over the slow threshold, plus libFuzzer timeouts
    max_input_ms: float
    returncode: int
    artifacts: list[str] = field(default_factory=list)
    tail: str = ""

    def to_json(self) -> dict[str, object]:
        d = asdict(self)
        d.pop("tail")
        return d


def regression_dir(name: str) -> Path:
    return CORPUS / name


def run_target(target: Target, runs: int, workdir: Path, *, timeout_s: int = 10,
               slow_ms: float = 100.0, wall_limit: float = 1800.0) -> FuzzResult:
    corpus, seeds, artifacts = workdir / "corpus", workdir / "seeds", workdir / "artifacts"
    for d in (corpus, seeds, artifacts):
        d.mkdir(parents=True, exist_ok=True)
    for data in target.seeds:
        (seeds / hashlib.sha1(data).hexdigest()).write_bytes(data)
    dirs = [corpus, seeds]
    if regression_dir(target.name).is_dir():
        dirs.append(regression_dir(target.name))
    dirs += target.seed_dirs
    stats_file = workdir / "stats.json"
    cmd = [sys.executable, "-m", "tests.fuzz.atheris_main", target.name, f"-runs={runs}",
           f"-max_len={target.max_len}", f"-timeout={timeout_s}", "-print_final_stats=1",
           "-rss_limit_mb=4096", f"-artifact_prefix={artifacts}/", *map(str, dirs)]
    env = {**os.environ, "FUZZ_SLOW_MS": str(slow_ms), "FUZZ_STATS": str(stats_file),
           "PYTHONPATH": str(ROOT)}
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=wall_limit, check=False)
    secs = time.monotonic() - start
    out = proc.stderr + proc.stdout
    stats = {k: int(v) for k, v in _STAT.findall(out)}
    done = _DONE.search(out)
    covs = _LAST_COV.findall(out)
    cov, ft = (int(done.group(2)), int(done.group(3))) if done else \
        (tuple(map(int, covs[-1])) if covs else (0, 0))
    mine = json.loads(stats_file.read_text()) if stats_file.is_file() else {}
    found = sorted(p.name for p in artifacts.iterdir())
    crashes = sum(1 for n in found if n.startswith(("crash-", "oom-", "leak-")))
    timeouts = sum(1 for n in found if n.startswith("timeout-"))
    inputs = stats.get("number_of_executed_units", int(mine.get("inputs", 0)))
    return FuzzResult(target.name, inputs, round(secs, 1), cov, ft,
                      stats.get("peak_rss_mb", 0), crashes, int(mine.get("slow", 0)) + timeouts,
                      float(mine.get("max_ms", 0.0)), proc.returncode,
                      [str(artifacts / n) for n in found], out[-4000:])
