"""DNS messages for RFC 3263 server location, sans-IO: build a query, parse its answer.

Only what locating a SIP server needs (SRV, A, AAAA over RFC 1035 wire format); the socket
side lives in ``resolver.py``. A malformed or mismatched answer is a ``DnsError``, never an
IndexError or struct.error.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

A, AAAA, SRV = 1, 28, 33
_IN = 1
_NOERROR, _NXDOMAIN = 0, 3
_HEADER = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")
_SRV = struct.Struct("!HHH")
_MAX_POINTERS = 32  # compression pointers followed per name: a loop ends here


class DnsError(ValueError):
    """An answer that cannot be used (malformed, mismatched, truncated or a server error)."""


@dataclass(frozen=True, slots=True)
class SrvRecord:
    priority: int
    weight: int
    port: int
    target: str
    ttl: int


@dataclass(frozen=True, slots=True)
class AddressRecord:
    name: str
    ip: str
    ttl: int


@dataclass(frozen=True, slots=True)
class Answer:
    """Records answering the question (``records``) and address hints from the additional
    section (``extra``); ``negative`` for NXDOMAIN, with ``negative_ttl`` from the SOA."""

    records: tuple[SrvRecord | AddressRecord, ...]
    extra: tuple[AddressRecord, ...] = ()
    negative: bool = False
    negative_ttl: int | None = None


def encode_name(name: str) -> bytes:
    out = bytearray()
    for label in name.rstrip(".").split("."):
        try:
            raw = label.encode("idna") if label else b""
        except UnicodeError:
            raise DnsError(f"bad name {name!r}") from None
        if not 0 < len(raw) < 64:
            raise DnsError(f"bad name {name!r}")
        out += bytes((len(raw),)) + raw
    return bytes(out) + b"\0"


def build_query(name: str, qtype: int, qid: int) -> bytes:
    """One question, recursion desired."""
    return _HEADER.pack(qid, 0x0100, 1, 0, 0, 0) + encode_name(name) + struct.pack("!HH", qtype,
                                                                                    _IN)


def _read_name(data: bytes, pos: int) -> tuple[str, int]:
    """The name at ``pos`` and the offset after it (compression pointers followed)."""
    labels: list[str] = []
    end = None
    for _ in range(_MAX_POINTERS):
        while True:
            if pos >= len(data):
                raise DnsError("name runs past the message")
            length = data[pos]
            if length & 0xC0 == 0xC0:
                if pos + 1 >= len(data):
                    raise DnsError("truncated compression pointer")
                if end is None:
                    end = pos + 2
                pos = ((length & 0x3F) << 8) | data[pos + 1]
                break
            if length & 0xC0:
                raise DnsError("unknown label type")
            pos += 1
            if length == 0:
                return ".".join(labels).lower(), end if end is not None else pos
            if pos + length > len(data):
                raise DnsError("label runs past the message")
            labels.append(data[pos:pos + length].decode("ascii", "replace"))
            pos += length
    raise DnsError("compression pointer loop")


def parse_response(data: bytes, qid: int, name: str, qtype: int) -> Answer:
    """The answer to our question ``(name, qtype)`` sent with id ``qid``."""
    if len(data) < _HEADER.size:
        raise DnsError("short message")
    rid, flags, qd, an, ns, ar = _HEADER.unpack_from(data)
    if rid != qid or not flags & 0x8000:
        raise DnsError("not the answer to our query")
    if flags & 0x0200:
        raise DnsError("truncated answer")
    rcode = flags & 0x000F
    if rcode not in (_NOERROR, _NXDOMAIN):
        raise DnsError(f"server error (rcode {rcode})")
    pos = _HEADER.size
    if qd != 1:
        raise DnsError("answer does not echo one question")
    qname, pos = _read_name(data, pos)
    if pos + 4 > len(data):
        raise DnsError("short question")
    if qname != name.rstrip(".").lower() or struct.unpack_from("!HH", data, pos) != (qtype, _IN):
        raise DnsError("answer is for another question")
    pos += 4
    records: list[SrvRecord | AddressRecord] = []
    extra: list[AddressRecord] = []
    negative_ttl = None
    for section, count in ((0, an), (1, ns), (2, ar)):
        for _ in range(count):
            owner, pos = _read_name(data, pos)
            if pos + _RR.size > len(data):
                raise DnsError("short resource record")
            rtype, rclass, ttl, rdlen = _RR.unpack_from(data, pos)
            pos += _RR.size
            rdata = pos
            pos += rdlen
            if pos > len(data):
                raise DnsError("record data runs past the message")
            if rclass != _IN:
                continue
            if section == 1 and rtype == 6:  # SOA: its MINIMUM bounds a negative answer's TTL
                _, p = _read_name(data, rdata)
                _, p = _read_name(data, p)
                if p + 20 <= pos:
                    negative_ttl = min(ttl, struct.unpack_from("!I", data, p + 16)[0])
                continue
            rec = _record(data, rdata, rdlen, rtype, owner, ttl)
            if rec is None:
                continue
            if section == 0 and rtype == qtype and owner == qname:
                records.append(rec)
            elif section == 2 and isinstance(rec, AddressRecord):
                extra.append(rec)
    return Answer(tuple(records), tuple(extra), rcode == _NXDOMAIN, negative_ttl)


def _record(data: bytes, at: int, length: int, rtype: int, owner: str,
            ttl: int) -> SrvRecord | AddressRecord | None:
    if rtype == A:
        if length != 4:
            raise DnsError("A record is not 4 octets")
        return AddressRecord(owner, str(ipaddress.IPv4Address(data[at:at + 4])), ttl)
    if rtype == AAAA:
        if length != 16:
            raise DnsError("AAAA record is not 16 octets")
        return AddressRecord(owner, str(ipaddress.IPv6Address(data[at:at + 16])), ttl)
    if rtype == SRV:
        if length < _SRV.size + 1:
            raise DnsError("short SRV record")
        priority, weight, port = _SRV.unpack_from(data, at)
        target, end = _read_name(data, at + _SRV.size)
        if end > at + length:
            raise DnsError("SRV target runs past its record")
        return SrvRecord(priority, weight, port, target, ttl)
    return None
