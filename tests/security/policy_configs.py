"""Config builders shared by the policy unit tests."""

from __future__ import annotations

import copy
from typing import Any

from gateway.config import Config, config_from_dict

BASE: dict[str, Any] = {
    "listener": [
        {"name": "legacy", "transport": "udp", "address": "127.0.0.1", "port": 5060},
        {"name": "secure", "transport": "tls", "address": "127.0.0.1", "port": 5061,
         "tls_client_auth": "require"},
    ],
    "trunk": [
        {"name": "pbx", "side": "legacy", "listener": "legacy", "transport": "udp",
         "peer": "127.0.0.1:5070", "allowed_sources": ["127.0.0.1/32", "10.1.0.0/16", "fd00::/8"],
         "media": "rtp", "route_to": "carrier",
         "rate_limit": {"new_dialogs_per_source": 5, "new_dialogs_burst": 5,
                        "out_of_dialog_per_source": 2, "out_of_dialog_burst": 2,
                        "new_dialogs_per_trunk": 8, "new_dialogs_trunk_burst": 8}},
        {"name": "carrier", "side": "secure", "listener": "secure", "transport": "tls",
         "peer": "127.0.0.1", "allowed_sources": ["127.0.0.0/8"],
         "tls_identity": ["sip:carrier.example.test"], "media": "srtp", "route_to": "pbx",
         "methods": ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS"],
         "deny_headers": ["X-Internal"]},
    ],
}


def make_config(**edits: Any) -> Config:
    """BASE with top-level sections replaced; ``trunk0``/``trunk1`` update one trunk's keys."""
    raw = copy.deepcopy(BASE)
    for key, value in edits.items():
        if key.startswith("trunk") and key[5:].isdigit():
            raw["trunk"][int(key[5:])].update(value)
        else:
            raw[key] = value
    return config_from_dict(raw, file="test.toml", check_files=False)
