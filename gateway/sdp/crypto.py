"""RFC 4568 SDES ``a=crypto`` attributes: parse, check per suite, format.

Key material is master key || master salt, exactly the bytes libsrtp wants. Nothing here ever
puts key bytes into a repr, str of an error, or log field: ``CryptoAttribute`` and ``KeyParam``
print lengths only.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

from gateway.sdp import grammar
from gateway.sdp.errors import bad

# Suite -> (master key length, master salt length) in bytes. The first five are the suites the
# gateway can run (gateway.config.SRTP_SUITES); the rest are parsed so that an offer carrying them
# is understood and declined politely instead of being rejected as malformed.
KEY_LENGTHS: dict[str, tuple[int, int]] = {
    "AES_CM_128_HMAC_SHA1_80": (16, 14),  # RFC 4568 §6.2
    "AES_CM_128_HMAC_SHA1_32": (16, 14),
    "AEAD_AES_128_GCM": (16, 12),  # RFC 7714 §12
    "AEAD_AES_256_GCM": (32, 12),
    "AES_256_CM_HMAC_SHA1_80": (32, 14),  # RFC 6188 §7.1
    "AES_256_CM_HMAC_SHA1_32": (32, 14),
    "AES_192_CM_HMAC_SHA1_80": (24, 14),
    "AES_192_CM_HMAC_SHA1_32": (24, 14),
    "F8_128_HMAC_SHA1_80": (16, 14),
    "NULL_HMAC_SHA1_80": (16, 14),  # never offered or accepted: no encryption
    "NULL_HMAC_SHA1_32": (16, 14),
}
NULL_SUITES = frozenset({"NULL_HMAC_SHA1_80", "NULL_HMAC_SHA1_32"})

# Session parameters (RFC 4568 §6.3) that change what SRTP protects or how it derives keys.
# A media layer that does not implement one of them must decline the crypto line carrying it.
UNENCRYPTED_SRTP = "UNENCRYPTED_SRTP"
UNENCRYPTED_SRTCP = "UNENCRYPTED_SRTCP"
UNAUTHENTICATED_SRTP = "UNAUTHENTICATED_SRTP"


def key_length(suite: str) -> int:
    """Total length of master key || salt for a known suite; KeyError for an unknown one."""
    key, salt = KEY_LENGTHS[suite]
    return key + salt


@dataclass(frozen=True, slots=True, repr=False)
class KeyParam:
    """One ``inline:`` key-param: master key || salt, optional lifetime, optional MKI."""

    material: bytes
    lifetime: int | None = None
    mki: int | None = None
    mki_length: int | None = None

    def __repr__(self) -> str:
        mki = f", mki_length={self.mki_length}" if self.mki is not None else ""
        return f"KeyParam(<{len(self.material)} bytes>, lifetime={self.lifetime}{mki})"

    def to_text(self) -> str:
        text = "inline:" + base64.b64encode(self.material).decode("ascii")
        if self.lifetime is not None:
            text += f"|2^{self.lifetime.bit_length() - 1}" if _power_of_two(self.lifetime) \
                else f"|{self.lifetime}"
        if self.mki is not None:
            text += f"|{self.mki}:{self.mki_length}"
        return text


@dataclass(frozen=True, slots=True, repr=False)
class CryptoAttribute:
    """The value of one ``a=crypto`` line."""

    tag: int
    suite: str
    keys: tuple[KeyParam, ...]
    session_params: tuple[str, ...] = field(default=())

    def __repr__(self) -> str:
        return (f"CryptoAttribute(tag={self.tag}, suite={self.suite}, keys={len(self.keys)}, "
                f"session_params={self.session_params})")

    @property
    def material(self) -> bytes:
        """Key || salt of the first key-param (the only one a single-key media layer uses)."""
        return self.keys[0].material

    @property
    def has_mki(self) -> bool:
        return any(k.mki is not None for k in self.keys)

    @property
    def known_suite(self) -> bool:
        return self.suite in KEY_LENGTHS

    @property
    def kdr(self) -> int:
        """Key derivation rate exponent (0 = derive once, the only value libsrtp supports)."""
        for p in self.session_params:
            m = grammar.KDR.fullmatch(p)
            if m:
                return int(m.group(1))
        return 0

    @property
    def unencrypted_srtp(self) -> bool:
        return UNENCRYPTED_SRTP in self.session_params

    @property
    def unencrypted_srtcp(self) -> bool:
        return UNENCRYPTED_SRTCP in self.session_params

    @property
    def unauthenticated_srtp(self) -> bool:
        return UNAUTHENTICATED_SRTP in self.session_params

    def to_text(self) -> str:
        """The attribute value (what follows ``a=crypto:``)."""
        keys = ";".join(k.to_text() for k in self.keys)
        params = "".join(f" {p}" for p in self.session_params)
        return f"{self.tag} {self.suite} {keys}{params}"


def _power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _b64(text: str) -> bytes:
    padded = text.rstrip("=")
    padded += "=" * (-len(padded) % 4)
    try:
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        raise bad("a=crypto key is not valid base64") from None


def parse_crypto(value: str) -> CryptoAttribute:
    """Parse an ``a=crypto`` value; SdpError(400) when malformed or a known suite's key length
    is wrong. Unknown suites parse (their keys unchecked) so callers can decline them."""
    m = grammar.CRYPTO.fullmatch(value)
    if m is None:
        raise bad("malformed a=crypto")
    tag, suite, key_params = int(m.group(1)), m.group(2), m.group(3)
    params = tuple(m.group(4).split())
    keys = []
    for kp in key_params.split(";"):
        k = grammar.KEY_PARAM.fullmatch(kp)
        if k is None:
            raise bad("malformed a=crypto key-params (only inline: keys are supported)")
        material = _b64(k.group(2))
        lifetime = None
        if k.group(4) is not None:
            exp_or_n = int(k.group(4))
            if k.group(3):
                if exp_or_n > 64:
                    raise bad("a=crypto lifetime exponent out of range")
                lifetime = 1 << exp_or_n
            else:
                lifetime = exp_or_n
        mki = mki_len = None
        if k.group(5) is not None:
            mki, mki_len = int(k.group(5)), int(k.group(6))
            if not 1 <= mki_len <= 128 or mki.bit_length() > 8 * mki_len:
                raise bad("a=crypto MKI length out of range")
        if suite in KEY_LENGTHS and len(material) != key_length(suite):
            raise bad(f"a=crypto key length wrong for {suite}")
        keys.append(KeyParam(material, lifetime, mki, mki_len))
    return CryptoAttribute(tag, suite, tuple(keys), params)


def format_crypto(tag: int, suite: str, material: bytes, session_params: tuple[str, ...] = ()
                  ) -> str:
    """An ``a=crypto`` value for one fresh key; ValueError if the key does not fit the suite."""
    if suite not in KEY_LENGTHS or suite in NULL_SUITES:
        raise ValueError(f"not an offerable SRTP suite: {suite}")
    if len(material) != key_length(suite):
        raise ValueError(f"{suite} needs {key_length(suite)} bytes of key||salt, "
                         f"got {len(material)}")
    return CryptoAttribute(tag, suite, (KeyParam(bytes(material)),), session_params).to_text()
