"""An independent DTLS-SRTP peer that mimics baresip, shared by the DTLS and call tests.

RSA key, self-signed certificate signed sha1WithRSAEncryption, ECDHE-RSA-AES256-GCM-SHA384 when
it serves, SRTP_AES128_CM_SHA1_80 only, and its own RFC 5764 key split: pyOpenSSL on a blocking
socket, none of the gateway's DTLS code.
"""

from __future__ import annotations

import asyncio
import socket
import warnings
from collections.abc import Callable

import pylibsrtp
from cryptography.hazmat.primitives import hashes
from OpenSSL import SSL, crypto

from tests.support.sdes import MediaInfo, parse_media
from tests.support.sipmsg import SipMessage

LOOP = "127.0.0.1"
SHA1_80 = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80


def srtp_session(key: bytes, profile: int, outbound: bool) -> pylibsrtp.Session:
    kind = pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound else pylibsrtp.Policy.SSRC_ANY_INBOUND
    return pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=kind, srtp_profile=profile))


def fingerprint_of(cert: crypto.X509, algorithm: hashes.HashAlgorithm) -> str:
    return ":".join(f"{b:02X}" for b in cert.to_cryptography().fingerprint(algorithm))


class BaresipLikePeer:
    """An independent DTLS-SRTP peer on a blocking socket in a thread (not our engine's code)."""

    def __init__(self, role: str, twin: BaresipLikePeer | None = None) -> None:
        """``twin``: the same endpoint's other port (RTCP without rtcp-mux): same certificate."""
        if twin is not None:
            key, cert = twin.key, twin.cert
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                key = crypto.PKey()
                key.generate_key(crypto.TYPE_RSA, 2048)
                cert = crypto.X509()
                cert.get_subject().CN = "baresip-like"
                cert.set_issuer(cert.get_subject())
                cert.set_pubkey(key)
                cert.gmtime_adj_notBefore(-60)
                cert.gmtime_adj_notAfter(3600)
                cert.set_serial_number(42)
                cert.sign(key, "sha1")
        self.key, self.cert = key, cert
        ctx = SSL.Context(SSL.DTLS_METHOD)
        ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *a: True)
        ctx.use_certificate(cert.to_cryptography())
        ctx.use_privatekey(key.to_cryptography_key())
        # baresip leaves OpenSSL's list alone; as server its RSA certificate yields this suite.
        ctx.set_cipher_list(b"ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES256-GCM-SHA384")
        ctx.set_options(SSL.OP_CIPHER_SERVER_PREFERENCE)
        ctx.set_tlsext_use_srtp(b"SRTP_AES128_CM_SHA1_80")
        self.ssl = SSL.Connection(ctx)
        self.role = role
        if role == "client":
            self.ssl.set_connect_state()
        else:
            self.ssl.set_accept_state()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOP, 0))
        self.addr = self.sock.getsockname()
        self.remote: tuple[str, int] | None = None
        self.error: str | None = None
        self.tx: pylibsrtp.Session | None = None
        self.rx: pylibsrtp.Session | None = None
        self.peer_cert: crypto.X509 | None = None

    def fingerprint(self, algorithm: hashes.HashAlgorithm | None = None) -> str:
        return fingerprint_of(self.cert, algorithm or hashes.SHA256())

    def _flush(self) -> None:
        while True:
            try:
                data = self.ssl.bio_read(65536)
            except SSL.WantReadError:
                return
            assert self.remote is not None
            self.sock.sendto(data, self.remote)

    def handshake(self, remote: tuple[str, int], deadline: float = 5.0) -> None:
        """Blocking: run in a thread."""
        self.remote = remote
        self.sock.settimeout(0.2)
        waited = 0.0
        while waited < deadline:
            try:
                self.ssl.do_handshake()
                break
            except SSL.WantReadError:
                self._flush()
            except SSL.Error as exc:
                self._flush()
                self.error = str(exc)
                return
            try:
                data, src = self.sock.recvfrom(65536)
            except TimeoutError:
                waited += 0.2
                self.ssl.DTLSv1_handle_timeout()
                self._flush()
                continue
            if self.role == "server":
                self.remote = src
            self.ssl.bio_write(data)
        else:
            self.error = "timeout"
            return
        self._flush()
        self.peer_cert = self.ssl.get_peer_certificate()
        assert self.ssl.get_selected_srtp_profile() == b"SRTP_AES128_CM_SHA1_80"
        m = self.ssl.export_keying_material(b"EXTRACTOR-dtls_srtp", 60)
        client, server = m[0:16] + m[32:46], m[16:32] + m[46:60]
        mine, theirs = (client, server) if self.role == "client" else (server, client)
        self.tx = srtp_session(mine, SHA1_80, outbound=True)
        self.rx = srtp_session(theirs, SHA1_80, outbound=False)

    def close(self) -> None:
        self.sock.close()


def dtls_answer(peer: BaresipLikePeer, setup: str) -> str:
    """The SDP answer of ``peer``: one PCMU stream over UDP/TLS/RTP/SAVP with its fingerprint."""
    host, port = peer.addr
    return "\r\n".join([
        "v=0", f"o=dtlspeer 1 1 IN IP4 {host}", "s=-", f"c=IN IP4 {host}", "t=0 0",
        f"m=audio {port} UDP/TLS/RTP/SAVP 0", "a=rtpmap:0 PCMU/8000", "a=rtcp-mux",
        f"a=fingerprint:SHA-256 {peer.fingerprint()}", f"a=setup:{setup}", ""])


def handshaking_answerer(peer: BaresipLikePeer, check: Callable[[MediaInfo], None] | None = None
                         ) -> tuple[Callable[[SipMessage], str], list[asyncio.Future[None]]]:
    """A callee's answer function (``SipTestUA.uas.answer``): answers ``setup:active`` and starts
    ``peer``'s handshake toward the offered media address in a thread. The list receives one
    future per answered offer, done when that handshake ends; ``check`` sees each offer first."""
    handshakes: list[asyncio.Future[None]] = []

    def answer(invite: SipMessage) -> str:
        offered = parse_media(invite.body)[0]
        if check is not None:
            check(offered)
        handshakes.append(asyncio.ensure_future(asyncio.to_thread(peer.handshake, offered.addr)))
        return dtls_answer(peer, "active")

    return answer, handshakes
