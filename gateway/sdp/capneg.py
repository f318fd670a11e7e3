"""RFC 5939 SDP capability negotiation, as far as best-effort SRTP needs it.

linphone (and other phones) offer ``RTP/AVP`` with their SRTP keys only as capabilities:
``a=tcap:1 RTP/SAVP``, ``a=acap:1 crypto:1 AES_CM_128_HMAC_SHA1_80 inline:...`` and
``a=pcfg:1 t=1 a=1|2``. On a leg that allows SRTP, the first potential configuration with an
``RTP/SAVP(F)`` transport and alternatives made of single ``crypto`` capabilities becomes the
actual offer the usual code reads (its proto and ``a=crypto`` lines); the answer then names it
with ``a=acfg`` (§3.6.2). Capability attributes never cross to the other leg: they carry keys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.sdp.model import Attribute, Media, SessionDescription

SRTP_PROTOS = ("RTP/SAVP", "RTP/SAVPF")
CAPABILITY_ATTRIBUTES = ("tcap", "acap", "pcfg", "acfg")
# RFC 5939 §3.4.1: acap = "a=acap:" att-cap-num 1*WSP att-par (att-par: "name[:value]")
_ACAP = re.compile(r"(\d{1,10})\s+([A-Za-z0-9_.+-]+)(?::(.*))?")
# §3.4.2: tcap = "a=tcap:" trpr-cap-num 1*WSP proto-list (numbered from trpr-cap-num on)
_TCAP = re.compile(r"(\d{1,10})((?:\s+\S+)+)")
# §3.5.1: pcfg = "a=pcfg:" config-number [1*WSP pot-cfg-list]
_PCFG = re.compile(r"(\d{1,10})((?:\s+\S+)*)")
_CRYPTO_TAG = re.compile(r"(\d{1,10})\s")


@dataclass(frozen=True, slots=True)
class ActualConfig:
    """The potential configuration taken for one stream: its number, transport capability,
    and which attribute capability carries each offered crypto tag (for ``a=acfg``)."""

    config: int
    tcap: int
    acap_by_tag: dict[int, int]

    def acfg(self, crypto_tag: int | None) -> Attribute | None:
        acap = self.acap_by_tag.get(crypto_tag) if crypto_tag is not None else None
        if acap is None:
            return None
        return Attribute("acfg", f"{self.config} t={self.tcap} a={acap}")


def apply_srtp_capabilities(sdp: SessionDescription, srtp_allowed: bool
                            ) -> dict[int, ActualConfig]:
    """Turn each RTP/AVP(F) stream's first SRTP potential configuration into its actual offer
    (when ``srtp_allowed``), and strip every capability attribute. Returns the configurations
    taken, by stream index. Malformed capability lines are ignored, as §3.3 lets an answerer
    treat configurations it does not understand."""
    session_acaps = _acaps(sdp.get_all("acap"))
    session_tcaps = _tcaps(sdp.get_all("tcap"))
    taken: dict[int, ActualConfig] = {}
    for i, m in enumerate(sdp.media):
        if srtp_allowed and not m.rejected and m.proto.upper() in ("RTP/AVP", "RTP/AVPF"):
            chosen = _take(m, {**session_acaps, **_acaps(m.get_all("acap"))},
                           {**session_tcaps, **_tcaps(m.get_all("tcap"))})
            if chosen is not None:
                taken[i] = chosen
        m.remove(*CAPABILITY_ATTRIBUTES)
    sdp.remove(*CAPABILITY_ATTRIBUTES)
    return taken


def _take(m: Media, acaps: dict[int, tuple[str, str]], tcaps: dict[int, str]
          ) -> ActualConfig | None:
    configs = []
    for value in m.get_all("pcfg"):
        hit = _PCFG.fullmatch(value.strip())
        if hit is not None:
            configs.append((int(hit.group(1)), hit.group(2).split()))
    for number, params in sorted(configs):   # §3.5.1: lower numbers are preferred
        tcap = _srtp_tcap(params, tcaps)
        if tcap is None:
            continue
        cryptos: list[tuple[int, int, str]] = []   # (crypto tag, acap, crypto value)
        for alternative in _alternatives(params):
            if len(alternative) != 1 or alternative[0] not in acaps:
                continue
            name, att = acaps[alternative[0]]
            tag = _CRYPTO_TAG.match(att)
            if name == "crypto" and tag is not None and all(t != int(tag.group(1))
                                                            for t, _, _ in cryptos):
                cryptos.append((int(tag.group(1)), alternative[0], att))
        if not cryptos:
            continue
        m.proto = tcaps[tcap]
        m.remove("crypto")
        for _, _, att in cryptos:
            m.add("crypto", att)
        return ActualConfig(number, tcap, {tag: acap for tag, acap, _ in cryptos})
    return None


def _srtp_tcap(params: list[str], tcaps: dict[int, str]) -> int | None:
    for p in params:
        if p.startswith("t="):
            for n in p[2:].split("|"):
                if n.isdigit() and tcaps.get(int(n), "").upper() in SRTP_PROTOS:
                    return int(n)
    return None


def _alternatives(params: list[str]) -> list[list[int]]:
    """``a=1|2,3|[4]``: alternatives separated by "|", each a "," list (brackets: optional
    capabilities, taken as part of the alternative)."""
    out = []
    for p in params:
        if p.startswith("a="):
            for alt in p[2:].split("|"):
                nums = [n.strip("[]-") for n in alt.split(",")]
                if nums and all(n.isdigit() for n in nums):
                    out.append([int(n) for n in nums])
    return out


def _acaps(values: list[str]) -> dict[int, tuple[str, str]]:
    out = {}
    for v in values:
        hit = _ACAP.fullmatch(v.strip())
        if hit is not None:
            out[int(hit.group(1))] = (hit.group(2).lower(), (hit.group(3) or "").strip())
    return out


def _tcaps(values: list[str]) -> dict[int, str]:
    out = {}
    for v in values:
        hit = _TCAP.fullmatch(v.strip())
        if hit is not None:
            first = int(hit.group(1))
            for k, proto in enumerate(hit.group(2).split()):
                out[first + k] = proto
    return out
