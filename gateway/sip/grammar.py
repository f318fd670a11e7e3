"""RFC 3261 §25 grammar as regular expressions, each under the ABNF rule it implements.

Header values reach these patterns already unfolded (every ``CRLF 1*WSP`` replaced by one SP),
so ``LWS`` reduces to ``[ \\t]*``. Text is decoded as UTF-8 with ``surrogateescape`` so any octet
round-trips; UTF8-NONASCII therefore matches every code point above U+007F.
"""

from __future__ import annotations

import re

# LWS  =  [*WSP CRLF] 1*WSP ; linear whitespace
# SWS  =  [LWS] ; sep whitespace
SWS = r"[ \t]*"

# token       =  1*(alphanum / "-" / "." / "!" / "%" / "*"
#                / "_" / "+" / "`" / "'" / "~" )
TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
TOKEN_RE = re.compile(TOKEN)

# word        =  1*(alphanum / "-" / "." / "!" / "%" / "*" /
#                "_" / "+" / "`" / "'" / "~" /
#                "(" / ")" / "<" / ">" /
#                ":" / "\" / DQUOTE /
#                "/" / "[" / "]" / "?" /
#                "{" / "}" )
WORD = r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+"

# quoted-string  =  SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE
# qdtext         =  LWS / %x21 / %x23-5B / %x5D-7E / UTF8-NONASCII
# quoted-pair    =  "\" (%x00-09 / %x0B-0C / %x0E-7F)
QUOTED_STRING = r'"(?:[ \t\x21\x23-\x5b\x5d-\x7e\x80-\U0010ffff]|\\[\x00-\x09\x0b\x0c\x0e-\x7f])*"'

# Method            =  INVITEm / ACKm / OPTIONSm / BYEm
#                      / CANCELm / REGISTERm
#                      / extension-method
# extension-method  =  token
METHOD_RE = re.compile(TOKEN)

# SIP-Version    =  "SIP" "/" 1*DIGIT "." 1*DIGIT
SIP_VERSION_RE = re.compile(r"SIP/[0-9]+\.[0-9]+")

# Status-Code     =  Informational / Redirection / Success / Client-Error
#                    / Server-Error / Global-Failure / extension-code
# extension-code  =  3DIGIT
STATUS_CODE_RE = re.compile(r"[1-6][0-9][0-9]")

# Reason-Phrase   =  *(reserved / unreserved / escaped
#                    / UTF8-NONASCII / UTF8-CONT / SP / HTAB)
REASON_PHRASE_RE = re.compile(r"[^\x00-\x08\x0a-\x1f\x7f]*")

# message-header  =  (... / extension-header) CRLF
# extension-header  =  header-name HCOLON header-value
# header-name       =  token
# HCOLON  =  *( SP / HTAB ) ":" SWS
HEADER_LINE_RE = re.compile(r"(" + TOKEN + r")[ \t]*:[ \t]*(.*)", re.S)

# hostname         =  *( domainlabel "." ) toplabel [ "." ]
# domainlabel      =  alphanum / alphanum *( alphanum / "-" ) alphanum
# toplabel         =  ALPHA / ALPHA *( alphanum / "-" ) alphanum
# IPv4address    =  1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT
# IPv6reference  =  "[" IPv6address "]"
# host             =  hostname / IPv4address / IPv6reference
# (hostname accepts "_" as deployed DNS does)
LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_\-]*[A-Za-z0-9_])?"
HOST = r"(?:" + LABEL + r"(?:\." + LABEL + r")*\.?|\[[0-9A-Fa-f:.]+\])"
HOST_RE = re.compile(HOST)
IPV4_RE = re.compile(r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}")
IPV6_RE = re.compile(r"[0-9A-Fa-f:.]+")

# port           =  1*DIGIT
# hostport       =  host [ ":" port ]
HOSTPORT_RE = re.compile(r"(" + HOST + r")(?::([0-9]{1,5}))?")

