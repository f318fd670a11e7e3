"""DTLS-SRTP in SDP: ``UDP/TLS/RTP/SAVP[F]``, ``a=fingerprint`` (RFC 8122), ``a=setup``
(RFC 4145, RFC 5763 §5) and ``a=tls-id`` (RFC 8842). Pure functions over the parsed model.

The fingerprint is the only thing that authenticates a DTLS-SRTP peer, so parsing is strict
about its shape; hash names compare case-insensitively because baresip writes ``SHA-256``.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Literal, NamedTuple

from gateway.sdp.errors import bad, unacceptable
from gateway.sdp.model import Attribute, Media, SessionDescription

DTLS_PROTOS = ("UDP/TLS/RTP/SAVP", "UDP/TLS/RTP/SAVPF")

# RFC 8122 §5: hash-func = "sha-1" / "sha-224" / "sha-256" / "sha-384" / "sha-512" /
#                          "md5" / "md2" / token;  fingerprint = 2UHEX *(":" 2UHEX)
FINGERPRINT = re.compile(r"([A-Za-z0-9][A-Za-z0-9_.+-]{0,31}) +"
                         r"([0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){0,127}) *")
# RFC 8842 §4: tls-id-value = 20*255(tls-id-char); tls-id-char = ALPHA / DIGIT / "+" / "/" /
#              "-" / "_"
TLS_ID = re.compile(r"[A-Za-z0-9+/_-]{20,255}")
# RFC 4145 §4: setup-attr = "a=setup:" role; role = "active" / "passive" / "actpass" / "holdconn"
SETUPS = ("active", "passive", "actpass", "holdconn")

DIGEST_BYTES = {"sha-1": 20, "sha-224": 28, "sha-256": 32, "sha-384": 48, "sha-512": 64,
                "md5": 16, "md2": 16}
# Hashes a DTLS peer may authenticate with; md5/md2 parse but never authenticate anybody.
VERIFIABLE = ("sha-512", "sha-384", "sha-256", "sha-224", "sha-1")

Setup = Literal["active", "passive", "actpass", "holdconn"]
Role = Literal["client", "server"]


class Fingerprint(NamedTuple):
    """Hash name lower-cased, hex upper-cased: the (algorithm, value) pair the media layer takes."""

    algorithm: str
    value: str

    def to_text(self) -> str:
        return f"{self.algorithm} {self.value}"


@dataclass(frozen=True, slots=True)
class DtlsParams:
    """The DTLS attributes that apply to one stream (media level, else session level)."""

    fingerprints: tuple[Fingerprint, ...]
    setup: Setup | None
    tls_id: str | None
    feedback: bool  # SAVPF rather than SAVP


def is_dtls_proto(proto: str) -> bool:
    return proto.upper() in DTLS_PROTOS


def parse_fingerprint(value: str) -> Fingerprint:
    m = FINGERPRINT.fullmatch(value)
    if m is None:
        raise bad("malformed a=fingerprint")
    algorithm, hexdigits = m.group(1).lower(), m.group(2).upper()
    expected = DIGEST_BYTES.get(algorithm)
    if expected is not None and hexdigits.count(":") + 1 != expected:
        raise bad(f"a=fingerprint length wrong for {algorithm}")
    return Fingerprint(algorithm, hexdigits)


def parse_setup(value: str) -> Setup:
    role = value.strip().lower()
    if role not in SETUPS:
        raise bad("malformed a=setup")
    return role  # type: ignore[return-value]


def parse_tls_id(value: str) -> str:
    if not TLS_ID.fullmatch(value.strip()):
        raise bad("malformed a=tls-id")
    return value.strip()


def dtls_params(session: SessionDescription, media: Media) -> DtlsParams:
    """Read a DTLS stream's attributes; SdpError 400 when malformed, 488 when unusable."""
    values = media.get_all("fingerprint") or session.get_all("fingerprint")
    # Older DTLS-SRTP peers write RTP/SAVP[F] with a fingerprint (as offer_answer also accepts).
    legacy = media.proto.upper() in ("RTP/SAVP", "RTP/SAVPF") and bool(values)
    if not is_dtls_proto(media.proto) and not legacy:
        raise unacceptable(f"stream is {media.proto}, not DTLS-SRTP")
    if not values:
        raise unacceptable("DTLS-SRTP stream without a=fingerprint")
    setup = media.get("setup")
    if setup is None:
        setup = session.get("setup")
    tls_id = media.get("tls-id")
    return DtlsParams(
        fingerprints=tuple(parse_fingerprint(v) for v in values),
        setup=None if setup is None else parse_setup(setup),
        tls_id=None if tls_id is None else parse_tls_id(tls_id),
        feedback=media.proto.upper().endswith("F"),
    )


