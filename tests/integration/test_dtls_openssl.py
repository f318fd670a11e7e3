"""Our DTLS-SRTP engine against the openssl command-line tool (a C implementation we did not
write), in both roles. openssl prints the RFC 5764 keying material it exported, so the keys we
derive are checked byte for byte, with an RSA certificate signed sha1WithRSAEncryption as baresip
uses."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from gateway.media.dtls_events import HandshakeCompleted
from gateway.media.dtls_identity import DtlsIdentity, certificate_fingerprint
from gateway.ops.keys import make_self_signed
from tests.conftest import require_tool
from tests.integration.test_dtls_engine import LOOP, first, ours

pytestmark = pytest.mark.interop
KEYMAT = re.compile(rb"Keying material: ([0-9A-F]+)")


def rsa_sha1_cert(openssl: str, directory: Path) -> tuple[Path, Path]:
    key, crt = directory / "peer.key", directory / "peer.crt"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-sha1", "-nodes",
                    "-subj", "/CN=openssl-peer", "-days", "1", "-keyout", str(key),
                    "-out", str(crt)], check=True, capture_output=True, timeout=30)
    return crt, key


def our_identity() -> DtlsIdentity:
    key, cert = make_self_signed("srtpgw dtls")
    return DtlsIdentity(cert, key)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOOP, 0))
        return s.getsockname()[1]


def split(material: bytes, key_len: int = 16, salt_len: int = 14) -> tuple[bytes, bytes]:
    """RFC 5764 §4.2, done independently of the engine: (client key||salt, server key||salt)."""
    k, s = key_len, salt_len
    return (material[:k] + material[2 * k:2 * k + s],
            material[k:2 * k] + material[2 * k + s:2 * k + 2 * s])


COMMON = ["-dtls1_2", "-use_srtp", "SRTP_AES128_CM_SHA1_80", "-keymatexport",
          "EXTRACTOR-dtls_srtp", "-keymatexportlen", "60", "-cipher", "DEFAULT:@SECLEVEL=0"]


async def finish(proc: asyncio.subprocess.Process) -> bytes:
    assert proc.stdin is not None
    proc.stdin.close()
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 5.0)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
    return out


async def test_we_are_client_openssl_serves(tmp_path: Path) -> None:
    openssl = require_tool("openssl")
    crt, key = rsa_sha1_cert(openssl, tmp_path)
    peer_cert = x509.load_pem_x509_certificate(crt.read_bytes())
    identity = our_identity()
    port = free_udp_port()
    proc = await asyncio.create_subprocess_exec(
        openssl, "s_server", "-accept", f"{LOOP}:{port}", "-cert", str(crt), "-key", str(key),
        "-Verify", "1", "-naccept", "1", *COMMON,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        me = await ours(identity, "client", [("SHA-256", certificate_fingerprint(peer_cert))],
                        remote=(LOOP, port))
        assert me.endpoint and me.connected and me.failed
        me.endpoint.start()
        event = await first(me.connected, me.failed, timeout=10.0)
        assert isinstance(event, HandshakeCompleted)
        me.endpoint.close()
        await asyncio.sleep(0.2)
    finally:
        out = await finish(proc)
    m = KEYMAT.search(out)
    assert m is not None, out.decode(errors="replace")[-800:]
    client, server = split(bytes.fromhex(m.group(1).decode()))
    assert event.keys.suite == "AES_CM_128_HMAC_SHA1_80"
    assert (event.keys.tx, event.keys.rx) == (client, server)
    assert event.cipher.startswith("ECDHE-RSA-")


async def test_we_serve_openssl_connects(tmp_path: Path) -> None:
    openssl = require_tool("openssl")
    crt, key = rsa_sha1_cert(openssl, tmp_path)
    peer_cert = x509.load_pem_x509_certificate(crt.read_bytes())
    identity = our_identity()
    me = await ours(identity, "server", [("sha-256", certificate_fingerprint(peer_cert))])
    assert me.endpoint and me.connected and me.failed
    me.endpoint.start()
    host, port = me.addr
    proc = await asyncio.create_subprocess_exec(
        openssl, "s_client", "-connect", f"{host}:{port}", "-cert", str(crt), "-key", str(key),
        *COMMON, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        event = await first(me.connected, me.failed, timeout=10.0)
        await asyncio.sleep(0.3)  # let s_client print its session report
    finally:
        out = await finish(proc)
    assert isinstance(event, HandshakeCompleted)
    m = KEYMAT.search(out)
    assert m is not None, out.decode(errors="replace")[-800:]
    client, server = split(bytes.fromhex(m.group(1).decode()))
    assert (event.keys.tx, event.keys.rx) == (server, client)
    assert event.keys.suite == "AES_CM_128_HMAC_SHA1_80"
