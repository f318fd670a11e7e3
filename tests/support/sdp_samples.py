"""Realistic SDP bodies in the styles of common phones, PBXs and trunks (written for these tests,
modelled on what such devices put on the wire). Keys are fixed test values, never real ones."""

from __future__ import annotations

_AES256_KEY = "9lpr+PQLAbh3V83lNIPQV+FELzvWfUldIEe398Mp4FcuiMGICEJnBq87jfKRXA=="
_FINGERPRINT = ("D1:2C:BE:AD:C4:F6:64:5C:25:16:11:9C:AF:E7:0F:73:79:36:4E:9C:1E:15:54:39:0C:06:"
                "8B:ED:96:86:00:39")


def _crlf(text: str) -> bytes:
    return "".join(line.strip() + "\r\n" for line in text.strip().splitlines()).encode()


# baresip 1.0 with mediaenc=srtp-mand: RTP/SAVP, two SDES suites, rtcp-mux, session-level c=.
BARESIP_SRTP = _crlf("""
v=0
o=- 1863427841 2981235812 IN IP4 192.168.10.21
s=-
c=IN IP4 192.168.10.21
t=0 0
a=tool:baresip 1.0.0
m=audio 10336 RTP/SAVP 0 8 101
b=AS:64
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=sendrecv
a=label:1
a=rtcp-rsize
a=rtcp-mux
a=ssrc:1409711297 cname:ccbcd4d1-5b36-4e57-8e73-3b8e63a58d0e
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:uCRNAomB1pOve0Vq+O+kytY9KC4Z/xSULCRuUNk1
a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:e1S2aDbB+90T0kQdnhQ03GLKZ3+2j1/makZLqt7N
a=ptime:20
""")

# Asterisk (chan_pjsip) plain RTP offer from a legacy PBX: G.722 first, maxptime, sendrecv.
ASTERISK_RTP = _crlf("""
v=0
o=- 1689345221 1689345221 IN IP4 10.20.0.5
s=Asterisk
c=IN IP4 10.20.0.5
t=0 0
m=audio 17458 RTP/AVP 9 0 8 101
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=maxptime:150
a=sendrecv
""")

# Asterisk with media_encryption=sdes: lifetime-free keys, both SHA1 suites, explicit a=rtcp.
ASTERISK_SRTP = _crlf("""
v=0
o=- 1689345300 1689345300 IN IP4 10.20.0.5
s=Asterisk
c=IN IP4 10.20.0.5
t=0 0
m=audio 17460 RTP/SAVP 0 101
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:+rhIybZXqFPuN8Ccv90UnQs4B7GR3em2I8zZUoHd
a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:5Fv1gX3flKovekBwcfDu3GvrmPdotM0z0RdtRNFW
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=rtcp:17461
a=sendrecv
""")

# Cisco CUBE/CUCM style: o= with a product user name, media-level c=, audio + video,
# SHA1_32 first with a 2^31 lifetime, b=TIAS.
CISCO_SRTP_VIDEO = _crlf("""
v=0
o=CiscoSystemsCCM-SIP 2000 1 IN IP4 172.16.5.10
s=SIP Call
t=0 0
m=audio 24580 RTP/SAVP 0 8 101
c=IN IP4 172.16.5.11
b=TIAS:64000
a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:tbjHJVB7WxMVjgINlv5M+/bXdOCRYeK1mbjzWuMf|2^31
a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:CV8+RIpV+iw8cEnAHc8S+4fERHfPNnmTEyynTJKi|2^31
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=ptime:20
m=video 24582 RTP/SAVP 126
c=IN IP4 172.16.5.11
b=TIAS:1000000
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:e1S2aDbB+90T0kQdnhQ03GLKZ3+2j1/makZLqt7N|2^31
a=rtpmap:126 H264/90000
a=fmtp:126 profile-level-id=42801E;packetization-mode=1
a=rtcp-fb:* nack pli
a=content:main
a=label:11
""")

# Polycom VVX style: MKI on the keys (libsrtp-based stacks without MKI must decline these),
# plus one MKI-free line, and the session name of the product.
POLYCOM_SRTP_MKI = _crlf("""
v=0
o=- 1700301234 1700301234 IN IP4 192.168.20.33
s=Polycom IP Phone
c=IN IP4 192.168.20.33
t=0 0
a=sendrecv
m=audio 2222 RTP/SAVP 9 0 8 18 127
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:18 G729/8000
a=fmtp:18 annexb=no
a=rtpmap:127 telephone-event/8000
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:uCRNAomB1pOve0Vq+O+kytY9KC4Z/xSULCRuUNk1|2^31|1:1
a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:5Fv1gX3flKovekBwcfDu3GvrmPdotM0z0RdtRNFW|2^31|1:1
a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:+rhIybZXqFPuN8Ccv90UnQs4B7GR3em2I8zZUoHd|2^31
""")

