"""Media relay: RTP/SRTP sockets, SRTP contexts per leg, latching, DTLS-SRTP, timeouts."""
