"""SDP (RFC 4566 §9) and SDES (RFC 4568 §9) grammar as regexes, each under the rule it encodes.

Only the rules the gateway interprets are here; every other line is kept verbatim by the parser.
Patterns match whole values (use ``fullmatch``) and never backtrack catastrophically: each
repetition is over a character class that cannot overlap its neighbour.
"""

from __future__ import annotations

import re

# token-char = %x21 / %x23-27 / %x2A-2B / %x2D-2E / %x30-39 / %x41-5A / %x5E-7E
# token      = 1*(token-char)
TOKEN = r"[!#-'*+\-.0-9A-Z^-~]+"

# non-ws-string = 1*(VCHAR/%x80-FF)
NON_WS = r"[!-~\x80-\xff]+"

# byte-string = 1*(%x01-09/%x0B-0C/%x0E-FF)   ; any byte except NUL, CR, LF
BYTE_STRING = r"[\x01-\x09\x0b\x0c\x0e-\xff]*"

# A line: <type>=<value>, type = one lower-case letter (RFC 4566 §5).
LINE = re.compile(rf"([a-z])=({BYTE_STRING})")

# proto-version = %x76 "=" 1*DIGIT CRLF
VERSION = re.compile(r"0")

# origin-field = %x6f "=" username SP sess-id SP sess-version SP nettype SP addrtype SP
#                unicast-address CRLF
# sess-id = 1*DIGIT ; sess-version = 1*DIGIT ; nettype = token ; addrtype = token
ORIGIN = re.compile(rf"({NON_WS}) ([0-9]{{1,20}}) ([0-9]{{1,20}}) ({TOKEN}) ({TOKEN}) ({NON_WS})")

# connection-field = [%x63 "=" nettype SP addrtype SP connection-address CRLF]
# connection-address = multicast-address / unicast-address   (with optional /ttl[/count])
CONNECTION = re.compile(rf"({TOKEN}) ({TOKEN}) ([!-.0-~\x80-\xff]+)"
                        r"(/[0-9]{1,5}(?:/[0-9]{1,5})?)?")

# media-field = %x6d "=" media SP port ["/" integer] SP proto 1*(SP fmt) CRLF
# media = token ; port = 1*DIGIT ; proto = token *("/" token) ; fmt = token
MEDIA = re.compile(rf"({TOKEN}) ([0-9]{{1,5}})(?:/([0-9]{{1,5}}))? ({TOKEN}(?:/{TOKEN})*)"
                   rf"((?: {TOKEN})*) ?")

# attribute = (att-field ":" att-value) / att-field ; att-field = token ; att-value = byte-string
ATTRIBUTE = re.compile(rf"({TOKEN})(?::({BYTE_STRING}))?")

# rtpmap-value = payload-type SP encoding-name "/" clock-rate [ "/" encoding-params ]
RTPMAP = re.compile(r"([0-9]{1,3}) ([^\s/]+)/([0-9]{1,9})(?:/([0-9]{1,3}))?")

# fmtp-value = fmt SP format-specific-params
FMTP = re.compile(rf"({TOKEN}) ?({BYTE_STRING})")

# RFC 3605: rtcp-attribute = "a=rtcp:" port [nettype space addrtype space connection-address] CRLF
RTCP = re.compile(rf"([0-9]{{1,5}})(?: ({TOKEN}) ({TOKEN}) ({NON_WS}))?")

# ptime = "a=ptime:" packet-time (milliseconds, RFC 4566 §6; fractions seen in the wild)
PTIME = re.compile(r"[0-9]{1,5}(?:\.[0-9]{1,3})?")

# RFC 4568 §9.1:
# a=crypto:<tag> <crypto-suite> <key-params> [<session-params>]
# tag          = 1*9DIGIT
# crypto-suite = 1*(ALPHA / DIGIT / "_")
# key-params   = key-param *(";" key-param)
# session-param = 1*(VCHAR)   ; separated by WSP
CRYPTO = re.compile(r"([0-9]{1,9})[ \t]+([A-Za-z0-9_]+)[ \t]+([!-~]+)((?:[ \t]+[!-~]+)*)[ \t]*")

# key-param    = key-method ":" key-info ; key-method = "inline" / key-method-ext
# srtp-key-info = key-salt ["|" lifetime] ["|" mki]
# key-salt     = 1*(base64)  ; base64 = ALPHA / DIGIT / "+" / "/" / "="
# lifetime     = ["2^"] 1*(DIGIT)
# mki          = mki-value ":" mki-length ; mki-value = 1*DIGIT ; mki-length = 1*3DIGIT
KEY_PARAM = re.compile(r"(inline):([A-Za-z0-9+/]+={0,2})(?:\|(2\^)?([0-9]{1,20}))?"
                       r"(?:\|([0-9]{1,20}):([0-9]{1,3}))?", re.I)

# srtp-session-param = kdr / "UNENCRYPTED_SRTP" / "UNENCRYPTED_SRTCP" / "UNAUTHENTICATED_SRTP"
#                      / fec-order / fec-key / wsh / srtp-session-extension
# kdr = "KDR=" 1*2DIGIT ; wsh = "WSH=" 2*DIGIT
KDR = re.compile(r"KDR=([0-9]{1,2})")
WSH = re.compile(r"WSH=([0-9]{2,9})")
