"""Graceful drain: not ready while draining, waits for calls, ends stragglers at the bound."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

from gateway.config import HostPort, load_config
from gateway.ops.drain import Drainer
from gateway.ops.keys import init_keys
from gateway.ops.service import OpsService

from .test_ops_admin import View, get, write_config


async def make_service(tmp_path: Path, drain_timeout: float) -> OpsService:
    keys = init_keys(tmp_path / "keys").dir
    write_config(tmp_path / "gw.toml", keys)
    cfg = load_config(tmp_path / "gw.toml")
    cfg = dataclasses.replace(cfg, admin=dataclasses.replace(
        cfg.admin, listen=HostPort("127.0.0.1", 0), drain_timeout=drain_timeout))
    service = OpsService(cfg, View())
    await service.start(handle_signals=False)
    return service


async def test_drain_waits_for_calls_to_end(tmp_path: Path) -> None:
    ops = await make_service(tmp_path, drain_timeout=5.0)
    view = ops.view
    try:
        assert not ops.draining
        ops.request_drain()
        await asyncio.sleep(0.1)
        assert ops.draining and not view.accepting  # type: ignore[attr-defined]
        code, _, body = await get(ops.admin.address, "/readyz")
        assert code == 503 and json.loads(body)["reasons"] == ["draining"]
        assert (await get(ops.admin.address, "/healthz"))[0] == 200  # alive, just not ready
        assert not ops._stopped.is_set()
        view.stats_value.calls_active = {}  # type: ignore[attr-defined]  # the call hangs up
        await asyncio.wait_for(ops.wait_stopped(), 2)
        assert ops.drain_result is not None and ops.drain_result.ended_by_us == 0
        assert ops.drain_result.waited < 1.0
        assert view.ended == []  # type: ignore[attr-defined]
    finally:
        await ops.stop()


async def test_drain_ends_remaining_calls_at_the_bound(tmp_path: Path) -> None:
    ops = await make_service(tmp_path, drain_timeout=0.3)
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        ops.request_drain()
        await asyncio.wait_for(ops.wait_stopped(), 3)
        assert 0.3 <= loop.time() - start < 1.5
        assert ops.view.ended == ["drain"]  # type: ignore[attr-defined]
        assert ops.drain_result is not None and ops.drain_result.ended_by_us == 1
    finally:
        await ops.stop()


async def test_drainer_with_zero_timeout_ends_at_once() -> None:
    active = [3]
    ended: list[str] = []

    async def end(cause: str) -> None:
        ended.append(cause)
        active[0] = 0

    d = Drainer(lambda: active[0], end, timeout=0)
    result = await asyncio.wait_for(d.drain(), 1)
    assert result.ended_by_us == 3 and ended == ["drain"]


async def test_second_request_ends_calls_at_once(tmp_path: Path) -> None:
    ops = await make_service(tmp_path, drain_timeout=30.0)
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        ops.request_drain()
        await asyncio.sleep(0.1)
        assert not ops._stopped.is_set()
        ops.request_drain()  # the operator presses Ctrl-C again: no second drain, no wait
        await asyncio.wait_for(ops.wait_stopped(), 2)
        assert loop.time() - start < 1.0
        assert ops.view.ended == ["drain"]  # type: ignore[attr-defined]
        assert ops.drain_result is not None and ops.drain_result.ended_by_us == 1
    finally:
        await ops.stop()
