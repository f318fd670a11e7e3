"""Per-trunk security policy and the signalling firewall."""
