"""Harness self-test: SIPp -> Kamailio (UDP in, mutual TLS out) -> Kamailio (TLS in) -> SIPp.

The second Kamailio stands where the gateway's secure side will be, so every SIPp scenario is
proven over the same TLS hop before srtpgw is put in the middle.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.interop.conftest import Pki
from tests.interop.kamailio import Kamailio
from tests.interop.procs import Procs
from tests.interop.sipp import PLAIN, Sipp, sdes
from tests.interop.test_harness_sipp import PAIRS


def _relays(tmp_path: Path, pki: Pki, uas: Sipp) -> tuple[Kamailio, Kamailio]:
    certs = dict(certificate=pki.keys.peer_cert, private_key=pki.keys.peer_key,
                 ca_file=pki.keys.ca_cert)
    far = Kamailio("far", tmp_path, "127.0.0.5", tls_target="sip:127.0.0.9:9;transport=tls",
                   udp_target=f"sip:{uas.addr}", **certs)
    near = Kamailio("near", tmp_path, "127.0.0.4", tls_target=far.tls_uri,
                    udp_target="sip:127.0.0.9:9", **certs)
    return near, far


@pytest.mark.interop
@pytest.mark.parametrize("case", sorted(PAIRS))
def test_sipp_through_kamailio_tls(case: str, tmp_path: Path, procs: Procs, pki: Pki) -> None:
    require_tool("sipp")
    require_tool("kamailio")
    uac_xml, uas_xml, extra = PAIRS[case]
    uas = Sipp("uas", uas_xml, tmp_path, "127.0.0.3", keys={**PLAIN, **extra})
    uac = Sipp("uac", uac_xml, tmp_path, "127.0.0.2", keys=sdes())
    near, far = _relays(tmp_path, pki, uas)
    far.start(procs)
    near.start(procs)
    uas.start(procs, calls=2, hold_ms=300, timeout=15)
    uac.start(procs, near.udp_addr, calls=2, rate=5, hold_ms=300, timeout=15)
    assert uac.wait(20) == 0, uac.report() + uas.report() + procs.tails()
    assert uas.wait(10) == 0, uas.report()
    assert "Record-Route: <sip:127.0.0.5" in uas.messages()  # it really went through both
    assert "transport=tls" in uas.messages()
