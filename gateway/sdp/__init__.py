"""SDP (RFC 4566) parsing and serialization, SDES (RFC 4568), offer/answer rewriting per leg."""
