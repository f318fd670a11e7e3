"""Fixtures for security tests against the running gateway (`srtpgw run` subprocess)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require
from tests.security.harness import Gateway, start_gateway


def _needs_app() -> None:
    require(importlib.util.find_spec("gateway.app") is not None,
            "gateway.app (srtpgw run) has not landed yet")


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    _needs_app()
    gw = start_gateway(tmp_path)
    try:
        yield gw
    finally:
        gw.stop()
        assert "Traceback" not in gw.log(), gw.log()[-4000:]


@pytest.fixture
def flood_gateway(tmp_path: Path) -> Iterator[Gateway]:
    _needs_app()
    gw = start_gateway(tmp_path, rate=5, burst=5, pike_max=60)
    try:
        yield gw
    finally:
        gw.stop()
        assert "Traceback" not in gw.log(), gw.log()[-4000:]