# escaped     =  "%" HEXDIG HEXDIG
ESCAPED = r"%[0-9A-Fa-f]{2}"
# unreserved  =  alphanum / mark
# mark        =  "-" / "_" / "." / "!" / "~" / "*" / "'" / "(" / ")"
UNRESERVED = r"A-Za-z0-9\-_.!~*'()"

# userinfo         =  ( user / telephone-subscriber ) [ ":" password ] "@"
# user             =  1*( unreserved / escaped / user-unreserved )
# user-unreserved  =  "&" / "=" / "+" / "$" / "," / ";" / "?" / "/"
# password         =  *( unreserved / escaped / "&" / "=" / "+" / "$" / "," )
USER_RE = re.compile(r"(?:[" + UNRESERVED + r"&=+$,;?/]|" + ESCAPED + r")+")
PASSWORD_RE = re.compile(r"(?:[" + UNRESERVED + r"&=+$,]|" + ESCAPED + r")*")

# uri-parameter     =  transport-param / user-param / method-param
#                      / ttl-param / maddr-param / lr-param / other-param
# other-param       =  pname [ "=" pvalue ]
# pname             =  1*paramchar
# pvalue            =  1*paramchar
# paramchar         =  param-unreserved / unreserved / escaped
# param-unreserved  =  "[" / "]" / "/" / ":" / "&" / "+" / "$"
PARAMCHAR = r"(?:[" + UNRESERVED + r"\[\]/:&+$]|" + ESCAPED + r")+"
URI_PARAM_RE = re.compile(r";(" + PARAMCHAR + r")(?:=(" + PARAMCHAR + r"))?")

# headers         =  "?" header *( "&" header )
# header          =  hname "=" hvalue
# hname           =  1*( hnv-unreserved / unreserved / escaped )
# hvalue          =  *( hnv-unreserved / unreserved / escaped )
# hnv-unreserved  =  "[" / "]" / "/" / "?" / ":" / "+" / "$"
HNV = r"(?:[" + UNRESERVED + r"\[\]/?:+$]|" + ESCAPED + r")"
URI_HEADER_RE = re.compile(r"(" + HNV + r"+)=(" + HNV + r"*)")

# SIP-URI          =  "sip:" [ userinfo ] hostport
#                     uri-parameters [ headers ]
# SIPS-URI         =  "sips:" [ userinfo ] hostport
#                     uri-parameters [ headers ]
# (its everyday shape only: no password, escapes, user-unreserved punctuation or headers; the
# rest goes through the rule-by-rule parser)
SIP_URI_FAST_RE = re.compile(
    r"(sips?):(?:([A-Za-z0-9\-_.!~*'()&=+$,]+)@)?(" + HOST + r")(?::([0-9]{1,5}))?"
    r"((?:;[A-Za-z0-9\-_.!~*'()\[\]/:&+$]+(?:=[A-Za-z0-9\-_.!~*'()\[\]/:&+$]+)?)*)")

# absoluteURI    =  scheme ":" ( hier-part / opaque-part )
# scheme         =  ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
# opaque-part    =  uric-no-slash *uric
# uric           =  reserved / unreserved / escaped
SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+\-.]*):")
URIC_RE = re.compile(r"(?:[;/?:@&=+$,\[\]" + UNRESERVED + r"]|" + ESCAPED + r")+")

# telephone-subscriber (RFC 3966): global-number-digits / local-number-digits, then params
TEL_NUMBER_RE = re.compile(r"\+?[0-9A-Fa-f*#\-.()]+")

# generic-param  =  token [ EQUAL gen-value ]
# gen-value      =  token / host / quoted-string
# EQUAL  =  SWS "=" SWS ; SEMI  =  SWS ";" SWS
# (plus a bare IPv6address, which RFC 3261 allows in via-received)
GENERIC_PARAM_RE = re.compile(
    SWS + r";" + SWS + r"(" + TOKEN + r")(?:" + SWS + r"=" + SWS
    + r"([0-9A-Fa-f]*:[0-9A-Fa-f:.]+|" + TOKEN + r"|" + HOST + r"|" + QUOTED_STRING + r"))?")

