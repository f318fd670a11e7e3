"""The gateway process tunes its cyclic GC once it is up; a process that only imports the
app (tests, tools) keeps Python's defaults."""

from __future__ import annotations

import subprocess
import sys

from gateway.app import GC_THRESHOLDS

PROBE = """
import gc, gateway.app as app
print(gc.get_threshold(), gc.get_freeze_count() > 0)
app.tune_gc()
print(gc.get_threshold(), gc.get_freeze_count() > 0)
"""


def test_tune_gc_sets_thresholds_and_freezes_startup_objects() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         check=True, timeout=60).stdout.splitlines()
    assert out == ["(700, 10, 10) False", f"{GC_THRESHOLDS} True"]
