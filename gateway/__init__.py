"""srtpgw: a SIP/RTP encryption gateway (B2BUA + SRTP relay + signalling firewall)."""

__version__ = "0.1.0"
