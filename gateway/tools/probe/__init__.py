"""``srtpgw probe``: the gateway's own rules turned outward, against one named SBC or trunk.

Every check family is a module (``tls``, ``exposure``, ``screening``, ``flood``, ``media``,
``bleed``, ``topology``) whose judging functions take observations and return ``Finding``\\ s;
the thin socket code that gathers the observations sits beside them and never sends to an
address the operator did not name (``target.Guard``), nor more than a bounded number of
packets in a bounded time.
"""