def check_fingerprints(params: DtlsParams, *, accept_sha1: bool) -> None:
    """488 unless the peer gave a fingerprint with a hash we verify (sha-1 only if allowed)."""
    usable = [f for f in params.fingerprints if f.algorithm in VERIFIABLE
              and (accept_sha1 or f.algorithm != "sha-1")]
    if not usable:
        names = sorted({f.algorithm for f in params.fingerprints})
        raise unacceptable(f"no acceptable a=fingerprint hash (peer offered {', '.join(names)})")


def answer_setup(offered: Setup | None, *, prefer_passive: bool = False) -> Setup:
    """Our ``a=setup`` in an answer (RFC 5763 §5; RFC 4145 §4: absent means active).

    ``prefer_passive``: to an ``actpass`` offer, wait for the peer's ClientHello rather than send
    ours toward its signalled address (a peer behind NAT, or one whose SDP names an address the
    relay cannot send to: its ClientHello shows where it really is)."""
    if offered == "actpass":
        return "passive" if prefer_passive else "active"
    if offered in ("active", None):
        return "passive"
    if offered == "passive":
        return "active"
    raise unacceptable("a=setup:holdconn: the peer does not want a DTLS association")


def role_for_setup(ours: Setup) -> Role:
    """``active`` opens the DTLS association (client); ``passive`` waits for it (server)."""
    if ours == "active":
        return "client"
    if ours == "passive":
        return "server"
    raise ValueError(f"a=setup:{ours} does not fix a DTLS role")


def role_from_answer(answered: Setup | None) -> Role:
    """Our role after offering ``actpass``, from the answerer's ``a=setup``."""
    if answered == "active":
        return "server"
    if answered == "passive":
        return "client"
    if answered is None:
        # RFC 4145 §4: absent means active.
        return "server"
    raise unacceptable(f"a=setup:{answered} is not a valid answer to actpass")


def new_tls_id() -> str:
    """A fresh ``a=tls-id`` (RFC 8842 §4: random, at least 120 bits)."""
    return secrets.token_urlsafe(24)


def needs_new_association(previous: DtlsParams | None, current: DtlsParams) -> bool:
    """RFC 8842 §5: a changed tls-id (or fingerprint, or a flipped role) means a new DTLS
    association; anything else, such as hold and resume, keeps the running one and its keys."""
    if previous is None:
        return True
    if previous.tls_id != current.tls_id:
        return True
    if set(previous.fingerprints) != set(current.fingerprints):
        return True
    definite = ("active", "passive")
    return (previous.setup in definite and current.setup in definite
            and previous.setup != current.setup)


def dtls_attributes(fingerprint: tuple[str, str], setup: Setup, tls_id: str
                    ) -> tuple[Attribute, ...]:
    """Our ``a=fingerprint``, ``a=setup`` and ``a=tls-id`` for one stream (e.g. for
    ``OurStream.attributes`` in gateway.sdp.offer_answer)."""
    fp = Fingerprint(fingerprint[0].lower(), fingerprint[1].upper())
    return (Attribute("fingerprint", fp.to_text()), Attribute("setup", setup),
            Attribute("tls-id", tls_id))
