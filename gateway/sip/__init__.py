"""SIP: message grammar, transactions (RFC 3261 §17) and transports (UDP, TCP, TLS)."""
