"""Fixtures for security tests against the running gateway (`srtpgw run` subprocess)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.security.harness import Gateway, assert_clean_log, needs_app, start_gateway


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    needs_app()
    gw = start_gateway(tmp_path)
    try:
        yield gw
    finally:
        gw.stop()
        assert_clean_log(gw)
