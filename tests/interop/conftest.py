"""Fixtures for real-peer tests: a child-process reaper and a fresh dev PKI per test."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.ops.keys import KeySet, init_keys
from tests.interop.procs import Procs


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    """Children of this test; their log tails are printed (shown by pytest on failure)."""
    p = Procs(tmp_path)
    try:
        yield p
    finally:
        p.close()
        print(p.tails())


@dataclass(frozen=True)
class Pki:
    keys: KeySet
    peer_pem: Path  # peer cert chain + key in one file, the form baresip wants
    gateway_pem: Path


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    keys = init_keys(tmp_path / "keys")
    peer_pem = keys.dir / "peer.pem"
    peer_pem.write_bytes(keys.peer_cert.read_bytes() + keys.peer_key.read_bytes())
    gateway_pem = keys.dir / "gateway.pem"
    gateway_pem.write_bytes(keys.gateway_cert.read_bytes() + keys.gateway_key.read_bytes())
    return Pki(keys, peer_pem, gateway_pem)
