"""Token buckets per source and per trunk; bounded tables; call slots."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.policy.bounded import BoundedTable
from gateway.policy.ratelimit import CallSlots, RateLimiter, TokenBucket
from tests.security.policy_configs import make_config


def test_bucket_refills_and_caps() -> None:
    b = TokenBucket(rate=2.0, burst=3, now=0.0)
    assert [b.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert b.retry_after() == 0.5
    assert b.take(0.5)
    assert not b.take(0.5)
    assert b.take(100.0) and b.tokens == 2.0


def test_per_source_then_per_trunk() -> None:
    pbx = make_config().trunk("pbx")
    rl = RateLimiter()
    ok = [rl.check(pbx, "10.1.0.1", "new_dialog", 0.0) for _ in range(6)]
    assert ok[:5] == [None] * 5
    assert ok[5] is not None and ok[5].scope == "source"
    ok2 = [rl.check(pbx, "10.1.0.2", "new_dialog", 0.0) for _ in range(4)]
    assert ok2[:3] == [None] * 3
    assert ok2[3] is not None and ok2[3].scope == "trunk"
    # out-of-dialog has its own bucket and does not draw on the trunk's new-dialog bucket
    assert rl.check(pbx, "10.1.0.2", "out_of_dialog", 0.0) is None
    assert rl.check(pbx, "10.1.0.2", "out_of_dialog", 0.0) is None
    assert rl.check(pbx, "10.1.0.2", "out_of_dialog", 0.0) is not None


def test_trunk_refusal_refunds_source_token() -> None:
    pbx = make_config().trunk("pbx")
    rl = RateLimiter()
    for i in range(8):
        assert rl.check(pbx, f"10.1.0.{i}", "new_dialog", 0.0) is None
    assert rl.check(pbx, "10.1.1.1", "new_dialog", 0.0).scope == "trunk"
    # 1 s later the trunk bucket has 8 tokens again and 10.1.1.1 still has its full burst
    for _ in range(5):
        assert rl.check(pbx, "10.1.1.1", "new_dialog", 1.0) is None


def test_memory_bounded_under_spray() -> None:
    pbx = make_config().trunk("pbx")
    rl = RateLimiter(max_sources=100)
    for i in range(10_000):
        rl.check(pbx, f"10.1.{i // 250}.{i % 250}", "out_of_dialog", i * 1e-4)
    assert len(rl) == 100


def test_reload_applies_new_limits() -> None:
    cfg = make_config()
    rl = RateLimiter()
    for _ in range(5):
        rl.check(cfg.trunk("pbx"), "10.1.0.1", "new_dialog", 0.0)
    assert rl.check(cfg.trunk("pbx"), "10.1.0.1", "new_dialog", 0.0) is not None
    bigger = make_config(trunk0={"rate_limit": {"new_dialogs_burst": 50}})
    rl.reload(bigger.trunks)
    assert rl.check(bigger.trunk("pbx"), "10.1.0.1", "new_dialog", 0.0) is None


def test_bounded_table_touch_keeps_active() -> None:
    t: BoundedTable[str, int] = BoundedTable(2)
    t.put("a", 1)
    t.put("b", 2)
    t.touch("a")
    t.put("c", 3)
    assert "a" in t and "b" not in t and t.evictions == 1


def test_call_slots() -> None:
    pbx = make_config(trunk0={"max_calls": 2}).trunk("pbx")
    slots = CallSlots()
    assert slots.acquire(pbx) and slots.acquire(pbx) and not slots.acquire(pbx)
    slots.release(pbx)
    assert slots.active("pbx") == 1 and slots.acquire(pbx)


@given(rate=st.floats(0.5, 200), burst=st.integers(1, 100),
       gaps=st.lists(st.floats(0, 0.5), min_size=1, max_size=300))
def test_bucket_never_admits_more_than_burst_plus_refill(rate: float, burst: int,
                                                         gaps: list[float]) -> None:
    b = TokenBucket(rate, burst, now=0.0)
    now = 0.0
    taken = 0
    for gap in gaps:
        now += gap
        taken += b.take(now)
    assert taken <= burst + rate * now + 1e-6