# The common shape of the above: no LWS and no quoted-string values, so one match and a split.
# A value is a token, a host or an IPv6 address (none contain ";" or "=").
FAST_PARAMS_RE = re.compile(r"(?:;" + TOKEN + r"(?:=(?:[0-9A-Fa-f]*:[0-9A-Fa-f:.]+|"
                            r"\[[0-9A-Fa-f:.]+\]|" + TOKEN + r"))?)*")

# display-name   =  *(token LWS)/ quoted-string
# name-addr      =  [ display-name ] LAQUOT addr-spec RAQUOT
# LAQUOT  =  SWS "<"; RAQUOT  =  ">" SWS
NAME_ADDR_RE = re.compile(
    r"(" + QUOTED_STRING + r"|(?:" + TOKEN + r"(?:[ \t]+" + TOKEN + r")*)?)" + SWS
    + r"<([^<> \t]+)>")

# from-spec / to-param / contact-param / route-param: ( name-addr / addr-spec ) *( SEMI param )
# Validation-only fast path for the everyday shape (plain display name, SIP URI as in
# SIP_URI_FAST_RE with the port range checked, parameters as in FAST_PARAMS_RE). What it does
# not match goes to the full parser, so it may only ever accept a subset of the grammar.
PORT_16 = r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
_FAST_URI = (r"sips?:(?:[A-Za-z0-9\-_.!~*'()&=+$,]+@)?" + HOST + r"(?::" + PORT_16 + r")?")
_FAST_URI_PARAMS = r"(?:;[A-Za-z0-9\-_.!~*'()\[\]/:&+$]+(?:=[A-Za-z0-9\-_.!~*'()\[\]/:&+$]+)?)*"
_FAST_QUOTED = r'"[ \t\x21\x23-\x5b\x5d-\x7e\x80-\U0010ffff]*"'  # qdtext only: no controls
NAME_ADDR_FAST_RE = re.compile(
    r"(?:(?:" + _FAST_QUOTED + r"|" + TOKEN + r"(?:[ \t]+" + TOKEN + r")*)[ \t]*)?<" + _FAST_URI
    + _FAST_URI_PARAMS + r">" + FAST_PARAMS_RE.pattern
    + r"|" + _FAST_URI + FAST_PARAMS_RE.pattern)

# sent-protocol     =  protocol-name SLASH protocol-version
#                      SLASH transport
# protocol-name     =  "SIP" / token
# protocol-version  =  token
# transport         =  "UDP" / "TCP" / "TLS" / "SCTP" / other-transport
# sent-by           =  host [ COLON port ]
# SLASH  =  SWS "/" SWS ; COLON  =  SWS ":" SWS
VIA_PARM_RE = re.compile(
    r"(" + TOKEN + r")" + SWS + r"/" + SWS + r"(" + TOKEN + r")" + SWS + r"/" + SWS
    + r"(" + TOKEN + r")[ \t]+(" + HOST + r")(?:" + SWS + r":" + SWS + r"([0-9]{1,5}))?")

# CSeq  =  "CSeq" HCOLON 1*DIGIT LWS Method
CSEQ_RE = re.compile(r"([0-9]{1,10})[ \t]+(" + TOKEN + r")")

# Call-ID  =  ( "Call-ID" / "i" ) HCOLON callid
# callid   =  word [ "@" word ]
CALLID_RE = re.compile(WORD + r"(?:@" + WORD + r")?")

# Max-Forwards  =  "Max-Forwards" HCOLON 1*DIGIT
# Content-Length  =  ( "Content-Length" / "l" ) HCOLON 1*DIGIT
DIGITS_RE = re.compile(r"[0-9]{1,10}")
