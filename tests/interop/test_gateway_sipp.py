"""SIPp (UDP) -> Kamailio -> mutual TLS -> srtpgw secure side -> legacy side (UDP) -> SIPp.

Signalling only (SIPp cannot do SRTP): the secure-side offer carries an ``a=crypto`` line, the
legacy side must see a plain RTP/AVP offer with no keys and none of the caller's addresses, and
the secure side must get an SDES answer from the gateway's own keys.
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


@dataclass
class Chain:
    gateway: Gateway
    kamailio: Kamailio
    uas: Sipp | None


def _chain(tmp_path: Path, procs: Procs, pki: Pki, uas: Sipp | None, **gw: object) -> Chain:
    """Kamailio and srtpgw pointing at each other (and the gateway's legacy side at ``uas``)."""
    for tool in ("sipp", "kamailio"):
        require_tool(tool)
    kam = Kamailio("carrier", tmp_path, loopback_address(), tls_target="",
                   udp_target="sip:127.0.0.9:9", certificate=pki.keys.peer_cert,
                   private_key=pki.keys.peer_key, ca_file=pki.keys.ca_cert)
    legacy_peer = uas.addr if uas else f"{loopback_address()}:9"
    gateway = Gateway(tmp_path, pki.keys.dir, legacy_peer=legacy_peer,
                      secure_peer=f"{kam.address}:{kam.tls_port}",
                      legacy_sources=[f"{legacy_peer.split(':')[0]}/32"],
                      # Kamailio's outgoing TLS connections leave from 127.0.0.1
                      secure_sources=[f"{kam.address}/32", "127.0.0.1/32"], **gw)
    kam.tls_target = f"sip:{gateway.address}:{gateway.tls_port};transport=tls"
    gateway.start(procs)
    kam.start(procs)
    if uas:
        uas.start(procs, calls=2, hold_ms=300, timeout=20)
    return Chain(gateway, kam, uas)


def _first(messages: str, start: str) -> str:
    """The first message in a SIPp trace whose first line starts with ``start``."""
    for block in re.split(r"\n-{10,}[^\n]*\n", messages):
        body = block.split(":\n", 1)[-1].lstrip("\n")
        if body.startswith(start):
            return body
    raise AssertionError(f"no {start!r} in the SIPp trace")


@pytest.mark.parametrize("case", sorted(PAIRS))
def test_sipp_kamailio_tls_gateway(case: str, tmp_path: Path, procs: Procs, pki: Pki) -> None:
    uac_xml, uas_xml, extra = PAIRS[case]
    uas = Sipp("uas", uas_xml, tmp_path, loopback_address(), keys={**PLAIN, **extra})
    chain = _chain(tmp_path, procs, pki, uas)
    uac = Sipp("uac", uac_xml, tmp_path, loopback_address(), keys=sdes())
    uac.start(procs, chain.kamailio.udp_addr, calls=2, rate=5, hold_ms=300, timeout=20)
    assert uac.wait(25) == 0, uac.report() + uas.report() + procs.tails()
    assert uas.wait(15) == 0, uas.report() + procs.tails()

    invite = _first(uas.messages(), "INVITE ")
    assert "m=audio" in invite and "RTP/AVP" in invite
    assert "a=crypto" not in invite and "RTP/SAVP" not in invite
    assert uac.address not in invite and chain.kamailio.address not in invite  # topology hidden
    if case in ("basic", "callee_bye", "hold_resume"):
        answer = _first(uac.messages(), "SIP/2.0 200 ")
        assert "RTP/SAVP" in answer
        assert re.search(r"a=crypto:\d+ AES_CM_128_HMAC_SHA1_80 inline:", answer)
        assert uas.address not in answer


def test_gateway_rejects_plain_offer_on_srtp_trunk(tmp_path: Path, procs: Procs,
                                                   pki: Pki) -> None:
    chain = _chain(tmp_path, procs, pki, None)
    uac = Sipp("uac", "uac_488.xml", tmp_path, loopback_address(), keys=dict(PLAIN))
    uac.start(procs, chain.kamailio.udp_addr, calls=1, timeout=15)
    assert uac.wait(20) == 0, uac.report() + procs.tails()
