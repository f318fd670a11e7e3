"""RFC 4475 and mutated messages through parser + firewall, without sockets.

Every input ends in exactly one of: a parser refusal (counted under a rule), a firewall verdict,
or a response; never any other exception. The network version of this test is
test_torture_network.py.
"""

from __future__ import annotations

import pytest

from gateway.policy.acl import Source
from gateway.policy.firewall import Firewall
from gateway.sip.errors import SipParseError
from gateway.sip.message import SipRequest, parse_message
from tests.security.corpus import mutations, rfc4475_vectors
from tests.security.policy_configs import make_config

SRC = Source("legacy", "udp", "10.1.0.1", 5070)

# What the firewall-level pipeline answers for the RFC 4475 requests that parse.
EXPECTED = {
    "badbranch.dat": ("reject", 400), "unkscm.dat": ("reject", 416),
    "novelsc.dat": ("reject", 416), "bext01.dat": ("reject", 420),
    "zeromf.dat": ("accept", 0), "inv2543.dat": ("accept", 0), "wsinv.dat": ("accept", 0),
    "esc01.dat": ("accept", 0), "escnull.dat": ("accept", 0), "longreq.dat": ("accept", 0),
    "dblreq.dat": ("accept", 0), "semiuri.dat": ("accept", 0), "lwsdisp.dat": ("accept", 0),
    "transports.dat": ("accept", 0), "mpart01.dat": ("accept", 0), "invut.dat": ("accept", 0),
    "intmeth.dat": ("reject", 405), "esc02.dat": ("reject", 405),
}


def firewall() -> Firewall:
    loose = {"new_dialogs_per_source": 1000, "new_dialogs_burst": 100000,
             "out_of_dialog_per_source": 1000, "out_of_dialog_burst": 100000,
             "new_dialogs_per_trunk": 1000, "new_dialogs_trunk_burst": 100000}
    return Firewall(make_config(trunk0={"rate_limit": loose, "methods": [
        "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "MESSAGE"]},
        firewall={"pike": {"enabled": False}}))


def run(fw: Firewall, data: bytes) -> tuple[str, int]:
    try:
        msg = parse_message(data)
    except SipParseError as exc:
        rule = fw.unparseable(SRC, exc.status, exc.reason, 0.0)
        assert rule.startswith("sanity.")
        assert 400 <= exc.status < 600
        return "parse", exc.status
    if not isinstance(msg, SipRequest):
        return "response", msg.status
    v = fw.inspect(msg, SRC, False, 0.0)
    return v.action, v.status


def test_rfc4475_vectors() -> None:
    fw = firewall()
    for name, cls, data in rfc4475_vectors():
        action, status = run(fw, data)
        if name in EXPECTED:
            assert (action, status) == EXPECTED[name], name
        elif cls == "invalid" and name not in ("baddate.dat", "bigcode.dat", "scalarlg.dat"):
            assert action == "parse" and status in (400, 505), name
        elif name in ("insuf.dat", "multi01.dat", "mcl01.dat"):
            assert (action, status) == ("parse", 400), name
    c = fw.counters()
    assert c["sanity.cseq_method"] == 2 and c["sanity.duplicate_header"] == 1
    assert c["sanity.required_header"] == 1 and c["sanity.version"] == 1


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_mutation_corpus_never_escapes(seed: int) -> None:
    fw = firewall()
    outcomes: dict[str, int] = {}
    for _, data in mutations(700, seed):
        action, _ = run(fw, data)
        outcomes[action] = outcomes.get(action, 0) + 1
    assert outcomes.get("parse", 0) > 200 and outcomes.get("accept", 0) > 20
    assert outcomes.get("reject", 0) + outcomes.get("drop", 0) > 20
