"""Port pool: even/odd pairs inside the range, exhaustion, least-recently-released reuse."""

from __future__ import annotations

import pytest

from gateway.media.api import InvalidParams
from gateway.media.ports import PortPool


def test_pairs_fit_the_range_and_are_even() -> None:
    pool = PortPool(30001, 30010)
    ports = [pool.acquire() for _ in range(len(pool))]
    assert ports == [30002, 30004, 30006, 30008]
    assert pool.acquire() is None
    assert all(p is not None and p % 2 == 0 and p + 1 <= 30010 for p in ports)


def test_released_ports_come_back_last() -> None:
    pool = PortPool(40000, 40007)
    first = pool.acquire()
    assert first == 40000
    pool.release(first)
    assert [pool.acquire() for _ in range(4)] == [40002, 40004, 40006, 40000]
    pool.release(40002)
    pool.release(40002)
    pool.release(41000)
    assert len(pool) == 1


def test_busy_port_is_retried_last() -> None:
    pool = PortPool(40000, 40005)
    port = pool.acquire()
    assert port is not None
    pool.busy(port)
    assert [pool.acquire(), pool.acquire(), pool.acquire()] == [40002, 40004, 40000]


@pytest.mark.parametrize("lo,hi", [(40000, 40000), (40001, 40002), (80, 100), (50000, 40000),
                                   (65535, 70000)])
def test_unusable_ranges_are_typed_errors(lo: int, hi: int) -> None:
    with pytest.raises(InvalidParams):
        PortPool(lo, hi)
