"""The SIP message trace (``sip.message`` debug events): one per message each way with its
transport, peer, connection, first line and Call-ID; the optional text never carries an SDES
key or credentials (the marked values below must not appear in any rendered record)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
import uvloop

from gateway.config import LoggingSection
from gateway.ops.log import KeyValueFormatter
from gateway.sip.transport import Target
from tests.integration.test_sip_helpers import (
    GATEWAY_ID,
    Answering,
    Keys,
    capture,
    config,
    make_keys,
    request,
    started,
)

pytestmark = pytest.mark.filterwarnings("ignore:Overriding the \"event_loop_policy\"")

KEY = "MARKEDKEYmarkedkeyMARKEDKEYmarkedkeyMARK"          # 40 base64 chars, as SDES writes
SECRET = "markedresponse0123456789abcdef"


@pytest.fixture(scope="module")
def event_loop_policy() -> uvloop.EventLoopPolicy:
    return uvloop.EventLoopPolicy()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest.mark.parametrize("transport", ["udp", "tls"])
async def test_each_message_traced_without_keys_or_credentials(keys: Keys,
                                                               transport: str) -> None:
    cfg = dataclasses.replace(config(keys), logging=LoggingSection(sip_message_text=True))
    server = await started(cfg, Answering())
    client = await started(cfg, Answering())
    body = (f"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio 4000 RTP/SAVP 0\r\n"
            f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^31|1:1\r\n").encode()
    req = request("MESSAGE", "trace-1", body)
    req.headers.add("Content-Type", "application/sdp")
    req.headers.add("Authorization", f'Digest username="a", realm="r", nonce="n",\r\n'
                    f' uri="sip:svc@gateway.srtpgw.test", response="{SECRET}"')
    req.headers.add("Proxy-Authorization", f'Digest username="a", response="{SECRET}"')
    try:
        host, port = server.bound(transport)
        with capture() as cap:
            resp = await asyncio.wait_for(client.request(req, Target(
                transport, host, port, tls_identity=(GATEWAY_ID,))), 5)  # type: ignore[arg-type]
            assert resp.status == 200
        events = cap.events("sip.message")
        rendered = "\n".join(KeyValueFormatter().format(r) for r in cap.records)
    finally:
        await client.stop()
        await server.stop()
    requests = [e for e in events if str(e["first_line"]).startswith("MESSAGE ")]
    responses = [e for e in events if str(e["first_line"]).startswith("SIP/2.0 200")]
    assert sorted(e["direction"] for e in requests) == ["in", "out"]
    assert sorted(e["direction"] for e in responses) == ["in", "out"]
    for e in requests + responses:
        assert e["call_id"] == "trace-1" and e["transport"] == transport
        assert (e["connection"] is None) == (transport == "udp")
    text = str(requests[0]["text"])
    assert "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:<redacted>" in text
    assert "Authorization: <redacted>" in text and "Proxy-Authorization: <redacted>" in text
    assert KEY not in rendered and SECRET not in rendered and "Digest" not in rendered
