"""Thin SRTP contexts over the libsrtp bundled in pylibsrtp, working in place in one buffer.

pylibsrtp's ``Session`` copies every packet in and out of Python bytes; the relay instead keeps one
``srtp_t`` per leg and direction alive and calls ``srtp_protect``/``srtp_unprotect`` directly on a
preallocated buffer that the socket also receives into (``PacketBuffer``). Sans-IO: no sockets.

AES_256_CM_HMAC_SHA1_80 (RFC 6188) has no libsrtp profile constant in pylibsrtp's binding, so its
crypto policy is written field by field (cipher AES-ICM-256, HMAC-SHA1, 80-bit tag); the unit tests
check it against an independent RFC 3711 implementation built on ``cryptography``.

Rollover counter (ROC) across a re-key. RFC 3711 §3.3.1: the sender starts the ROC at zero when
the session starts and increments it each time the 16-bit sequence number wraps; the packet index
is 2^16 * ROC + SEQ and feeds the keystream IV and the authentication tag (the ROC is appended to
the authenticated portion), but the ROC itself is never sent. A receiver joining an ongoing
session MUST be given the current ROC out of band, and changing the master key does not restart
the SSRC's packet index (re-keying is not a new session). RFC 4568 §7.1.4 (modifying a session by
offer/answer): a new ``a=crypto`` key for an existing stream replaces the master key only; the
SSRCs already flowing keep their sequence numbers and ROC under the new key. A relay that opens a
fresh libsrtp session for the new key would assume ROC 0 for every SSRC, so after a wrap (65,536
packets, ~22 minutes at 50 pps) inbound packets fail authentication and outbound packets carry an
index the receiver does not expect. ``carry_roc(old, new)`` therefore copies, per SSRC that the
old context has seen, its ROC into the new context (a stream is added for the SSRC, and libsrtp
uses the ROC for that SSRC's next packet). Inbound, ``LegStream`` also keeps the new key with
ROC 0 as a last try while the re-key is unproven, for peers that (against RFC 3711) open a new
SRTP session per key. Limitation: libsrtp applies a carried ROC literally to the first packet
under the new key, so a re-key whose first new-key packet is the one that wraps the sequence
number puts that SSRC one ROC behind.

``srtp_get_stream_roc``/``srtp_set_stream_roc``/``srtp_stream_list_for_each`` are exported by the
libsrtp inside pylibsrtp's own extension module but not declared by its binding; they are reached
with ``ffi.dlopen(..., RTLD_NOLOAD)`` of that same file, which can only return the copy already
loaded. None of this is on the per-packet path.
"""

from __future__ import annotations

import os
from typing import Any

import cffi
from pylibsrtp import _binding
from pylibsrtp._binding import ffi, lib

from gateway.media.api import SrtpParams

# libsrtp status codes (srtp_err_status_t) the relay tells apart.
OK = 0
AUTH_FAIL = 7
REPLAY_FAIL = 9
REPLAY_OLD = 10

# Room after the payload for the SRTCP index, the longest tag and an MKI.
TRAILER = 4 + 16 + 128
MAX_PACKET = 1500
BUFFER_SIZE = MAX_PACKET + TRAILER
REPLAY_WINDOW = 256  # packets of reordering tolerated on receive (libsrtp default is 128)

_PROFILES = {
    "AES_CM_128_HMAC_SHA1_80": lib.srtp_profile_aes128_cm_sha1_80,
    "AES_CM_128_HMAC_SHA1_32": lib.srtp_profile_aes128_cm_sha1_32,
    "AEAD_AES_128_GCM": lib.srtp_profile_aead_aes_128_gcm,
    "AEAD_AES_256_GCM": lib.srtp_profile_aead_aes_256_gcm,
    "AES_256_CM_HMAC_SHA1_80": lib.srtp_profile_aes128_cm_sha1_80,
}
# srtp_crypto_policy_t is {cipher_type, cipher_key_len, auth_type, auth_key_len, auth_tag_len,
# sec_serv}, six ints; pylibsrtp declares it opaque, so it is addressed as an int array.
_SRTP_AES_ICM_256 = 5
_SEC_SERV_AUTH = 2
_CIPHER_TYPE, _CIPHER_KEY_LEN, _SEC_SERV = 0, 1, 5


