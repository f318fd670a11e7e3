"""Hostile SIP input: the RFC 4475 vectors (read in place) and a seeded corpus of mutations."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import rfc4475_dir

BASE_INVITE = (
    "INVITE sip:100@gateway.srtpgw.test SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-{n}\r\n"
    "Max-Forwards: 70\r\n"
    "From: <sip:alice@pbx.example.test>;tag=f{n}\r\n"
    "To: <sip:100@gateway.srtpgw.test>\r\n"
    "Call-ID: mut-{n}@pbx.example.test\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: <sip:alice@127.0.0.1:5070>\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: {length}\r\n\r\n{body}")
SDP = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


def base(n: int) -> bytes:
    return BASE_INVITE.format(n=n, length=len(SDP), body=SDP).encode()


_LWS = rb"(?:[ \t]*\r?\n)?[ \t]*"  # RFC 3261 §25.1 LWS, folding included
_TOP_VIA = re.compile(rb"(?im)^((?:via|v)" + _LWS + rb":" + _LWS + rb"SIP" + _LWS + rb"/" + _LWS
                      + rb"[0-9.]+" + _LWS + rb"/" + _LWS + rb")[A-Za-z]+" + _LWS
                      + rb"[^;,\s]+(?:" + _LWS + rb":" + _LWS + rb"[0-9]+)?")


def retarget(data: bytes, port: int) -> bytes:
    """Point the top Via at our UDP socket (127.0.0.1:port;rport) so the gateway answers us
    and never the vectors' example hosts; everything else stays as the RFC wrote it."""
    return _TOP_VIA.sub(lambda m: m.group(1) + b"UDP " + f"127.0.0.1:{port};rport".encode(),
                        data, count=1)


def rfc4475_vectors() -> list[tuple[str, str, bytes]]:
    """(file name, class, bytes) of every RFC 4475 message, from the shared directory."""
    d: Path = rfc4475_dir()
    out = []
    for line in (d / "INDEX.tsv").read_text().splitlines()[1:]:
        name, _, cls, _ = line.split("\t", 3)
        out.append((name, cls, (d / name).read_bytes()))
    return out


def _structural(n: int, rng: random.Random) -> bytes:
    msg = base(n).decode()
    head, body = msg.split("\r\n\r\n", 1)
    lines = head.split("\r\n")
    kind = rng.randrange(14)
    if kind == 0:  # duplicate a single-value header
        i = rng.randrange(1, len(lines))
        lines.insert(i, lines[i])
    elif kind == 1:  # drop a header
        del lines[rng.randrange(1, len(lines))]
    elif kind == 2:  # overlong header value
        lines.append("X-Long: " + "A" * rng.choice((9000, 70000)))
    elif kind == 3:  # many headers
        lines += [f"X-H{i}: {i}" for i in range(rng.choice((200, 2000)))]
    elif kind == 4:  # absurd Content-Length
        lines = [x for x in lines if not x.startswith("Content-Length")]
        lines.append("Content-Length: " + rng.choice(("-1", "99999999999", "1e3", "", "0x10")))
    elif kind == 5:  # scalar overflow
        lines = [("CSeq: 99999999999999 INVITE" if x.startswith("CSeq") else x) for x in lines]
    elif kind == 6:  # Max-Forwards games
        lines = [("Max-Forwards: " + rng.choice(("0", "-1", "256", "abc", "70 70"))
                  if x.startswith("Max-Forwards") else x) for x in lines]
    elif kind == 7:  # odd Request-URI
        uri = rng.choice(("<sip:a@b>", "sip:a b@c", "http://x/", "sip:" + "a" * 5000,
                          "sip:%00@x", "tel:", "sip:@", "sip:[::1", "soap.beep://x"))
        lines[0] = f"INVITE {uri} SIP/2.0"
    elif kind == 8:  # bad version or method
        lines[0] = rng.choice(("INVITE sip:a@b SIP/3.0", "INV\x00ITE sip:a@b SIP/2.0",
                               "INVITE sip:a@b", " INVITE sip:a@b SIP/2.0", "SIP/2.0 999 X"))
    elif kind == 9:  # scanner user agent
        lines.append("User-Agent: " + rng.choice(("friendly-scanner", "sipvicious", "sipcli")))
    elif kind == 10:  # folded / continuation junk
        lines.insert(1, rng.choice((" leading continuation", "\tX: y", ":novalue", "NoColon")))
    elif kind == 11:  # unknown Require
        lines.append("Require: " + rng.choice(("foo", "100rel, bar", "timer,,")))
    elif kind == 12:  # Via games
        lines[1] = rng.choice(("Via: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK",
                               "Via: SIP/2.0/UDP", "Via: ,,,", "Via: SIP/2.0/UDP h;;x",
                               "Via: " + ", ".join(f"SIP/2.0/UDP h{i};branch=z9hG4bK{i}"
                                                   for i in range(80))))
    else:  # quotes and brackets left open
        lines = [(x + ' "open' if x.startswith("From") else x) for x in lines]
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode("utf-8", "surrogateescape")


def _bytes(n: int, rng: random.Random) -> bytes:
    data = bytearray(base(n))
    kind = rng.randrange(5)
    if kind == 0:  # flip bytes
        for _ in range(rng.randrange(1, 12)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif kind == 1:  # truncate
        del data[rng.randrange(1, len(data)):]
    elif kind == 2:  # insert NUL/CR/LF
        for _ in range(rng.randrange(1, 6)):
            data.insert(rng.randrange(len(data)), rng.choice((0, 10, 13, 0xFF)))
    elif kind == 3:  # pure garbage
        data = bytearray(rng.randbytes(rng.randrange(1, 1400)))
    else:  # splice two messages
        data += base(n + 1)[: rng.randrange(1, 200)]
    return bytes(data)


def mutations(count: int, seed: int = 4475) -> Iterator[tuple[str, bytes]]:
    """``count`` hostile variants of a valid INVITE, reproducible from ``seed``."""
    rng = random.Random(seed)
    for n in range(count):
        if n % 2:
            yield f"struct-{n}", _structural(n, rng)
        else:
            yield f"bytes-{n}", _bytes(n, rng)
