"""One leg's side of one media stream: latching, SRTP contexts, counters. Sans-IO.

This is the relay's hot path. ``rtp_in``/``rtcp_in`` take a packet that the edge received into
the shared ``PacketBuffer``, check it (authenticate and decrypt, or admit a plain source), protect
it in place for the other leg (``peer``) and return how many bytes to send, 0 when it is dropped.
Counters are plain ints; every drop is counted by cause. Nothing here logs or reads a clock, and
an SRTP packet is never copied: libsrtp works in place. The only per-packet objects are a 4-byte
SSRC slice on plain-to-SRTP legs; a re-key window and RTCP (both rare) copy the packet.

Latching (no "RTP bleed", RFC 7362 §4): an SRTP leg latches the source of a packet only after
it authenticates (a later authenticated packet from elsewhere moves the latch: NAT rebinding). A
plain leg's packets prove nothing, so it admits only the signalled address *and port*; another
port on the signalled IP is as foreign as another IP. With ``nat_learning`` it latches the first
source (the signalled address always takes the latch back), and moves to another source only after
the latched one has sent nothing for ``relatch_after`` seconds while the other kept sending. That
one check reads the clock, on the refused-packet path only. Every refused packet is counted.

No SRTP index is ever protected twice under one key (RFC 3711 §9.1, RFC 7714 §16): the outbound
contexts keep libsrtp's replay check (``allow_repeat_tx`` is off), so a repeated or too old plain
sequence number is refused by libsrtp and counted as ``repeat_index``; an SSRC whose outbound
stream was evicted by the MAX_TX_SSRCS cap is refused for the rest of the key's life rather than
restarted at an index already used.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from socket import htonl
from typing import Any

from gateway.media.api import Address, LegConfig, SrtpParams, StreamStats
from gateway.media.srtp import (
    AUTH_FAIL,
    OK,
    REPLAY_FAIL,
    REPLAY_OLD,
    PacketBuffer,
    SrtpContext,
    carry_roc,
    protect_rtcp,
    protect_rtp,
    remove_stream,
    unprotect_rtcp,
    unprotect_rtp,
)

Sender = Callable[[Any, Address], int]
MAX_TX_SSRCS = 16
MAX_EVICTED_SSRCS = 256  # past this, a plain leg's new SSRCs are refused instead of evicting
RELATCH_AFTER = 1.5  # seconds of silence from the latched source before nat_learning moves


def looks_like_plain_rtcp(packet: bytes) -> bool:
    """True when the RTCP length fields of a compound packet add up to exactly its size.

    An SRTCP packet carries a 4-byte E|index word and a tag after the compound, so it does not.
    """
    off, n = 0, len(packet)
    while off + 4 <= n:
        if packet[off] >> 6 != 2:
            return False
        off += ((packet[off + 2] << 8 | packet[off + 3]) + 1) * 4
    return off == n and n >= 8


class LegStream:
    """State of one leg for one stream; ``peer`` is the same stream on the other leg."""

    __slots__ = (
        "accept_plain_rtcp", "bytes_in", "bytes_out", "clock", "drop_auth", "drop_malformed",
        "drop_no_keys", "drop_no_remote", "drop_plain_rtcp", "drop_repeat_index", "drop_replay",
        "drop_send_error", "drop_source", "dst_rtcp", "dst_rtp", "dtls_handler",
        "dtls_rtcp_handler", "failed_source", "last_packet", "latched_rtcp", "latched_rtp",
        "nat_learning", "packets_in", "packets_out", "peer", "port", "probe_rtcp", "probe_rtp",
        "relatch_after", "rtcp_admitted", "rtcp_mux", "rtcp_rx", "rtcp_rx_handle", "rtcp_tx",
        "rtcp_tx_handle", "rx", "rx_alt", "rx_alt_handle", "rx_alt_previous", "rx_fresh",
        "rx_handle", "secure", "send_rtcp", "send_rtp", "signalled_rtcp", "signalled_rtp",
        "split_rtcp", "tx", "tx_evicted", "tx_handle", "tx_ssrc", "tx_ssrcs",
    )

    def __init__(self, port: int = 0, rtcp_mux: bool = True) -> None:
        self.port = port
        self.peer: LegStream = self
        self.rtcp_mux = rtcp_mux
        self.nat_learning = False
        self.accept_plain_rtcp = False
        self.secure = False
        self.signalled_rtp: Address | None = None
        self.signalled_rtcp: Address | None = None
        self.latched_rtp: Address | None = None
        self.latched_rtcp: Address | None = None
        self.dst_rtp: Address | None = None
        self.dst_rtcp: Address | None = None
        self.rx: SrtpContext | None = None
        self.rx_handle: Any = None
        self.rx_alt: SrtpContext | None = None
        self.rx_alt_handle: Any = None
        self.rx_alt_previous = False
        self.rx_fresh: SrtpContext | None = None
        self.tx: SrtpContext | None = None
        self.tx_handle: Any = None
        self.tx_ssrc = b""
        self.tx_ssrcs: list[bytes] = []
        self.tx_evicted: set[bytes] | None = None  # SSRCs whose outbound stream was evicted
        # SRTCP: separate contexts (DTLS association on the RTCP port) or the SRTP ones;
        # split_rtcp (DTLS without rtcp-mux) means only the separate ones, never the SRTP ones.
        self.split_rtcp = False
        self.rtcp_rx: SrtpContext | None = None
        self.rtcp_tx: SrtpContext | None = None
        self.rtcp_rx_handle: Any = None
        self.rtcp_tx_handle: Any = None
        self.send_rtp: Sender | None = None
        self.send_rtcp: Sender | None = None
        self.dtls_handler: Callable[[bytes, Address], None] | None = None
        self.dtls_rtcp_handler: Callable[[bytes, Address], None] | None = None
        self.last_packet: float | None = None
        # nat_learning: the clock (the relay's loop time) and, per RTP/RTCP latch, when a
        # foreign source was first refused and how many packets the latched source had sent then
        self.clock: Callable[[], float] = time.monotonic
        self.relatch_after = RELATCH_AFTER
        self.probe_rtp: tuple[float, int] | None = None
        self.probe_rtcp: tuple[float, int] | None = None
        self.rtcp_admitted = 0
        self.failed_source: Address | None = None  # the last source whose SRTP did not verify
        self.packets_in = self.bytes_in = self.packets_out = self.bytes_out = 0
        self.drop_source = self.drop_auth = self.drop_replay = self.drop_plain_rtcp = 0
        self.drop_no_keys = self.drop_no_remote = self.drop_malformed = 0
        self.drop_send_error = self.drop_repeat_index = 0

    # ------------------------------------------------------------------ hot path

    def rtp_in(self, buf: PacketBuffer, n: int, addr: Address) -> int:
        """Check an RTP packet from ``addr`` and prepare it for the peer; bytes to send or 0."""
        lenp = buf.length
        lenp[0] = n
        rx = self.rx_handle
        if rx is not None:
            if self.rx_alt_handle is None:
                status = unprotect_rtp(rx, buf.cdata, lenp)
            else:
                status = self._unprotect_rekey(buf, n, unprotect_rtp)
            if status:
                self._rx_failed(status, addr)
                return 0
            if addr != self.latched_rtp:
                self._latch_rtp(addr)
        elif self.secure:
            self.drop_no_keys += 1
            return 0
        elif addr != self.latched_rtp and not self._admit_plain(addr, False):
            self.drop_source += 1
            return 0
        return self._forward_rtp(buf, rx is None)

    def rtp_authenticated(self, buf: PacketBuffer, n: int, addr: Address) -> int:
        """rtp_in for a packet the native loop already unprotected (``n`` plaintext bytes)
        with this leg's inbound context, from a source it had not latched."""
        buf.length[0] = n
        if addr != self.latched_rtp:
            self._latch_rtp(addr)
        return self._forward_rtp(buf, False)

    def _forward_rtp(self, buf: PacketBuffer, plain: bool) -> int:
        """The admitted packet in ``buf`` (length in ``buf.length``), protected for the peer."""
        lenp = buf.length
        self.packets_in += 1
        peer = self.peer
        tx = peer.tx_handle
        if tx is not None:
            self.bytes_in += lenp[0]
            if peer.dst_rtp is None:
                self.drop_no_remote += 1
                return 0
            if plain and buf.data[8:12] != peer.tx_ssrc and not peer.track_tx_ssrc(
                    buf.data[8:12]):
                self.drop_repeat_index += 1
                return 0
            status = protect_rtp(tx, buf.cdata, lenp)
            if status:
                self._tx_failed(status)
                return 0
            n = lenp[0]
        else:
            n = lenp[0]
            self.bytes_in += n
            if peer.dst_rtp is None:
                self.drop_no_remote += 1
                return 0
            if peer.secure:
                self.drop_no_keys += 1
                return 0
        peer.packets_out += 1
        peer.bytes_out += n
        return n

    def rtcp_in(self, buf: PacketBuffer, n: int, addr: Address) -> int:
        """Same as rtp_in for RTCP/SRTCP (plain RTCP on an SRTCP leg per accept_plain_rtcp)."""
        lenp = buf.length
        plain = True
        rx = self.rtcp_rx_handle
        if rx is not None:
            original = bytes(buf.view[:n])
            lenp[0] = n
            if self.rx_alt_handle is None or rx is not self.rx_handle:
                status = unprotect_rtcp(rx, buf.cdata, lenp)
            else:
                status = self._unprotect_rekey(buf, n, unprotect_rtcp)
            if status == OK:
                if addr != self.latched_rtcp:
                    self._latch_rtcp(addr)
                n = lenp[0]
                plain = False
            elif not looks_like_plain_rtcp(original):
                self._rx_failed(status, addr)
                return 0
            elif not self.accept_plain_rtcp or not self._known_ip(addr):
                self.drop_plain_rtcp += 1
                return 0
            else:
                buf.view[:n] = original
        elif self.secure:
            self.drop_no_keys += 1
            return 0
        elif addr != self.latched_rtcp and not self._admit_plain(addr, True):
            self.drop_source += 1
            return 0
        self.packets_in += 1
        self.rtcp_admitted += 1
        self.bytes_in += n
        peer = self.peer
        if peer.dst_rtcp is None:
            self.drop_no_remote += 1
            return 0
        if peer.rtcp_tx_handle is not None:
            lenp[0] = n
            if plain and buf.data[4:8] != peer.tx_ssrc and not peer.track_tx_ssrc(buf.data[4:8]):
                self.drop_repeat_index += 1
                return 0
            status = protect_rtcp(peer.rtcp_tx_handle, buf.cdata, lenp)
            if status:
                self._tx_failed(status)
                return 0
            n = lenp[0]
        elif peer.secure:
            self.drop_no_keys += 1
            return 0
        peer.packets_out += 1
        peer.bytes_out += n
        return n

    # ------------------------------------------------------------------ rarer decisions

    def _unprotect_rekey(self, buf: PacketBuffer, n: int, func: Any) -> int:
        """During a re-key two inbound contexts are live: try the current one, then the other.

        An RTP packet under the committed new key ends the window. ``rx_fresh`` (the new key
        with the ROC left at 0) is the last try: a peer that restarts its ROC when it re-keys
        (RFC 3711 says it must not; baresip-like stacks open a new SRTP session) is then
        followed instead of being refused for ever.
        """
        original = bytes(buf.view[:n])
        status = func(self.rx_handle, buf.cdata, buf.length)
        if status == OK:
            if self.rx_alt_previous and func is unprotect_rtp:
                self._drop_alt()
            return OK
        buf.view[:n] = original
        buf.length[0] = n
        if func(self.rx_alt_handle, buf.cdata, buf.length) == OK:
            return OK
        fresh = self.rx_fresh
        if fresh is not None and func is unprotect_rtp:
            buf.view[:n] = original
            buf.length[0] = n
            if func(fresh.handle, buf.cdata, buf.length) == OK:
                self._adopt_fresh(fresh)
                return OK
        return status

    def _adopt_fresh(self, fresh: SrtpContext) -> None:
        """The peer restarted its ROC with its new key: the fresh context replaces the carried."""
        self.rx_fresh = None
        if self.rx is not None and self.rx.params == fresh.params:
            self._replace_rx(fresh)
            if self.rx_alt_previous:
                self._drop_alt()
        elif self.rx_alt is not None:
            self.rx_alt.close()
            self.rx_alt, self.rx_alt_handle = fresh, fresh.handle
        self._sync_rtcp()

    def track_tx_ssrc(self, ssrc: bytes) -> bool:
        """Bound the outbound libsrtp streams a plain peer can make us create; False: refuse.

        libsrtp keeps one stream per SSRC for ever; a plain leg's packets are unauthenticated (and
        spoofable from the signalled address), so only the MAX_TX_SSRCS most recent SSRCs keep
        theirs. An evicted SSRC's stream, with its index history, is gone: were it let back, it
        would restart at indexes already sent under this key, so it is refused while the key
        lives. Once MAX_EVICTED_SSRCS have been evicted, new SSRCs are refused instead.
        """
        ssrc = bytes(ssrc)
        seen = self.tx_ssrcs
        evicted = self.tx_evicted
        if ssrc in seen:
            seen.remove(ssrc)
        elif evicted is not None and ssrc in evicted:
            return False
        elif len(seen) >= MAX_TX_SSRCS:
            if evicted is None:
                evicted = self.tx_evicted = set()
            elif len(evicted) >= MAX_EVICTED_SSRCS:
                return False
            gone = seen.pop(0)
            evicted.add(gone)
            for handle in {self.tx_handle, self.rtcp_tx_handle}:
                if handle is not None:
                    remove_stream(handle, htonl(int.from_bytes(gone, "big")))
        seen.append(ssrc)
        self.tx_ssrc = ssrc
        return True

    def _rx_failed(self, status: int, addr: Address) -> None:
        if status == AUTH_FAIL:
            self.drop_auth += 1
            self.failed_source = addr
        elif status in (REPLAY_FAIL, REPLAY_OLD):
            self.drop_replay += 1
            self.failed_source = addr
        else:
            self.drop_malformed += 1

    def _tx_failed(self, status: int) -> None:
        """libsrtp refused to protect: an index already sent (or too old to tell) is never sent
        again under the same key (RFC 3711 §9.1); anything else is a malformed packet."""
        if status in (REPLAY_FAIL, REPLAY_OLD):
            self.drop_repeat_index += 1
        else:
            self.drop_malformed += 1

    def _latch_rtp(self, addr: Address) -> None:
        self.latched_rtp = self.dst_rtp = addr
        if self.rtcp_mux:
            self.latched_rtcp = self.dst_rtcp = addr

    def _latch_rtcp(self, addr: Address) -> None:
        self.latched_rtcp = self.dst_rtcp = addr

    def _known_ip(self, addr: Address) -> bool:
        ip = addr[0]
        return any(a is not None and a[0] == ip for a in (self.latched_rtp, self.latched_rtcp,
                                                          self.signalled_rtp))

    def _admit_plain(self, addr: Address, rtcp: bool) -> bool:
        """A plain packet from ``addr``, which is not the latched source: latch it or refuse it.

        The signalled address and port always latches. Without nat_learning nothing else does.
        With it, the first source latches, and another one takes over only once the latched
        source has been silent for ``relatch_after`` s, measured from the first refused packet.
        """
        signalled = self.signalled_rtcp if rtcp else self.signalled_rtp
        if addr[:2] != signalled:  # IPv6 sources come as (host, port, flowinfo, scope_id)
            if not self.nat_learning:
                return False
            latched = self.latched_rtcp if rtcp else self.latched_rtp
            if latched is not None:
                spoken = self.rtcp_admitted if rtcp else self.packets_in - self.rtcp_admitted
                probe = self.probe_rtcp if rtcp else self.probe_rtp
                now = self.clock()
                if probe is None or probe[1] != spoken:
                    probe = (now, spoken)
                elif now - probe[0] >= self.relatch_after:
                    probe = None
                if rtcp:
                    self.probe_rtcp = probe
                else:
                    self.probe_rtp = probe
                if probe is not None:
                    return False
        if rtcp:
            self.probe_rtcp = None
            self._latch_rtcp(addr)
        else:
            self.probe_rtp = None
            self._latch_rtp(addr)
        return True

    # ------------------------------------------------------------------ control

    def configure(self, cfg: LegConfig) -> None:
        """Apply a LegConfig; contexts whose params did not change are kept (ROC, windows).

        A changed key gets a new libsrtp context that continues each known SSRC's rollover
        counter (``srtp.carry_roc``, RFC 3711 §3.3.1 / RFC 4568 §7.1.4): inbound from the
        previous inbound context, outbound from the ROC our sender had reached.
        """
        self.nat_learning = cfg.nat_learning
        self.accept_plain_rtcp = cfg.accept_plain_rtcp
        self.rtcp_mux = cfg.rtcp_mux
        self.secure = cfg.dtls or cfg.rx is not None
        self.split_rtcp = cfg.dtls and not cfg.rtcp_mux
        remote_rtcp = cfg.remote_rtcp
        if cfg.remote_rtp is not None and remote_rtcp is None:
            remote_rtcp = cfg.remote_rtp if cfg.rtcp_mux else (cfg.remote_rtp[0],
                                                                cfg.remote_rtp[1] + 1)
        if cfg.remote_rtp != self.signalled_rtp or remote_rtcp != self.signalled_rtcp:
            self.signalled_rtp, self.signalled_rtcp = cfg.remote_rtp, remote_rtcp
            self.latched_rtp = self.latched_rtcp = self.probe_rtp = self.probe_rtcp = None
        self.dst_rtp = self.latched_rtp or self.signalled_rtp
        self.dst_rtcp = (self.dst_rtp if self.rtcp_mux
                         else self.latched_rtcp or self.signalled_rtcp)
        self._set_rx(cfg.rx)
        self._set_tx(cfg.tx)
        self._set_rtcp(cfg.rtcp_rx, cfg.rtcp_tx)

    def _set_rtcp(self, rx: SrtpParams | None, tx: SrtpParams | None) -> None:
        """Separate SRTCP contexts when given (kept while their params are unchanged)."""
        if self.rtcp_rx is not None and self.rtcp_rx.params != rx:
            self.rtcp_rx.close()
            self.rtcp_rx = None
        if self.rtcp_tx is not None and self.rtcp_tx.params != tx:
            self.rtcp_tx.close()
            self.rtcp_tx = None
        if rx is not None and self.rtcp_rx is None:
            self.rtcp_rx = SrtpContext(rx, outbound=False)
        if tx is not None and self.rtcp_tx is None:
            self.rtcp_tx = SrtpContext(tx, outbound=True)
        self._sync_rtcp()

    def _sync_rtcp(self) -> None:
        rx, tx = self.rtcp_rx, self.rtcp_tx
        shared = not self.split_rtcp
        self.rtcp_rx_handle = rx.handle if rx is not None else self.rx_handle if shared else None
        self.rtcp_tx_handle = tx.handle if tx is not None else self.tx_handle if shared else None

    def _set_rx(self, params: SrtpParams | None) -> None:
        if params is None:
            self._drop_alt()
            self._replace_rx(None)
            return
        if self.rx is not None and self.rx.params == params:
            return
        if self.rx_alt is not None and self.rx_alt.params == params:
            new, self.rx_alt = self.rx_alt, None
        else:
            new = SrtpContext(params, outbound=False)
        old = self.rx
        fresh = self.rx_fresh
        self.rx_fresh = None
        if fresh is not None and fresh.params != params:
            fresh.close()
            fresh = None
        if old is not None and carry_roc(old, new) and fresh is None:
            fresh = SrtpContext(params, outbound=False)
        self._drop_alt()
        self.rx, self.rx_handle = new, new.handle
        if old is not None:
            self.rx_alt, self.rx_alt_handle, self.rx_alt_previous = old, old.handle, True
            self.rx_fresh = fresh
        elif fresh is not None:
            fresh.close()

    def _replace_rx(self, ctx: SrtpContext | None) -> None:
        if self.rx is not None:
            self.rx.close()
        self.rx = ctx
        self.rx_handle = ctx.handle if ctx is not None else None

    def _set_tx(self, params: SrtpParams | None) -> None:
        if self.tx is not None and self.tx.params == params:
            return
        new = SrtpContext(params, outbound=True) if params is not None else None
        if self.tx is not None:
            if new is not None:
                carry_roc(self.tx, new)  # the SSRCs we send keep their index under our new key
            self.tx.close()
        self.tx = new
        self.tx_handle = new.handle if new is not None else None
        if new is None:
            self.tx_ssrc, self.tx_ssrcs, self.tx_evicted = b"", [], None

    def add_rx(self, params: SrtpParams) -> None:
        """Accept ``params`` inbound as well, until committed by configure() or dropped."""
        if (self.rx is not None and self.rx.params == params) or (
                self.rx_alt is not None and self.rx_alt.params == params):
            self.rx_alt_previous = False
            return
        self._drop_alt()
        ctx = SrtpContext(params, outbound=False)
        if self.rx is None:
            self.rx, self.rx_handle = ctx, ctx.handle
            self._sync_rtcp()
            return
        if carry_roc(self.rx, ctx):
            self.rx_fresh = SrtpContext(params, outbound=False)
        self.rx_alt, self.rx_alt_handle, self.rx_alt_previous = ctx, ctx.handle, False

    def drop_rx(self) -> None:
        """Forget a pending inbound context (the offer that brought it was rejected)."""
        if not self.rx_alt_previous:
            self._drop_alt()

    def _drop_alt(self) -> None:
        if self.rx_alt is not None:
            self.rx_alt.close()
        if self.rx_fresh is not None:
            self.rx_fresh.close()
        self.rx_alt = self.rx_alt_handle = self.rx_fresh = None
        self.rx_alt_previous = False

    def close(self) -> None:
        self._drop_alt()
        self._replace_rx(None)
        self._set_tx(None)
        self._set_rtcp(None, None)
        self.send_rtp = self.send_rtcp = self.dtls_handler = self.dtls_rtcp_handler = None
        self.peer = self

    def stats(self) -> StreamStats:
        drops = {"source": self.drop_source, "auth": self.drop_auth,
                 "replay": self.drop_replay, "plain_rtcp": self.drop_plain_rtcp,
                 "no_keys": self.drop_no_keys, "no_remote": self.drop_no_remote,
                 "malformed": self.drop_malformed, "send_error": self.drop_send_error,
                 "repeat_index": self.drop_repeat_index}
        return StreamStats(self.packets_in, self.bytes_in, self.packets_out, self.bytes_out,
                           self.drop_auth, self.drop_replay, drops, self.last_packet,
                           self.latched_rtp, self.latched_rtcp, self.failed_source)
