"""Call/leg model and session-expiry housekeeping (gateway.b2bua.call)."""

from __future__ import annotations

from gateway.b2bua.call import Call, CallState, Leg, expired, new_token
from gateway.config import HostPort, Trunk


def leg(name: str) -> Leg:
    t = Trunk(name=name, side="legacy", transport="udp", peer=HostPort("127.0.0.1", 5070),
              listener="udp", media="rtp")
    return Leg(trunk=t, call_id=new_token(), local_tag=new_token(4), local_uri="<sip:a@gw>",
               remote_uri="<sip:b@gw>", peer=t.peer, contact="<sip:gw@127.0.0.1:5060>")


def test_tokens_are_unique_and_hex():
    seen = {new_token() for _ in range(1000)}
    assert len(seen) == 1000
    assert all(len(t) == 24 and int(t, 16) >= 0 for t in seen)


def test_other_leg_and_cseq():
    c = Call(id="c1", a=leg("a"), b=leg("b"), created=0.0, last_activity=0.0)
    assert c.other(c.a) is c.b and c.other(c.b) is c.a
    assert [c.b.next_cseq(), c.b.next_cseq()] == [1, 2]


def test_expired_uses_last_activity_and_skips_ending():
    calls = [Call(id=str(i), a=leg("a"), b=leg("b"), created=0.0, last_activity=float(i * 100))
             for i in range(4)]
    calls[0].state = CallState.ENDING
    assert [c.id for c in expired(calls, now=250.0, session_expires=120)] == ["1"]
    calls[1].touch(240.0)
    assert expired(calls, now=250.0, session_expires=120) == []
