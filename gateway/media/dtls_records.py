"""DTLS 1.2 record framing (RFC 6347 §4.1): just enough to pack OpenSSL's output into datagrams.

OpenSSL writes into a memory BIO as a byte stream, so one read can hold several records of a
flight. A record must never be split across datagrams, so we cut at record boundaries and pack
whole records up to the MTU.
"""

from __future__ import annotations

HEADER = 13  # type(1) version(2) epoch(2) sequence_number(6) length(2)

# RFC 7983 §7: a first byte of 20..63 is DTLS on a multiplexed media port.
DTLS_FIRST_BYTE_MIN = 20
DTLS_FIRST_BYTE_MAX = 63


def is_dtls(datagram: bytes) -> bool:
    return bool(datagram) and DTLS_FIRST_BYTE_MIN <= datagram[0] <= DTLS_FIRST_BYTE_MAX


def split_records(stream: bytes) -> list[bytes]:
    """Cut a stream of whole records; a truncated tail is kept as one piece (never dropped)."""
    records = []
    pos = 0
    while pos < len(stream):
        if len(stream) - pos < HEADER:
            records.append(stream[pos:])
            break
        end = pos + HEADER + int.from_bytes(stream[pos + 11:pos + 13], "big")
        records.append(stream[pos:end])
        pos = end
    return records


def pack_datagrams(records: list[bytes], mtu: int) -> list[bytes]:
    """Greedy packing in order; a record larger than the MTU travels alone."""
    datagrams: list[bytes] = []
    current = b""
    for record in records:
        if current and len(current) + len(record) > mtu:
            datagrams.append(current)
            current = b""
        current += record
    if current:
        datagrams.append(current)
    return datagrams