_roc_ffi = cffi.FFI()
_roc_ffi.cdef("""
int srtp_get_stream_roc(void *session, uint32_t ssrc, uint32_t *roc);
int srtp_set_stream_roc(void *session, uint32_t ssrc, uint32_t roc);
void srtp_stream_list_for_each(void *list, int (*callback)(void *, void *), void *data);
const char *srtp_get_version_string(void);
""")
# RTLD_NOLOAD: only hand back the copy the pylibsrtp import already mapped, never a second one
# (a second copy would have its own crypto kernel and must never touch these srtp_t handles).
_roc_lib: Any = _roc_ffi.dlopen(_binding.__file__, os.RTLD_NOW | os.RTLD_NOLOAD)
# srtp_stream_list_for_each walks the session's stream list, the first field of srtp_ctx_t, and
# hands each srtp_stream_ctx_t, whose first field is the SSRC (network order): true for the
# stream-list API of libsrtp 2.5 to 2.7 (pylibsrtp 1.0.0 bundles 2.7.0).
LIBSRTP_VERSION = _roc_ffi.string(_roc_lib.srtp_get_version_string()).decode()
if not LIBSRTP_VERSION.startswith(("libsrtp2 2.5.", "libsrtp2 2.6.", "libsrtp2 2.7.")):
    raise ImportError(f"{LIBSRTP_VERSION}: stream walk for ROC continuity not verified")


class SrtpError(Exception):
    """A packet failed protect/unprotect; ``status`` is the libsrtp code (no key material)."""

    def __init__(self, status: int) -> None:
        super().__init__(_describe(status))
        self.status = status


def _describe(status: int) -> str:
    return {AUTH_FAIL: "authentication failure", REPLAY_FAIL: "replay check failed",
            REPLAY_OLD: "replay check failed (index too old)"}.get(status,
                                                                   f"libsrtp error {status}")


def _policy(params: SrtpParams, outbound: bool) -> tuple[Any, Any]:
    policy = ffi.new("srtp_policy_t *")
    profile = _PROFILES[params.suite]
    for crypto, setter in ((policy.rtp, lib.srtp_crypto_policy_set_from_profile_for_rtp),
                           (policy.rtcp, lib.srtp_crypto_policy_set_from_profile_for_rtcp)):
        status = setter(ffi.addressof(crypto), profile)
        if status != OK:
            raise SrtpError(status)
    fields = (ffi.cast("int *", ffi.addressof(policy.rtp)),
              ffi.cast("int *", ffi.addressof(policy.rtcp)))
    if params.suite == "AES_256_CM_HMAC_SHA1_80":
        for f in fields:
            f[_CIPHER_TYPE] = _SRTP_AES_ICM_256
            f[_CIPHER_KEY_LEN] = 46
    if params.unencrypted_srtp:
        fields[0][_SEC_SERV] = _SEC_SERV_AUTH
    if params.unencrypted_srtcp:
        fields[1][_SEC_SERV] = _SEC_SERV_AUTH
    key = ffi.new("unsigned char[]", len(params.key))
    ffi.memmove(key, params.key, len(params.key))
    policy.key = key
    policy.ssrc.type = lib.ssrc_any_outbound if outbound else lib.ssrc_any_inbound
    policy.window_size = REPLAY_WINDOW
    # Never 1: a repeated index under one key reuses keystream/nonce (RFC 3711 §9.1, RFC 7714
    # §16); libsrtp's outbound replay check refuses it and the relay counts the drop.
    policy.allow_repeat_tx = 0
    return policy, key


