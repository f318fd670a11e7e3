"""Dev key generation: the chain verifies, names are right, private keys are 0600."""

from __future__ import annotations

import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.cli import main
from gateway.ops.keys import KeysExist, init_keys, rotate_dtls, show_keys


def load(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def test_chain_verifies_and_names_are_set(tmp_path: Path) -> None:
    keys = init_keys(tmp_path, domain="gw.example.test")
    ca = load(keys.ca_cert)[0]
    for leaf_path, name in ((keys.gateway_cert, "gw.example.test"),
                            (keys.peer_cert, "peer.srtpgw.test")):
        leaf = load(leaf_path)[0]
        leaf.verify_directly_issued_by(ca)
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert name in san.get_values_for_type(x509.DNSName)
        assert f"sip:{name}" in san.get_values_for_type(x509.UniformResourceIdentifier)
    ca_pub = ca.public_key()
    assert isinstance(ca_pub, ec.EllipticCurvePublicKey)
    ctx = ssl.create_default_context(cafile=str(keys.ca_cert))
    ctx.load_cert_chain(keys.gateway_cert, keys.gateway_key)


def test_private_keys_are_0600_and_never_overwritten(tmp_path: Path) -> None:
    init_keys(tmp_path)
    for name in ("ca.key", "gateway.key", "peer.key", "dtls.key"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    before = (tmp_path / "gateway.key").read_bytes()
    with pytest.raises(KeysExist):
        init_keys(tmp_path)
    assert (tmp_path / "gateway.key").read_bytes() == before
    init_keys(tmp_path, force=True)
    assert (tmp_path / "gateway.key").read_bytes() != before


def test_rotate_dtls_changes_only_the_dtls_certificate(tmp_path: Path) -> None:
    init_keys(tmp_path)
    gw, dtls = (tmp_path / "gateway.crt").read_bytes(), (tmp_path / "dtls.crt").read_bytes()
    rotate_dtls(tmp_path)
    assert (tmp_path / "gateway.crt").read_bytes() == gw
    assert (tmp_path / "dtls.crt").read_bytes() != dtls
    assert stat.S_IMODE((tmp_path / "dtls.key").stat().st_mode) == 0o600


def test_show_never_prints_key_material(tmp_path: Path) -> None:
    init_keys(tmp_path)
    text = show_keys(tmp_path)
    assert "PRIVATE KEY" not in text and "gateway.crt" in text and "sha256" in text


def test_cli_keys_init_refuses_then_forces(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                           ) -> None:
    d = str(tmp_path / "k")
    assert main(["keys", "init", "--dir", d]) == 0
    assert main(["keys", "init", "--dir", d]) == 1
    assert "already exist" in capsys.readouterr().err
    assert main(["keys", "init", "--dir", d, "--force"]) == 0
    assert main(["keys", "show", "--dir", d]) == 0
