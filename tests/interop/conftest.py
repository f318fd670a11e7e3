"""Fixtures for real-peer tests: a child-process reaper and a fresh dev PKI per test."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.ops.keys import KeySet, init_keys, load_private_key, make_leaf
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

    def mint_peer(self, domain: str) -> Path:
        """Another peer identity from the same dev CA (``sip:<domain>``), as baresip's PEM."""
        ca_cert = x509.load_pem_x509_certificate(self.keys.ca_cert.read_bytes())
        key, cert = make_leaf(load_private_key(self.keys.dir / "ca.key"), ca_cert, domain,
                              dns=[domain], ips=["127.0.0.1"], uris=[f"sip:{domain}"])
        pem = self.keys.dir / f"{domain}.pem"
        pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM)
                        + self.keys.ca_cert.read_bytes()
                        + key.private_bytes(serialization.Encoding.PEM,
                                            serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
        return pem


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    keys = init_keys(tmp_path / "keys")
    peer_pem = keys.dir / "peer.pem"
    peer_pem.write_bytes(keys.peer_cert.read_bytes() + keys.peer_key.read_bytes())
    gateway_pem = keys.dir / "gateway.pem"
    gateway_pem.write_bytes(keys.gateway_cert.read_bytes() + keys.gateway_key.read_bytes())
    return Pki(keys, peer_pem, gateway_pem)
