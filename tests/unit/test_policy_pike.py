"""Pike flood detector: sliding window, ban and expiry, bounded tables."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.config import PikeSection
from gateway.policy.pike import Pike


def test_bans_above_limit_and_expires() -> None:
    p = Pike(PikeSection(window=1.0, max_requests=10, ban_time=5.0))
    assert all(p.hit("10.0.0.1", i * 0.01) is None for i in range(10))
    ban = p.hit("10.0.0.1", 0.2)
    assert ban is not None and ban.until == 5.2 and ban.reason == "pike"
    assert p.banned("10.0.0.1", 5.0)
    assert not p.banned("10.0.0.1", 5.3)
    assert not p.banned("10.0.0.2", 1.0)
    assert p.bans(5.3) == []


def test_steady_rate_below_limit_never_banned() -> None:
    p = Pike(PikeSection(window=1.0, max_requests=10, ban_time=5.0))
    assert all(p.hit("10.0.0.1", i * 0.125) is None for i in range(400))


def test_window_edge_burst_is_caught() -> None:
    p = Pike(PikeSection(window=1.0, max_requests=10, ban_time=5.0))
    for i in range(10):
        assert p.hit("10.0.0.1", 0.9 + i * 0.001) is None
    hits = [p.hit("10.0.0.1", 1.01 + i * 0.001) for i in range(10)]
    assert any(h is not None for h in hits)


def test_disabled_counts_nothing() -> None:
    p = Pike(PikeSection(enabled=False, window=1.0, max_requests=1))
    assert all(p.hit("10.0.0.1", 0.0) is None for _ in range(100))
    assert p.tracked == 0


def test_bounded_under_spray_and_manual_ban() -> None:
    p = Pike(PikeSection(window=1.0, max_requests=1, ban_time=60), max_sources=50, max_bans=20)
    for i in range(5000):
        p.hit(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", 0.0)
        p.hit(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", 0.0)
    assert p.tracked <= 50 and len(p.bans(1.0)) == 20
    p.ban("192.0.2.1", 1.0, 10.0, "operator")
    assert p.banned("192.0.2.1", 2.0) and p.unban("192.0.2.1")
    assert not p.banned("192.0.2.1", 2.0)


@given(limit=st.integers(1, 50), gaps=st.lists(st.floats(0, 0.3), min_size=1, max_size=400))
def test_never_more_than_twice_the_limit_in_any_window_before_a_ban(
        limit: int, gaps: list[float]) -> None:
    p = Pike(PikeSection(window=1.0, max_requests=limit, ban_time=100.0))
    times: list[float] = []
    now = 0.0
    for gap in gaps:
        now += gap
        if p.hit("10.0.0.1", now) is not None:
            return
        times.append(now)
        recent = [t for t in times if now - t < 1.0]
        assert len(recent) <= 2 * limit
