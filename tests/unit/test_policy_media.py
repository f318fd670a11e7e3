"""Media policy: secure trunks never get plain RTP; suite allow-list; SRTP failure events."""

from __future__ import annotations

import io
import json
from dataclasses import replace

from gateway.policy.events import attach_siem, detach_siem
from gateway.policy.media import MediaStream, SrtpWatch, check_media
from tests.security.policy_configs import make_config

SAVP = "RTP/SAVP"


def test_secure_sdes_trunk_refuses_plain_and_unknown_suites() -> None:
    carrier = make_config().trunk("carrier")
    assert not check_media(carrier, [MediaStream("RTP/AVP")]).ok
    d = check_media(carrier, [MediaStream(SAVP, ("AES_CM_128_HMAC_SHA1_32", "F8_128_HMAC_SHA1_80",
                                                 "NULL"))])
    assert not d.ok and d.status == 488 and "no acceptable SRTP suite" in d.reason
    ok = check_media(carrier, [MediaStream(SAVP, ("AES_CM_128_HMAC_SHA1_32",
                                                  "AES_CM_128_HMAC_SHA1_80"))])
    assert ok.ok and ok.suites == (("AES_CM_128_HMAC_SHA1_80",),)


def test_disabled_streams_ignored_but_one_needed() -> None:
    carrier = make_config().trunk("carrier")
    assert check_media(carrier, [MediaStream("RTP/AVP", port=0),
                                 MediaStream(SAVP, ("AEAD_AES_128_GCM",))]).ok
    assert not check_media(carrier, [MediaStream(SAVP, ("AEAD_AES_128_GCM",), port=0)]).ok


def test_secure_srtp_optional_still_refuses_plain() -> None:
    carrier = replace(make_config().trunk("carrier"), media="srtp-optional")
    assert not check_media(carrier, [MediaStream("RTP/AVP")]).ok


def test_legacy_srtp_optional_accepts_plain() -> None:
    pbx = make_config(trunk0={"media": "srtp-optional", "allow_sdes_over_insecure": True}
                      ).trunk("pbx")
    assert check_media(pbx, [MediaStream("RTP/AVP")]).ok
    assert check_media(pbx, [MediaStream("RTP/AVP", ("AEAD_AES_128_GCM",))]).ok
    assert not check_media(pbx, [MediaStream(SAVP, ("NULL",))]).ok


def test_dtls_trunk() -> None:
    t = make_config(trunk1={"media": "dtls-srtp"}).trunk("carrier")
    assert check_media(t, [MediaStream("UDP/TLS/RTP/SAVPF", fingerprint=True)]).ok
    assert not check_media(t, [MediaStream("UDP/TLS/RTP/SAVP")]).ok
    assert not check_media(t, [MediaStream(SAVP, ("AEAD_AES_128_GCM",))]).ok


def test_plain_trunk() -> None:
    pbx = make_config().trunk("pbx")
    assert check_media(pbx, [MediaStream("RTP/AVP")]).ok
    assert not check_media(pbx, [MediaStream("UDP/TLS/RTP/SAVP", fingerprint=True)]).ok


def test_srtp_watch_threshold_events() -> None:
    buf = io.StringIO()
    h = attach_siem(stream=buf)
    try:
        w = SrtpWatch(threshold=50)
        assert not w.report("c1", "a", "carrier", 30, 19)
        assert w.report("c1", "a", "carrier", 40, 10, source="127.0.0.9:4000")
        assert not w.report("c1", "a", "carrier", 60, 10)
        assert w.report("c1", "a", "carrier", 60, 40)
        assert w.report("c1", "b", "carrier", 0, 50)
        w.forget("c1")
        assert w.report("c1", "a", "carrier", 50, 0)
    finally:
        detach_siem(h)
    docs = [json.loads(x) for x in buf.getvalue().splitlines()]
    assert [d["kind"] for d in docs] == ["srtp.auth_failures"] * 4
    assert docs[0]["auth_failures"] == 40 and docs[0]["replays"] == 10
    assert docs[0]["source"] == "127.0.0.9:4000"


def test_report_session_from_relay_stats() -> None:
    from gateway.media.api import SessionStats, StreamStats

    stats = SessionStats("s1", ((StreamStats(auth_failures=70, latched_rtp=("127.0.0.1", 4000),
                                             failed_source=("127.0.0.9", 7)),),
                                (StreamStats(replays=10),)))
    buf = io.StringIO()
    h = attach_siem(stream=buf)
    try:
        w = SrtpWatch(threshold=50)
        assert w.report_session("c9", ("carrier", "pbx"), stats) == 1
        assert w.report_session("c9", ("carrier", "pbx"), stats) == 0
    finally:
        detach_siem(h)
    doc = json.loads(buf.getvalue())
    # the source that failed, not the legitimate latched peer
    assert (doc["leg"], doc["trunk"], doc["source"]) == ("0.0", "carrier", "127.0.0.9:7")
