"""Calls: two SIP dialogs and one media session per call, routing, topology hiding."""