class SrtpContext:
    """One direction's libsrtp session for any SSRC (new SSRCs get their own stream in it).

    ``handle`` is the raw ``srtp_t`` for the hot path; the byte-level methods are for tests,
    benchmarks and tools. Equal ``params`` mean the context can be kept across re-INVITEs.
    """

    __slots__ = ("__weakref__", "_gc", "handle", "outbound", "params")

    def __init__(self, params: SrtpParams, *, outbound: bool) -> None:
        self.params = params
        self.outbound = outbound
        policy, key = _policy(params, outbound)
        holder = ffi.new("srtp_t *")
        status = lib.srtp_create(holder, policy)
        ffi.memmove(key, bytes(len(params.key)), len(params.key))  # session keys are derived
        if status != OK:
            raise SrtpError(status)
        self._gc = ffi.gc(holder, _dealloc)
        self.handle = holder[0]

    def __repr__(self) -> str:
        direction = "tx" if self.outbound else "rx"
        return f"<SrtpContext {self.params.suite} {direction}>"

    def close(self) -> None:
        """Free the libsrtp session now rather than at garbage collection."""
        if self._gc is not None:
            ffi.release(self._gc)
            self._gc = None
            self.handle = ffi.NULL

    def protect(self, packet: bytes, rtcp: bool = False) -> bytes:
        return self._run(lib.srtp_protect_rtcp if rtcp else lib.srtp_protect, packet)

    def unprotect(self, packet: bytes, rtcp: bool = False) -> bytes:
        return self._run(lib.srtp_unprotect_rtcp if rtcp else lib.srtp_unprotect, packet)

    def _run(self, func: Any, packet: bytes) -> bytes:
        if len(packet) > MAX_PACKET:
            raise SrtpError(-1)
        buf = PacketBuffer()
        buf.data[:len(packet)] = packet
        buf.length[0] = len(packet)
        status = func(self.handle, buf.cdata, buf.length)
        if status != OK:
            raise SrtpError(status)
        return bytes(buf.data[:buf.length[0]])


def _raw(handle: Any) -> Any:
    return _roc_ffi.cast("void *", int(ffi.cast("uintptr_t", handle)))


def stream_rocs(ctx: SrtpContext) -> dict[int, int]:
    """The SSRCs (host order) that ``ctx`` has a stream for, with each one's ROC."""
    if ctx.handle == ffi.NULL:
        return {}
    ssrcs: list[int] = []

    @_roc_ffi.callback("int(void *, void *)")
    def collect(stream: Any, _data: Any) -> int:
        ssrcs.append(int.from_bytes(_roc_ffi.buffer(stream, 4)[:], "big"))
        return 0

    raw = _raw(ctx.handle)
    _roc_lib.srtp_stream_list_for_each(_roc_ffi.cast("void **", raw)[0], collect, _roc_ffi.NULL)
    rocs = {}
    roc = _roc_ffi.new("uint32_t *")
    for ssrc in ssrcs:
        if _roc_lib.srtp_get_stream_roc(raw, ssrc, roc) == OK:
            rocs[ssrc] = roc[0]
    return rocs


def carry_roc(old: SrtpContext, new: SrtpContext) -> int:
    """Give ``new`` the ROC ``old`` reached for each SSRC it knows (RFC 3711 §3.3.1, RFC 4568
    §7.1.4: a new key does not restart the index). SSRCs whose ROC in ``new`` is already as high
    are left alone. Returns how many SSRCs were carried."""
    have = stream_rocs(new)
    carried = 0
    for ssrc, roc in stream_rocs(old).items():
        if roc <= have.get(ssrc, 0):
            continue
        if ssrc not in have:
            policy, key = _policy(new.params, new.outbound)
            policy.ssrc.type = lib.ssrc_specific
            policy.ssrc.value = ssrc
            status = lib.srtp_add_stream(new.handle, policy)
            ffi.memmove(key, bytes(len(new.params.key)), len(new.params.key))
            if status != OK:
                raise SrtpError(status)
        status = _roc_lib.srtp_set_stream_roc(_raw(new.handle), ssrc, roc)
        if status != OK:
            raise SrtpError(status)
        carried += 1
    return carried


def _dealloc(holder: Any) -> None:
    lib.srtp_dealloc(holder[0])


class PacketBuffer:
    """One packet's worth of memory shared by the socket (recvfrom_into) and libsrtp (in place)."""

    __slots__ = ("cdata", "data", "length", "view")

    def __init__(self) -> None:
        self.data = bytearray(BUFFER_SIZE)
        self.view = memoryview(self.data)
        self.cdata = ffi.from_buffer("char[]", self.data)
        self.length = ffi.new("int *")


protect_rtp = lib.srtp_protect
unprotect_rtp = lib.srtp_unprotect
protect_rtcp = lib.srtp_protect_rtcp
unprotect_rtcp = lib.srtp_unprotect_rtcp
remove_stream = lib.srtp_remove_stream
