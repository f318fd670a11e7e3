"""SIPp and Kamailio (mutual TLS) around srtpgw, signalling only (SIPp cannot do SRTP).

Inbound: SIPp UAC (UDP) -> Kamailio -> TLS -> srtpgw secure side -> legacy side (UDP) -> SIPp UAS.
The secure-side offer carries an ``a=crypto`` line; the legacy side must see a plain RTP/AVP
offer with no keys and none of the caller's addresses, and the secure side an SDES answer made
from the gateway's own keys.
Outbound: SIPp UAC (UDP) -> srtpgw legacy side -> secure side -> TLS (the gateway's client
certificate) -> Kamailio -> SIPp UAS: the secure side gets an SDES offer, the legacy side a plain
answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.interop.capture import loopback_address
from tests.interop.conftest import Pki
from tests.interop.gateway import Gateway
from tests.interop.kamailio import Kamailio
from tests.interop.procs import Procs
from tests.interop.sipp import PLAIN, Sipp, sdes
from tests.interop.test_harness_sipp import PAIRS

pytestmark = pytest.mark.interop

ANSWERED = ("basic", "callee_bye", "hold_resume")


@dataclass
class Chain:
    gateway: Gateway
    kamailio: Kamailio
    uac_address: str


def _chain(tmp_path: Path, procs: Procs, pki: Pki, *, inbound: bool,
           uas: Sipp | None) -> Chain:
    """Kamailio and srtpgw pointing at each other; ``uas`` behind the gateway (inbound) or
    behind Kamailio (outbound)."""
    for tool in ("sipp", "kamailio"):
        require_tool(tool)
    uac_address = loopback_address()
    kam = Kamailio("carrier", tmp_path, loopback_address(), tls_target="sip:127.0.0.9:9",
                   udp_target=f"sip:{uas.addr}" if uas and not inbound else "sip:127.0.0.9:9",
                   certificate=pki.keys.peer_cert, private_key=pki.keys.peer_key,
                   ca_file=pki.keys.ca_cert)
    legacy = uas.address if uas and inbound else uac_address
    gateway = Gateway(tmp_path, pki.keys.dir,
                      legacy_peer=uas.addr if uas and inbound else f"{legacy}:9",
                      secure_peer=f"{kam.address}:{kam.tls_port}",
                      legacy_sources=[f"{legacy}/32"],
                      # Kamailio's outgoing TLS connections leave from 127.0.0.1
                      secure_sources=[f"{kam.address}/32", "127.0.0.1/32"])
    if inbound:
        kam.tls_target = f"sip:{gateway.address}:{gateway.tls_port};transport=tls"
    gateway.start(procs)
    kam.start(procs)
    if uas:
        uas.start(procs, calls=2, hold_ms=300, timeout=20)
    return Chain(gateway, kam, uac_address)


def _first(messages: str, start: str) -> str:
    """The first message in a SIPp trace whose first line starts with ``start``."""
    for block in re.split(r"\n-{10,}[^\n]*\n", messages):
        body = block.split(":\n", 1)[-1].lstrip("\n")
        if body.startswith(start):
            return body
    raise AssertionError(f"no {start!r} in the SIPp trace")


def _run(case: str, tmp_path: Path, procs: Procs, pki: Pki, inbound: bool
         ) -> tuple[Sipp, Sipp, Chain]:
    uac_xml, uas_xml, extra = PAIRS[case]
    uas_keys = PLAIN if inbound else sdes()
    uas = Sipp("uas", uas_xml, tmp_path, loopback_address(), keys={**uas_keys, **extra})
    chain = _chain(tmp_path, procs, pki, inbound=inbound, uas=uas)
    uac = Sipp("uac", uac_xml, tmp_path, chain.uac_address, keys=sdes() if inbound else PLAIN)
    target = chain.kamailio.udp_addr if inbound else chain.gateway.udp_uri_host
    uac.start(procs, target, calls=2, rate=5, hold_ms=300, timeout=20)
    assert uac.wait(25) == 0, uac.report() + uas.report() + procs.tails()
    assert uas.wait(15) == 0, uas.report() + procs.tails()
    return uac, uas, chain


@pytest.mark.parametrize("case", sorted(PAIRS))
def test_sipp_kamailio_tls_gateway(case: str, tmp_path: Path, procs: Procs, pki: Pki) -> None:
    uac, uas, chain = _run(case, tmp_path, procs, pki, inbound=True)
    invite = _first(uas.messages(), "INVITE ")
    assert "m=audio" in invite and "RTP/AVP" in invite
    assert "a=crypto" not in invite and "RTP/SAVP" not in invite
    assert uac.address not in invite and chain.kamailio.address not in invite  # topology hidden
    if case in ANSWERED:
        answer = _first(uac.messages(), "SIP/2.0 200 ")
        assert "RTP/SAVP" in answer
        assert re.search(r"a=crypto:\d+ AES_CM_128_HMAC_SHA1_80 inline:", answer)
        assert uas.address not in answer


@pytest.mark.parametrize("case", sorted(PAIRS))
def test_sipp_gateway_tls_kamailio(case: str, tmp_path: Path, procs: Procs, pki: Pki) -> None:
    uac, uas, _ = _run(case, tmp_path, procs, pki, inbound=False)
    invite = _first(uas.messages(), "INVITE ")
    assert "RTP/SAVP" in invite
    assert re.search(r"a=crypto:\d+ AES_CM_128_HMAC_SHA1_80 inline:", invite)
    assert uac.address not in invite
    if case in ANSWERED:
        answer = _first(uac.messages(), "SIP/2.0 200 ")
        assert "RTP/AVP" in answer and "a=crypto" not in answer and "RTP/SAVP" not in answer
        assert uas.address not in answer


def test_gateway_rejects_plain_offer_on_srtp_trunk(tmp_path: Path, procs: Procs,
                                                   pki: Pki) -> None:
    chain = _chain(tmp_path, procs, pki, inbound=True, uas=None)
    uac = Sipp("uac", "uac_488.xml", tmp_path, chain.uac_address, keys=dict(PLAIN))
    uac.start(procs, chain.kamailio.udp_addr, calls=1, timeout=15)
    assert uac.wait(20) == 0, uac.report() + procs.tails()


def test_gateway_drops_peer_with_wrong_identity(tmp_path: Path, procs: Procs, pki: Pki) -> None:
    """Kamailio with a valid chain but another identity (sip:rogue.srtpgw.test): the secure
    trunk wants sip:peer.srtpgw.test, so the gateway admits nothing and nothing reaches the
    legacy side; the firewall says why."""
    for tool in ("sipp", "kamailio"):
        require_tool(tool)
    rogue = pki.mint_peer("rogue.srtpgw.test")
    uas = Sipp("uas", "uas_basic.xml", tmp_path, loopback_address(), keys=dict(PLAIN))
    kam = Kamailio("carrier", tmp_path, loopback_address(), tls_target="",
                   udp_target="sip:127.0.0.9:9", certificate=rogue, private_key=rogue,
                   ca_file=pki.keys.ca_cert)
    gateway = Gateway(tmp_path, pki.keys.dir, legacy_peer=uas.addr,
                      secure_peer=f"{kam.address}:{kam.tls_port}",
                      legacy_sources=[f"{uas.address}/32"],
                      secure_sources=[f"{kam.address}/32", "127.0.0.1/32"])
    kam.tls_target = f"sip:{gateway.address}:{gateway.tls_port};transport=tls"
    gateway.start(procs)
    kam.start(procs)
    uas.start(procs, calls=1, timeout=8)
    uac = Sipp("uac", "uac_basic.xml", tmp_path, loopback_address(), keys=sdes())
    uac.start(procs, kam.udp_addr, calls=1, timeout=5)
    assert uac.wait(10) != 0
    uas.wait(10)
    assert "INVITE" not in uas.messages()
    assert gateway.proc is not None
    log = gateway.proc.output()
    assert "firewall.acl.unknown_source" in log and "identity-mismatch" in log, log[-2000:]
