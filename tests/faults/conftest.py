"""Fixtures of the fault suite: the child-process reaper the SIPp load faults use."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.procs import Procs


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    """Children of this test, stopped at its end; their log tails are printed on failure."""
    p = Procs(tmp_path)
    try:
        yield p
    finally:
        p.close()
        print(p.tails())
