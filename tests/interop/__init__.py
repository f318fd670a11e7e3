"""Interop tests: real third-party peers (baresip, SIPp, Kamailio, tshark) against srtpgw."""