# A modern trunk offering AES-GCM (RFC 7714) and AES-256 (RFC 6188) suites, padded base64.
TRUNK_GCM = _crlf(f"""
v=0
o=sbc 42 7 IN IP4 203.0.113.7
s=session
c=IN IP4 203.0.113.7
t=0 0
m=audio 40000 RTP/SAVP 8 0 101
a=rtpmap:8 PCMA/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=crypto:1 AEAD_AES_256_GCM inline:Nl0Rod/mELYO+plhNtN6uK/ScVuMa8KFDcXmAFtwK7n1mw8wbsssQ+5ExCk=
a=crypto:2 AEAD_AES_128_GCM inline:WBUIfflbfAT88+icPL7o/BC9FaSyafKRlwkWfQ==
a=crypto:3 AES_256_CM_HMAC_SHA1_80 inline:{_AES256_KEY}
a=crypto:4 AES_CM_128_HMAC_SHA1_80 inline:uCRNAomB1pOve0Vq+O+kytY9KC4Z/xSULCRuUNk1
a=ptime:20
a=sendrecv
""")

# Fax switch-over re-INVITE: audio disabled with port 0, T.38 over UDPTL.
T38_REINVITE = _crlf("""
v=0
o=- 1689345221 1689345222 IN IP4 10.20.0.5
s=Asterisk
c=IN IP4 10.20.0.5
t=0 0
m=audio 0 RTP/AVP 0
m=image 17470 udptl t38
a=T38FaxVersion:0
a=T38MaxBitRate:14400
a=T38FaxRateManagement:transferredTCF
a=T38FaxMaxBuffer:400
a=T38FaxMaxDatagram:400
a=T38FaxUdpEC:t38UDPRedundancy
""")

# RFC 2543-style hold from an old phone: c=0.0.0.0 and no direction attribute.
OLD_HOLD = _crlf("""
v=0
o=user 53655765 2353687638 IN IP4 192.168.1.50
s=call
c=IN IP4 0.0.0.0
t=0 0
m=audio 3456 RTP/AVP 0 8
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
""")

# RFC 3264 hold: a=sendonly, RFC 3605 a=rtcp with an explicit address, an unknown attribute.
HOLD_SENDONLY = _crlf("""
v=0
o=alice 2890844526 2890844527 IN IP4 198.51.100.1
s=-
i=A call about fax machines
u=http://example.com/alice
e=alice@example.com
p=+1 617 555 6011
c=IN IP4 198.51.100.1
t=0 0
a=x-vendor-session:42
m=audio 49170 RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=rtcp:53020 IN IP4 198.51.100.2
a=x-custom:keep me
a=sendonly
""")

# A WebRTC-ish DTLS-SRTP offer (baresip dtls_srtp / browser gateway style) with ICE attributes.
DTLS_OFFER = _crlf(f"""
v=0
o=- 4611731400430051336 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0
a=ice-lite
m=audio 9 UDP/TLS/RTP/SAVPF 111 0
c=IN IP4 192.0.2.10
a=ice-ufrag:EsAw
a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1
a=fingerprint:SHA-256 {_FINGERPRINT}
a=setup:actpass
a=mid:0
a=rtpmap:111 opus/48000/2
a=rtpmap:0 PCMU/8000
a=rtcp-mux
a=candidate:1 1 udp 2113937151 192.0.2.10 9 typ host
""")

ALL = {
    "baresip_srtp": BARESIP_SRTP,
    "asterisk_rtp": ASTERISK_RTP,
    "asterisk_srtp": ASTERISK_SRTP,
    "cisco_srtp_video": CISCO_SRTP_VIDEO,
    "polycom_srtp_mki": POLYCOM_SRTP_MKI,
    "trunk_gcm": TRUNK_GCM,
    "t38_reinvite": T38_REINVITE,
    "old_hold": OLD_HOLD,
    "hold_sendonly": HOLD_SENDONLY,
    "dtls_offer": DTLS_OFFER,
}
