"""One trunk classifier: the B2BUA (where no firewall verdict exists, e.g. a stray 2xx) decides
exactly as the firewall's Acl does, including "identity and fingerprint" when both are set."""

from __future__ import annotations

import pytest

from gateway.b2bua.b2bua import B2bua
from gateway.config import Config
from gateway.media.relay import MediaRelay
from gateway.policy.acl import Acl, Source
from gateway.sip.stack import IncomingRequest, SipStack
from gateway.sip.transport import MessageSource
from tests.security.policy_configs import make_config

FP = "AB:" * 31 + "CD"
GOOD = FP.replace(":", "").lower()
OTHER = "00" * 32

SOURCES = [
    MessageSource("udp", "legacy", "127.0.0.1", 5070),
    MessageSource("udp", "legacy", "10.1.2.3", 5070),
    MessageSource("udp", "legacy", "192.0.2.1", 5070),
    MessageSource("tls", "secure", "127.0.0.1", 40000, 7, ("sip:carrier.example.test",), GOOD),
    MessageSource("tls", "secure", "127.0.0.1", 40000, 7, ("sip:carrier.example.test",), OTHER),
    MessageSource("tls", "secure", "127.0.0.1", 40000, 7, ("sip:carrier.example.test",), None),
    MessageSource("tls", "secure", "127.0.0.1", 40000, 7, ("sip:intruder.test",), GOOD),
    MessageSource("tls", "secure", "127.0.0.1", 40000, 7, (), GOOD),
    MessageSource("tls", "legacy", "127.0.0.1", 40000, 7, ("sip:carrier.example.test",), GOOD),
]
CONFIGS = {
    "identity": make_config(),
    "fingerprint": make_config(trunk1={"tls_identity": [], "tls_fingerprints": [FP]}),
    "both": make_config(trunk1={"tls_fingerprints": [FP]}),
}


def acl_trunk(cfg: Config, src: MessageSource) -> str | None:
    t = Acl(cfg).classify(Source(src.listener, src.transport, src.ip, src.port,
                                 src.tls_identities, src.tls_fingerprint))
    return t.name if t else None


def b2bua(cfg: Config) -> B2bua:
    def unused(incoming: IncomingRequest) -> None:
        raise AssertionError("no request expected")

    return B2bua(cfg, SipStack(cfg, unused), MediaRelay(cfg.media), clock=lambda: 0.0)


@pytest.mark.parametrize("name", sorted(CONFIGS))
async def test_b2bua_classifies_like_the_firewall(name: str) -> None:
    cfg = CONFIGS[name]
    b = b2bua(cfg)
    got = [(t.name if (t := b.classify(s)) else None) for s in SOURCES]
    assert got == [acl_trunk(cfg, s) for s in SOURCES]


async def test_both_identity_and_fingerprint_must_match() -> None:
    b = b2bua(CONFIGS["both"])
    assert [(t.name if (t := b.classify(s)) else None) for s in SOURCES[3:8]] == [
        "carrier", None, None, None, None]


async def test_reload_changes_the_classification() -> None:
    b = b2bua(CONFIGS["identity"])
    pinned = SOURCES[4]  # right identity, fingerprint not pinned
    assert b.classify(pinned) is not None
    b.reload(CONFIGS["both"])
    assert b.classify(pinned) is None
